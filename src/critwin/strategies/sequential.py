"""`Sequential`: sequential allocation on a fixed grid of forward times.

Start with `n_min` draws at every point of the grid; then, round by round, add draws at both ends of
every gap whose neighbour test is undecided: the interval of the drop across the gap straddles
`min_jump` (it can neither be ruled out nor confirmed that the feature drops by `min_jump` there). A
point's draws double each time (from `n_min`) up to `n_max`; the scan stops when every gap is decided,
every undecided gap has `n_max` draws at both ends, or `budget` draws are spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from critwin.errors import CritwinError
from critwin.params import PARAMS
from critwin.strategies.base import Request
from critwin.strategies.points import Points, check_counts, checked_times, first_round_draws, within_budget

if TYPE_CHECKING:
    from critwin.curves import Curve


@dataclass(frozen=True)
class Sequential:
    """Sequential allocation on `grid` (forward times, t grows with degradation; times past a sample's
    t_max are left out). n_min: first draws per point; n_max: most draws per point; budget: most draws
    of the scan (None: no limit); min_jump: the drop of P(kept) that matters; search_level: confidence
    of the neighbour tests (Newcombe's interval), which only decide where to draw.

    Example:
        On the exact toy language the token at position 2 is resampled from t = 16 tokens removed on, so
        P(kept) drops between t = 15 and t = 16 and is 1 before. The first round gives 8 draws per point;
        gaps whose drop interval still straddles min_jump = 0.2 get 8 more at both ends, the drop between
        15 and 16 is confirmed with 8 + 16 draws, and the rise after 16 is decided at once:

        >>> import numpy as np
        >>> import critwin as cw
        >>> from critwin.strategies import Sequential
        >>> sampler = cw.load_sampler("toy_lm")
        >>> x = sampler.sample(1, np.random.default_rng(0))[0]
        >>> curve = cw.scan(sampler, x, feature=lambda ids: ids[2], seed=0,
        ...                 strategy=Sequential([0, 6, 12, 15, 16, 18], n_min=8, n_max=64))
        >>> dict(zip(curve.t.tolist(), curve.n_total.tolist()))
        {0.0: 16, 6.0: 16, 12.0: 16, 15.0: 16, 16.0: 8, 18.0: 8}
    """

    grid: Sequence[float]
    n_min: int = 8
    n_max: int = 128
    budget: int | None = None
    min_jump: float = 0.2
    search_level: float = 0.9

    def __post_init__(self) -> None:
        who = type(self).__name__
        check_counts(who, n_min=self.n_min, n_max=self.n_max, budget=self.budget)
        if self.n_min > self.n_max:
            raise CritwinError(f"{who}: n_min={self.n_min} > n_max={self.n_max}; use n_min <= n_max")
        PARAMS["min_jump"].check(self.min_jump, "min_jump")
        PARAMS["level"].check(self.search_level, "search_level")
        object.__setattr__(self, "grid", checked_times(who, self.grid, "grid"))

    # -- pieces shared with Adaptive -----------------------------------------------------------------------
    def first_round(self, t_max: float) -> list[tuple[float, int]]:
        """`n_min` draws at every grid time <= t_max (fewer, evenly, when the budget is smaller)."""
        ts = [t for t in self.grid if t <= t_max]
        if not ts:
            raise CritwinError(
                f"{type(self).__name__}: no grid time lies in [0, {t_max:g}] for this sample; "
                "give grid times inside it"
            )
        n = first_round_draws(self.n_min, len(ts), self.budget)
        return [(t, n) for t in ts]

    def more_draws(self, pts: Points, skip: set[int] = frozenset()) -> list[tuple[float, int]]:
        """Extra draws at both ends of every undecided gap (not in `skip`), fewest-drawn points first."""
        want: dict[int, int] = {}
        for i in range(len(pts.t) - 1):
            if i in skip:
                continue
            lo, _, hi = pts.drop_interval(i, self.search_level)
            if lo < self.min_jump <= hi:
                for j in (i, i + 1):
                    have = int(pts.total[j])
                    if have < self.n_max:
                        want[j] = min(max(self.n_min, have), self.n_max - have)
        order = sorted(want, key=lambda j: (int(pts.total[j]), j))
        return [(float(pts.t[j]), want[j]) for j in order]

    def finish(self, requests: list[tuple[float, int]], pts: Points) -> tuple[Request, ...]:
        return tuple(Request(t, n) for t, n in within_budget(requests, self.budget, pts.spent))

    def propose(self, curve: Curve | None, t_max: float) -> tuple[Request, ...]:
        """The grid at `n_min` first; then more draws where a neighbour test is undecided; () to stop."""
        if curve is None:
            return tuple(Request(t, n) for t, n in self.first_round(t_max))
        pts = Points.of(curve)
        return self.finish(self.more_draws(pts), pts)
