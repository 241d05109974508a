"""`Adaptive`: sequential allocation on a coarse grid, refined by bisection down to one unit of t.

Each round, on the curve so far (t grows with degradation):

1. Split: a gap wider than `resolution` whose drop is confirmed (Newcombe's interval at `search_level`
   lies above 0) gets a new point near its middle with `n_min` draws (PTS-style bisection with a
   statistical test in place of a fixed |Δp|); so does the gap at each edge of every window the final
   rule (`critwin.windows.detect_windows` at this resolution) reports on the curve so far, so a slow
   transition gets its ends located, not only its steep middle.
2. Pool: the same tests between pooled stretches of points (binary segmentation: cut a stretch where
   the lower bound of the drop between its two pooled parts is highest, while it lies above 0). A slow
   ramp moves by little across each gap but by a window's drop across a few of them; a change point
   whose pooled drop is at least min_jump / 2 is split (or, one unit wide, gets draws while its
   interval straddles `min_jump`). Pooling also keeps a flat plateau from looking like a step.
3. Allocate: outside the windows found so far, gaps whose interval straddles `min_jump` (with an
   estimated drop of at least min_jump / 2) or whose moving test is promising (p < PROMISING_P, not yet
   significant) get more draws at both ends; a window whose jump interval straddles `min_jump` gets
   more draws at its edges, and across a window's edge the side with fewer draws catches up (the rule
   trims a window to points that lie significantly off the plateau). A point's draws double each time,
   up to `n_max`.

It stops when no gap is left to split (each is one `resolution` wide or decided) and no test is
undecided below `n_max`, or when `budget` draws are spent. Everything is read from the curve, so the
strategy keeps no state: the same draws give the same next round (deterministic given the seed, and a
resumed scan continues where it stopped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from critwin.params import PARAMS
from critwin.stats import wilson_interval
from critwin.strategies.base import Request
from critwin.strategies.points import Points, check_resolution, checked_times, snap
from critwin.strategies.sequential import Sequential

if TYPE_CHECKING:
    from critwin.curves import Curve


PROMISING_P = 0.05
"""A gap whose moving test has a p-value below this (uncorrected) but is not yet significant gets draws."""


def _pooled_drops(k: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every cut s of the stretch (points [0..s] | [s+1..m-1]): Newcombe's (lower, estimate, upper)
    of the drop between the pooled points on either side (vectorised over the m − 1 cuts)."""
    ck, cn = np.cumsum(k)[:-1], np.cumsum(n)[:-1]
    k1, n1, k2, n2 = ck, cn, k.sum() - ck, n.sum() - cn
    l1, u1 = wilson_interval(k1, n1, level)
    l2, u2 = wilson_interval(k2, n2, level)
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    return d - np.hypot(p1 - l1, u2 - p2), d, d + np.hypot(u1 - p1, p2 - l2)


@dataclass(frozen=True)
class Adaptive(Sequential):
    """Sequential allocation on `grid` plus bisection to `resolution` (the finest step of t: 1 token, or
    e.g. 0.1 OU time). support: the allowed times when t is discrete (e.g. the cut points of a prefill);
    new points are snapped to it. rule_level: the level of the window rule whose edges are refined.
    Other fields as in `Sequential`.

    Example:
        On the exact toy language the token at position 2 is resampled from t = 16 tokens removed on.
        From a grid of 4 points the search bisects down to the one-token gap 15 → 16, where the window
        rule then finds the drop:

        >>> import numpy as np
        >>> import critwin as cw
        >>> from critwin.strategies import Adaptive
        >>> sampler = cw.load_sampler("toy_lm")
        >>> x = sampler.sample(1, np.random.default_rng(0))[0]
        >>> strategy = Adaptive([0, 6, 12, 18], n_min=8, n_max=64, resolution=1)
        >>> curve = cw.scan(sampler, x, feature=lambda ids: ids[2], strategy=strategy, seed=0)
        >>> curve.t.tolist(), [(w.t_lo, w.t_hi) for w in cw.detect_windows(curve)]
        ([0.0, 6.0, 12.0, 15.0, 16.0, 17.0, 18.0], [(15.0, 16.0)])
    """

    resolution: float = 1.0
    support: Sequence[float] | None = None
    rule_level: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        who = type(self).__name__
        object.__setattr__(self, "resolution", check_resolution(who, self.resolution))
        object.__setattr__(self, "support", checked_times(who, self.support, "support"))
        PARAMS["level"].check(self.rule_level, "rule_level")

    def segments(self, pts: Points) -> tuple[list[tuple[int, int]], list[int]]:
        """Binary segmentation of the points with valid draws: (segments as (first, last) point indices,
        change points as the index of the point before each cut), both in increasing t."""
        valid = np.flatnonzero(pts.n > 0)
        k, n = pts.k[valid].astype(float), pts.n[valid].astype(float)
        segs, cuts, todo = [], [], [(0, len(valid) - 1)]
        while todo:
            a, b = todo.pop()
            if b > a:
                lo, _, _ = _pooled_drops(k[a : b + 1], n[a : b + 1], self.search_level)
                s = int(np.argmax(lo))
                if lo[s] > 0:
                    cuts.append(a + s)
                    todo += [(a, a + s), (a + s + 1, b)]
                    continue
            segs.append((a, b))
        return sorted((int(valid[a]), int(valid[b])) for a, b in segs), sorted(int(valid[c]) for c in cuts)

    def _pooled(self, pts: Points, skip: set[int]) -> tuple[dict[int, float], set[int]]:
        """Change points of the binary segmentation (gaps not in `skip`) whose drop between the pooled
        segments on either side is at least min_jump / 2: ({gap: new point} where the gap can still be
        split, the one-unit gaps whose pooled interval straddles min_jump)."""
        segs, cuts = self.segments(pts)
        k, n = pts.k.astype(float), pts.n.astype(float)
        seg_of = {j: s for s, (a, b) in enumerate(segs) for j in range(a, b + 1)}
        split: dict[int, float] = {}
        undecided: set[int] = set()
        for i in cuts:
            if i in skip:
                continue
            (a0, b0), (a1, b1) = segs[seg_of[i]], segs[seg_of[i] + 1]
            both = (np.r_[k[a0 : b0 + 1], k[a1 : b1 + 1]], np.r_[n[a0 : b0 + 1], n[a1 : b1 + 1]])
            lo, d, hi = (v[b0 - a0] for v in _pooled_drops(*both, self.search_level))
            if d < self.min_jump / 2:
                continue
            mid = snap(float(pts.t[i]), float(pts.t[i + 1]), self.resolution, self.support)
            if mid is not None:
                split[i] = mid
            elif lo < self.min_jump <= hi:
                undecided.add(i)
        return split, undecided

    def _windows(self, curve: Curve, pts: Points) -> list[tuple[int, int, tuple[float, float]]]:
        """(index of t_lo, index of t_hi, jump interval) of each window the final rule sees so far."""
        from critwin.windows import detect_windows

        if len(curve) < 2:
            return []
        found = detect_windows(curve, level=self.rule_level, min_jump=self.min_jump,
                               resolution=self.resolution)
        return [(int(np.searchsorted(pts.t, w.t_lo)), int(np.searchsorted(pts.t, w.t_hi)), w.jump_ci)
                for w in found]

    def _promising(self, curve: Curve, pts: Points) -> set[int]:
        """Gaps whose moving test (the final rule's) leans towards a drop but is not yet significant."""
        from critwin.windows import gap_p_values

        valid = np.flatnonzero(pts.n > 0)
        pv, n_tests = gap_p_values(curve, self.resolution)
        if not n_tests:
            return set()
        strict = (1.0 - self.rule_level) / n_tests
        return {int(valid[g]) for g in np.flatnonzero((pv < PROMISING_P) & (pv >= strict))
                if valid[g] + 1 < len(pts.t)}

    def propose(self, curve: Curve | None, t_max: float) -> tuple[Request, ...]:
        """The grid at `n_min` first; then splits of confirmed drops and window edges, then more draws
        where a test is undecided; () to stop."""
        if curve is None:
            return tuple(Request(t, n) for t, n in self.first_round(t_max))
        pts = Points.of(curve)
        windows = self._windows(curve, pts)
        edges = {g for a, b, _ in windows for g in (a, b - 1)}
        inside = {g for a, b, _ in windows for g in range(a, b)}
        split: dict[int, float] = {}
        plausible: set[int] = set()
        for i in range(len(pts.t) - 1):
            lo, d, hi = pts.drop_interval(i, self.search_level)
            if i in edges or lo > 0:
                mid = snap(float(pts.t[i]), float(pts.t[i + 1]), self.resolution, self.support)
                if mid is not None:
                    split[i] = mid
                    continue
            if i not in inside and d >= self.min_jump / 2 and lo < self.min_jump <= hi:
                plausible.add(i)
        pooled_split, pooled_open = self._pooled(pts, set(split) | inside)
        split.update(pooled_split)
        plausible |= pooled_open
        requests = [(t, self.n_min) for t in sorted(set(split.values()))]
        more_gaps = (plausible | self._promising(curve, pts)) - inside - set(split)
        want = {j: 0 for i in more_gaps for j in (i, i + 1)}
        for i in edges - set(split):  # the thinner side of a window's edge catches up
            if i + 1 < len(pts.t):
                few, many = sorted((i, i + 1), key=lambda j: (int(pts.total[j]), j))
                if 2 * pts.total[few] < pts.total[many]:
                    want[few] = 0
        # A window whose jump is not yet known to be at least min_jump (or not) gets draws at its edges.
        want.update({j: 0 for a, b, (lo, hi) in windows if lo < self.min_jump <= hi for j in (a, b)})
        more = [(float(pts.t[j]), min(max(self.n_min, int(pts.total[j])), self.n_max - int(pts.total[j])))
                for j in sorted(want, key=lambda j: (int(pts.total[j]), j)) if pts.total[j] < self.n_max]
        return self.finish(requests + more, pts)
