"""What a strategy reads off the curve so far: the sampled points, their draws and the neighbour tests.

t grows with degradation. A gap is the stretch between two neighbouring sampled points; its drop is
d = P(kept | t_i) − P(kept | t_{i+1}) (> 0: the feature is lost as t grows). The neighbour test is
Newcombe's interval for d at the strategy's search level: it only decides where to draw next, so it may
be less strict than the intervals a report shows (`critwin.stats.confidence_sequence` stays valid under
such data-dependent sampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from critwin.errors import CritwinError
from critwin.stats import newcombe_interval

if TYPE_CHECKING:
    from critwin.curves import Curve


@dataclass(frozen=True)
class Points:
    """The sampled points of a curve: t (ascending), kept/valid/all draws per point."""

    t: np.ndarray
    k: np.ndarray
    n: np.ndarray
    total: np.ndarray

    @classmethod
    def of(cls, curve: Curve | None) -> Points:
        if curve is None:
            z = np.zeros(0)
            return cls(z, z.astype(int), z.astype(int), z.astype(int))
        return cls(curve.t, curve.n_kept, curve.n_valid, curve.n_total)

    @property
    def spent(self) -> int:
        """Draws made so far, failed ones included (what a budget counts)."""
        return int(self.total.sum())

    @property
    def p(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.k / np.maximum(self.n, 1), np.nan)

    def drop_interval(self, i: int, level: float) -> tuple[float, float, float]:
        """(lower, estimate, upper) of the drop across gap (i, i+1); (−1, 0, 1) when a side has no label."""
        if self.n[i] <= 0 or self.n[i + 1] <= 0:
            return -1.0, 0.0, 1.0
        k, n = self.k, self.n
        lo, hi = newcombe_interval(int(k[i]), int(n[i]), int(k[i + 1]), int(n[i + 1]), level)
        return lo, float(self.p[i] - self.p[i + 1]), hi


def snap(a: float, b: float, resolution: float, support: Sequence[float] | None) -> float | None:
    """A forward time strictly inside (a, b) near its middle, or None when (a, b) cannot be split: on the
    `support` (the allowed times, e.g. whole tokens) when given, else on multiples of `resolution`
    counted from a (a gap no wider than `resolution` is not split)."""
    if b - a <= resolution * (1 + 1e-9):
        return None
    mid = (a + b) / 2.0
    if support is not None:
        inside = [s for s in support if a < s < b]
        return min(inside, key=lambda s: (abs(s - mid), s)) if inside else None
    steps = max(1, round((mid - a) / resolution))
    t = a + steps * resolution
    return float(t) if a < t < b else None


def check_counts(who: str, **counts: int | None) -> None:
    """One-line errors for draw counts that are not whole numbers >= 1 (None: not set)."""
    for name, v in counts.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1):
            raise CritwinError(f"{who}: {name}={v!r} must be a whole number >= 1 (draws)")


def check_resolution(who: str, resolution: float) -> float:
    if isinstance(resolution, bool) or not isinstance(resolution, int | float) or not (
        math.isfinite(resolution) and resolution > 0
    ):
        raise CritwinError(f"{who}: resolution={resolution!r} must be a number > 0 (the finest step of t)")
    return float(resolution)


def checked_times(who: str, ts: Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """`ts` as a sorted tuple of distinct finite times >= 0 (None stays None)."""
    if ts is None:
        return None
    try:
        out = sorted({float(t) for t in ts})
    except (TypeError, ValueError) as err:
        raise CritwinError(f"{who}: {what} must be a list of numbers (forward times)") from err
    if not out:
        raise CritwinError(f"{who}: {what} is empty; give at least one forward time")
    if any(not math.isfinite(t) or t < 0 for t in out):
        raise CritwinError(f"{who}: {what} holds a time that is not finite and >= 0")
    return tuple(out)


def first_round_draws(n: int, points: int, budget: int | None) -> int:
    """Draws per point of a first round of `points` points that wants n each: fewer, evenly, when the
    budget is smaller; a one-line error when it cannot give one draw to every point."""
    if budget is None:
        return n
    if budget < points:
        raise CritwinError(
            f"budget {budget} is smaller than one draw per initial point ({points} points); "
            f"use a budget of at least {points * n}"
        )
    return min(n, budget // points)


def within_budget(
    requests: list[tuple[float, int]], budget: int | None, spent: int
) -> list[tuple[float, int]]:
    """The requests (in priority order) that fit in what is left of `budget`; the last one may shrink."""
    if budget is None:
        return requests
    left = budget - spent
    out = []
    for t, n in requests:
        if left <= 0:
            break
        take = min(n, left)
        out.append((t, take))
        left -= take
    return out
