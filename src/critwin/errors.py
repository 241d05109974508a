"""The one exception type users see: a one-line message naming the problem and the fix."""


def first_line(err: BaseException, *, with_type: bool = True) -> str:
    """An exception as one short line ("TypeName: first line of its message"), for failed-item reasons and
    one-line errors that quote user or library code."""
    text = str(err).strip().splitlines()
    head = text[0][:300] if text else ""
    if not with_type:
        return head or type(err).__name__
    return f"{type(err).__name__}: {head}" if head else type(err).__name__


class CritwinError(ValueError):
    """Bad input or an unusable resource. The CLI prints its message on one line and exits with 2."""


class RunInterrupted(BaseException):
    """Ctrl-C during a run: what was finished is saved, and rerunning the same command resumes it.

    Not a KeyboardInterrupt (typer turns those into a silent exit code 130) and not an Exception (nothing
    that guards one case against its errors may swallow it); the CLI prints its one line."""

    def __init__(self, finished: int, total: int, out: object) -> None:
        super().__init__(finished, total, out)
        self.finished, self.total, self.out = finished, total, out

    def __str__(self) -> str:
        return (
            f"interrupted; {self.finished} of {self.total} cases finished and saved in {self.out}; "
            "rerun the same command to resume"
        )
