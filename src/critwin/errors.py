"""The one exception type users see: a one-line message naming the problem and the fix."""


class CritwinError(ValueError):
    """Bad input or an unusable resource. The CLI prints its message on one line and exits with 2."""
