"""Critical windows found on measured curves: where P(kept) drops as the forward time t grows.

`detect_windows` (the default rule) combines a statistical test with explicit thresholds:

1. Moving two-sample tests: for every gap between neighbouring points, a one-sided pooled two-proportion
   z-test ("P(kept) is lower after the gap") between the blocks of g points on either side, for g = 1
   (neighbouring points) and g = 2, 4, 8 (so slow transitions on fine grids are caught too; a MOSUM-type
   scan). Holm's step-down correction over all gaps and block lengths keeps the chance of reporting any
   window on a flat curve at most 1 − level (family-wise, up to the normal approximation).
2. Runs of flagged gaps (joined when closer than the largest block length) form candidate windows; each
   is trimmed to the transition by moving out points that are not both significantly (Bonferroni) and
   by at least `edge_frac` (10%) of the drop off the plateau on either side (like a 10–90% rise time),
   and cut at interior plateaus: homogeneous stretches (chi-square test) of at least 3 points between
   sharp steps (a significant drop between two neighbouring points, Holm-corrected). Two windows with
   fewer than 3 grid points between them are reported as one.
3. Explicit thresholds: a window is reported when the drop between the pooled plateau levels on its two
   sides is at least `min_jump` and significant.

The jump's interval is Newcombe's hybrid score interval for a difference of proportions (built from the two
Wilson intervals). `paper_rule_windows` implements the rule of Li, Karan & Chen's code for comparison;
`step_windows` tests every step between neighbouring points on its own (staircases whose windows are one
unit wide, such as structured outputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from critwin import params
from critwin.curves import Curve
from critwin.errors import CritwinError
from critwin.stats import holm_reject, newcombe_interval  # re-exported from here too


@dataclass(frozen=True)
class Window:
    """A drop of P(kept) between forward times t_lo < t_hi (t grows with degradation).

    p_before = p̂(t_lo), p_after = p̂(t_hi), jump = p_before − p_after (> 0: the feature is lost as t grows,
    i.e. decided as the fraction kept grows), jump_ci its interval at `level`, p_value the one-sided
    two-proportion test of the drop between the two endpoints, rule "test", "paper" or "step".

    Example:
        A window round-trips through its JSON form (windows.json in a run directory):

        >>> from critwin.windows import Window
        >>> w = Window(t_lo=3.0, t_hi=5.0, p_before=0.99, p_after=0.01, jump=0.98, jump_ci=(0.95, 0.99),
        ...            p_value=1e-50)
        >>> w.to_dict()
        {'t_lo': 3.0, 't_hi': 5.0, 'p_before': 0.99, 'p_after': 0.01, 'jump': 0.98, 'jump_ci': [0.95, 0.99],
         'p_value': 1e-50, 'level': 0.99, 'rule': 'test'}
        >>> Window.from_dict(w.to_dict()) == w
        True
    """

    t_lo: float
    t_hi: float
    p_before: float
    p_after: float
    jump: float
    jump_ci: tuple[float, float]
    p_value: float
    level: float = 0.99
    rule: str = "test"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (jump_ci as a two-element list)."""
        d = asdict(self)
        d["jump_ci"] = [float(self.jump_ci[0]), float(self.jump_ci[1])]
        return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Window:
        """Inverse of `to_dict`; CritwinError on missing or mistyped fields."""
        try:
            return cls(
                t_lo=float(d["t_lo"]),
                t_hi=float(d["t_hi"]),
                p_before=float(d["p_before"]),
                p_after=float(d["p_after"]),
                jump=float(d["jump"]),
                jump_ci=(float(d["jump_ci"][0]), float(d["jump_ci"][1])),
                p_value=float(d["p_value"]),
                level=float(d.get("level", 0.99)),
                rule=str(d.get("rule", "test")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise CritwinError(f"window record {d!r} is malformed ({err}); rewrite windows.json") from err


# ----------------------------------------------------------------------------------------------------------
# Two-proportion statistics
# ----------------------------------------------------------------------------------------------------------
def drop_p_value(k1: Any, n1: Any, k2: Any, n2: Any) -> np.ndarray:
    """One-sided pooled two-proportion z-test of H1: p1 > p2 (vectorised); 1.0 where both are 0 or 1."""
    k1, n1, k2, n2 = (np.asarray(a, dtype=float) for a in (k1, n1, k2, n2))
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (k1 / n1 - k2 / n2) / se
    return np.where(se > 0, stats.norm.sf(np.where(se > 0, z, 0.0)), 1.0)


def _check(curve: Curve, level: float) -> None:
    if not isinstance(curve, Curve):
        raise CritwinError(f"expected a Curve, got {type(curve).__name__}; pass the result of scan()")
    params.check("level", level)


def _window(t: np.ndarray, k: np.ndarray, n: np.ndarray, a: int, b: int, level: float, rule: str) -> Window:
    p_a, p_b = k[a] / n[a], k[b] / n[b]
    return Window(
        t_lo=float(t[a]),
        t_hi=float(t[b]),
        p_before=float(p_a),
        p_after=float(p_b),
        jump=float(p_a - p_b),
        jump_ci=newcombe_interval(int(k[a]), int(n[a]), int(k[b]), int(n[b]), level),
        p_value=float(drop_p_value(k[a], n[a], k[b], n[b])),
        level=level,
        rule=rule,
    )


# ----------------------------------------------------------------------------------------------------------
# The default rule
# ----------------------------------------------------------------------------------------------------------
#: Block lengths (in grid points) of the moving two-sample tests; capped at a third of the curve's points.
BANDWIDTHS = (1, 2, 4, 8)


def bandwidths(m: int) -> tuple[int, ...]:
    """Block lengths used for a curve with m usable points (always includes 1: neighbouring points)."""
    return tuple(g for g in BANDWIDTHS if g == 1 or g <= m // 3)


def _moving_tests(
    k: np.ndarray, n: np.ndarray, alpha: float, t: np.ndarray | None = None, h: float | None = None
) -> np.ndarray:
    """Which gaps (i, i+1) show a significant drop at some bandwidth (Holm over all gaps × bandwidths)."""
    p_all = _block_p_values(k, n, t, h)
    if p_all.size == 0:
        return np.zeros(0, dtype=bool)
    return holm_reject(p_all.reshape(-1), alpha).reshape(p_all.shape).any(axis=0)


def gap_p_values(curve: Curve, resolution: float | None = None) -> np.ndarray:
    """Per gap between neighbouring points with valid draws: the smallest one-sided p-value of the moving
    two-sample tests of `detect_windows` ("P(kept) drops across this gap"), before the multiple-testing
    correction; and the number of tests that correction counts, as (p_values, n_tests). An adaptive
    strategy adds draws where a gap is promising but not yet significant."""
    use = np.flatnonzero(curve.n_valid > 0)
    p_all = _block_p_values(
        curve.n_kept[use].astype(float), curve.n_valid[use].astype(float), curve.t[use], resolution
    )
    if p_all.size == 0:
        return np.zeros(0), 0
    return p_all.min(axis=0), int(p_all.size)


def _block_p_values(
    k: np.ndarray, n: np.ndarray, t: np.ndarray | None = None, h: float | None = None
) -> np.ndarray:
    """(bandwidths, gaps) one-sided p-values of the moving two-sample tests.

    With a resolution `h` (and the times `t`), a block of g points on either side of a gap also spans at
    most g − 1 steps of h in t, so a curve refined around its windows (an adaptive scan: dense where the
    curve moves, sparse where it is flat) is tested like the evenly spaced grid at step h with the
    unneeded points left out."""
    m = len(k)
    if m < 2:
        return np.zeros((0, 0))
    ck, cn = np.concatenate([[0.0], np.cumsum(k)]), np.concatenate([[0.0], np.cumsum(n)])
    gaps = np.arange(m - 1)
    p_all = []
    for g in bandwidths(m):
        lo, hi = np.maximum(gaps - g + 1, 0), np.minimum(gaps + g, m - 1)
        if h is not None and t is not None:
            reach = (g - 1) * h * (1 + 1e-9)
            lo = np.maximum(lo, np.searchsorted(t, t[gaps] - reach, side="left"))
            hi = np.minimum(hi, np.searchsorted(t, t[gaps + 1] + reach, side="right") - 1)
        # left block [lo..i], right block [i+1..hi], pooled counts via cumulative sums
        p_all.append(
            drop_p_value(
                ck[gaps + 1] - ck[lo],
                cn[gaps + 1] - cn[lo],
                ck[hi + 1] - ck[gaps + 1],
                cn[hi + 1] - cn[gaps + 1],
            )
        )
    return np.array(p_all)


def _runs(
    flags: np.ndarray, join: int, t: np.ndarray | None = None, h: float | None = None
) -> list[list[int]]:
    """Maximal runs of flagged gaps as point stretches [first gap, last gap + 1]; runs fewer than `join`
    points apart are joined (a slow transition may leave an unflagged gap; `_split` undoes wrong joins).
    With a resolution `h` (and the times `t`), runs are joined only when they are also closer than `join`
    steps of h in t: on a grid refined around its windows a long plateau may hold only a few points."""
    out: list[list[int]] = []
    for i in np.flatnonzero(flags):
        near = h is None or t is None or t[i] - t[out[-1][1] if out else i] < join * h * (1 + 1e-9)
        if out and i - out[-1][1] < join and near:
            out[-1][1] = int(i) + 1
        else:
            out.append([int(i), int(i) + 1])
    return out


class _Pooled:
    """Pooled counts and chi-square homogeneity of stretches [i, j] of points (via cumulative sums)."""

    def __init__(self, k: np.ndarray, n: np.ndarray):
        self.ck = np.concatenate([[0.0], np.cumsum(k)])
        self.cn = np.concatenate([[0.0], np.cumsum(n)])
        self.ck2 = np.concatenate([[0.0], np.cumsum(k * k / n)])

    def counts(self, i: int, j: int) -> tuple[float, float]:
        return self.ck[j + 1] - self.ck[i], self.cn[j + 1] - self.cn[i]

    def homogeneous(self, i: int, j: int, alpha: float) -> bool:
        """Chi-square test of "all points in [i, j] share one P(kept)" not rejected at alpha."""
        if j <= i:
            return True
        kk, nn = self.counts(i, j)
        pbar = kk / nn
        if not 0.0 < pbar < 1.0:
            return True
        x2 = (self.ck2[j + 1] - self.ck2[i] - kk * kk / nn) / (pbar * (1.0 - pbar))
        return bool(stats.chi2.sf(x2, j - i) >= alpha)


#: Points a plateau between two sharp steps needs before it separates two windows (two points of a
#: finely sampled ramp can look flat between two steps that happen to test significant).
MIN_PLATEAU = 3


def _split(a: int, b: int, k: np.ndarray, n: np.ndarray, alpha: float) -> list[tuple[int, int]]:
    """Cut the stretch [a, b] into windows at interior plateaus between sharp steps.

    A gap (g, g+1) is a sharp step when P(kept) drops significantly between the two neighbouring points
    (Holm over the gaps of the stretch). Between two sharp steps, a stretch of at least MIN_PLATEAU points
    that is homogeneous (chi-square test not rejected at alpha / 10) is a plateau: the windows end and
    start there. Homogeneous stretches before the first or after the last sharp step are plateau points
    too and are cut off. A smooth ramp has either no sharp steps (few draws) or no homogeneous stretch of
    3 points between them (many draws), so it stays one
    window."""
    if b - a < 2:
        return [(a, b)]
    gaps = np.arange(a, b)
    sharp = [
        int(g) for g in gaps[holm_reject(drop_p_value(k[gaps], n[gaps], k[gaps + 1], n[gaps + 1]), alpha)]
    ]
    if not sharp:
        return [(a, b)]
    pool = _Pooled(k, n)
    # Homogeneity is rejected only on strong evidence (alpha / 10): wrongly rejecting a true plateau would
    # merge two windows, while the stretches of a ramp that has sharp steps fail the test by a wide margin.
    alpha_h = alpha / 10
    start = sharp[0] if pool.homogeneous(a, sharp[0], alpha_h) else a
    parts: list[tuple[int, int]] = []
    for g, nxt in zip(sharp[:-1], sharp[1:], strict=True):
        if nxt - g >= MIN_PLATEAU and pool.homogeneous(g + 1, nxt, alpha_h):
            parts.append((start, g + 1))
            start = nxt
    last = sharp[-1]
    parts.append((start, last + 1 if pool.homogeneous(last + 1, b, alpha_h) else b))
    return parts


def _plateau_split(
    a: int, b: int, k: np.ndarray, n: np.ndarray, alpha: float, min_jump: float
) -> list[tuple[int, int]]:
    """Cut the stretch [a, b] at interior plateaus that sit between two steps, found with the plateau's
    pooled draws (where `_split` needs significant steps between single neighbouring points).

    A plateau is a maximal homogeneous stretch [i, j] (chi-square not rejected at alpha / 10) of at
    least MIN_PLATEAU points strictly inside [a, b], with no drop between its two halves (one-sided test
    not significant at alpha: a stretch of a slow ramp can pass the chi-square test but drops steadily),
    whose pooled P(kept) lies significantly and by at least `min_jump` below the homogeneous stretch just
    before it and above the one just after it (one-sided tests, Bonferroni over the stretch's points):
    each piece is then a window of its own by the rule's thresholds. A staircase whose big first step
    makes the wide moving tests flag far into the next plateau gets its windows back; a ramp has no such
    stretch (its neighbouring stretches differ from it by little), so it stays one window."""
    if b - a < MIN_PLATEAU + 1:
        return [(a, b)]
    pool = _Pooled(k, n)
    alpha_h, alpha_s = alpha / 10, alpha / max(1, b - a)
    parts: list[tuple[int, int]] = []
    start, i = a, a + 1
    while i < b:
        j = i
        while j + 1 < b and pool.homogeneous(i, j + 1, alpha_h):
            j += 1
        mid = (i + j + 1) // 2
        if j - i + 1 >= MIN_PLATEAU and drop_p_value(*pool.counts(i, mid - 1), *pool.counts(mid, j)) >= alpha:
            kk, nn = pool.counts(i, j)
            level = kk / nn
            # The levels either side: the homogeneous stretches next to the plateau (may reach past [a, b]).
            s0, s1 = i - 1, j + 1
            while s0 > 0 and pool.homogeneous(s0 - 1, i - 1, alpha_h):
                s0 -= 1
            while s1 < len(k) - 1 and pool.homogeneous(j + 1, s1 + 1, alpha_h):
                s1 += 1
            k0, n0 = pool.counts(s0, i - 1)
            k1, n1 = pool.counts(j + 1, s1)
            before = k0 / n0 - level >= min_jump and drop_p_value(k0, n0, kk, nn) < alpha_s
            after = level - k1 / n1 >= min_jump and drop_p_value(kk, nn, k1, n1) < alpha_s
            if before and after:
                parts.append((start, i))
                start = j
                i = j + 1
                continue
        i += 1
    parts.append((start, b))
    return parts


def detect_windows(
    curve: Curve,
    *,
    level: float = 0.99,
    min_jump: float = 0.2,
    edge_frac: float = 0.1,
    resolution: float | None = None,
) -> list[Window]:
    """Windows of `curve`: stretches [t_lo, t_hi] over which P(kept) drops, in increasing t.

    A gap between neighbouring points is flagged when a one-sided two-proportion test of the pooled
    blocks of g points on either side (g = 1, 2, 4, 8) shows a drop, with Holm's correction over all gaps
    and block lengths at family-wise level `level` (so a flat curve gets a spurious window with
    probability <= 1 - level). Runs of flagged gaps are trimmed to the transition: a point is moved out
    unless it lies both significantly (one-sided test, Bonferroni over the run's points) and by at least
    `edge_frac` of the run's drop off the pooled plateau before the run (or after it); runs are cut at
    interior plateaus between sharp steps. t_lo is then the last point of the upper plateau and t_hi the
    first of the lower one; p_before / p_after are the pooled levels of those plateaus (up to the
    neighbouring windows), jump their difference with Newcombe's interval, p_value their one-sided test.
    Windows with jump < `min_jump` or p_value >= 1 - level are dropped. Points without valid draws are
    ignored. resolution: for a curve drawn on a grid refined around its windows (an adaptive strategy),
    the finest step of t it could draw at; blocks and joins are then also bounded in t (g − 1 steps), so
    the curve is tested like the evenly spaced grid at that step with the points it did not need left
    out. None (default): blocks count points (an evenly spaced grid).

    Example:
        100 draws per t; P(kept) falls from about 1 to about 0 over two steps (t = 3 → 4 → 5). The window
        spans the whole transition, between the last point of the upper plateau and the first of the
        lower one, with the pooled plateau levels on either side; a flat curve has none:

        >>> import critwin as cw
        >>> kept = [100, 99, 100, 98, 60, 3, 1, 2, 0, 1]
        >>> curve = cw.Curve(t=range(10), n_valid=[100] * 10, n_kept=kept, n_failed=[0] * 10,
        ...                  label_counts=[{"A": k, "B": 100 - k} for k in kept], reference="A",
        ...                  time_unit="tokens")
        >>> [w] = cw.detect_windows(curve)
        >>> w.t_lo, w.t_hi, round(w.p_before, 4), round(w.p_after, 4), round(w.jump, 4)
        (3.0, 5.0, 0.9925, 0.014, 0.9785)
        >>> [round(v, 3) for v in w.jump_ci], w.p_value < 1e-100
        ([0.948, 0.989], True)
        >>> flat = cw.Curve(t=range(10), n_valid=[100] * 10, n_kept=[60] * 10, n_failed=[0] * 10,
        ...                 label_counts=[{"A": 60, "B": 40}] * 10, reference="A", time_unit="tokens")
        >>> cw.detect_windows(flat)
        []
    """
    _check(curve, level)
    params.check("min_jump", min_jump)
    if resolution is not None and not (isinstance(resolution, int | float) and resolution > 0):
        raise CritwinError(f"resolution={resolution!r} must be a number > 0 (the finest step of t) or None")
    if not 0.0 <= edge_frac < 0.5:
        raise CritwinError(f"edge_frac={edge_frac} must lie in [0, 0.5) (share of the drop left outside)")
    use = np.flatnonzero(curve.n_valid > 0)
    t, k, n = curve.t[use], curve.n_kept[use].astype(float), curve.n_valid[use].astype(float)
    alpha = 1.0 - level
    comps = _runs(_moving_tests(k, n, alpha, t, resolution), join=max(bandwidths(len(k))), t=t, h=resolution)

    # Trim each run to the transition. A point belongs to the plateau before the run (pooled from the
    # previous run's end) unless it lies significantly below it AND by at least edge_frac of the run's
    # drop (an explicit margin, like a 10-90% rise time: without it, with many draws, the edge would
    # move to wherever the curve first deviates by a detectable hair). Same at the far end.
    bounds = [
        (comps[c - 1][1] if c else 0, comps[c + 1][0] if c + 1 < len(comps) else len(k) - 1)
        for c in range(len(comps))
    ]
    margins = []
    for (a, b), (start, stop) in zip(comps, bounds, strict=True):
        drop = k[start : a + 1].sum() / n[start : a + 1].sum() - k[b : stop + 1].sum() / n[b : stop + 1].sum()
        margins.append(edge_frac * max(drop, 0.0))
    for c, comp in enumerate(comps):
        start = comps[c - 1][1] if c else 0
        a, b = comp
        alpha_trim = alpha / max(1, b - a - 1)  # Bonferroni over the points that could be trimmed
        while b - a > 1:
            k_pl, n_pl = k[start : a + 1].sum(), n[start : a + 1].sum()
            below = k_pl / n_pl - k[a + 1] / n[a + 1]
            if below >= margins[c] and drop_p_value(k_pl, n_pl, k[a + 1], n[a + 1]) < alpha_trim:
                break
            a += 1
        comp[0] = a
    for c in range(len(comps) - 1, -1, -1):
        a, b = comps[c]
        stop = comps[c + 1][0] if c + 1 < len(comps) else len(k) - 1
        alpha_trim = alpha / max(1, b - a - 1)
        while b - a > 1:
            k_pl, n_pl = k[b : stop + 1].sum(), n[b : stop + 1].sum()
            above = k[b - 1] / n[b - 1] - k_pl / n_pl
            if above >= margins[c] and drop_p_value(k[b - 1], n[b - 1], k_pl, n_pl) < alpha_trim:
                break
            b -= 1
        comps[c][1] = b
    comps = [
        list(w)
        for a, b in comps
        for v in _plateau_split(a, b, k, n, alpha, min_jump)
        for w in _split(*v, k, n, alpha)
    ]

    out = []
    for c, (a, b) in enumerate(comps):
        start = comps[c - 1][1] if c else 0
        stop = comps[c + 1][0] if c + 1 < len(comps) else len(k) - 1
        k1, n1 = k[start : a + 1].sum(), n[start : a + 1].sum()
        k2, n2 = k[b : stop + 1].sum(), n[b : stop + 1].sum()
        w = Window(
            t_lo=float(t[a]),
            t_hi=float(t[b]),
            p_before=float(k1 / n1),
            p_after=float(k2 / n2),
            jump=float(k1 / n1 - k2 / n2),
            jump_ci=newcombe_interval(int(k1), int(n1), int(k2), int(n2), level),
            p_value=float(drop_p_value(k1, n1, k2, n2)),
            level=level,
            rule="test",
        )
        if w.jump >= min_jump and w.p_value < alpha:
            out.append(w)
    return out


# ----------------------------------------------------------------------------------------------------------
# The paper's rule
# ----------------------------------------------------------------------------------------------------------
def paper_rule_windows(
    curve: Curve, *, threshold: float = 0.5, max_drop: float = 0.3, level: float = 0.99
) -> list[Window]:
    """The rule of Li, Karan & Chen's code: a window between neighbouring points where P(kept) jumps by
    more than `threshold` as the fraction kept grows (= drops as t grows), provided the curve nowhere drops
    by more than `max_drop` as the fraction kept grows (= nowhere rises by more than it as t grows).
    No statistics; jump_ci and p_value are filled in at `level` for comparison.

    Example:
        P(kept) = 1.0, 0.98, 0.60, 0.03, 0.01 at t = 0 … 4 falls over two steps, but only the step larger
        than `threshold` (0.60 → 0.03) counts, so the window is one gap wide where `detect_windows` spans
        the transition; a rise of more than `max_drop` anywhere (a drop as the fraction kept grows) vetoes
        every window:

        >>> import critwin as cw
        >>> def curve(kept):
        ...     return cw.Curve(t=range(len(kept)), n_valid=[100] * len(kept), n_kept=kept,
        ...                     n_failed=[0] * len(kept), label_counts=[{"A": k, "B": 100 - k} for k in kept],
        ...                     reference="A", time_unit="tokens")
        >>> [(w.t_lo, w.t_hi, round(w.jump, 2)) for w in cw.paper_rule_windows(curve([100, 98, 60, 3, 1]))]
        [(2.0, 3.0, 0.57)]
        >>> [(w.t_lo, w.t_hi) for w in cw.detect_windows(curve([100, 98, 60, 3, 1]))]
        [(1.0, 3.0)]
        >>> cw.paper_rule_windows(curve([100, 98, 60, 3, 40]))
        []
    """
    _check(curve, level)
    use = np.flatnonzero(curve.n_valid > 0)
    t, k, n = curve.t[use], curve.n_kept[use].astype(float), curve.n_valid[use].astype(float)
    p = k / n
    d = p[:-1] - p[1:]
    if len(d) == 0 or np.any(-d > max_drop):
        return []
    return [_window(t, k, n, i, i + 1, level, "paper") for i in np.flatnonzero(d > threshold)]


# ----------------------------------------------------------------------------------------------------------
# One-unit steps
# ----------------------------------------------------------------------------------------------------------
def step_windows(curve: Curve, *, level: float = 0.99, min_jump: float = 0.05) -> list[Window]:
    """One-unit windows of a staircase: every step t -> t + 1 where P(output = s | prefix) drops.

    The theory puts each window of a structured output at a single token, and neighbouring windows can be
    one token apart (two words in a row), so the steps are tested one by one instead of being merged into
    stretches: a one-sided two-proportion test per step, Holm's correction over all steps at family-wise
    level `level`, and a drop of at least `min_jump`. Returns windows (t_lo = t, t_hi = t + 1), rule "step".
    """
    _check(curve, level)
    k, n, t = curve.n_kept, curve.n_valid, curve.t
    steps = [i for i in range(len(t) - 1) if n[i] > 0 and n[i + 1] > 0]
    if not steps:
        return []
    idx = np.array(steps)
    pv = drop_p_value(k[idx], n[idx], k[idx + 1], n[idx + 1])
    keep = holm_reject(pv, 1.0 - level)
    out = []
    for i, p, ok in zip(steps, pv, keep, strict=True):
        p0, p1 = k[i] / n[i], k[i + 1] / n[i + 1]
        if ok and p0 - p1 >= min_jump:
            ci = newcombe_interval(int(k[i]), int(n[i]), int(k[i + 1]), int(n[i + 1]), level)
            out.append(
                Window(
                    float(t[i]),
                    float(t[i + 1]),
                    float(p0),
                    float(p1),
                    float(p0 - p1),
                    ci,
                    float(p),
                    level,
                    "step",
                )
            )
    return out


# ----------------------------------------------------------------------------------------------------------
# Comparing measured windows with predicted ones
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowRule:
    """How windows are found on a curve, as one settings part for every experiment: `detect_windows` at
    family-wise confidence `level` reporting jumps of at least `min_jump`, and the paper's rule
    (`paper_rule_windows`: jumps above `paper_threshold` with no drop larger than `paper_max_drop`) at the
    same level, for comparison. A curve of one point has no window under either rule."""

    level: float = 0.99
    min_jump: float = 0.2
    paper_threshold: float = 0.5
    paper_max_drop: float = 0.3

    def __post_init__(self) -> None:
        params.check("level", self.level)
        params.check("min_jump", self.min_jump, "--min-jump")
        params.check("paper_threshold", self.paper_threshold, "--paper-threshold")

    def find(self, curve: Curve, resolution: float | None = None) -> tuple[Window, ...]:
        """Our windows of `curve` (`detect_windows`; resolution: the step an adaptive scan refined to)."""
        if len(curve) < 2:
            return ()
        return tuple(detect_windows(curve, level=self.level, min_jump=self.min_jump, resolution=resolution))

    def paper(self, curve: Curve) -> tuple[Window, ...]:
        """The paper rule's windows of `curve` (`paper_rule_windows`)."""
        if len(curve) < 2:
            return ()
        return tuple(
            paper_rule_windows(
                curve, threshold=self.paper_threshold, max_drop=self.paper_max_drop, level=self.level
            )
        )


@dataclass(frozen=True)
class WindowAgreement:
    """How detected windows sit relative to predicted ones (all in forward time t).

    outside[i]: how far detected window i sticks out of the nearest predicted window (0 when inside it).
    hits[j]: number of detected windows overlapping predicted window j (a window can be seen in parts).
    edge_error[j]: (lo, hi) offsets of the union of those detected windows from predicted window j's edges
    (detected − predicted), None when none overlaps.
    """

    outside: tuple[float, ...]
    hits: tuple[int, ...]
    edge_error: tuple[tuple[float, float] | None, ...]

    def agrees(self, tol: float) -> bool:
        """Every detected window lies within `tol` of a predicted one, and every predicted one is hit."""
        return all(o <= tol for o in self.outside) and all(h > 0 for h in self.hits)


def window_agreement(
    predicted: Sequence[tuple[float, float]], detected: Sequence[tuple[float, float]]
) -> WindowAgreement:
    """Compare detected windows [t_lo, t_hi] with predicted ones [lo, hi] (see `WindowAgreement`)."""
    outside = tuple(
        min((max(0.0, lo - a, b - hi) for lo, hi in predicted), default=math.inf) for a, b in detected
    )
    hits, errors = [], []
    for lo, hi in predicted:
        over = [(a, b) for a, b in detected if a <= hi and b >= lo]
        hits.append(len(over))
        errors.append(None if not over else (min(a for a, _ in over) - lo, max(b for _, b in over) - hi))
    return WindowAgreement(outside, tuple(hits), tuple(errors))
