"""Total variation (TV) and Bhattacharyya coefficient (BC): estimates, closed forms, exact discrete sums,
and "curves" t ↦ TV(p^a_t, p^b_t) that window searches evaluate (exact, or Monte Carlo with errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import special


@dataclass(frozen=True)
class TVEstimate:
    """A TV distance (or a BC / bound) with its Monte Carlo standard error; se == 0.0 for exact values.

    `n` is the number of Monte Carlo draws behind the value (0 when exact).
    """

    value: float
    se: float = 0.0
    n: int = 0

    @property
    def exact(self) -> bool:
        """True for closed-form / exactly enumerated values."""
        return self.n == 0

    def scaled(self, c: float) -> TVEstimate:
        """The estimate of c · value (its standard error scales with |c|)."""
        return TVEstimate(c * self.value, abs(c) * self.se, self.n)

    def __float__(self) -> float:
        return float(self.value)


def gaussian_tv_equal_variance(delta: float, sigma: float) -> float:
    """TV(N(a, σ²I), N(b, σ²I)) = erf(‖a − b‖ / (2√2 σ)) in any dimension; `delta` = ‖a − b‖."""
    return float(special.erf(delta / (2.0 * math.sqrt(2.0) * sigma)))


def gaussian_tv_isotropic(a: np.ndarray, var_a: float, b: np.ndarray, var_b: float) -> float:
    """Exact TV(N(a, v_a I), N(b, v_b I)) for any isotropic variances, via noncentral χ² laws.

    The set {p > q} is a ball (or its complement) when v_a ≠ v_b, and ‖X − c‖²/v is noncentral χ²_d.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    d = a.size
    delta2 = float(np.sum((a - b) ** 2))
    if var_a == var_b:
        return gaussian_tv_equal_variance(math.sqrt(delta2), math.sqrt(var_a))
    # Work in the frame where a = 0 and b = (Δ, 0, …); only distances to the centre c matter.
    if var_a > var_b:  # make p the narrower one (region {p > q} is then a ball)
        return gaussian_tv_isotropic(b, var_b, a, var_a)
    delta = math.sqrt(delta2)
    # log p − log q > 0  ⇔  ‖x − c‖² < r² with c on the segment's line (p = N(0, v_a), q = N(Δ e1, v_b)).
    ia, ib = 1.0 / var_a, 1.0 / var_b
    k = ia - ib  # > 0
    c = -ib * delta / k  # centre coordinate along e1
    # Solve: ia‖x‖² − ib‖x − Δe1‖² < d ln(v_b/v_a)  ⇔  k‖x‖² + 2 ib Δ x1 − ib Δ² < d ln(v_b/v_a)
    #  ⇔ ‖x − c e1‖² < c² + (ib Δ² + d ln(v_b/v_a)) / k.
    s = (ib * delta2 + d * math.log(var_b / var_a)) / k
    r2 = c * c + s
    if r2 <= 0:
        return 0.0
    # Under p: ‖x − c e1‖²/v_a ~ ncx2(d, c²/v_a); under q: ‖x − c e1‖²/v_b ~ ncx2(d, (Δ − c)²/v_b).
    nc_p, nc_q = c * c / var_a, (delta - c) ** 2 / var_b
    if max(nc_p, nc_q) <= _NCX2_EXACT_MAX:
        p_in = _ncx2_cdf(r2 / var_a, d, nc_p)
        q_in = _ncx2_cdf(r2 / var_b, d, nc_q)
    else:
        # Nearly equal variances push the ball's centre far away (c → ∞): scipy's series then takes
        # minutes or returns NaN. There ncx2(d, λ) ≈ N(d + λ, 2(d + 2λ)) with CDF error O(λ^{-1/2})
        # (≤ ~1e-6 past the threshold), and the distances to the mean are formed without cancellation:
        # r²/v_a − λ_p = s/v_a and r²/v_b − λ_q = (2cΔ − Δ² + s)/v_b.
        p_in = special.ndtr((s / var_a - d) / math.sqrt(2.0 * (d + 2.0 * nc_p)))
        q_in = special.ndtr(((2.0 * c * delta - delta2 + s) / var_b - d) / math.sqrt(2.0 * (d + 2.0 * nc_q)))
    return float(min(1.0, max(0.0, p_in - q_in)))


#: Largest noncentrality for scipy's exact noncentral χ² CDF (its cost grows like sqrt(λ): ~10 ms here).
_NCX2_EXACT_MAX = 1e10


def _ncx2_cdf(x: float, df: int, nc: float) -> float:
    # scipy.special's ufuncs directly (stats.ncx2.cdf wraps the same with much more overhead per call).
    return float(special.chdtr(df, x)) if nc <= 0 else float(special.chndtr(x, df, nc))


def gaussian_bc_isotropic(delta2: float, var_a: float, var_b: float, d: int) -> float:
    """Bhattacharyya coefficient of N(a, v_a I) and N(b, v_b I), `delta2` = ‖a − b‖², in dimension d."""
    vbar = 0.5 * (var_a + var_b)
    db = delta2 / (8.0 * vbar) + 0.5 * d * (math.log(vbar) - 0.5 * math.log(var_a) - 0.5 * math.log(var_b))
    return math.exp(-db)


def tv_arrays(p: np.ndarray, q: np.ndarray) -> float:
    """Exact TV = ½ Σ |p − q| of two aligned probability vectors."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def bc_arrays(p: np.ndarray, q: np.ndarray) -> float:
    """Exact Bhattacharyya coefficient Σ sqrt(p q) of two aligned probability vectors."""
    return float(np.sqrt(np.asarray(p) * np.asarray(q)).sum())


def _align(p: Mapping, q: Mapping) -> tuple[np.ndarray, np.ndarray]:
    keys = list(set(p) | set(q))
    return (
        np.array([p.get(k, 0.0) for k in keys], dtype=float),
        np.array([q.get(k, 0.0) for k in keys], dtype=float),
    )


def tv_exact(p: Mapping, q: Mapping) -> float:
    """Exact TV between two discrete laws given as {outcome: probability}.

    Example:
        Outcomes missing from one law count as probability 0 there:

        >>> import critwin as cw
        >>> cw.tv_exact({"a": 0.5, "b": 0.5}, {"a": 1.0})
        0.5
        >>> cw.tv_exact({(0, 0): 0.25, (0, 1): 0.75}, {(0, 1): 0.75, (0, 0): 0.25})
        0.0
    """
    return tv_arrays(*_align(p, q))


def bc_exact(p: Mapping, q: Mapping) -> float:
    """Exact Bhattacharyya coefficient between two discrete laws {outcome: probability}."""
    return bc_arrays(*_align(p, q))


class TVCurve(Protocol):
    """t ↦ TV(p^a_t, p^b_t), non-increasing in t. Window searches only use this interface.

    `exact`: values carry no error; `integer_t`: t ranges over 0, 1, …, t_max (truncation);
    `t_max`: largest meaningful t (inf for continuous processes).
    """

    exact: bool
    integer_t: bool
    t_max: float

    def __call__(self, t: float, se_target: float | None = None) -> TVEstimate: ...


@dataclass(frozen=True)
class ExactCurve:
    """A curve given by an exact function t ↦ value."""

    fn: Callable[[float], float]
    integer_t: bool = False
    t_max: float = math.inf
    exact: bool = True

    def __call__(self, t: float, se_target: float | None = None) -> TVEstimate:
        return TVEstimate(float(self.fn(t)), 0.0, 0)


@dataclass(frozen=True)
class ScaledCurve:
    """c · inner(t): used for the sub-mixture identity TV(p^a, p^b) = (W_{b∖a}/W_b) · TV(p^a, p^{b∖a})."""

    inner: TVCurve
    c: float

    @property
    def exact(self) -> bool:
        return self.inner.exact

    @property
    def integer_t(self) -> bool:
        return self.inner.integer_t

    @property
    def t_max(self) -> float:
        return self.inner.t_max

    def __call__(self, t: float, se_target: float | None = None) -> TVEstimate:
        # The inner curve must reach se_target / c so that the scaled one reaches se_target.
        inner_target = None if se_target is None or self.c == 0 else se_target / self.c
        return self.inner(t, inner_target).scaled(self.c)
