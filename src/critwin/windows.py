"""Critical windows found on measured curves: where P(kept) drops as the forward time t grows.

`detect_windows` (the default rule) combines a statistical test with explicit thresholds:

1. Two-proportion z-tests (pooled, one-sided: "P(kept) is lower at the later t") between neighbouring
   points, and, so that slow transitions on fine grids are caught too, between points 2, 4, 8, … grid
   steps apart. Holm's step-down correction over all these tests keeps the chance of reporting any window
   on a flat curve at most 1 − level (family-wise, up to the normal approximation of the test).
2. Significant stretches are kept unless they contain a smaller significant stretch (that one already
   explains the drop), and overlapping or touching stretches are merged: consecutive drops form one window.
3. Each merged stretch is trimmed to the transition: points still consistent with the plateau before it
   (pooled, one-sided test at 1 − level) are moved out of the window, and likewise at its far end.
4. A window is reported when its jump p(t_lo) − p(t_hi) ≥ `min_jump` and its endpoint test is significant.

The jump's interval is Newcombe's hybrid score interval for a difference of proportions (built from the two
Wilson intervals). `paper_rule_windows` implements the rule of Li, Karan & Chen's code for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from critwin.errors import CritwinError
from critwin.scan import Curve, wilson_interval


@dataclass(frozen=True)
class Window:
    """A drop of P(kept) between forward times t_lo < t_hi (t grows with degradation).

    p_before = p̂(t_lo), p_after = p̂(t_hi), jump = p_before − p_after (> 0: the feature is lost as t grows,
    i.e. decided as the fraction kept grows), jump_ci its interval at `level`, p_value the one-sided
    two-proportion test of the drop between the two endpoints, rule "test" or "paper".
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


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, level: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 − p2 at confidence `level` (Newcombe 1998, method 10)."""
    l1, u1 = (float(v) for v in wilson_interval(k1, n1, level))
    l2, u2 = (float(v) for v in wilson_interval(k2, n2, level))
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    return (d - float(np.hypot(p1 - l1, u2 - p2)), d + float(np.hypot(u1 - p1, p2 - l2)))


def holm_reject(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down procedure: which hypotheses to reject at family-wise error rate alpha."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    reject = np.zeros(m, dtype=bool)
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject


def _check(curve: Curve, level: float) -> None:
    if not isinstance(curve, Curve):
        raise CritwinError(f"expected a Curve, got {type(curve).__name__}; pass the result of scan()")
    if not 0.0 < level < 1.0:
        raise CritwinError(f"level={level} must lie strictly between 0 and 1 (e.g. 0.99)")


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
def _significant_stretches(k: np.ndarray, n: np.ndarray, alpha: float) -> list[tuple[int, int]]:
    m = len(k)
    pairs: list[tuple[int, int]] = []
    stride = 1
    while stride < m:
        pairs.extend((i, i + stride) for i in range(m - stride))
        stride *= 2
    if not pairs:
        return []
    ii = np.array([p[0] for p in pairs])
    jj = np.array([p[1] for p in pairs])
    reject = holm_reject(drop_p_value(k[ii], n[ii], k[jj], n[jj]), alpha)
    kept: list[tuple[int, int]] = []
    # Pairs are listed by increasing stride, so smaller stretches are kept before the ones containing them.
    for (i, j), r in zip(pairs, reject, strict=True):
        if r and not any(i <= a and b <= j for a, b in kept):
            kept.append((i, j))
    return kept


def _merge(stretches: list[tuple[int, int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for a, b in sorted(stretches):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def detect_windows(curve: Curve, *, level: float = 0.99, min_jump: float = 0.2) -> list[Window]:
    """Windows of `curve`: stretches [t_lo, t_hi] over which P(kept) drops significantly (family-wise
    level `level` over all tested pairs) by at least `min_jump`, trimmed to the points off the plateaus
    on either side. Returned in increasing t. Points without valid draws are ignored."""
    _check(curve, level)
    if not 0.0 <= min_jump <= 1.0:
        raise CritwinError(f"min_jump={min_jump} must lie in [0, 1] (a difference of probabilities)")
    use = np.flatnonzero(curve.n_valid > 0)
    t, k, n = curve.t[use], curve.n_kept[use].astype(float), curve.n_valid[use].astype(float)
    alpha = 1.0 - level
    comps = _merge(_significant_stretches(k, n, alpha))

    # Trim each stretch to the transition: a leading point still consistent with the plateau before the
    # stretch (pooled from the previous stretch's end) belongs to that plateau, not to the window.
    for c, comp in enumerate(comps):
        start = comps[c - 1][1] if c else 0
        a, b = comp
        while b - a > 1:
            k_pl, n_pl = k[start : a + 1].sum(), n[start : a + 1].sum()
            if drop_p_value(k_pl, n_pl, k[a + 1], n[a + 1]) < alpha:
                break
            a += 1
        comp[0] = a
    for c in range(len(comps) - 1, -1, -1):
        a, b = comps[c]
        stop = comps[c + 1][0] if c + 1 < len(comps) else len(k) - 1
        while b - a > 1:
            k_pl, n_pl = k[b : stop + 1].sum(), n[b : stop + 1].sum()
            if drop_p_value(k[b - 1], n[b - 1], k_pl, n_pl) < alpha:
                break
            b -= 1
        comps[c][1] = b

    out = []
    for a, b in comps:
        w = _window(t, k, n, a, b, level, "test")
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
    No statistics; jump_ci and p_value are filled in at `level` for comparison."""
    _check(curve, level)
    use = np.flatnonzero(curve.n_valid > 0)
    t, k, n = curve.t[use], curve.n_kept[use].astype(float), curve.n_valid[use].astype(float)
    p = k / n
    d = p[:-1] - p[1:]
    if len(d) == 0 or np.any(-d > max_drop):
        return []
    return [_window(t, k, n, i, i + 1, level, "paper") for i in np.flatnonzero(d > threshold)]
