"""Critical tokens (`critwin.methods.critical`): the bound against scipy's exact binomial interval, the
search on hand-made curves, and on the hierarchical toy language against the exact truth: the token after
which the successful option can no longer be drawn is known from the language itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from critwin.curves import Curve, scan
from critwin.errors import CritwinError
from critwin.methods.critical import critical_token, upper_bound
from critwin.samplers.toy_lm import ToyLMSampler, demo_language
from critwin.strategies import EveryPrefix


def counts_curve(kept_success_valid, length):
    """A P(success) curve from (tokens kept, successes, valid draws) per cut."""
    rows = sorted(kept_success_valid, key=lambda r: length - r[0])
    t = np.array([length - r[0] for r in rows], float)
    k = np.array([r[1] for r in rows])
    n = np.array([r[2] for r in rows])
    labels = tuple({True: int(a), False: int(b - a)} for a, b in zip(k, n, strict=True))
    return Curve(t, n, k, np.zeros_like(n), labels, True, "tokens", float(length))


@pytest.mark.parametrize(("k", "n"), [(0, 64), (0, 16), (3, 20), (19, 20), (0, 1), (5, 400)])
def test_the_upper_bound_is_the_exact_one_sided_binomial_bound(k, n):
    want = stats.binomtest(k, n, alternative="less").proportion_ci(0.95, method="exact").high
    assert upper_bound(k, n, 0.95) == pytest.approx(want, rel=1e-9)
    assert upper_bound(n, n) == 1.0 and upper_bound(0, 0) == 1.0


def test_64_failures_decide_where_16_cannot():
    assert upper_bound(0, 64) <= 0.05 < upper_bound(0, 16)


def test_the_critical_token_is_the_first_token_after_the_last_cut_that_can_succeed():
    # 10 tokens; success possible up to 4 tokens kept, 0 of 64 from 5 kept on.
    rows = [(m, 20 if m < 3 else (9 if m < 5 else 0), 64) for m in range(11)]
    found = critical_token(counts_curve(rows, 10))
    c = found.critical
    assert (c.kept_lo, c.kept_hi, c.token) == (4, 5, 4)
    assert c.p_before == pytest.approx(9 / 64)
    assert c.upper_after == pytest.approx(upper_bound(0, 64))
    assert found.kept == tuple(range(11))


def test_undecided_cuts_widen_the_gap_and_no_token_is_said_when_it_cannot_be():
    # kept 5 and 6: no success but only 8 draws each (undecided): the gap spans them.
    rows = [(m, 30, 64) for m in range(5)] + [(5, 0, 8), (6, 0, 8)] + [(m, 0, 64) for m in range(7, 11)]
    c = critical_token(counts_curve(rows, 10)).critical
    assert (c.kept_lo, c.kept_hi, c.token) == (4, 7, 4)
    still = critical_token(counts_curve([(m, 0 if m > 6 else 5, 16) for m in range(11)], 10))
    assert still.critical is None and "too few" in still.reason  # 0 of 16 is not shown to be below 0.05
    hopeless = critical_token(counts_curve([(m, 0, 64) for m in range(11)], 10))
    assert hopeless.critical is None and "from the start" in hopeless.reason
    succeeds = critical_token(counts_curve([(m, 10, 64) for m in range(11)], 10))
    assert succeeds.critical is None


@pytest.mark.parametrize(("eps", "level"), [(0.0, 0.95), (1.0, 0.95), (0.05, 1.0)])
def test_bad_settings_are_one_line_errors(eps, level):
    with pytest.raises(CritwinError):
        critical_token(counts_curve([(0, 1, 2), (1, 0, 2)], 1), eps=eps, level=level)


LANG = demo_language()
#: Where success (the field is music) becomes impossible: at the topic token of a science text, at the field
#: token of an art text on painting.
TRUTH = {"science": LANG.decision_position("topic"), "art": LANG.decision_position("field")}


def music(text):
    return LANG.parse(text)["field"] == "music"


def texts_without_music(sampler, n):
    """(seed, text, parse) of the first n seeded texts whose field is not music."""
    rng, runs = np.random.default_rng(0), 0
    while runs < n:
        (x,) = sampler.sample(1, rng)
        parsed = LANG.parse(x)
        if parsed["field"] != "music":
            runs += 1
            yield runs, x, parsed


def test_on_the_toy_language_the_critical_token_is_where_success_became_impossible():
    """Success: the field is "music". In a text on science, music is impossible once "science" is kept
    (the topic's token); in an art text on painting, once "painting" is kept. Over 100 seeded texts with
    another field, every-prefix with 64 draws finds exactly that token."""
    sampler, truth = ToyLMSampler(LANG), TRUTH
    found = 0
    for runs, x, parsed in texts_without_music(sampler, 100):
        curve = scan(sampler, x, feature=music, strategy=EveryPrefix(n=64), seed=runs, reference=True)
        c = critical_token(curve).critical
        assert c is not None, parsed
        assert c.kept_hi == c.kept_lo + 1
        found += c.token == truth[parsed["topic"]]
    # Before the token P(music) is 0.28 or 0.7, so all 64 draws fail with probability below 1e-9.
    assert found == 100


def test_the_critical_bisection_finds_the_same_token_for_a_fraction_of_the_draws():
    """`CriticalBisect` from the paper's six cuts on the same 100 texts: the exact critical token in every
    one, every longer measured cut certified at eps 0.05 (59 draws, none a success), and under a third of
    every-prefix's 64 draws at each of the 19 cuts."""
    from critwin.schedules import PAPER_FRACTIONS, kept_positions
    from critwin.strategies import CriticalBisect
    from critwin.strategies.critical import certify_draws

    lang, sampler, truth = LANG, ToyLMSampler(LANG), TRUTH
    grid = [lang.length - k for k in kept_positions(lang.length, PAPER_FRACTIONS)]
    assert certify_draws(0.05, 0.95) == 59 and 0.95**59 <= 0.05 < 0.95**58
    found, draws = 0, []
    for runs, x, parsed in texts_without_music(sampler, 100):
        curve = scan(sampler, x, feature=music, strategy=CriticalBisect(grid), seed=runs, reference=True)
        c = critical_token(curve).critical
        assert c is not None and c.kept_hi == c.kept_lo + 1, parsed
        kept = np.rint(lang.length - curve.t).astype(int)
        assert all(n >= 59 and k == 0 for m, k, n in zip(kept, curve.n_kept, curve.n_valid, strict=True)
                   if m > c.kept_lo)
        found += c.token == truth[parsed["topic"]]
        draws.append(int(curve.n_total.sum()))
    assert found == 100
    assert np.mean(draws) < 64 * (lang.length + 1) / 3
