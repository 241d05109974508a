"""Strategies drive scan: Fixed is the schedule form, multi-round strategies pool exactly, bad proposals are
one-line errors, and the cut grids of critwin.schedules on known inputs."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from _testbeds import CoinSampler, parity, small_language

from critwin.curves import Curve, scan
from critwin.errors import CritwinError
from critwin.features.base import ChoiceFeature
from critwin.samplers.toy_lm import ToyLMSampler
from critwin.schedules import ou_grid, prefill_cuts, token_grid
from critwin.strategies import Fixed, Request, Strategy
from critwin.types import Failure


class ScriptedSampler:
    """Draw j at time t is the integer 10*t + j; records every backend call as (ts, n)."""

    time_unit = "tokens"
    t_max = 10.0

    def __init__(self):
        self.calls: list[tuple[list[float], int]] = []

    def sample(self, n, rng):
        return [0] * n

    def forward_reverse(self, x, ts, n, rng):
        self.calls.append((list(ts), n))
        return [[int(10 * t + j) for j in range(n)] for t in ts]




class Rounds:
    """A strategy defined by its list of rounds; records the curves and t_max it was shown."""

    def __init__(self, *rounds):
        self.rounds = [list(r) for r in rounds]
        self.seen: list[tuple[Curve | None, float]] = []

    def propose(self, curve, t_max):
        self.seen.append((curve, t_max))
        i = len(self.seen) - 1
        return self.rounds[i] if i < len(self.rounds) else []


# ----------------------------------------------------------------------------------------------------------
# Fixed is the schedule form
# ----------------------------------------------------------------------------------------------------------
def test_fixed_is_a_strategy_with_one_round_then_stop():
    f = Fixed(np.array([3, 1, 2]), 5)
    assert isinstance(f, Strategy)
    assert f.propose(None, 10.0) == (Request(3.0, 5), Request(1.0, 5), Request(2.0, 5))
    assert f.propose(Curve([0.0], [1], [1], [0], ({"a": 1},), "a", "ou"), 10.0) == ()
    for args, match in [(([], 3), "empty"), (([1, 1], 3), "repeated"), (([1], 0), "n=0"),
                        (([1], 2.5), "whole"), ((["a"], 1), "list of numbers"), (([-1.0], 1), "t=-1"),
                        (([float("inf")], 1), "t=inf")]:
        with pytest.raises(CritwinError, match=match) as err:
            Fixed(*args)
        assert "\n" not in str(err.value)


def test_fixed_gives_the_curve_of_one_hand_made_backend_call_with_the_seed():
    """Truth by hand: one forward_reverse call with default_rng(seed), draws counted directly."""
    ts, n, seed = [3.0, 0.0, 1.5, 2.0], 300, 11
    rows = CoinSampler().forward_reverse(True, ts, n, np.random.default_rng(seed))
    order = np.argsort(ts)
    seen = []
    a = scan(CoinSampler(), True, feature=bool, strategy=Fixed(ts, n), seed=seed, on_draws=seen.append)
    b = scan(CoinSampler(), True, ts, n, bool, seed=seed)
    for c in (a, b):
        assert list(c.t) == sorted(ts) and c.t_max == 4.0
        assert list(c.n_kept) == [int(np.sum(rows[i])) for i in order]
        assert list(c.n_valid) == [n] * 4 and list(c.n_failed) == [0] * 4
        assert c.label_counts == tuple(dict(Counter(rows[i])) for i in order)
    assert len(seen) == 1 and seen[0].ts == tuple(ts)  # one backend call, in the schedule's order
    assert a.to_frame().equals(b.to_frame())


def test_fixed_adds_to_a_given_curve_like_the_schedule_form():
    first = scan(CoinSampler(), True, [0, 2], 100, bool, seed=1)
    a = scan(CoinSampler(), True, [1, 2], 50, bool, seed=2, curve=first)
    b = scan(CoinSampler(), True, feature=bool, strategy=Fixed([1, 2], 50), seed=2, curve=first)
    assert a.to_frame().equals(b.to_frame())
    assert list(b.n_valid) == [100, 50, 150]


# ----------------------------------------------------------------------------------------------------------
# Several rounds
# ----------------------------------------------------------------------------------------------------------
def test_two_rounds_group_equal_n_into_one_call_and_pool_exact_counts():
    s = ScriptedSampler()
    strat = Rounds([Request(0, 5), Request(2, 5), Request(1, 3)], [Request(1, 4), Request(3, 4)])
    seen = []
    curve = scan(s, 0, feature=parity, strategy=strat, on_draws=seen.append)
    # Round 1: the two n=5 times in one call (order kept), then the n=3 time; round 2: one n=4 call.
    assert s.calls == [([0.0, 2.0], 5), ([1.0], 3), ([1.0, 3.0], 4)]
    assert [d.ts for d in seen] == [(0.0, 2.0), (1.0,), (1.0, 3.0)]
    # The strategy saw nothing, then the merged curve of round 1; t_max is the sampler's.
    assert strat.seen[0] == (None, 10.0)
    assert list(strat.seen[1][0].t) == [0.0, 1.0, 2.0] and list(strat.seen[1][0].n_valid) == [5, 3, 5]
    assert len(strat.seen) == 3  # the third call answered "stop"

    # Exact sums: draws at t are 10t + j, reference parity(0) = "even", so "even" iff j is even.
    def evens(n):
        return sum(1 for j in range(n) if j % 2 == 0)

    assert list(curve.t) == [0.0, 1.0, 2.0, 3.0]
    assert list(curve.n_valid) == [5, 3 + 4, 5, 4]
    assert list(curve.n_kept) == [evens(5), evens(3) + evens(4), evens(5), evens(4)]
    assert curve.label_counts[1] == {"even": evens(3) + evens(4), "odd": 7 - evens(3) - evens(4)}


def test_the_first_call_draws_from_the_seed_and_later_calls_from_its_spawned_children():
    strat = Rounds([Request(0.5, 40), Request(3.0, 40)], [Request(0.5, 25)], [(2.0, 10)])
    curve = scan(CoinSampler(), True, feature=bool, strategy=strat, seed=5)
    rng = np.random.default_rng(5)
    r1 = CoinSampler().forward_reverse(True, [0.5, 3.0], 40, rng)
    # Children, not the parent's stream: a resumed scan that replays call 1 still draws call 2 alike.
    c1, c2 = np.random.default_rng(5).spawn(2)
    r2 = CoinSampler().forward_reverse(True, [0.5], 25, c1)
    r3 = CoinSampler().forward_reverse(True, [2.0], 10, c2)
    assert list(curve.t) == [0.5, 2.0, 3.0]
    assert list(curve.n_valid) == [65, 10, 40]
    assert list(curve.n_kept) == [int(np.sum(r1[0]) + np.sum(r2[0])), int(np.sum(r3[0])), int(np.sum(r1[1]))]


def test_a_strategy_that_stops_at_once_adds_nothing():
    first = scan(CoinSampler(), True, [1], 10, bool, seed=0)
    assert scan(CoinSampler(), True, feature=bool, strategy=Rounds(), curve=first) is first
    with pytest.raises(CritwinError, match="proposed nothing in its first round") as err:
        scan(CoinSampler(), True, feature=bool, strategy=Rounds())
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------------------
# Bad proposals and bad calls: one-line errors naming the problem
# ----------------------------------------------------------------------------------------------------------
class Forever:
    def propose(self, curve, t_max):
        return [Request(1.0, 1)]


@pytest.mark.parametrize(
    ("strategy", "match"),
    [
        (Rounds([Request(11, 3)]), r"strategy Rounds proposed t=11, outside \[0, 10\]"),
        (Rounds([Request(1, 3)], [Request(-0.5, 3)]), r"proposed t=-0.5, outside"),
        (Rounds([Request(float("nan"), 3)]), r"t=nan, outside"),
        (Rounds([Request("a", 3)]), r"t='a'; t must be a number"),
        (Rounds([Request(1, 0)]), r"proposed n=0 at t=1; n must be a whole number >= 1"),
        (Rounds([Request(1, 2.5)]), r"n=2.5 at t=1"),
        (Rounds([Request(1, True)]), r"n=True at t=1"),
        (Rounds([Request(1, 3), Request(1, 5)]), r"t=1 twice in one round"),
        (Rounds([7]), r"proposed 7; propose Request\(t, n\)"),
        (Forever(), r"strategy Forever still proposes draws after max_rounds=4 rounds"),
    ],
)
def test_bad_proposals_are_one_line_errors_naming_the_strategy(strategy, match):
    with pytest.raises(CritwinError, match=match) as err:
        scan(ScriptedSampler(), 0, feature=parity, strategy=strategy, max_rounds=4)
    assert "\n" not in str(err.value)


def test_never_stopping_strategy_is_cut_after_max_rounds_draws():
    s = ScriptedSampler()
    with pytest.raises(CritwinError, match="max_rounds=3"):
        scan(s, 0, feature=parity, strategy=Forever(), max_rounds=3)
    assert len(s.calls) == 3


def test_bad_ways_to_call_scan_with_a_strategy():
    class NoneStrategy:
        def propose(self, curve, t_max):
            return None

    cases = [
        (dict(schedule=[1], n=2, strategy=Fixed([1], 2)), "both a schedule/n and strategy="),
        (dict(n=2, strategy=Fixed([1], 2)), "both"),
        (dict(), "needs a schedule and n"),
        (dict(schedule=[1]), "needs a schedule and n"),
        (dict(strategy=object()), "has no propose"),
        (dict(strategy=NoneStrategy()), "returned NoneType from propose"),
        (dict(strategy=Fixed([1], 2), max_rounds=0), "max_rounds=0"),
    ]
    for kwargs, match in cases:
        with pytest.raises(CritwinError, match=match) as err:
            scan(ScriptedSampler(), 0, feature=parity, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(CritwinError, match="needs feature="):
        scan(ScriptedSampler(), 0, [1], 2)


# ----------------------------------------------------------------------------------------------------------
# The sample's own t_max
# ----------------------------------------------------------------------------------------------------------
class Short(int):
    """An integer sample that knows its own largest forward time."""

    t_max = 3.0


def test_scan_uses_the_samples_t_max_over_the_samplers():
    strat = Rounds([Request(0, 2), Request(3, 2)])
    curve = scan(ScriptedSampler(), Short(0), feature=parity, strategy=strat)
    assert strat.seen[0][1] == 3.0 and curve.t_max == 3.0
    assert scan(ScriptedSampler(), Short(0), [3], 2, parity).t_max == 3.0
    assert scan(ScriptedSampler(), 0, [3], 2, parity).t_max == 10.0  # no t_max of its own: the sampler's
    # t = 5 is inside the sampler's [0, 10] but past the sample's end.
    with pytest.raises(CritwinError, match=r"t=5, outside \[0, 3\]"):
        scan(ScriptedSampler(), Short(0), feature=parity, strategy=Rounds([Request(5, 2)]))
    with pytest.raises(CritwinError, match=r"t=5 is outside \[0, 3\]"):
        scan(ScriptedSampler(), Short(0), [5], 2, parity)

    class Broken(int):
        t_max = float("nan")

    with pytest.raises(CritwinError, match="t_max=nan"):
        scan(ScriptedSampler(), Broken(0), [1], 2, parity)


# ----------------------------------------------------------------------------------------------------------
# Against exact truth: the toy language, every text enumerated
# ----------------------------------------------------------------------------------------------------------


class Refine:
    """Round 1: every other t with n0 draws; round 2: the t in between wherever neighbours differ by more
    than `gap`, with n1 draws, plus n1 more at both neighbours; then stop."""

    def __init__(self, n0, n1, gap=0.1):
        self.n0, self.n1, self.gap = n0, n1, gap

    def propose(self, curve, t_max):
        if curve is None:
            return [Request(float(t), self.n0) for t in range(0, int(t_max) + 1, 2)]
        if len(curve) > (int(t_max) // 2) + 1:
            return []
        p = curve.p_hat
        out = {}
        for i in range(len(curve) - 1):
            if abs(p[i + 1] - p[i]) > self.gap:
                out[(curve.t[i] + curve.t[i + 1]) / 2] = self.n1
                out[curve.t[i]] = out[curve.t[i + 1]] = self.n1
        return [Request(t, n) for t, n in sorted(out.items())]


def test_a_two_round_scan_matches_enumerated_truth_within_binomial_error():
    lang = small_language()
    vocab = range(len(lang.vocab))
    texts = {s: p for s in itertools.product(vocab, repeat=lang.length) if (p := lang.sequence_prob(s)) > 0}
    x = max(texts, key=texts.get)
    names = ["c1", "c2"]
    key = tuple(lang.parse(x)[n] for n in names)
    curve = scan(ToyLMSampler(lang), x, feature=ChoiceFeature(lang, names), strategy=Refine(600, 600), seed=3)
    assert len(curve) > lang.length // 2 + 1  # the second round added times in between
    for t, k, m in zip(curve.t, curve.n_kept, curve.n_valid, strict=True):
        prefix = x[: lang.length - int(t)]
        mass = {s: p for s, p in texts.items() if s[: len(prefix)] == prefix}
        truth = sum(p for s, p in mass.items() if tuple(lang.parse(s)[n] for n in names) == key) / sum(
            mass.values()
        )
        # 4.5 binomial standard errors at this point's own number of draws (a miss has probability < 1e-5).
        assert m in (600, 1200) and abs(k / m - truth) <= 4.5 * np.sqrt(truth * (1 - truth) / m) + 1e-12


def test_failures_from_a_backend_are_counted_across_rounds():
    class Flaky(ScriptedSampler):
        def forward_reverse(self, x, ts, n, rng):
            rows = super().forward_reverse(x, ts, n, rng)
            return [[Failure("oom") if j == 0 else v for j, v in enumerate(r)] for r in rows]

    curve = scan(Flaky(), 0, feature=parity, strategy=Rounds([Request(1, 4)], [Request(1, 6)]))
    assert list(curve.n_failed) == [2] and list(curve.n_valid) == [8]
    assert curve.label_counts[0] == dict(Counter(parity(10 + j) for j in [1, 2, 3, 1, 2, 3, 4, 5]))


# ----------------------------------------------------------------------------------------------------------
# Cut grids
# ----------------------------------------------------------------------------------------------------------
def test_ou_grid_endpoints_spacing_and_monotonicity():
    g = ou_grid(8.0, 0.1)
    assert len(g) == 81 and g[0] == 0.0 and g[-1] == 8.0
    assert np.all(np.diff(g) > 0)
    assert list(g) == [i / 10 for i in range(81)]  # decimal values, not accumulated float error
    assert list(ou_grid(1.0, 0.3)) == [0.0, 0.3, 0.6, 0.9]  # the end is kept only on a whole step
    lin = ou_grid(2.5, num=6)
    assert lin[0] == 0.0 and lin[-1] == 2.5 and np.allclose(np.diff(lin), 0.5, rtol=0, atol=1e-15)
    for args, kwargs, match in [((0.0, 0.1), {}, "t_end=0.0"), ((1.0,), {}, "neither"),
                                ((1.0, 0.1), {"num": 5}, "both"), ((1.0, -0.1), {}, "step=-0.1"),
                                ((1.0,), {"num": 1}, "num=1"), ((float("inf"), 0.1), {}, "t_end=inf")]:
        with pytest.raises(CritwinError, match=match) as err:
            ou_grid(*args, **kwargs)
        assert "\n" not in str(err.value)


def test_token_grid():
    assert list(token_grid(5)) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(token_grid(5, 2)) == [0.0, 2.0, 4.0, 5.0]
    assert list(token_grid(0)) == [0.0]
    for args, match in [((-1,), "length=-1"), ((3, 0), "step=0"), ((2.5,), "length=2.5")]:
        with pytest.raises(CritwinError, match=match):
            token_grid(*args)


def test_prefill_cuts_on_known_inputs():
    text = "Sure, here is how"  # 17 characters
    offs, kept = prefill_cuts(range(1, len(text) + 1), 5)
    assert offs == [0, 5, 10, 15, 17] and kept == [0, 5, 10, 15, 17]
    # Word tokens "Sure" "," "here" "is" "how" end at 4, 5, 10, 13, 17.
    offs, kept = prefill_cuts([4, 5, 10, 13, 17], 2)
    assert kept == [0, 2, 4, 5] and offs == [0, 5, 13, 17]
    assert [text[:o] for o in offs] == ["", "Sure,", "Sure, here is", text]
    # Units that end at the same character (pieces of one character) count once.
    assert prefill_cuts([2, 2, 5], 1) == ([0, 2, 5], [0, 1, 2])
    assert prefill_cuts([], 3) == ([0], [0])
    with pytest.raises(CritwinError, match="step=0: cut every step >= 1 tokens"):
        prefill_cuts([1, 2], 0, unit="tokens")
