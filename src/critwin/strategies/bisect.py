"""`Bisect`: Pivotal Token Search's bisection (Abdin et al., Phi-4 technical report, 2024), as a baseline.

PTS estimates P(success | prefix) with a fixed number of samples and splits a span of the response in
two whenever the estimate changes by at least a threshold across it (|Δp| >= 0.2), until the spans are
one token long. Here in forward time (t grows with degradation): start from both ends, t = 0 and
t = t_max, with `n` draws each; every gap between neighbouring points wider than `resolution` whose
estimates differ by at least `threshold` gets its midpoint with `n` draws; stop when no gap qualifies
(or `budget` draws are spent). No statistical test: that is the rule being compared against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from critwin.params import PARAMS
from critwin.strategies.base import Request
from critwin.strategies.points import (
    Points,
    check_counts,
    check_resolution,
    checked_times,
    snap,
    within_budget,
)

if TYPE_CHECKING:
    from critwin.curves import Curve


@dataclass(frozen=True)
class Bisect:
    """PTS bisection: n draws per point, split where |Δp̂| >= threshold, down to `resolution` (or the
    `support` times when t is discrete); budget: most draws of the scan (None: no limit).

    Example:
        On the exact toy language the token at position 2 is resampled from t = 16 tokens removed on;
        bisection from both ends reaches the one-token gap 15 → 16 (and splits wherever 10 draws differ
        by 0.2 or more, here also between 16 and 18):

        >>> import numpy as np
        >>> import critwin as cw
        >>> from critwin.strategies import Bisect
        >>> sampler = cw.load_sampler("toy_lm")
        >>> x = sampler.sample(1, np.random.default_rng(0))[0]
        >>> curve = cw.scan(sampler, x, feature=lambda ids: ids[2], strategy=Bisect(n=10), seed=0)
        >>> curve.t.tolist()
        [0.0, 9.0, 13.0, 15.0, 16.0, 17.0, 18.0]
    """

    n: int = 10
    threshold: float = 0.2
    resolution: float = 1.0
    support: Sequence[float] | None = None
    budget: int | None = None

    def __post_init__(self) -> None:
        who = type(self).__name__
        check_counts(who, n=self.n, budget=self.budget)
        PARAMS["min_jump"].check(self.threshold, "threshold")
        object.__setattr__(self, "resolution", check_resolution(who, self.resolution))
        object.__setattr__(self, "support", checked_times(who, self.support, "support"))

    def propose(self, curve: Curve | None, t_max: float) -> tuple[Request, ...]:
        """Both ends first; then the midpoint of every gap whose estimates differ by >= threshold."""
        if curve is None:
            ends = [0.0, float(t_max)] if t_max > 0 else [0.0]
            if self.support is not None:
                inside = [s for s in self.support if s <= t_max]
                ends = sorted({inside[0], inside[-1]}) if inside else ends
            return tuple(Request(t, n) for t, n in within_budget([(t, self.n) for t in ends], self.budget, 0))
        pts = Points.of(curve)
        p = pts.p
        mids = []
        for i in range(len(pts.t) - 1):
            if abs(p[i] - p[i + 1]) >= self.threshold:  # NaN (no label on a side) compares False
                mid = snap(float(pts.t[i]), float(pts.t[i + 1]), self.resolution, self.support)
                if mid is not None:
                    mids.append((mid, self.n))
        return tuple(Request(t, n) for t, n in within_budget(mids, self.budget, pts.spent))
