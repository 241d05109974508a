"""Gaussian-mixture diffusion testbed: exact score, exact posterior, exact curve, and the acceptance
checks (coverage of the exact curve, window locations) for the exact and the numerical sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from critwin.curves import scan
from critwin.errors import CritwinError
from critwin.experiments.demo import EPS, demo_mixture
from critwin.features.base import MixtureClass
from critwin.samplers.gaussian import (
    GaussianMixtureSampler,
    check_partition,
    classify,
    exact_curve,
    posterior_sample,
    score,
)
from critwin.theory import GaussianMixture, staircase
from critwin.windows import detect_windows, window_agreement

TS = np.round(np.arange(0.0, 8.0 + 1e-9, 0.1), 10)


def log_p_t(mix: GaussianMixture, y: np.ndarray, t: float) -> np.ndarray:
    """Independent log density of the OU-pushed mixture (scipy.stats)."""
    a = math.exp(-t)
    var = a * a * mix.variances + 1 - a * a
    comps = [
        stats.multivariate_normal(a * mix.means[k], var[k] * np.eye(mix.dim)).logpdf(y)
        + math.log(mix.weights[k])
        for k in range(mix.n_components)
    ]
    return special.logsumexp(np.stack(comps, axis=-1), axis=-1)


def test_score_is_the_gradient_of_the_log_density():
    mix = GaussianMixture([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]], [1.0, 0.5, 2.0], [0.2, 0.5, 0.3])
    rng = np.random.default_rng(0)
    y = rng.normal(size=(5, 2)) * 2
    for t in (0.05, 0.7, 3.0):
        h = 1e-5
        fd = np.stack(
            [(log_p_t(mix, y + h * e, t) - log_p_t(mix, y - h * e, t)) / (2 * h) for e in np.eye(2)], axis=1
        )
        assert np.allclose(score(mix, y, t), fd, atol=1e-6)


def test_posterior_sample_of_one_gaussian_has_the_conjugate_law():
    mix = GaussianMixture([[2.0]], [0.5], [1.0])
    t, y = 0.4, 1.3
    a = math.exp(-t)
    # prior N(2, 0.5), likelihood y | x ~ N(a x, 1 - a^2): posterior by hand
    prec = 1 / 0.5 + a * a / (1 - a * a)
    mean = (2 / 0.5 + a * y / (1 - a * a)) / prec
    draws = posterior_sample(mix, np.full((200_000, 1), y), np.full(200_000, t), np.random.default_rng(1))
    assert draws.mean() == pytest.approx(mean, abs=4 * math.sqrt(1 / prec / 200_000))
    assert draws.var() == pytest.approx(1 / prec, rel=0.02)


def test_exact_curve_quadrature_matches_scipy_quad():
    mix = demo_mixture()
    part = check_partition(mix, None)
    x0 = mix.means[0] + 0.4
    ex = exact_curve(mix, x0, [0.3, 1.2, 6.0])
    # independent: double integral over y and x' of p(y | x0) p(x' | y) 1[class(x') = A1]
    ref_class = classify(mix, x0[None], part)[0]
    mu, var, w = mix.means[:, 0], mix.variances, mix.weights
    for t, value in zip([0.3, 1.2, 6.0], ex.p, strict=True):
        a = math.exp(-t)
        sd_y = math.sqrt(1 - a * a)

        def inner(y: float, a: float = a) -> float:
            s2 = a * a * var + 1 - a * a
            logw = np.log(w) - 0.5 * np.log(s2) - (y - a * mu) ** 2 / (2 * s2)
            post = np.exp(logw - special.logsumexp(logw))
            m = mu + a * var / s2 * (y - a * mu)
            sd = np.sqrt(var * (1 - a * a) / s2)
            lo, hi = -400.0, -300.0  # class A1 lies left of the A1/A2 boundary at -300
            return float(post @ (stats.norm.cdf((hi - m) / sd) - stats.norm.cdf((lo - m) / sd)))

        centre = a * x0[0]
        ref = integrate.quad(
            lambda y, c=centre, s=sd_y: stats.norm.pdf(y, c, s) * inner(y),
            centre - 12 * sd_y,
            centre + 12 * sd_y,
            epsabs=1e-12,
            limit=400,
        )[0]
        assert ref_class == 0
        assert value == pytest.approx(ref, abs=1e-9)


def test_exact_curve_monte_carlo_in_two_dimensions_agrees_with_quadrature():
    one = demo_mixture()
    two = GaussianMixture(np.c_[one.means, np.zeros(4)], one.variances, one.weights, labels=one.labels)
    ts = [0.5, 1.5, 5.5]
    q = exact_curve(one, one.means[0], ts)
    mc = exact_curve(two, np.r_[one.means[0], 0.0], ts, n_mc=100_000, seed=3)
    assert np.all(mc.se > 0)
    assert np.all(np.abs(mc.p - q.p) <= 4 * mc.se + 1e-9)


@pytest.mark.parametrize("method", ["posterior", "ddpm"])
def test_measured_curves_cover_the_exact_curve(method):
    """Acceptance: >= 95% of points inside their 99% Wilson interval around the exact curve, n = 200."""
    mix = demo_mixture()
    x0 = mix.means[0].copy()
    ex = exact_curve(mix, x0, TS).p
    sampler = GaussianMixtureSampler(mix, method=method, steps=100)
    inside = []
    for seed in range(3):
        c = scan(sampler, x0, TS, 200, MixtureClass(mix), seed=seed)
        lo, hi = c.wilson(0.99)
        inside.extend((ex >= lo - 1e-12) & (ex <= hi + 1e-12))
    assert len(inside) == 243 and np.mean(inside) >= 0.95, np.mean(inside)


def test_ddpm_discretisation_error_is_small():
    mix = demo_mixture()
    x0 = mix.means[0].copy()
    ts = [0.6, 1.5, 7.0]
    ex = exact_curve(mix, x0, ts).p
    out = GaussianMixtureSampler(mix, method="ddpm", steps=100).forward_reverse(
        x0, ts, 20_000, np.random.default_rng(4)
    )
    part = check_partition(mix, None)
    p = np.array([(classify(mix, np.array(r), part) == 0).mean() for r in out])
    se = np.sqrt(ex * (1 - ex) / 20_000)
    assert np.all(np.abs(p - ex) <= 0.008 + 4 * se), p - ex


@pytest.mark.slow
def test_detected_windows_sit_at_the_theory_windows():
    """Acceptance: detected windows within 0.1 OU time of the theory's (eps = 0.1) in >= 90% of seeded
    runs of both samplers and never further than 0.2 off; every theory window is found in every run."""
    mix = demo_mixture()
    x0 = mix.means[0].copy()
    theory = [(w.lo.t, w.hi.t) for w in staircase(mix, EPS, [["A1"], ["A1", "A2"], list(mix.labels)])]
    assert theory[0][1] < theory[1][0]  # well-separated scales: disjoint windows
    worst = []
    for method in ("posterior", "ddpm"):
        sampler = GaussianMixtureSampler(mix, method=method, steps=100)
        for seed in range(10):
            c = scan(sampler, x0, TS, 200, MixtureClass(mix), seed=100 + seed)
            ag = window_agreement(theory, [(w.t_lo, w.t_hi) for w in detect_windows(c)])
            assert all(h >= 1 for h in ag.hits), (method, seed, ag)
            worst.append(max(ag.outside))
    worst = np.array(worst)
    assert np.mean(worst <= 0.1 + 1e-9) >= 0.9 and worst.max() <= 0.2, worst


def test_group_feature_and_sampler_in_higher_dimension():
    mix = GaussianMixture(np.array([[0.0] * 3, [40.0] + [0.0] * 2]), 1.0, [0.5, 0.5], labels=["L", "R"])
    s = GaussianMixtureSampler(mix, method="posterior")
    x0 = np.zeros(3)
    ts = [0.5, 3.0, 4.0, 6.0]
    c = scan(s, x0, ts, 300, MixtureClass(mix, {"left": [0], "right": [1]}), seed=2)
    ex = exact_curve(mix, x0, ts, {"left": [0], "right": [1]}, n_mc=50_000)
    lo, hi = c.wilson(0.999)
    assert np.all((ex.p >= lo) & (ex.p <= hi))
    assert len(s.sample(4, np.random.default_rng(0))) == 4


def test_bad_input():
    mix = demo_mixture()
    with pytest.raises(CritwinError, match="method"):
        GaussianMixtureSampler(mix, method="ode")
    with pytest.raises(CritwinError, match="steps"):
        GaussianMixtureSampler(mix, steps=0)
    with pytest.raises(CritwinError, match="shape"):
        GaussianMixtureSampler(mix).forward_reverse(np.zeros(2), [1.0], 2, np.random.default_rng(0))
    with pytest.raises(CritwinError, match="partition"):
        MixtureClass(mix, {"a": [0, 1]})
    with pytest.raises(CritwinError, match="outside"):
        scan(GaussianMixtureSampler(mix), mix.means[0], [11.0], 2, MixtureClass(mix))
    assert MixtureClass(mix)(np.array([np.nan])) is None
