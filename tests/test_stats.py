"""Interval estimates against independent truth: scipy's binomial intervals, published examples, exact
coverage by enumerating the binomial law, and coverage simulations whose tolerances come from the number
of simulations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from critwin import windows
from critwin.errors import CritwinError
from critwin.stats import (
    auc_interval,
    auc_variance,
    clopper_pearson_interval,
    holm_reject,
    min_negatives,
    newcombe_interval,
    percentile_interval,
    quantile_ranks,
    tpr_at_fpr_interval,
    wilson_interval,
)


def test_old_import_paths_still_work():
    assert windows.newcombe_interval is newcombe_interval and windows.holm_reject is holm_reject


# ----------------------------------------------------------------------------------------------------------
# One proportion
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 5, 12, 15, 100])
def test_wilson_and_clopper_pearson_match_scipy(n):
    k = np.arange(n + 1)
    for level in (0.9, 0.95, 0.99):
        wl, wh = wilson_interval(k, n, level)
        cl, ch = clopper_pearson_interval(k, n, level)
        for i in k:
            w = stats.binomtest(int(i), n).proportion_ci(level, method="wilson")
            c = stats.binomtest(int(i), n).proportion_ci(level, method="exact")
            assert (wl[i], wh[i]) == pytest.approx((w.low, w.high), abs=1e-12)
            assert (cl[i], ch[i]) == pytest.approx((c.low, c.high), abs=1e-10)
    assert np.isnan(wilson_interval(0, 0)[0]) and np.isnan(clopper_pearson_interval(0, 0)[1])
    with pytest.raises(CritwinError, match="level"):
        wilson_interval(1, 2, 1.0)


def _exact_coverage(lo: np.ndarray, hi: np.ndarray, n: int, p: np.ndarray) -> np.ndarray:
    """P(lo(K) <= p <= hi(K)) for K ~ Binomial(n, p), exactly, for every p."""
    pmf = stats.binom.pmf(np.arange(n + 1)[None, :], n, p[:, None])
    inside = (lo[None, :] <= p[:, None]) & (p[:, None] <= hi[None, :])
    return (pmf * inside).sum(axis=1)


@pytest.mark.parametrize("n", [12, 15, 40])
def test_exact_coverage_of_the_proportion_intervals(n):
    """Coverage computed exactly from the binomial law (no simulation): Clopper-Pearson never below the
    nominal level; Wilson close to it on average over p (its minimum dips, a known property)."""
    p = np.linspace(0.001, 0.999, 999)
    k = np.arange(n + 1)
    cp = _exact_coverage(*clopper_pearson_interval(k, n, 0.95), n, p)
    wi = _exact_coverage(*wilson_interval(k, n, 0.95), n, p)
    assert cp.min() >= 0.95 - 1e-9
    assert abs(wi.mean() - 0.95) < 0.01
    # The percentile bootstrap of k/n is the law of Binomial(n, k/n)/n: at k = n it is the point {1}.
    boot = stats.binom.rvs(n, 1.0, size=1000, random_state=0) / n
    assert percentile_interval(boot, 0.95) == (1.0, 1.0)
    assert wilson_interval(n, n, 0.95)[0] < 1.0 and clopper_pearson_interval(n, n, 0.95)[0] < 1.0


def test_all_successes_closed_forms():
    """k = n: Wilson's lower end is n / (n + z²); Clopper-Pearson's is (α/2)^(1/n)."""
    z2 = stats.norm.ppf(0.975) ** 2
    for n in (1, 12, 15):
        assert float(wilson_interval(n, n, 0.95)[0]) == pytest.approx(n / (n + z2))
        assert float(clopper_pearson_interval(n, n, 0.95)[0]) == pytest.approx(0.025 ** (1 / n))


# ----------------------------------------------------------------------------------------------------------
# Two proportions, Holm
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("counts", "published"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10.
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
        ((0, 10, 0, 10), (-0.2775, 0.2775)),
        ((10, 10, 0, 20), (0.6791, 1.0000)),
        ((10, 10, 0, 10), (0.6075, 1.0000)),
    ],
)
def test_newcombe_interval_matches_the_published_table(counts, published):
    lo, hi = newcombe_interval(*counts, 0.95)
    assert (round(lo, 4), round(hi, 4)) == published


def test_newcombe_exact_coverage_at_small_n():
    """Coverage of the interval for p1 − p2 with 12 problems per group, computed exactly over the joint
    binomial law on a grid of (p1, p2): close to nominal on average, never far below it."""
    n1 = n2 = 12
    ci = np.array([[newcombe_interval(a, n1, b, n2, 0.95) for b in range(n2 + 1)] for a in range(n1 + 1)])
    grid = np.linspace(0.02, 0.98, 25)
    cov = []
    for p1 in grid:
        for p2 in grid:
            pmf = np.outer(stats.binom.pmf(range(n1 + 1), n1, p1), stats.binom.pmf(range(n2 + 1), n2, p2))
            d = p1 - p2
            cov.append(float((pmf * ((ci[..., 0] <= d) & (d <= ci[..., 1]))).sum()))
    cov = np.array(cov)
    assert abs(cov.mean() - 0.95) < 0.015 and cov.min() > 0.88
    with pytest.raises(CritwinError, match="at least one item"):
        newcombe_interval(0, 0, 1, 2, 0.95)


def test_holm_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=rng.integers(1, 12))
        order = np.argsort(p, kind="stable")
        # Reject the sorted p-values p_(1..r) where r is the first rank with p_(r) > alpha / (m - r + 1).
        m, alpha = len(p), 0.05
        r = next((i for i, j in enumerate(order) if p[j] > alpha / (m - i)), m)
        want = np.zeros(m, bool)
        want[order[:r]] = True
        assert np.array_equal(holm_reject(p, alpha), want)


# ----------------------------------------------------------------------------------------------------------
# AUROC
# ----------------------------------------------------------------------------------------------------------
def test_auc_interval_matches_a_published_example():
    """Newcombe's method 5 as implemented in the SingleCaseES R package (NAP of its documented example:
    A = 20 20 26 25 22 23, B = 28 25 24 27 30 30 29): NAP = 0.9167, 95% [0.5973, 0.9860], 90% [0.6591,
    0.9822]."""
    a = np.array([20, 20, 26, 25, 22, 23.0])
    b = np.array([28, 25, 24, 27, 30, 30, 29.0])
    auc = float(np.mean((b[:, None] > a[None, :]) + 0.5 * (b[:, None] == a[None, :])))
    assert auc == pytest.approx(0.9166666666666666)
    assert auc_interval(auc, 7, 6, 0.95) == pytest.approx((0.5973193600384168, 0.9859976893703788), abs=1e-9)
    assert auc_interval(auc, 7, 6, 0.90) == pytest.approx((0.6591091902344411, 0.9822247870934007), abs=1e-9)


def test_auc_variance_at_one_half_is_the_mann_whitney_null_variance():
    for m, n in ((3, 4), (10, 15), (100, 7)):
        assert float(auc_variance(0.5, m, n)) == pytest.approx((m + n + 1) / (12 * m * n))


def test_perfect_separation_on_few_rows_is_not_a_point_interval():
    lo, hi = auc_interval(1.0, 10, 15, 0.95)
    assert hi == 1.0 and 0.7 < lo < 0.9
    # lo solves (1 - θ)² = z² V(θ).
    assert (1 - lo) ** 2 == pytest.approx(stats.norm.ppf(0.975) ** 2 * float(auc_variance(lo, 10, 15)))
    assert auc_interval(0.0, 10, 15, 0.95) == pytest.approx((1 - hi, 1 - lo))
    with pytest.raises(CritwinError, match="needs positives"):
        auc_interval(0.5, 0, 3)


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "shift"), [(5, 5, 1.0), (10, 15, 1.0), (10, 15, 2.5), (30, 30, 0.5)]
)
def test_auc_interval_coverage_simulation(n_pos, n_neg, shift):
    """Binormal scores (true AUC Φ(shift/√2)); R simulated data sets. Tolerance: 4 binomial standard errors
    of a coverage estimated from R sets (measured: 0.95-0.97)."""
    reps = 1500
    truth = float(stats.norm.cdf(shift / np.sqrt(2)))
    rng = np.random.default_rng(n_pos * 100 + n_neg)
    hits = 0
    for _ in range(reps):
        pos, neg = rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)
        auc = float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))
        lo, hi = auc_interval(auc, n_pos, n_neg, 0.95)
        hits += lo <= truth <= hi
    tol = 4 * np.sqrt(0.95 * 0.05 / reps)
    assert 0.95 - tol <= hits / reps <= 0.95 + 0.03 + tol, hits / reps


# ----------------------------------------------------------------------------------------------------------
# TPR at a fixed FPR
# ----------------------------------------------------------------------------------------------------------
def test_min_negatives_and_the_resolution_argument():
    assert [min_negatives(f) for f in (0.01, 0.05, 0.1, 0.3)] == [100, 20, 10, 4]
    with pytest.raises(CritwinError):
        min_negatives(0.0)


@pytest.mark.parametrize(("n", "q"), [(15, 0.99), (20, 0.95), (100, 0.99), (200, 0.95), (1000, 0.99)])
def test_quantile_ranks_cover_at_least_the_level(n, q):
    """P(X_(r) <= ξ_q <= X_(s)) = P(r <= B <= s - 1) for B ~ Binomial(n, q), computed exactly."""
    r, s = quantile_ranks(n, q, 0.95)
    cdf = stats.binom.cdf
    lower_ok = 1.0 if r == 0 else 1 - cdf(r - 1, n, q)
    upper_ok = 1.0 if s == n + 1 else cdf(s - 1, n, q)
    assert lower_ok >= 0.975 - 1e-12 and upper_ok >= 0.975 - 1e-12
    # Tight: one rank inward would break a tail.
    if r > 0:
        assert 1 - cdf(r, n, q) < 0.975
    if 2 <= s <= n:
        assert cdf(s - 2, n, q) < 0.975


@pytest.mark.parametrize(("n_pos", "n_neg", "shift", "fpr"), [(30, 100, 2.0, 0.1), (50, 200, 1.5, 0.05)])
def test_tpr_interval_coverage_simulation(n_pos, n_neg, shift, fpr):
    """Binormal scores: TPR(f) = Φ(shift − Φ⁻¹(1 − f)). The interval is distribution-free and conservative:
    its coverage must not fall below the level (tolerance: 4 binomial standard errors of R sets)."""
    reps = 800
    truth = float(stats.norm.sf(stats.norm.isf(fpr) - shift))
    rng = np.random.default_rng(n_neg)
    hits = 0
    for _ in range(reps):
        pos, neg = rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)
        lo, hi = tpr_at_fpr_interval(neg, pos, fpr, 0.95)
        hits += lo <= truth <= hi
    assert hits / reps >= 0.95 - 4 * np.sqrt(0.95 * 0.05 / reps), hits / reps


def test_tpr_interval_with_too_few_negatives_has_no_lower_bound():
    """With 15 negatives the 99th percentile of the negatives cannot be bounded from above, so no
    positive can be shown to score above it: the interval starts at 0 even for perfect separation."""
    lo, hi = tpr_at_fpr_interval(np.arange(15.0), np.arange(10.0) + 100, 0.01, 0.95)
    assert lo == 0.0 and hi == 1.0
    with pytest.raises(CritwinError):
        tpr_at_fpr_interval([], [1.0], 0.1)
