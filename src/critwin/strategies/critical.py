"""`CriticalBisect`: the cheap search for a critical token (`critwin.methods.critical`): bisection on the
cuts of a P(success) curve down to the one-token gap after which success is shown to be impossible.

In tokens kept m = t_max − t (t grows with degradation, so a longer prefix is a smaller t). Each round, on
the curve so far: let m_s be the longest cut with a success. Every longer cut with no success and fewer than
`n_certify` draws is topped up to `n_certify`, the fewest draws whose 0 successes put the one-sided
Clopper–Pearson upper bound of P(success) at or below `eps` (59 at eps 0.05, level 0.95); a success found
there moves m_s. The gap between m_s and the next longer cut gets its midpoint (`n_min` draws) while it is
wider than `resolution`. It stops when that gap is one unit wide and every longer cut is shown to fail, or
when no cut has a success (the bare prompt is then topped up to `n_certify` first, to look for one).

Certifying a cut needs all its draws to fail, so the look after `n_min` draws does not change the chance of
a false certification: it is (1 − p)^n_certify ≤ 1 − level for any p > eps. Unlike every-prefix, the prefixes
between two measured cuts are not drawn: the critical token is then found under the assumption that a
prefix between two cuts shown to fail does not succeed again (a trace does not recover and fail again
within one bisection gap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from critwin.errors import CritwinError
from critwin.strategies.base import Request
from critwin.strategies.points import (
    Points,
    check_counts,
    check_resolution,
    checked_times,
    first_round_draws,
    snap,
    within_budget,
)

if TYPE_CHECKING:
    from critwin.curves import Curve


def certify_draws(eps: float, level: float) -> int:
    """The fewest draws n with (1 − eps)^n <= 1 − level: 0 successes of n then bound P(success) by eps."""
    return int(math.ceil(math.log(1.0 - level) / math.log(1.0 - eps) - 1e-12))


@dataclass(frozen=True)
class CriticalBisect:
    """Bisection for the critical token (see the module docstring) from the cuts `grid` (forward times),
    `n_min` draws per new cut; `eps` and `level` as in `critwin.methods.critical.critical_token`; budget:
    most draws of the scan (None: no limit).

    Example:
        A trace whose success dies at token 7 of 20 (P(success) 0.6 before it, 0 after): from a grid of
        three cuts the search bisects to the gap 7 → 8 and certifies every longer cut.

        >>> import critwin as cw
        >>> from critwin.methods.critical import critical_token
        >>> from critwin.strategies import CriticalBisect
        >>> class Dies:
        ...     time_unit, t_max = "tokens", 20.0
        ...     def forward_reverse(self, x, ts, n, rng):
        ...         return [list(rng.random(n) < (0.6 if 20 - t <= 7 else 0.0)) for t in ts]
        >>> curve = cw.scan(Dies(), None, feature=bool, reference=True, seed=0,
        ...                 strategy=CriticalBisect([0.0, 10.0, 20.0]))
        >>> found = critical_token(curve).critical
        >>> found.token, found.kept_hi, int(curve.n_total.sum())
        (7, 8, 209)
    """

    grid: Sequence[float]
    n_min: int = 8
    eps: float = 0.05
    level: float = 0.95
    resolution: float = 1.0
    support: Sequence[float] | None = None
    budget: int | None = None

    def __post_init__(self) -> None:
        who = type(self).__name__
        check_counts(who, n_min=self.n_min, budget=self.budget)
        if not 0 < self.eps < 1:
            raise CritwinError(f"{who}: eps={self.eps!r}; use a probability in (0, 1)")
        if not 0 < self.level < 1:
            raise CritwinError(f"{who}: level={self.level!r}; use a value in (0, 1)")
        object.__setattr__(self, "grid", checked_times(who, self.grid, "grid"))
        object.__setattr__(self, "resolution", check_resolution(who, self.resolution))
        object.__setattr__(self, "support", checked_times(who, self.support, "support"))

    @property
    def n_certify(self) -> int:
        return certify_draws(self.eps, self.level)

    def propose(self, curve: Curve | None, t_max: float) -> tuple[Request, ...]:
        """The grid and both ends at n_min first; then top-ups of the cuts past the last success and the
        midpoint of the gap after it; () to stop."""
        if curve is None:
            ts = sorted({0.0, float(t_max), *(t for t in self.grid if t <= t_max)})
            n = first_round_draws(self.n_min, len(ts), self.budget)
            return tuple(Request(t, n) for t in ts)
        pts = Points.of(curve)  # ascending t: descending tokens kept
        need = self.n_certify
        success = np.flatnonzero(pts.k > 0)
        if not len(success):  # nothing succeeds: look harder at the bare prompt (the largest t), then stop
            last = len(pts.t) - 1
            top = need - int(pts.n[last])
            ok = top > 0 and pts.total[last] < 4 * need
            return self.finish([(float(pts.t[last]), top)] if ok else [], pts)
        s = int(success[0])  # the smallest t with a success: the longest prefix that can succeed
        # Certified on valid draws; a cut whose draws keep failing (no label) stops at 4 × n_certify draws.
        requests = [(float(pts.t[j]), need - int(pts.n[j])) for j in range(s)
                    if pts.n[j] < need and pts.total[j] < 4 * need]
        if s > 0:
            mid = snap(float(pts.t[s - 1]), float(pts.t[s]), self.resolution, self.support)
            if mid is not None:
                requests.append((mid, self.n_min))
        return self.finish(requests, pts)

    def finish(self, requests: list[tuple[float, int]], pts: Points) -> tuple[Request, ...]:
        merged: dict[float, int] = {}
        for t, n in requests:
            merged[t] = max(merged.get(t, 0), n)
        return tuple(Request(t, n) for t, n in within_budget(sorted(merged.items()), self.budget, pts.spent))
