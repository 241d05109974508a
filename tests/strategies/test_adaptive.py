"""Adaptive strategies, the journal that makes a search resumable, and intervals that stay honest when
the number of draws depends on the data."""

from __future__ import annotations

import numpy as np
import pytest

import critwin as cw
from critwin.curves import Draws
from critwin.errors import CritwinError
from critwin.experiments.base import CaseJournal
from critwin.stats import confidence_sequence, wilson_interval
from critwin.strategies import Adaptive, Bisect, EveryPrefix, Sequential, StrategySettings


def topic_scan_setup():
    sampler = cw.load_sampler("toy_lm")
    x = sampler.sample(1, np.random.default_rng(0))[0]
    return sampler, x, (lambda ids: ids[2])


# ----------------------------------------------------------------------------------------------------------
# Confidence sequences
# ----------------------------------------------------------------------------------------------------------
def test_confidence_sequence_contains_wilson_and_matches_its_defining_equation():
    from scipy.special import betaln

    for k, n in [(0, 5), (3, 10), (10, 10), (37, 80), (200, 400)]:
        lo, hi = (float(v) for v in confidence_sequence(k, n, 0.95))
        wl, wh = (float(v) for v in wilson_interval(k, n, 0.95))
        assert lo <= wl + 1e-12 and hi >= wh - 1e-12  # valid at every n costs width
        for p in (lo, hi):
            if 0 < p < 1:  # a finite bound is where the mixture martingale reaches 1/alpha
                log_m = (betaln(0.5 + k, 0.5 + n - k) - betaln(0.5, 0.5) - k * np.log(p)
                         - (n - k) * np.log1p(-p))
                assert abs(log_m - np.log(20)) < 1e-6


def _stopped_coverage(interval, p: float, runs: int, rng: np.random.Generator) -> float:
    """Coverage of p at a data-dependent stop: draw one at a time up to 200 and stop as soon as the
    95% interval excludes 0.5 (an adaptive search that stops once a test looks decided)."""
    covered = 0
    for _ in range(runs):
        x = rng.random(200) < p
        k = np.cumsum(x)
        ns = np.arange(1, 201)
        lo, hi = interval(k, ns, 0.95)
        stop = np.flatnonzero((lo > 0.5) | (hi < 0.5))
        i = int(stop[0]) if len(stop) else 199
        covered += bool(lo[i] <= p <= hi[i])
    return covered / runs


def test_under_optional_stopping_the_confidence_sequence_keeps_its_level_and_wilson_does_not():
    rng = np.random.default_rng(7)
    runs = 400
    cs = _stopped_coverage(confidence_sequence, 0.5, runs, rng)
    wi = _stopped_coverage(wilson_interval, 0.5, runs, rng)
    # At p = 0.5 stopping "once 0.5 is excluded" is the worst case: every stop before n = 200 misses.
    floor = 0.95 - 3 * np.sqrt(0.95 * 0.05 / runs)
    assert cs >= floor
    assert wi < floor  # the naive interval under-covers after adaptive stopping (binomial error included)


# ----------------------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------------------
def test_adaptive_finds_the_one_token_window_with_fewer_draws_than_every_prefix():
    sampler, x, feature = topic_scan_setup()
    dense = cw.scan(sampler, x, feature=feature, strategy=EveryPrefix(n=64), seed=1)
    ad = cw.scan(sampler, x, feature=feature, strategy=Adaptive([0, 6, 12, 18], n_min=8, n_max=64), seed=1)
    # Truth: position 2 is kept for t <= 15 and resampled from t = 16 on (closed form of truncation).
    assert [(w.t_lo, w.t_hi) for w in cw.detect_windows(ad, resolution=1)] == [(15.0, 16.0)]
    assert [(w.t_lo, w.t_hi) for w in cw.detect_windows(dense)] == [(15.0, 16.0)]
    assert ad.n_total.sum() < dense.n_total.sum() / 2


def test_adaptive_is_deterministic_given_a_seed_and_respects_budget_and_n_max():
    sampler, x, feature = topic_scan_setup()
    s = Adaptive([0, 6, 12, 18], n_min=4, n_max=20, budget=150)
    a = cw.scan(sampler, x, feature=feature, strategy=s, seed=3)
    b = cw.scan(sampler, x, feature=feature, strategy=s, seed=3)
    assert a.t.tolist() == b.t.tolist() and a.n_kept.tolist() == b.n_kept.tolist()
    assert a.n_total.sum() <= 150 and a.n_total.max() <= 20


def test_bisect_splits_only_where_the_estimate_moves_by_the_threshold():
    sampler, x, feature = topic_scan_setup()
    c = cw.scan(sampler, x, feature=feature, strategy=Bisect(n=10), seed=0)
    p = c.p_hat
    for i in range(len(c.t) - 1):  # a gap left wider than one token has |Δp̂| < 0.2
        if c.t[i + 1] - c.t[i] > 1:
            assert abs(p[i] - p[i + 1]) < 0.2
    assert set(c.n_total.tolist()) == {10}


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(strategy="nope"), "does not exist"),
        (dict(strategy="adaptive", n_min=10, n_max=5), "--n-min 10 > --n-max 5"),
        (dict(strategy="fixed", n_min=4), "--n-min/--n-max"),
        (dict(budget=0), "--budget 0"),
    ],
)
def test_bad_strategy_settings_are_one_line_errors(settings, message):
    with pytest.raises(CritwinError, match=message) as err:
        StrategySettings(**settings)
    assert "\n" not in str(err.value)


def test_a_budget_below_one_draw_per_initial_point_is_refused_before_drawing():
    with pytest.raises(CritwinError, match="smaller than one draw per initial point"):
        StrategySettings("adaptive", budget=3).build(grid=[0, 4, 8, 12, 18], n=16)
    with pytest.raises(CritwinError, match="n_min=9 > n_max=8"):
        Sequential([0, 1], n_min=9, n_max=8)


# ----------------------------------------------------------------------------------------------------------
# Resume without redrawing
# ----------------------------------------------------------------------------------------------------------
class Counting:
    """Wraps a sampler and counts the draws it is asked for."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.fail_after, self.calls, self.draws = inner, fail_after, 0, 0
        self.time_unit, self.t_max = inner.time_unit, inner.t_max

    def forward_reverse(self, x, ts, n, rng):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # killed mid-search
        self.calls += 1
        self.draws += len(ts) * n
        return self.inner.forward_reverse(x, ts, n, rng)


def test_a_killed_search_resumes_from_its_journal_without_redrawing():
    sampler, x, feature = topic_scan_setup()
    s = Adaptive([0, 6, 12, 18], n_min=8, n_max=64)
    whole = cw.scan(sampler, x, feature=feature, strategy=s, seed=11)
    stored: dict[int, Draws] = {}
    journal = CaseJournal(stored, lambda c, d: stored.__setitem__(c, d))
    killed = Counting(sampler, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        cw.scan(killed, x, feature=feature, strategy=s, seed=11, journal=journal)
    assert sorted(stored) == [0, 1, 2]
    again = Counting(sampler)
    resumed = cw.scan(again, x, feature=feature, strategy=s, seed=11,
                      journal=CaseJournal(dict(stored), journal.write))
    assert resumed.t.tolist() == whole.t.tolist()
    assert resumed.n_kept.tolist() == whole.n_kept.tolist()
    assert resumed.n_total.tolist() == whole.n_total.tolist()
    assert again.draws == whole.n_total.sum() - killed.draws  # only what the killed attempt had not drawn
