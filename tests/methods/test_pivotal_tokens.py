"""Pivotal tokens (`critwin.methods.pivotal`): the rule on hand-made curves, the choice of preference pairs,
and PTS bisection on the hierarchical toy language against the exact truth: P(success) changes only at
the tokens that decide the choices, by amounts known from the language."""

from __future__ import annotations

import numpy as np
import pytest
from test_critical_tokens import counts_curve

from critwin.curves import scan
from critwin.errors import CritwinError
from critwin.methods.pivotal import Alternative, PivotalToken, alternatives, pivotal_tokens, preference_pair
from critwin.samplers.toy_lm import ToyLMSampler, demo_language
from critwin.strategies import Bisect


def test_pivotal_tokens_are_one_token_gaps_where_p_moves_by_the_threshold():
    rows = [(0, 5, 10), (4, 5, 10), (5, 8, 10), (6, 8, 10), (8, 1, 10), (9, 0, 10), (10, 0, 10)]
    got = pivotal_tokens(counts_curve(rows, 10), 0.2)
    # 4 -> 5: +0.3 (pivotal); 6 -> 8: -0.7 but two tokens wide (not one token); 8 -> 9: -0.1.
    assert [(p.token, p.p_before, p.p_after) for p in got] == [(4, 0.5, 0.8)]
    assert got[0].delta == pytest.approx(0.3)
    assert pivotal_tokens(counts_curve(rows, 10), 0.05)[-1].token == 8
    with pytest.raises(CritwinError):
        pivotal_tokens(counts_curve(rows, 10), 0.0)


def test_the_pair_contrasts_the_trace_token_with_the_best_or_worst_drawn_one():
    drawn = [(7, True), (7, False), (3, True), (3, True), (3, False), (9, False), (9, False), (None, True),
             (5, None), (4, True)]
    alts = alternatives(drawn, original_id=7)
    assert alts == [Alternative(3, 2 / 3, 3), Alternative(4, 1.0, 1), Alternative(9, 0.0, 2)]
    hurts = PivotalToken(12, p_before=0.6, p_after=0.1, n_before=10, n_after=10)
    pair = preference_pair(hurts, 7, alts)
    assert (pair["chosen_id"], pair["rejected_id"]) == (4, 7)  # the best token beats the trace's
    helps = PivotalToken(12, p_before=0.2, p_after=0.9, n_before=10, n_after=10)
    pair = preference_pair(helps, 7, alts)
    assert (pair["chosen_id"], pair["rejected_id"]) == (7, 9)
    assert preference_pair(helps, 7, [Alternative(3, 0.95, 4)]) is None  # nothing drawn did worse


def test_on_the_toy_language_bisection_finds_the_deciding_tokens():
    """Success: the field is "music" (P = 0.28 before the topic is kept). A science text drops to 0 at the
    topic token; an art text rises to 0.7 there and, on painting, drops to 0 at the field token. Every
    other one-token step leaves P(success) unchanged, so a pivotal token there is a false one. PTS has no
    test: each bisection step halts where an estimate of 0.28 falls below 0.2 by chance (with 32 draws in
    about 16% of steps, so only 63 of these 100 texts reach the token); with 200 draws that chance is
    0.6% a step, and at most 4 steps fail in 1 - 0.994^4 = 2.4% of texts."""
    lang = demo_language()
    sampler = ToyLMSampler(lang)
    topic, field = lang.decision_position("topic"), lang.decision_position("field")

    def music(text):
        return lang.parse(text)["field"] == "music"

    rng = np.random.default_rng(1)
    runs = top_right = false = 0
    while runs < 100:
        (x,) = sampler.sample(1, rng)
        parsed = lang.parse(x)
        if parsed["field"] == "music":
            continue
        runs += 1
        curve = scan(sampler, x, feature=music, strategy=Bisect(n=200), seed=runs, reference=True)
        found = pivotal_tokens(curve, 0.2)
        truth = topic if parsed["topic"] == "science" else field
        worst = min(found, key=lambda p: p.delta, default=None)
        top_right += worst is not None and worst.token == truth
        false += any(p.token not in (topic, field) for p in found)
    assert top_right >= 90
    assert false <= 10
