"""Gaussian theory engine against closed forms, quadrature and its own Monte Carlo (DESIGN §1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from critwin.theory import (
    GaussianMixture,
    alpha_bar_from_ou_time,
    critical_window,
    ou_time_from_alpha_bar,
    pointwise_bound,
    staircase,
    t_after,
    t_before,
    theorem_bound,
)
from critwin.theory.montecarlo import GaussianMC
from critwin.theory.tv import ScaledCurve, gaussian_tv_isotropic
from critwin.theory.windows import first_below, last_above


def _pair(delta: float, d: int, w=(0.5, 0.5), var=(1.0, 1.0)) -> GaussianMixture:
    means = np.zeros((2, d))
    means[1, 0] = delta
    return GaussianMixture(means, list(var), list(w))


def _tv_quad_1d(pdf_p, pdf_q, lo, hi) -> float:
    """Independent truth: ½∫|p − q| by adaptive quadrature on a finite range holding all the mass."""
    val, err = integrate.quad(
        lambda x: abs(pdf_p(x) - pdf_q(x)), lo, hi, limit=400, epsabs=1e-12, epsrel=1e-12
    )
    return 0.5 * val


# ---- closed forms vs Monte Carlo ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 10, 100, 1000])
def test_equal_variance_closed_form_matches_monte_carlo(d):
    mix = _pair(2.0, d)
    for t in (0.0, 0.5, 1.5):
        exact = math.erf(math.exp(-t) * 2.0 / (2 * math.sqrt(2)))
        assert mix.tv([0], [1], t).value == pytest.approx(exact, abs=1e-12)
        mc = GaussianMC(mix.geometry, mix.sub_weights([0]), mix.sub_weights([1]), seed=d)(t, 0.003)
        assert mc.se <= 0.003
        assert abs(mc.value - exact) <= 4 * mc.se


@pytest.mark.parametrize("d", [1, 10, 100, 1000])
def test_unequal_variance_closed_form_matches_monte_carlo(d):
    # Variance ratios shrink with d so that the TV stays away from 1 and the comparison is informative.
    mix = _pair(1.5, d, var=(1.0, 1.0 + 2.0 / math.sqrt(d)))
    for t in (0.0, 0.7):
        exact = mix.tv([0], [1], t)
        assert exact.se == 0.0 and 0.05 < exact.value < 0.99
        mc = GaussianMC(mix.geometry, mix.sub_weights([0]), mix.sub_weights([1]), seed=7)(t, 0.003)
        assert abs(mc.value - exact.value) <= 4 * mc.se


def test_unequal_variance_closed_form_matches_quadrature():
    for a, va, b, vb in [(0.0, 1.0, 1.0, 2.5), (0.3, 3.0, -1.0, 0.4), (0.0, 1.0, 0.0, 1.7)]:
        exact = gaussian_tv_isotropic(np.array([a]), va, np.array([b]), vb)
        truth = _tv_quad_1d(stats.norm(a, math.sqrt(va)).pdf, stats.norm(b, math.sqrt(vb)).pdf, -40, 40)
        assert exact == pytest.approx(truth, abs=1e-9)


def test_bc_closed_form_matches_quadrature_and_monte_carlo():
    mix = _pair(1.3, 1, var=(1.0, 2.0))
    t = 0.4
    s, var = math.exp(-t), [math.exp(-2 * t) * v + 1 - math.exp(-2 * t) for v in (1.0, 2.0)]
    p, q = stats.norm(0, math.sqrt(var[0])).pdf, stats.norm(1.3 * s, math.sqrt(var[1])).pdf
    truth = integrate.quad(lambda x: math.sqrt(p(x) * q(x)), -40, 40, epsabs=1e-12)[0]
    assert mix.bc([0], [1], t).value == pytest.approx(truth, abs=1e-9)
    big = GaussianMixture(
        np.array([[0.0] * 50, [0.4] + [0.0] * 49, [0.0, 0.5] + [0.0] * 48]), [1, 1.1, 0.9], [0.3, 0.3, 0.4]
    )
    exact = big.bc([0], [2], 0.2)
    mc = GaussianMC(big.geometry, big.sub_weights([0]), big.sub_weights([2]), kind="bc", seed=3)(0.2, 0.003)
    assert abs(mc.value - exact.value) <= 4 * mc.se


def test_mixture_monte_carlo_matches_2d_quadrature():
    """A non-collinear 3-component mixture in 2-D (Monte Carlo path) against a fine 2-D grid integral."""
    mix = GaussianMixture([[0, 0], [2, 0], [0.5, 1.8]], [1.0, 0.6, 1.4], [0.3, 0.3, 0.4])
    t = 0.3
    est = mix.tv([0], [1, 2], t, se_target=0.003)
    assert est.se > 0 and est.se <= 0.003
    g = np.linspace(-10, 10, 801)
    xx, yy = np.meshgrid(g, g)
    pts = np.column_stack([xx.ravel(), yy.ravel()])
    p = np.exp(mix.log_density(pts, t, [0]))
    q = np.exp(mix.log_density(pts, t, [1, 2]))
    truth = 0.5 * np.abs(p - q).sum() * (g[1] - g[0]) ** 2
    assert abs(est.value - truth) <= 4 * est.se


def test_collinear_exact_path_matches_quadrature():
    mix = GaussianMixture([[0, 0], [1, 0], [4, 0]], [1, 1, 1], [0.25, 0.25, 0.5])
    for t in (0.0, 0.6):
        est = mix.tv([0, 1], [2], t)
        assert est.se == 0.0
        s = math.exp(-t)

        def p(x, s=s):
            return 0.5 * stats.norm.pdf(x, 0, 1) + 0.5 * stats.norm.pdf(x, s, 1)

        def q(x, s=s):
            return stats.norm.pdf(x, 4 * s, 1)

        assert est.value == pytest.approx(_tv_quad_1d(p, q, -30, 30), abs=1e-9)


def test_collinear_exact_path_far_apart_groups():
    """Crossings in the wide gap between far groups (unequal weights shift them) are still found exactly."""
    mix = GaussianMixture([[0.0], [3.0], [5000.0]], 1.0, [0.1, 0.6, 0.3])
    for t in (0.0, 5.0, 8.0):
        s = math.exp(-t)
        est = mix.tv([0, 1], [2], t)

        def p(x, s=s):
            return (0.1 * stats.norm.pdf(x, 0, 1) + 0.6 * stats.norm.pdf(x, 3 * s, 1)) / 0.7

        def q(x, s=s):
            return stats.norm.pdf(x, 5000 * s, 1)

        # Truth: split the line at the sign changes of p − q (dense scan), integrate p − q on each piece.
        xs = np.linspace(-60.0, 5000 * s + 60.0, 2_000_001)
        v = p(xs) - q(xs)
        cuts = np.flatnonzero(np.sign(v[:-1]) != np.sign(v[1:]))
        pts = [
            -60.0,
            *[optimize.brentq(lambda x: p(x) - q(x), xs[i], xs[i + 1]) for i in cuts],
            5000 * s + 60.0,
        ]
        truth = 0.5 * sum(
            abs(integrate.quad(lambda x: p(x) - q(x), a, b, epsabs=1e-14, limit=500)[0])
            for a, b in zip(pts, pts[1:], strict=False)
        )
        assert est.se == 0.0
        assert est.value == pytest.approx(truth, abs=1e-10)


def test_sub_mixture_identity():
    mix = GaussianMixture([[0, 0], [1.5, 0], [0, 3]], [1, 1, 1], [0.2, 0.3, 0.5])
    for t in (0.0, 1.0):
        exact = (0.3 / 0.5) * math.erf(math.exp(-t) * 1.5 / (2 * math.sqrt(2)))
        assert mix.tv([0], [0, 1], t).value == pytest.approx(exact, abs=1e-12)
        assert mix.tv([0, 1], [0], t).value == pytest.approx(exact, abs=1e-12)
    assert mix.tv([0, 2], [0, 2], 0.3).value == 0.0


# ---- window edges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delta,d,eps,w", [(6.0, 1, 0.1, 0.5), (30.0, 50, 0.05, 0.3), (200.0, 1000, 0.2, 0.6)]
)
def test_two_gaussian_edges_match_closed_forms(delta, d, eps, w):
    mix = _pair(delta, d, w=(1 - w, w))
    w2 = w  # renormalised weight of component 1 inside {0, 1}
    tb = t_before(mix, eps, [0], [0, 1])
    assert tb.exact
    assert tb.t == pytest.approx(math.log(delta / (2 * math.sqrt(2) * special.erfinv(eps / w2))), abs=1e-6)
    ta = t_after(mix, eps, [0])
    assert ta.t == pytest.approx(math.log(delta / (2 * math.sqrt(2) * special.erfinv(1 - eps**2))), abs=1e-6)
    # The window width is log(erfinv(1 − ε²)/erfinv(ε/w'_2)): independent of the separation and of d.
    win = critical_window(mix, eps, [0], [0, 1])
    assert win.width == pytest.approx(
        math.log(special.erfinv(1 - eps**2) / special.erfinv(eps / w2)), abs=1e-6
    )


def test_edges_trivial_cases():
    mix = _pair(3.0, 2, w=(0.95, 0.05))
    assert t_before(mix, 0.1, [0], [0, 1]).t == 0.0  # TV ≤ w'_2 = 0.05 < ε from the start
    assert t_after(_pair(0.5, 2), 0.1, [0]) is None  # never separated to 1 − ε²
    assert math.isinf(t_after(mix, 0.1, [0, 1]).t)  # no rest
    assert t_before(mix, 0.1, [0, 1], [0, 1]).t == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_monte_carlo_edges_cover_closed_forms(seed):
    delta, eps = 8.0, 0.1
    mix = _pair(delta, 20, w=(0.5, 0.5))
    geom = mix.geometry
    inner = GaussianMC(geom, mix.sub_weights([0]), mix.sub_weights([1]), seed=seed)
    tb = first_below(ScaledCurve(inner, 0.5), eps)
    truth_b = math.log(delta / (2 * math.sqrt(2) * special.erfinv(eps / 0.5)))
    assert tb.lo < tb.hi and tb.lo <= truth_b <= tb.hi and tb.lo <= tb.t <= tb.hi
    assert tb.hi - tb.lo < 0.2
    ta = last_above(GaussianMC(geom, mix.sub_weights([0]), mix.sub_weights([1]), seed=seed + 10), 1 - eps**2)
    truth_a = math.log(delta / (2 * math.sqrt(2) * special.erfinv(1 - eps**2)))
    assert ta.lo <= truth_a <= ta.hi


def test_mixture_edges_bracket_the_monte_carlo_curve():
    """MC edges of a non-collinear mixture: TV is confidently above ε before lo and below after hi."""
    mix = GaussianMixture([[0, 0], [4, 0], [30, 0], [30, 5]], [1, 1.2, 1, 0.8], [0.25] * 4)
    e = t_before(mix, 0.1, [0, 1], [0, 1, 2, 3], seed=5)
    assert not e.exact and e.lo <= e.t <= e.hi
    before = mix.tv([0, 1], [0, 1, 2, 3], max(0.0, e.lo - 0.05), seed=99, se_target=0.002)
    after = mix.tv([0, 1], [0, 1, 2, 3], e.hi + 0.05, seed=99, se_target=0.002)
    assert before.value > 0.1 > after.value


def test_staircase_windows_are_disjoint_for_separated_scales():
    mix = GaussianMixture(
        [[-100, -4], [-100, 4], [100, -4], [100, 4]], 1.0, [0.25] * 4, labels="a b c d".split()
    )
    fine, coarse = staircase(mix, 0.1, [["a"], ["a", "b"], ["a", "b", "c", "d"]])
    assert fine.hi.hi < coarse.lo.lo
    assert fine.hi.t == pytest.approx(math.log(8 / (2 * math.sqrt(2) * special.erfinv(0.2))), abs=1e-6)


def test_theorem_bound_value():
    mix = GaussianMixture([[0], [1], [9]], 1.0, [0.2, 0.3, 0.5])
    assert theorem_bound(0.1, mix, [0, 1]) == pytest.approx(0.1 * (1 + math.sqrt(0.5 / (2 * 0.5))))
    assert theorem_bound(0.1, mix, [0, 1, 2]) == pytest.approx(0.1)


def test_pointwise_bound_holds_for_sampled_forward_reverse():
    """FR_t for a 1-D mixture (exact posterior sampling) stays within the pointwise bound at several t."""
    mix = GaussianMixture([[0.0], [1.0], [6.0]], 1.0, [0.3, 0.3, 0.4])
    rng = np.random.default_rng(0)
    for t in (0.2, 0.8, 2.0):
        x = mix.sample(40_000, rng, sel=[0])
        y = math.exp(-t) * x + math.sqrt(1 - math.exp(-2 * t)) * rng.standard_normal(x.shape)
        xr = mix.sample_posterior(y, t, rng)
        # TV between the FR histogram and p^init (exact cell probabilities), both on the same fine bins.
        edges = np.linspace(-8, 14, 221)
        hist = np.histogram(xr[:, 0], bins=edges)[0] / len(xr)
        cdf = 0.5 * stats.norm.cdf(edges, 0, 1) + 0.5 * stats.norm.cdf(edges, 1, 1)
        tv_binned = 0.5 * np.abs(hist - np.diff(cdf)).sum()
        bound = pointwise_bound(mix, t, [0], [0, 1]).value
        # Binned TV ≤ TV; sampling noise of the histogram is ≤ ~0.02 here.
        assert tv_binned <= bound + 0.02


def test_sample_posterior_preserves_the_data_law():
    mix = GaussianMixture([[0.0, 0.0], [3.0, 1.0]], [1.0, 0.5], [0.4, 0.6])
    rng = np.random.default_rng(1)
    x = mix.sample(60_000, rng)
    t = 0.7
    y = math.exp(-t) * x + math.sqrt(1 - math.exp(-2 * t)) * rng.standard_normal(x.shape)
    xr = mix.sample_posterior(y, t, rng)
    mean = 0.4 * np.array([0, 0]) + 0.6 * np.array([3.0, 1.0])
    assert np.allclose(xr.mean(axis=0), mean, atol=0.03)
    assert np.allclose(xr.mean(axis=0), x.mean(axis=0), atol=0.04)
    assert abs(xr[:, 0].var() - x[:, 0].var()) < 0.08


def test_score_matches_finite_differences():
    mix = GaussianMixture([[0.0, 0.0, 1.0], [2.0, -1.0, 0.0]], [1.0, 0.3], [0.5, 0.5])
    x = np.random.default_rng(2).normal(size=(5, 3))
    t, h = 0.4, 1e-6
    num = np.stack(
        [(mix.log_density(x + h * e, t) - mix.log_density(x - h * e, t)) / (2 * h) for e in np.eye(3)], 1
    )
    assert np.allclose(mix.score(x, t), num, atol=1e-5)


def test_ddpm_alpha_bar_mapping():
    assert ou_time_from_alpha_bar(1.0) == 0.0
    assert ou_time_from_alpha_bar(math.exp(-2.0)) == pytest.approx(1.0)
    ab = np.array([0.9999, 0.5, 1e-4])
    assert np.allclose(alpha_bar_from_ou_time(ou_time_from_alpha_bar(ab)), ab)
    # OU at time t has signal scale sqrt(ᾱ) and noise variance 1 − ᾱ.
    t = ou_time_from_alpha_bar(0.3)
    assert math.exp(-t) == pytest.approx(math.sqrt(0.3))


def test_monte_carlo_is_seeded():
    mix = GaussianMixture([[0, 0], [2, 0], [0, 2]], 1.0, [0.3, 0.3, 0.4])
    a = mix.tv([0], [1, 2], 0.5, seed=4)
    b = mix.tv([0], [1, 2], 0.5, seed=4)
    c = mix.tv([0], [1, 2], 0.5, seed=5)
    assert a == b and a.value != c.value


def test_restrict_and_forward_push():
    mix = GaussianMixture([[0.0, 1.0], [2.0, 0.0], [5.0, 5.0]], [1.0, 2.0, 0.5], [0.2, 0.3, 0.5])
    sub = mix.restrict([2, 0])
    assert sub.labels == ("0", "2") and np.allclose(sub.weights, [0.2 / 0.7, 0.5 / 0.7])
    x = np.random.default_rng(0).normal(size=(4, 2))
    assert np.allclose(sub.log_density(x, 0.3), mix.log_density(x, 0.3, [0, 2]))
    at = mix.at(0.5)  # p_t in closed form: means e^{-t} μ, variances e^{-2t} σ² + 1 − e^{-2t}
    assert np.allclose(at.means, math.exp(-0.5) * mix.means)
    assert np.allclose(at.variances, math.exp(-1.0) * mix.variances + 1 - math.exp(-1.0))
    assert np.allclose(at.log_density(x), mix.log_density(x, 0.5))


@pytest.mark.parametrize("gap", [1e-5, 1e-8, 1e-11])
def test_nearly_equal_variances_stay_exact(gap, monkeypatch):
    # At large OU times the two variances agree to ~1e-11: the ball {p > q} moves out to distance ~1/gap
    # and scipy's noncentral χ² series would take minutes (or give NaN). The value must tend to the
    # equal-variance erf form, and the large-noncentrality branch must agree with the exact series.
    from critwin.theory import tv as tv_mod

    d = 98
    a, b = np.zeros(d), np.zeros(d)
    b[0] = 0.5
    got = tv_mod.gaussian_tv_isotropic(a, 1.0 - gap, b, 1.0)
    # |TV(v_a) − TV(1)| ≤ TV(N(0, (1−gap)I), N(0, I)) ≤ sqrt(d/2)·gap (Pinsker with KL ≈ d·gap²/4).
    assert abs(got - tv_mod.gaussian_tv_equal_variance(0.5, 1.0)) <= np.sqrt(d / 2) * gap + 1e-9
    if gap >= 1e-5:  # both branches are usable here: they must agree
        monkeypatch.setattr(tv_mod, "_NCX2_EXACT_MAX", 0.0)
        assert tv_mod.gaussian_tv_isotropic(a, 1.0 - gap, b, 1.0) == pytest.approx(got, abs=1e-8)
