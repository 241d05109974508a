"""Revise at the window (`critwin.methods.revise`): the control position's law, the per-position effect by
hand, the Student t interval against its textbook value, and its coverage of the true mean effect over
simulated datasets whose per-problem arm probabilities are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from critwin.methods.revise import control_position, effect, mean_effect
from critwin.stats import newcombe_interval


def test_the_control_is_uniform_over_the_positions_away_from_the_window():
    rng = np.random.default_rng(0)
    draws = [control_position(40, 10, 20, 3, rng) for _ in range(6000)]
    allowed = set(range(1, 7)) | set(range(24, 41))
    assert set(draws) == allowed  # never within 3 tokens of [10, 20], every allowed one reached
    counts = np.bincount(draws, minlength=41)[sorted(allowed)]
    expected = len(draws) / len(allowed)
    assert np.all(np.abs(counts - expected) <= 5 * math.sqrt(expected))
    assert control_position(10, 1, 9, 3, rng) is None


def test_the_effect_at_a_position_is_the_difference_with_newcombe():
    got = effect((3, 16), (12, 16), 0.9)
    assert (got.p_revised, got.p_plain, got.n_revised, got.n_plain) == (3 / 16, 12 / 16, 16, 16)
    assert got.effect == pytest.approx(3 / 16 - 12 / 16)
    assert got.effect_ci == pytest.approx(newcombe_interval(3, 16, 12, 16, 0.9))
    empty = effect((0, 0), (5, 16))
    assert empty.effect is None and empty.effect_ci is None and empty.p_plain == 5 / 16


def test_the_mean_effect_has_the_textbook_t_interval():
    # mean 0.3, sd 0.2, n 3: half-width t_{0.975, 2} · 0.2 / √3 with t_{0.975, 2} = 4.302653 (tables)
    got = mean_effect([0.1, 0.3, 0.5, None])
    assert got["n"] == 3 and got["mean"] == pytest.approx(0.3)
    assert got["ci"] == pytest.approx(
        [0.3 - 4.302653 * 0.2 / math.sqrt(3), 0.3 + 4.302653 * 0.2 / math.sqrt(3)]
    )
    assert mean_effect([0.2])["ci"] is None and mean_effect([])["mean"] is None
    assert mean_effect([0.25, 0.25])["ci"] == [0.25, 0.25]
    assert mean_effect([-1.0, -0.2])["ci"][0] == -1.0  # the t interval reaches below -1


def test_the_t_interval_covers_the_true_mean_effect_at_its_level():
    """20 problems, each with its own P(correct) with and without the re-prompt (fixed, known), 16 endings
    per arm: over 400 simulated datasets the 95% interval of the mean estimated effect covers the mean of
    the true effects in at least 0.95 − 3 binomial SE of them."""
    rng = np.random.default_rng(11)
    plain = rng.uniform(0.2, 0.9, 20)
    revised = np.clip(plain + rng.normal(-0.1, 0.15, 20), 0.0, 1.0)
    truth = float(np.mean(revised - plain))
    covered = 0
    for _ in range(400):
        k1, k0 = rng.binomial(16, revised), rng.binomial(16, plain)
        est = [effect((int(a), 16), (int(b), 16)).effect for a, b in zip(k1, k0, strict=True)]
        lo, hi = mean_effect(est)["ci"]
        covered += lo <= truth <= hi
    assert covered / 400 >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / 400)
