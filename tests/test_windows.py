"""Window detection: test statistics against scipy / published values, known staircases, the false-positive
rate on flat curves over many seeded runs, the paper's rule and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from critwin.curves import Curve
from critwin.errors import CritwinError
from critwin.windows import (
    Window,
    detect_windows,
    drop_p_value,
    holm_reject,
    newcombe_interval,
    paper_rule_windows,
    window_agreement,
)


def curve_from(p: np.ndarray, n: int, rng: np.random.Generator, t: np.ndarray | None = None) -> Curve:
    """A measured curve with Binomial(n, p_i) kept draws at each point (label True = kept)."""
    p = np.asarray(p, dtype=float)
    t = np.arange(len(p), dtype=float) if t is None else t
    kept = rng.binomial(n, p)
    counts = tuple({k: v for k, v in ((True, int(c)), (False, int(n - c))) if v} for c in kept)
    return Curve(t, [n] * len(p), kept, [0] * len(p), counts, True, "tokens", float(t[-1]))


def test_drop_p_value_is_half_the_two_sided_chi_square_test():
    for k1, n1, k2, n2 in [(56, 70, 48, 80), (180, 200, 150, 200), (30, 40, 29, 45)]:
        table = [[k1, n1 - k1], [k2, n2 - k2]]
        two_sided = stats.chi2_contingency(table, correction=False)[1]
        assert float(drop_p_value(k1, n1, k2, n2)) == pytest.approx(two_sided / 2, rel=1e-9)
    assert float(drop_p_value(10, 10, 20, 20)) == 1.0  # both at 1: no evidence of a drop


def test_newcombe_interval_matches_published_example():
    # Newcombe (1998), Stat Med 17:873, example 56/70 − 48/80, method 10: 0.0524 to 0.3339
    lo, hi = newcombe_interval(56, 70, 48, 80, 0.95)
    assert lo == pytest.approx(0.0524, abs=5e-5) and hi == pytest.approx(0.3339, abs=5e-5)


def test_holm_known_answer():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2 -> stop
    assert holm_reject(p, 0.05).tolist() == [True, False, False, True]


def test_exact_staircase_is_found_at_the_right_gaps():
    rng = np.random.default_rng(0)
    p = np.array([1.0] * 5 + [0.6] * 6 + [0.3] * 6 + [0.3])
    wins = detect_windows(curve_from(p, 400, rng))
    assert [(w.t_lo, w.t_hi) for w in wins] == [(4.0, 5.0), (10.0, 11.0)]
    assert wins[0].jump_ci[0] < 0.4 < wins[0].jump_ci[1]
    assert wins[1].p_before == pytest.approx(0.6, abs=0.05) and wins[1].p_value < 1e-6


@pytest.mark.parametrize("n", [200, 2000, 200_000])
def test_smooth_transition_on_a_fine_grid_is_one_window_inside_the_ramp(n):
    """A ramp is one window at any number of draws (never cut into pieces at chance 'plateaus')."""
    t = np.round(np.arange(0, 6.01, 0.1), 10)
    p = 0.5 + 0.5 / (1 + np.exp(3 * (t - 3)))  # from 1 to 0.5, 10%..90% of the drop between t = 2.27 and 3.73
    for seed in range(10):
        wins = detect_windows(curve_from(p, n, np.random.default_rng(seed), t))
        assert len(wins) == 1, (seed, wins)
        w = wins[0]
        assert 1.9 <= w.t_lo < 3 < w.t_hi <= 4.3 and w.jump > 0.35


def count_false_windows(runs: int, level: float, min_jump: float, seed: int) -> int:
    """Flat curves (41 points, 200 draws each, P(kept) from {0.95, 0.7, 0.5}): runs with any window."""
    bad = 0
    for i in range(runs):
        rng = np.random.default_rng([seed, i])
        p = np.full(41, rng.choice([0.95, 0.7, 0.5]))
        bad += bool(detect_windows(curve_from(p, 200, rng), level=level, min_jump=min_jump))
    return bad


def test_false_positive_rate_on_flat_curves_is_below_the_test_level():
    runs = 200
    # Pure statistical test (no jump threshold): family-wise error <= 1 - level per curve.
    fp_test = count_false_windows(runs, level=0.9, min_jump=0.0, seed=11)
    assert fp_test <= stats.binom.ppf(0.999, runs, 0.1), fp_test
    # The defaults (level 0.99 and a 0.2 jump threshold).
    fp_default = count_false_windows(runs, level=0.99, min_jump=0.2, seed=12)
    assert fp_default <= stats.binom.ppf(0.999, runs, 0.01), fp_default


def test_flat_stretches_around_a_real_window_stay_clean():
    extra = 0
    for seed in range(100):
        rng = np.random.default_rng([5, seed])
        p = np.array([0.9] * 15 + [0.4] * 15)
        wins = detect_windows(curve_from(p, 200, rng))
        extra += [(w.t_lo, w.t_hi) for w in wins] != [(14.0, 15.0)]
    assert extra <= stats.binom.ppf(0.999, 100, 0.01), extra


def test_paper_rule():
    rng = np.random.default_rng(1)
    p = np.array([1.0, 1.0, 0.2, 0.2])
    wins = paper_rule_windows(curve_from(p, 1000, rng))
    assert [(w.t_lo, w.t_hi, w.rule) for w in wins] == [(1.0, 2.0, "paper")]
    # a rise of more than 0.3 as t grows (= a drop as the fraction kept grows) vetoes every window
    assert paper_rule_windows(curve_from(np.array([1.0, 1.0, 0.2, 0.6]), 1000, rng)) == []
    assert paper_rule_windows(curve_from(p, 1000, rng), threshold=0.9) == []


def test_window_round_trip_and_agreement():
    w = Window(1.0, 2.0, 0.9, 0.4, 0.5, (0.4, 0.6), 1e-9)
    assert Window.from_dict(w.to_dict()) == w
    with pytest.raises(CritwinError, match="malformed"):
        Window.from_dict({"t_lo": 1})
    ag = window_agreement([(0.0, 1.0), (5.0, 6.0)], [(0.2, 1.05), (4.0, 4.5)])
    assert ag.outside == pytest.approx((0.05, 1.0))
    assert ag.hits == (1, 0) and not ag.agrees(0.1)
    assert window_agreement([(2.0, 3.0)], [(2.0, 3.0)]).agrees(0.0)


def test_bad_arguments_are_one_line_errors():
    c = curve_from(np.array([1.0, 0.5]), 10, np.random.default_rng(0))
    for kwargs, match in [
        ({"level": 1.5}, "level"),
        ({"min_jump": -0.1}, "min_jump"),
        ({"edge_frac": 0.7}, "edge"),
    ]:
        with pytest.raises(CritwinError, match=match):
            detect_windows(c, **kwargs)
    with pytest.raises(CritwinError, match="expected a Curve"):
        detect_windows([0.1, 0.2])
