"""Window edges T_before / T_after, the theorem's bound, the pointwise bound, critical windows and staircases.

All times are forward times t (t grows with degradation). Both TV curves are non-increasing in t, so edges
are found by bisection: exactly (Brent's method to ~1e-13, or integer bisection for truncation) when the TV
is exact, and with an uncertainty interval when it is a Monte Carlo estimate: the TV is confidently
(3 standard errors) on one side of the threshold before `lo` and on the other side after `hi`, so a crossing
reported by an `Edge` is never an artefact of noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scipy import optimize

from critwin.theory.mixtures import Mixture, Selection, check_chain, check_eps, check_nested
from critwin.theory.montecarlo import DEFAULT_SE_TARGET
from critwin.theory.tv import TVCurve, TVEstimate

#: Number of standard errors that make a Monte Carlo comparison with a threshold "confident".
Z_CONFIDENT = 3.0
_EXACT_TIE = 1e-12  # exact values within this of the threshold count as meeting it


class TheoryMixture(Protocol):
    """What window computations need from a mixture (GaussianMixture and DiscreteMixture provide it)."""

    weights: object
    n_components: int

    def select(self, sel: Selection, field: str = ...) -> tuple[int, ...]: ...
    def complement(self, sel: Selection) -> tuple[int, ...]: ...
    def weight(self, sel: Selection) -> float: ...
    def tv(self, a: Selection, b: Selection, t: float, **kw: object) -> TVEstimate: ...
    def bc(self, a: Selection, b: Selection, t: float, **kw: object) -> TVEstimate: ...
    def tv_curve(self, a: Selection, b: Selection, **kw: object) -> TVCurve: ...


@dataclass(frozen=True)
class Edge:
    """A window edge at forward time `t`, known to lie in [lo, hi] (lo == hi == t when computed exactly)."""

    t: float
    lo: float
    hi: float

    @property
    def exact(self) -> bool:
        """True when the edge carries no Monte Carlo uncertainty."""
        return self.lo == self.hi

    @classmethod
    def at(cls, t: float) -> Edge:
        """An exactly known edge."""
        return cls(float(t), float(t), float(t))


@dataclass(frozen=True)
class TheoryWindow:
    """Critical window [lo, hi] = [T_after(S_targ), T_before(S_targ, S_init)] in forward time.

    Below `lo` the output keeps the feature S_targ; above `hi` it looks like p^{S_init}; None where an edge
    does not exist. `targ`/`init` record the sets (component indices).
    """

    lo: Edge | None
    hi: Edge | None
    targ: tuple[int, ...] = ()
    init: tuple[int, ...] = ()

    @property
    def width(self) -> float | None:
        """hi.t − lo.t (None if an edge is missing; negative when the two edges cross)."""
        if self.lo is None or self.hi is None:
            return None
        return self.hi.t - self.lo.t


def theorem_bound(eps: float, mix: Mixture, init: Selection) -> float:
    """ε · (1 + sqrt(W_{Θ∖S_init} / (2 W_{S_init}))): bound on TV(FR_t(S_targ), p^{S_init}) for
    T_before(ε) ≤ t ≤ T_after(ε).

    Example:
        With S_init = {0} of weight ½ (so W_rest / W_init = 1) the bound is ε (1 + sqrt(½)); with S_init
        everything (no rest) it is ε itself:

        >>> import math
        >>> import critwin as cw
        >>> mix = cw.GaussianMixture(means=[[-5.0], [5.0]], variances=1.0, weights=[0.5, 0.5])
        >>> round(cw.theorem_bound(0.1, mix, init=[0]), 6), round(0.1 * (1 + math.sqrt(0.5)), 6)
        (0.170711, 0.170711)
        >>> cw.theorem_bound(0.1, mix, init=[0, 1])
        0.1
    """
    eps = check_eps(eps)
    b = mix.select(init, "init")
    w_init = mix.weight(b)
    rest = mix.complement(b)
    w_rest = mix.weight(rest) if rest else 0.0
    return eps * (1.0 + math.sqrt(w_rest / (2.0 * w_init)))


def pointwise_bound(
    mix: TheoryMixture,
    t: float,
    targ: Selection,
    init: Selection,
    *,
    seed: int = 0,
    se_target: float = DEFAULT_SE_TARGET,
) -> TVEstimate:
    """Pointwise bound TV(p^targ_t, p^init_t) + ½ sqrt(W_rest/W_init) · BC(p^init_t, p^rest_t).

    It bounds TV(FR_t(targ), p^init) at every t (not only inside the window).

    Example:
        Sequences of 2 tokens under truncation: components (0, 0) and (0, 1) (weight ¼ each) share their
        first token and differ in the last; the rest (weight ½) starts with 1. The exact
        TV(FR_t({0}), p^{0,1}) (`critwin.theory.forward_reverse_tv`) never exceeds the bound, and here
        the bound is tight at every t:

        >>> import critwin as cw
        >>> from critwin.theory import forward_reverse_tv
        >>> mix = cw.DiscreteMixture([{(0, 0): 1.0}, {(0, 1): 1.0}, {(1, 0): 0.5, (1, 1): 0.5}],
        ...                          weights=[0.25, 0.25, 0.5], process="truncation")
        >>> [cw.pointwise_bound(mix, t, targ=[0], init=[0, 1]).value for t in (0, 1, 2)]
        [0.5, 0.0, 0.5]
        >>> [forward_reverse_tv(mix, [0], [0, 1], t).value for t in (0, 1, 2)]
        [0.5, 0.0, 0.5]
    """
    a, b = check_nested(mix, targ, init)
    tv = mix.tv(a, b, t, seed=seed, se_target=se_target)
    rest = mix.complement(b)
    if not rest:
        return tv
    c = 0.5 * math.sqrt(mix.weight(rest) / mix.weight(b))
    bc = mix.bc(b, rest, t, seed=seed + 1, se_target=se_target)
    return TVEstimate(tv.value + c * bc.value, math.hypot(tv.se, c * bc.se), max(tv.n, bc.n))


def t_before(
    mix: TheoryMixture,
    eps: float,
    targ: Selection,
    init: Selection,
    *,
    seed: int = 0,
    se_target: float = DEFAULT_SE_TARGET,
) -> Edge | None:
    """T_before(ε) = inf{t : TV(p^targ_t, p^init_t) ≤ ε}: past it, S_targ cannot be told from S_init.

    Example:
        Two unit-variance components Δ = 10 apart with equal weights, S_targ = {0} inside S_init = {0, 1}.
        TV(p^{0}_t, p^{0,1}_t) = w'_2 · erf(e^{-t} Δ / (2√2)) with w'_2 = ½, so the edge has the closed form
        T_before = ln(Δ / (2√2 · erf⁻¹(ε / w'_2))) (DESIGN §1), and bisection finds it exactly:

        >>> import math
        >>> from scipy.special import erfinv
        >>> import critwin as cw
        >>> mix = cw.GaussianMixture(means=[[-5.0], [5.0]], variances=1.0, weights=[0.5, 0.5])
        >>> edge = cw.t_before(mix, 0.1, targ=[0], init=[0, 1])
        >>> round(edge.t, 9), edge.exact
        (2.982432694, True)
        >>> round(math.log(10.0 / (2 * math.sqrt(2) * erfinv(0.1 / 0.5))), 9)
        2.982432694
    """
    eps = check_eps(eps)
    a, b = check_nested(mix, targ, init)
    return first_below(mix.tv_curve(a, b, seed=seed, se_target=se_target), eps, se_target)


def t_after(
    mix: TheoryMixture, eps: float, init: Selection, *, seed: int = 0, se_target: float = DEFAULT_SE_TARGET
) -> Edge | None:
    """T_after(ε) = sup{t : TV(p^init_t, p^rest_t) ≥ 1 − ε²}: below it, S_init is separated from the rest.

    None when even t = 0 falls short of 1 − ε²; Edge.at(inf) when S_init is everything (no rest to separate).
    With Monte Carlo TVs, an edge with lo == 0 means t = 0 itself was within 3 standard errors of 1 − ε²
    (the edge may then not exist at all).

    Example:
        For the two unit-variance components Δ = 10 apart, TV(p^{0}_t, p^{1}_t) = erf(e^{-t} Δ / (2√2)),
        so T_after = ln(Δ / (2√2 · erf⁻¹(1 − ε²))); S_init = everything has no rest and never splits:

        >>> import math
        >>> from scipy.special import erfinv
        >>> import critwin as cw
        >>> mix = cw.GaussianMixture(means=[[-5.0], [5.0]], variances=1.0, weights=[0.5, 0.5])
        >>> round(cw.t_after(mix, 0.1, init=[0]).t, 9)
        0.663266371
        >>> round(math.log(10.0 / (2 * math.sqrt(2) * erfinv(1 - 0.1**2))), 9)
        0.663266371
        >>> cw.t_after(mix, 0.1, init=[0, 1]).t
        inf
    """
    eps = check_eps(eps)
    b = mix.select(init, "init")
    rest = mix.complement(b)
    if not rest:
        return Edge.at(math.inf)
    return last_above(mix.tv_curve(b, rest, seed=seed, se_target=se_target), 1.0 - eps * eps, se_target)


def critical_window(
    mix: TheoryMixture,
    eps: float,
    targ: Selection,
    init: Selection,
    *,
    seed: int = 0,
    se_target: float = DEFAULT_SE_TARGET,
) -> TheoryWindow:
    """The critical window [T_after(S_targ), T_before(S_targ, S_init)] of the feature S_targ inside S_init.

    Example:
        Two pairs of unit-variance components: 0 and 1 are 10 apart near −500, component 2 sits at +500.
        The fine feature "component 0 rather than 1" is decided for t in [0.75, 2.98] (in forward time:
        below it the output keeps it, above it the output looks like p^{0,1}):

        >>> import critwin as cw
        >>> mix = cw.GaussianMixture(means=[[-505.0], [-495.0], [500.0]], variances=1.0,
        ...                          weights=[0.25, 0.25, 0.5])
        >>> w = cw.critical_window(mix, 0.1, targ=[0], init=[0, 1])
        >>> round(w.lo.t, 4), round(w.hi.t, 4), w.targ, w.init
        (0.7457, 2.9824, (0,), (0, 1))
    """
    a, b = check_nested(mix, targ, init)
    return TheoryWindow(
        t_after(mix, eps, a, seed=seed, se_target=se_target),
        t_before(mix, eps, a, b, seed=seed, se_target=se_target),
        a,
        b,
    )


def staircase(
    mix: TheoryMixture,
    eps: float,
    chain: Sequence[Selection],
    *,
    seed: int = 0,
    se_target: float = DEFAULT_SE_TARGET,
) -> list[TheoryWindow]:
    """Windows of a nested chain S_m ⊂ … ⊂ S_0 (innermost first): window i is S_chain[i] inside S_chain[i+1].

    As t grows, FR_t(S_m) looks successively like p^{S_m}, p^{S_{m−1}}, …; transitions happen in the windows.

    Example:
        The fine feature (components 0 and 1, 10 apart) and the coarse one (the pair against component 2,
        about 1000 apart) are decided in disjoint windows of about the same width, ln of the separations'
        ratio apart (window width O(log 1/ε), independent of the separation; DESIGN §1):

        >>> import critwin as cw
        >>> mix = cw.GaussianMixture(means=[[-505.0], [-495.0], [500.0]], variances=1.0,
        ...                          weights=[0.25, 0.25, 0.5])
        >>> windows = cw.staircase(mix, 0.1, [[0], [0, 1], [0, 1, 2]])
        >>> [(round(w.lo.t, 2), round(w.hi.t, 2)) for w in windows]
        [(0.75, 2.98), (5.27, 7.59)]
        >>> [round(w.width, 1) for w in windows]
        [2.2, 2.3]
    """
    eps = check_eps(eps)
    sets = check_chain(mix, chain)
    return [
        critical_window(mix, eps, sets[i], sets[i + 1], seed=seed, se_target=se_target)
        for i in range(len(sets) - 1)
    ]


# ---- edge search on a non-increasing curve ------------------------------------------------------


def first_below(curve: TVCurve, thr: float, se_target: float = DEFAULT_SE_TARGET) -> Edge | None:
    """inf{t : curve(t) ≤ thr} for a non-increasing curve (None if it never gets there)."""
    return _edge(curve, thr, se_target, want_below=True)


def last_above(curve: TVCurve, thr: float, se_target: float = DEFAULT_SE_TARGET) -> Edge | None:
    """sup{t : curve(t) ≥ thr} for a non-increasing curve (None if it starts below thr)."""
    return _edge(curve, thr, se_target, want_below=False)


def _edge(curve: TVCurve, thr: float, se_target: float, *, want_below: bool) -> Edge | None:
    if curve.integer_t:
        return _integer_edge(curve, thr, want_below)
    if curve.exact:
        return _exact_edge(curve, thr, want_below)
    return _mc_edge(curve, thr, se_target, want_below)


def _integer_edge(curve: TVCurve, thr: float, want_below: bool) -> Edge | None:
    """Exact edge over t = 0, 1, …, t_max by binary search on the monotone predicate."""
    n = int(curve.t_max)

    def val(t: int) -> float:
        return curve(t).value

    if want_below:  # smallest t with val ≤ thr
        if val(n) > thr + _EXACT_TIE:
            return None
        lo, hi = -1, n  # val(hi) ≤ thr; lo is "not yet"
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if val(mid) <= thr + _EXACT_TIE else (mid, hi)
        return Edge.at(hi)
    if val(0) < thr - _EXACT_TIE:  # largest t with val ≥ thr
        return None
    lo, hi = 0, n + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if val(mid) >= thr - _EXACT_TIE else (lo, mid)
    return Edge.at(lo)


def _bracket(below) -> float | None:
    """Smallest power of two t (from 1) at which `below(t)` holds; None if none up to 2^12."""
    t = 1.0
    for _ in range(13):
        if below(t):
            return t
        t *= 2.0
    return None


def _exact_edge(curve: TVCurve, thr: float, want_below: bool) -> Edge | None:
    """Exact crossing of a continuous, strictly decreasing curve by Brent's method."""

    def f(t: float) -> float:
        return curve(t).value - thr

    f0 = f(0.0)
    if want_below and f0 <= _EXACT_TIE:
        return Edge.at(0.0)
    if not want_below and f0 < -_EXACT_TIE:
        return None
    if not want_below and f0 <= _EXACT_TIE:
        return Edge.at(0.0)
    hi = _bracket(lambda t: f(t) < 0)
    if hi is None:
        return None if want_below else Edge.at(math.inf)
    root = optimize.brentq(f, 0.0 if hi == 1.0 else hi / 2, hi, xtol=1e-13, rtol=1e-15, maxiter=500)
    return Edge.at(root)


def _mc_edge(
    curve: TVCurve, thr: float, se_target: float, want_below: bool, tol: float = 1e-4
) -> Edge | None:
    """Crossing of a Monte Carlo curve: [lo, hi] spans the t where the TV is not confidently on one side.

    `lo` is the last t found confidently above thr, `hi` the first t confidently below; the point estimate
    is where the common-random-number estimate itself crosses thr inside [lo, hi].
    """

    def side(t: float) -> int:
        est = curve(t, se_target)
        if est.value - Z_CONFIDENT * est.se > thr:
            return 1
        if est.value + Z_CONFIDENT * est.se < thr:
            return -1
        return 0

    s0 = side(0.0)
    if s0 == -1:
        return Edge.at(0.0) if want_below else None
    hi = _bracket(lambda t: side(t) == -1)
    if hi is None:
        return None if want_below else Edge(math.inf, 0.0, math.inf)
    step = max(1.0, hi) * tol
    # Last confidently-above t (0 if even t = 0 is not confidently above).
    a, b = 0.0, hi
    if s0 == 1:
        while b - a > step:
            m = 0.5 * (a + b)
            a, b = (m, b) if side(m) == 1 else (a, m)
    lo = a
    # First confidently-below t.
    a, b = lo, hi
    while b - a > step:
        m = 0.5 * (a + b)
        a, b = (a, m) if side(m) == -1 else (m, b)
    up = b
    # Point estimate: the estimate's own crossing inside [lo, up].
    a, b = lo, up
    while b - a > step / 4:
        m = 0.5 * (a + b)
        a, b = (m, b) if curve(m, se_target).value > thr else (a, m)
    return Edge(0.5 * (a + b), lo, up)
