"""Values that cross every layer: a failed item, the labels features give samples, and what a feature is."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

Label = Hashable
"""What a feature reads off a sample (str, int, float, bool or tuples of these); None means "no label"."""


@dataclass(frozen=True)
class Failure:
    """Stands in for a sample (or a verdict) that could not be produced: an engine error, OOM after retries,
    a time-out, user code that raised.

    Scans count it as a failed item: never an outcome, never dropped.
    """

    reason: str


@runtime_checkable
class Feature(Protocol):
    """sample -> hashable label, or None if the sample cannot be read (a failed item, never an outcome).
    A feature may also offer `batch(samples) -> labels` to label many samples at once."""

    def __call__(self, sample: Any) -> Label | None: ...
