"""Forking tokens (`critwin.methods.forks`): the pieces by hand, and on the hierarchical toy language, whose
next-token law and conditionals are exact: every position's weighted P(same field) and fork probability
agree with the exact values within their binomial error, and the change points sit where the field
probability moves (PELT on noisy estimates puts a spurious one into a few texts: at most 3 of 30)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from critwin.errors import CritwinError
from critwin.methods.forks import (
    Branch,
    branch_tokens,
    change_points,
    check_threshold,
    position_summary,
    survival,
)
from critwin.samplers.toy_lm import demo_language


def test_branch_tokens_threshold_order_and_exclusions():
    probs = {4: 0.5, 7: 0.3, 2: 0.05, 9: 0.15}
    assert branch_tokens(probs, 0.1) == [4, 7, 9]
    assert branch_tokens(probs, 0.05, exclude=[7]) == [4, 9, 2]
    assert branch_tokens(probs, 0.9) == []
    for bad in (0, 1.5, -0.1):
        with pytest.raises(CritwinError):
            check_threshold(bad)


def test_position_summary_and_survival_by_hand():
    branches = [Branch(1, 0.6, {"a": 3, "b": 1}), Branch(2, 0.3, {"b": 4}), Branch(3, 0.1, {})]
    got = position_summary(branches, original_id=1, reference="a")
    assert got["p_same"] == pytest.approx((0.6 * 0.75 + 0.3 * 0.0) / 0.9)
    assert got["fork_probability"] == pytest.approx(0.3 * 1.0)
    assert got["variance"] == pytest.approx((0.6 / 0.9) ** 2 * 0.75 * 0.25 / 4)
    assert survival([0.5, 0.0, 0.2]) == pytest.approx([1.0, 0.5, 0.5, 0.4])
    assert change_points([0.3] * 6 + [1.0] * 6, [0.001] * 12) == [6]
    assert change_points([0.5] * 8, [0.01] * 8) == []


def test_on_the_toy_language_forks_match_the_exact_law():
    lang = demo_language()
    key = lang.feature_key(["field"])[:, 0]
    rng = np.random.default_rng(7)
    n, checked, inside, found, steps, false = 400, 0, 0, 0, 0, 0
    for _ in range(30):
        x = tuple(int(v) for v in lang.complete((), 1, rng)[0])
        field = lang.parse(x)["field"]
        own = lang.choice("field").option_names.index(field)

        def p_field(prefix, own=own):
            return float(lang.conditional(prefix)[key == own].sum())

        series, variances, exact_series = [], [], []
        for p in range(lang.length):
            probs = lang.next_token_probs(x[:p])
            branches, exact_fork = [], 0.0
            for w in branch_tokens(probs, 0.05):
                texts = lang.complete(x[:p] + (w,), n, rng)
                same = sum(lang.parse(tuple(int(v) for v in t))["field"] == field for t in texts)
                branches.append(Branch(w, probs[w], {True: same, False: n - same}))
                if w != x[p]:
                    exact_fork += probs[w] * (1 - p_field(x[:p] + (w,)))
            got = position_summary(branches, x[p], True)
            exact = p_field(x[:p])  # every token with probability > 0 has >= 0.05 here: the total law
            for value, truth, var in ((got["p_same"], exact, got["variance"]),
                                      (got["fork_probability"], exact_fork, None)):
                sd = math.sqrt(var) if var is not None else math.sqrt(0.25 / n)
                inside += abs(value - truth) <= 4 * sd + 1e-12
                checked += 1
            series.append(got["p_same"])
            variances.append(got["variance"])
            exact_series.append(exact)
        truth_changes = {p for p in range(1, lang.length)
                         if abs(exact_series[p] - exact_series[p - 1]) > 1e-9}
        got_changes = set(change_points(series, variances))
        found += len(got_changes & truth_changes)
        steps += len(truth_changes)
        false += not got_changes <= truth_changes
    assert inside >= 0.99 * checked
    assert found >= 0.9 * steps
    assert false <= 3, f"{false} of 30 texts got a change point where the law does not move"
