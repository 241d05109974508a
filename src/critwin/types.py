"""Values that cross every layer: a failed item, and the labels features give samples."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

Label = Hashable
"""What a feature reads off a sample (str, int, float, bool or tuples of these); None means "no label"."""


@dataclass(frozen=True)
class Failure:
    """Stands in for a sample (or a verdict) that could not be produced: an engine error, OOM after retries,
    a time-out, user code that raised.

    Scans count it as a failed item: never an outcome, never dropped.
    """

    reason: str
