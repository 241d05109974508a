"""Speciation time t_S = ½ ln Λ (Biroli et al. 2024) against known covariances, exact scaling laws and
hand-built DDPM schedules."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from critwin.errors import CritwinError
from critwin.theory import speciation
from critwin.theory.speciation import Speciation, speciation_step, speciation_time


def test_docstring_examples_run():
    result = doctest.testmod(speciation, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_hand_computed_covariance_pins_the_n_minus_1_convention():
    # Points (±1, 0): Σ (x − x̄)(x − x̄)ᵀ = diag(2, 0), over n − 1 = 1.
    sp = speciation_time(np.array([[-1.0, 0.0], [1.0, 0.0]]))
    assert sp.lambda_max == pytest.approx(2.0, abs=1e-14)
    assert sp.t_s == pytest.approx(0.5 * math.log(2.0), abs=1e-14)
    assert (sp.n, sp.dim, sp.exists) == (2, 2, True)
    assert sp.alpha_bar == pytest.approx(0.5, abs=1e-14)
    # Four points on a tilted line: covariance of t·(3, 4)/5 with t ∈ {−3, −1, 1, 3}: Σ t² / 3 = 20/3.
    u = np.array([3.0, 4.0]) / 5.0
    pts = np.array([-3.0, -1.0, 1.0, 3.0])[:, None] * u + [7.0, -2.0]
    assert speciation_time(pts).lambda_max == pytest.approx(20.0 / 3.0, rel=1e-13)


def test_top_eigenvalue_of_known_gaussian_within_sampling_error():
    # N(0, diag(9, 4, 1, 1, 1)): the top sample eigenvalue is asymptotically N(Λ, 2Λ²/n) (well separated
    # from the next eigenvalue, 4), so 5 standard deviations bound it.
    lam = np.array([9.0, 4.0, 1.0, 1.0, 1.0])
    n = 20000
    x = np.random.default_rng(3).standard_normal((n, lam.size)) * np.sqrt(lam)
    sp = speciation_time(x)
    sd = 9.0 * math.sqrt(2.0 / n)
    assert abs(sp.lambda_max - 9.0) < 5 * sd
    assert abs(sp.t_s - 0.5 * math.log(9.0)) < 5 * sd / (2 * 9.0)
    assert (sp.n, sp.dim) == (n, 5)


def test_rotated_top_direction():
    # Largest variance along a non-axis direction: Λ does not depend on the basis.
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    lam = np.array([16.0, 2.0, 1.0, 0.5, 0.5, 0.1])
    n = 30000
    x = (rng.standard_normal((n, 6)) * np.sqrt(lam)) @ q.T
    assert abs(speciation_time(x).lambda_max - 16.0) < 5 * 16.0 * math.sqrt(2.0 / n)


def test_exact_scaling_law_and_shift_invariance():
    x = np.random.default_rng(5).uniform(0.0, 1.0, size=(200, 3, 4, 4))
    base = speciation_time(x)
    doubled = speciation_time(x, scale=2.0)
    assert doubled.lambda_max == pytest.approx(4.0 * base.lambda_max, rel=1e-12)
    # [0, 1] → [−1, 1] (scale 2, shift −1): the same 4×, so t_S moves by ½ ln 4, when t_S exists.
    to_pm1 = speciation_time(x, scale=2.0, shift=-1.0)
    assert to_pm1.lambda_max == pytest.approx(4.0 * base.lambda_max, rel=1e-12)
    big = speciation_time(x, scale=10.0)
    bigger = speciation_time(x, scale=20.0, shift=-3.0)
    assert bigger.lambda_max == pytest.approx(4.0 * big.lambda_max, rel=1e-12)
    assert bigger.t_s - big.t_s == pytest.approx(0.5 * math.log(4.0), abs=1e-12)
    assert (bigger.scale, bigger.shift) == (20.0, -3.0)
    # A shift alone changes nothing; samples are flattened (3, 4, 4) → 48 values.
    assert speciation_time(x, shift=5.0).lambda_max == pytest.approx(base.lambda_max, rel=1e-12)
    assert base.dim == 48
    assert speciation_time(x.reshape(200, -1)).lambda_max == pytest.approx(base.lambda_max, rel=1e-14)


def test_no_speciation_when_lambda_at_most_one():
    x = np.random.default_rng(6).standard_normal((5000, 4)) * 0.5  # Λ ≈ 0.25
    sp = speciation_time(x)
    assert sp.lambda_max < 1.0
    assert sp.t_s is None and not sp.exists and sp.alpha_bar is None
    assert speciation_time(np.ones((10, 3))).lambda_max == 0.0  # constant data: Λ = 0
    assert sp.step([1.0, 0.5, 0.01]) is None


def test_lanczos_path_matches_dense_svd(monkeypatch):
    # Both branches (n ≤ d and n > d) of the iterative path against numpy's SVD of the centred data.
    monkeypatch.setattr(speciation, "_DENSE_MAX", 4)
    rng = np.random.default_rng(7)
    for shape in [(40, 90), (90, 40)]:
        x = rng.standard_normal(shape) @ np.diag(np.linspace(0.5, 3.0, shape[1]))
        xc = x - x.mean(axis=0)
        truth = np.linalg.svd(xc, compute_uv=False)[0] ** 2 / (shape[0] - 1)
        assert speciation_time(x).lambda_max == pytest.approx(truth, rel=1e-9)


def test_speciation_step_on_a_hand_built_schedule():
    abar = [1.0, 0.9, 0.5, 0.2, 0.05]
    assert speciation_step(abar, 4.0) == 3  # 1/Λ = 0.25: first ᾱ below it is 0.2
    assert speciation_step(abar, 2.0) == 3  # 1/Λ = 0.5: strictly below, so 0.5 itself does not count
    assert speciation_step(abar, 1.5) == 2
    assert speciation_step(abar, 100.0) is None  # the schedule never gets that noisy
    assert speciation_step(abar, 1.0) is None and speciation_step(abar, 0.3) is None  # no speciation
    sp = Speciation(lambda_max=4.0, t_s=0.5 * math.log(4.0), n=10, dim=2)
    assert speciation_step(abar, sp) == 3 and sp.step(abar) == 3


def test_speciation_step_agrees_with_ou_time_on_a_ddpm_schedule():
    # Linear β from 1e-4 to 0.02 over 1000 steps; the step is where t_k = −½ ln ᾱ_k first exceeds t_S.
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    for lam in (1.5, 10.0, 500.0):
        k = speciation_step(abar, lam)
        t_s = 0.5 * math.log(lam)
        t = -0.5 * np.log(abar)
        assert t[k] > t_s and (k == 0 or t[k - 1] <= t_s)
    assert speciation_step(abar, 1e9) is None


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: speciation_time(np.zeros((0, 5))), "data"),
        (lambda: speciation_time(np.zeros((5, 0))), "data"),
        (lambda: speciation_time([]), "data"),
        (lambda: speciation_time(3.0), "data"),
        (lambda: speciation_time(np.zeros((1, 5))), "data"),
        (lambda: speciation_time(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]])), "data: sample 1"),
        (lambda: speciation_time([[0.0], [np.inf]]), "data"),
        (lambda: speciation_time([["a"], ["b"]]), "data"),
        (lambda: speciation_time(np.zeros((3, 2)), scale=0.0), "scale"),
        (lambda: speciation_time(np.zeros((3, 2)), scale=float("nan")), "scale"),
        (lambda: speciation_time(np.zeros((3, 2)), shift="x"), "shift"),
        (lambda: speciation_step([], 4.0), "alphas_cumprod"),
        (lambda: speciation_step([[1.0, 0.5]], 4.0), "alphas_cumprod"),
        (lambda: speciation_step([1.0, 0.0], 4.0), "alphas_cumprod"),
        (lambda: speciation_step([1.2, 0.5], 4.0), "alphas_cumprod"),
        (lambda: speciation_step([0.5, 0.9], 4.0), "alphas_cumprod"),
        (lambda: speciation_step([1.0, float("nan")], 4.0), "alphas_cumprod"),
        (lambda: speciation_step([1.0, 0.5], -1.0), "lambda_max"),
        (lambda: speciation_step([1.0, 0.5], float("nan")), "lambda_max"),
    ],
)
def test_bad_input_is_a_one_line_error(call, field):
    with pytest.raises(CritwinError) as err:
        call()
    msg = str(err.value)
    assert msg.startswith(field) and "\n" not in msg and len(msg) < 300
