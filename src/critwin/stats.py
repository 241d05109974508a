"""Interval estimates and multiple-testing corrections that stay honest at small sample sizes.

Everything here is a function of counts or scores only (no critwin types), so every layer can use it:

- `wilson_interval`, `clopper_pearson_interval`: a binomial proportion k/n (vectorised). Neither collapses
  to a point at k = 0 or k = n (a percentile bootstrap gives [1, 1] for 12 successes out of 12).
- `confidence_sequence`: a proportion whose number of draws was chosen by looking at the data (anytime-valid,
  beta-binomial mixture).
- `newcombe_interval`: a difference of two independent proportions (Newcombe 1998, method 10).
- `holm_reject`: Holm's step-down procedure (family-wise error rate).
- `auc_interval`: the area under the ROC curve, θ = P(pos > neg) + ½ P(pos = neg) (Newcombe 2006, method 5).
- `tpr_at_fpr_interval`: the true-positive rate of the threshold whose false-positive rate is f, with the
  threshold's own uncertainty (order-statistic interval for the quantile of the negatives, Clopper–Pearson
  at its ends, Bonferroni), plus `min_negatives` for the number of negatives a target FPR needs at all.
- `percentile_interval`: the percentile interval of bootstrap draws (for comparisons only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

from critwin.errors import CritwinError


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise CritwinError(f"level={level} must lie strictly between 0 and 1 (e.g. 0.95)")


# ----------------------------------------------------------------------------------------------------------
# One proportion
# ----------------------------------------------------------------------------------------------------------
def wilson_interval(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion k/n at confidence `level` (vectorised).

    Same numbers as `scipy.stats.binomtest(k, n).proportion_ci(level, "wilson")`; NaN where n == 0.

    Example:
        12 successes out of 12 do not give the point [1, 1]; arrays give one interval per entry:

        >>> from critwin.stats import wilson_interval
        >>> lo, hi = wilson_interval(12, 12)
        >>> round(float(lo), 4), float(hi)
        (0.7575, 1.0)
        >>> lo, hi = wilson_interval([0, 5, 10], [10, 10, 10])
        >>> lo.round(4).tolist(), hi.round(4).tolist()
        ([0.0, 0.2366, 0.7225], [0.2775, 0.7634, 1.0])
    """
    _check_level(level)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    z = stats.norm.ppf(0.5 + level / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return lo, hi


def clopper_pearson_interval(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson ("exact") interval for k/n (vectorised): coverage at least `level` for every p.

    Beta quantiles: lo = B⁻¹(α/2; k, n − k + 1) (0 when k = 0), hi = B⁻¹(1 − α/2; k + 1, n − k) (1 when
    k = n); the same numbers as `scipy.stats.binomtest(k, n).proportion_ci(level, "exact")`. NaN where n == 0.

    Example:
        At k = n the lower end is (α/2)^{1/n}, here 0.025^{1/12}; wider than Wilson's [0.7575, 1]:

        >>> from critwin.stats import clopper_pearson_interval
        >>> lo, hi = clopper_pearson_interval(12, 12)
        >>> round(float(lo), 4), float(hi), round(0.025 ** (1 / 12), 4)
        (0.7354, 1.0, 0.7354)
    """
    _check_level(level)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    a = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(a, np.maximum(k, 1e-300), n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - a, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    bad = ~(n > 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def confidence_sequence(
    k: Any, n: Any, level: float = 0.95, prior: tuple[float, float] = (0.5, 0.5)
) -> tuple[np.ndarray, np.ndarray]:
    """Anytime-valid interval for a binomial proportion: P(p leaves the interval at ANY n) <= 1 − level.

    The beta-binomial mixture confidence sequence (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49): with a Beta(a, b)
    mixture over the alternative, M_n(p) = B(a + k, b + n − k) / (B(a, b) p^k (1 − p)^(n − k)) is a
    nonnegative martingale under p, so by Ville's inequality {p : M_n(p) < 1/α} covers p at every n at
    once. It stays valid when the number of draws was chosen by looking at the data (sequential sampling,
    adaptive stopping), where a fixed-n interval such as Wilson's does not; the price is a wider interval
    (about 1.5–2× at n in the tens). Vectorised; NaN where n == 0; [0, 1] where nothing is excluded.

    Example:
        12 out of 12 at 95%: wider than Wilson's [0.7575, 1] because it holds at every n, not just at 12;
        the bounds are where the mixture martingale reaches 1/α:

        >>> import math
        >>> from scipy.special import betaln
        >>> from critwin.stats import confidence_sequence
        >>> lo, hi = confidence_sequence(12, 12, 0.95)
        >>> round(float(lo), 4), float(hi)
        (0.6692, 1.0)
        >>> log_m = float(betaln(12.5, 0.5) - betaln(0.5, 0.5)) - 12 * math.log(float(lo))
        >>> round(log_m, 6) == round(math.log(20), 6)
        True
    """
    _check_level(level)
    a, b = (float(v) for v in prior)
    if not (a > 0 and b > 0):
        raise CritwinError(f"confidence_sequence: prior={prior!r} needs two positive Beta parameters")
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    lo = np.full(k_arr.shape, np.nan)
    hi = np.full(k_arr.shape, np.nan)
    log_thr = math.log(1.0 / (1.0 - level))
    for idx in np.ndindex(k_arr.shape):
        kk, nn = float(k_arr[idx]), float(n_arr[idx])
        if not nn > 0:
            continue
        lo[idx], hi[idx] = _cs_bounds(kk, nn, a, b, log_thr)
    return lo, hi


def _cs_bounds(k: float, n: float, a: float, b: float, log_thr: float) -> tuple[float, float]:
    """Roots of log M_n(p) = log(1/α) on either side of the mixture's maximum (p̂ = k/n)."""
    from scipy.special import betaln, xlog1py, xlogy

    log_mix = betaln(a + k, b + n - k) - betaln(a, b)

    def excess(p: float) -> float:  # log M_n(p) − log(1/α): > 0 where p is excluded
        return log_mix - xlogy(k, p) - xlog1py(n - k, -p) - log_thr

    p_hat = k / n  # M_n(p̂) <= 1 < 1/α: p̂ is never excluded, so each side has at most one root
    lo = 0.0
    if k > 0 and excess(1e-300) > 0:
        lo = float(optimize.brentq(excess, 1e-300, p_hat, xtol=1e-12))
    hi = 1.0
    if k < n and excess(1.0 - 1e-16) > 0:
        hi = float(optimize.brentq(excess, p_hat, 1.0 - 1e-16, xtol=1e-12))
    return lo, hi


def _one_sided_cp(k: int, n: int, alpha: float, side: str) -> float:
    """One-sided Clopper–Pearson bound at error `alpha` (side "lower" or "upper")."""
    if side == "lower":
        return 0.0 if k <= 0 else float(stats.beta.ppf(alpha, k, n - k + 1))
    return 1.0 if k >= n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))


# ----------------------------------------------------------------------------------------------------------
# Two proportions, many tests
# ----------------------------------------------------------------------------------------------------------
def newcombe_interval(k1: int, n1: int, k2: int, n2: int, level: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 − p2 = k1/n1 − k2/n2 at confidence `level`.

    Newcombe (1998), "Interval estimation for the difference between independent proportions: comparison
    of eleven methods", Statistics in Medicine 17:873–890, method 10: built from the two Wilson intervals
    (l_i, u_i) as [d − √((p1 − l1)² + (u2 − p2)²), d + √((u1 − p1)² + (p2 − l2)²)]. Unlike the Wald
    interval it stays inside [−1, 1] and does not collapse when a proportion is 0 or 1.

    Example:
        Newcombe's own example, 56/70 − 48/80 = 0.2 (he reports 0.0524 to 0.3339):

        >>> from critwin.stats import newcombe_interval
        >>> lo, hi = newcombe_interval(56, 70, 48, 80, level=0.95)
        >>> round(lo, 4), round(hi, 4)
        (0.0524, 0.3339)
    """
    if n1 <= 0 or n2 <= 0:
        raise CritwinError(f"newcombe_interval: both groups need at least one item (n1={n1}, n2={n2})")
    l1, u1 = (float(v) for v in wilson_interval(k1, n1, level))
    l2, u2 = (float(v) for v in wilson_interval(k2, n2, level))
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    return (d - float(np.hypot(p1 - l1, u2 - p2)), d + float(np.hypot(u1 - p1, p2 - l2)))


def holm_reject(p_values: Any, alpha: float) -> np.ndarray:
    """Holm's step-down procedure: which hypotheses to reject at family-wise error rate alpha.

    Example:
        Sorted p-values 0.005 ≤ 0.05/4 and 0.01 ≤ 0.05/3 are rejected; 0.03 > 0.05/2 stops the procedure:

        >>> from critwin.stats import holm_reject
        >>> holm_reject([0.01, 0.04, 0.03, 0.005], alpha=0.05).tolist()
        [True, False, False, True]
    """
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    reject = np.zeros(m, dtype=bool)
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject


# ----------------------------------------------------------------------------------------------------------
# Area under the ROC curve
# ----------------------------------------------------------------------------------------------------------
def auc_variance(theta: Any, n_pos: int, n_neg: int) -> np.ndarray:
    """Newcombe's (2006) modified Hanley–McNeil variance of the empirical AUC at true value θ:

    V(θ) = θ(1 − θ)/(m n) · [1 + (N* − 1)(1 − θ)/(2 − θ) + (N* − 1) θ/(1 + θ)],  N* = (m + n)/2.

    At θ = ½ it equals the exact null variance of the Mann–Whitney statistic, (m + n + 1)/(12 m n).

    Example:
        >>> from critwin.stats import auc_variance
        >>> round(float(auc_variance(0.5, 10, 15)), 12), round((10 + 15 + 1) / (12 * 10 * 15), 12)
        (0.014444444444, 0.014444444444)
    """
    t = np.asarray(theta, dtype=float)
    half = (n_pos + n_neg) / 2.0 - 1.0
    return t * (1 - t) / (n_pos * n_neg) * (1 + half * (1 - t) / (2 - t) + half * t / (1 + t))


def auc_interval(auc: float, n_pos: int, n_neg: int, level: float = 0.95) -> tuple[float, float]:
    """Score-type interval for the AUC θ = P(pos > neg) + ½ P(pos = neg) at confidence `level`.

    Newcombe (2006), "Confidence intervals for an effect size measure based on the Mann–Whitney statistic.
    Part 2: asymptotic methods and evaluation", Statistics in Medicine 25:559–573, method 5: the set of θ
    with (AUC − θ)² ≤ z² V(θ), V the modified Hanley–McNeil variance (`auc_variance`); its ends are the two
    roots, found by bracketing. Because V(θ) → 0 only at θ = 0, 1, the interval never collapses to a point
    (AUC = 1 on 10 + 15 rows gives [0.83, 1]), and in Newcombe's evaluation its coverage stays close to
    nominal down to very small samples, where Wald and bootstrap intervals fail. The same numbers as the
    SingleCaseES R package's NAP interval (which implements this method).

    Example:
        A perfect separation of 10 positives from 15 negatives still leaves room below 1:

        >>> from critwin.stats import auc_interval
        >>> lo, hi = auc_interval(1.0, n_pos=10, n_neg=15)
        >>> round(lo, 4), hi
        (0.8322, 1.0)
        >>> [round(v, 4) for v in auc_interval(0.5, 10, 15)]
        [0.29, 0.71]
    """
    _check_level(level)
    if n_pos < 1 or n_neg < 1:
        raise CritwinError(f"auc_interval: needs positives and negatives (n_pos={n_pos}, n_neg={n_neg})")
    if not 0.0 <= auc <= 1.0:
        raise CritwinError(f"auc={auc} must lie in [0, 1]")
    z2 = stats.norm.ppf(0.5 + level / 2.0) ** 2

    def excess(t: float) -> float:
        return (auc - t) ** 2 - z2 * float(auc_variance(t, n_pos, n_neg))

    # excess < 0 at the estimate (just inside it at AUC = 0 or 1, where excess(AUC) = 0 is the trivial root),
    # excess(0) = AUC² > 0 and excess(1) = (1 − AUC)² > 0: one root on each side.
    inner = min(max(auc, 1e-12), 1.0 - 1e-12)
    lo = 0.0 if auc <= 0.0 else optimize.brentq(excess, 0.0, inner, xtol=1e-14)
    hi = 1.0 if auc >= 1.0 else optimize.brentq(excess, inner, 1.0, xtol=1e-14)
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------------------
# TPR at a fixed FPR
# ----------------------------------------------------------------------------------------------------------
def min_negatives(fpr: float) -> int:
    """Negatives needed before "TPR at FPR `fpr`" means anything: n_neg ≥ 1/fpr, so that at least one
    negative may score above the threshold (with fewer, FPR moves in steps of 1/n_neg > fpr and the only
    threshold allowed is "above every negative", whatever the target).

    Example:
        >>> from critwin.stats import min_negatives
        >>> min_negatives(0.01), min_negatives(0.05)
        (100, 20)
    """
    if not 0.0 < fpr < 1.0:
        raise CritwinError(f"fpr={fpr} must lie in (0, 1)")
    return int(math.ceil(1.0 / fpr - 1e-9))


def quantile_ranks(n: int, q: float, level: float) -> tuple[int, int]:
    """Ranks (r, s), 1-based, of the distribution-free interval [X_(r), X_(s)] for the q-quantile of n
    i.i.d. values: P(X_(r) ≤ ξ_q ≤ X_(s)) ≥ `level` (equal tails, from Binomial(n, q); any distribution).

    r = 0 stands for −∞ and s = n + 1 for +∞ (too few values to bound that side).

    Example:
        The median of 100 values lies between the 40th and the 61st smallest with probability ≥ 95%; the
        0.99-quantile of 10 values has no upper bound (s = 11 = n + 1):

        >>> from critwin.stats import quantile_ranks
        >>> quantile_ranks(100, 0.5, 0.95), quantile_ranks(10, 0.99, 0.95)
        ((40, 61), (9, 11))
    """
    _check_level(level)
    a = (1.0 - level) / 2.0
    cdf = stats.binom.cdf(np.arange(n + 1), n, q)
    # P(X_(r) ≤ ξ) ≥ P(B ≥ r) = 1 − cdf(r − 1): the largest r with cdf(r − 1) ≤ a.
    below = np.flatnonzero(cdf <= a)
    r = int(below[-1]) + 1 if below.size else 0
    # P(X_(s) ≥ ξ) ≥ P(B ≤ s − 1) = cdf(s − 1): the smallest s with cdf(s − 1) ≥ 1 − a.
    above = np.flatnonzero(cdf >= 1.0 - a)
    s = int(above[0]) + 1 if above.size else n + 1
    return r, min(s, n + 1)


def tpr_at_fpr_interval(
    neg: Sequence[float], pos: Sequence[float], fpr: float, level: float = 0.95
) -> tuple[float, float]:
    """Distribution-free interval at confidence ≥ `level` for TPR(f) = P(pos > τ_f), τ_f the threshold with
    false-positive rate f (the (1 − f)-quantile of the negatives' scores).

    The threshold is estimated from the negatives, so its uncertainty is part of the interval: with
    [X_(r), X_(s)] the order-statistic interval for τ_f at level 1 − α/2 (`quantile_ranks`) and TPR(τ)
    non-increasing in τ, TPR(X_(s)) ≤ TPR(f) ≤ TPR(X_(r)); the ends are one-sided Clopper–Pearson bounds
    (α/4 each) of the positives scoring above X_(s) and above X_(r). Bonferroni over the three events gives
    coverage ≥ 1 − α for any score distributions (ties included); it is conservative, and with few
    negatives the lower end is 0: the data cannot bound how far past f the threshold's FPR lies.

    Example:
        Negatives score 0..99 and positives 50..149: at FPR 10% the threshold is about 89.5, so the true
        TPR is 0.6, inside the interval:

        >>> from critwin.stats import tpr_at_fpr_interval
        >>> lo, hi = tpr_at_fpr_interval(neg=range(100), pos=range(50, 150), fpr=0.1)
        >>> round(lo, 4), round(hi, 4)
        (0.4138, 0.7722)
    """
    neg = np.sort(np.asarray(neg, dtype=float))
    pos = np.asarray(pos, dtype=float)
    if len(neg) < 1 or len(pos) < 1:
        raise CritwinError("tpr_at_fpr_interval: needs at least one negative and one positive score")
    _check_level(level)
    alpha = 1.0 - level
    r, s = quantile_ranks(len(neg), 1.0 - fpr, 1.0 - alpha / 2.0)
    n1 = len(pos)
    # Positives above X_(s) (none above +∞) and above X_(r) (all above −∞).
    k_hi_thr = 0 if s > len(neg) else int(np.sum(pos > neg[s - 1]))
    k_lo_thr = n1 if r < 1 else int(np.sum(pos > neg[r - 1]))
    return _one_sided_cp(k_hi_thr, n1, alpha / 4, "lower"), _one_sided_cp(k_lo_thr, n1, alpha / 4, "upper")


# ----------------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------------
def percentile_interval(samples: Any, level: float) -> tuple[float, float] | None:
    """Equal-tailed percentile interval of bootstrap draws (non-finite draws left out); None if none.

    For comparisons only: at small n it collapses to a point whenever every resample gives the same value
    (e.g. [1, 1] when all 12 answers are right), so critwin's reported intervals use the methods above.

    Example:
        >>> from critwin.stats import percentile_interval
        >>> percentile_interval([1.0] * 12, 0.95)
        (1.0, 1.0)
        >>> [round(v, 6) for v in percentile_interval(range(101), 0.9)]
        [5.0, 95.0]
        >>> percentile_interval([float("nan")], 0.9) is None
        True
    """
    _check_level(level)
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    a = (1.0 - level) / 2.0
    return float(np.quantile(x, a)), float(np.quantile(x, 1.0 - a))
