"""The exact discrete-mixture testbed (`critwin.samplers.discrete`): forward–reverse draws follow the exact
FR law of `critwin.theory.forward_reverse_law`, the exact curve equals brute-force enumeration, Bayes
classes, edge cases (t = 0, masking at large t) and bad input."""

from __future__ import annotations

import doctest
import itertools
import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

import critwin.samplers.discrete as discrete_module
from critwin.conformance import check_sampler
from critwin.errors import CritwinError
from critwin.samplers.discrete import DiscreteMixtureSampler, SequenceClass, exact_curve
from critwin.theory import DiscreteMixture, GaussianMixture, forward_reverse_law
from critwin.theory.discrete import MarkovComponent, ProductComponent

#: Smallest chi-square / binomial p-value a test accepts: the draws are seeded, so a pass is reproducible,
#: and a correct sampler fails a single check with probability 1e-4 over seeds.
P_MIN = 1e-4

PRODUCT = [[0.5, 0.5], [0.3, 0.7], [0.6, 0.4]]
MARKOV = ([0.2, 0.8], [[0.9, 0.1], [0.4, 0.6]])


def tiny(process: str) -> DiscreteMixture:
    """Three components of length 3 over {0, 1}: a point mass at (0, 0, 0), a product law, a Markov chain
    (the three component kinds of a spec)."""
    return DiscreteMixture(
        [{(0, 0, 0): 1.0}, ProductComponent(PRODUCT), MarkovComponent(*MARKOV, length=3)],
        [0.3, 0.3, 0.4],
        process,
        labels=["point", "product", "markov"],
    )


def brute_component_probs(seq: tuple[int, ...]) -> np.ndarray:
    """p_k(seq) of the three components of `tiny`, written out by hand (independent of the library)."""
    point = 1.0 if seq == (0, 0, 0) else 0.0
    product = math.prod(PRODUCT[i][v] for i, v in enumerate(seq))
    init, tr = MARKOV
    markov = init[seq[0]] * math.prod(tr[a][b] for a, b in itertools.pairwise(seq))
    return np.array([point, product, markov])


def chi_square_p(counts: Counter, law: dict[tuple[int, ...], float], n: int) -> float:
    """p-value of Pearson's chi-square test of `counts` against `law` (bins with expected count < 5 pooled);
    an outcome the law gives probability 0 fails at once."""
    assert set(counts) <= {k for k, p in law.items() if p > 0}, set(counts) - set(law)
    keys = sorted(law, key=lambda k: -law[k])
    obs, exp, pool_o, pool_e = [], [], 0.0, 0.0
    for k in keys:
        e = n * law[k]
        if e >= 5:
            obs.append(counts.get(k, 0))
            exp.append(e)
        else:
            pool_o += counts.get(k, 0)
            pool_e += e
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    if len(obs) < 2:
        return 1.0
    return float(stats.chisquare(obs, np.array(exp) * sum(obs) / sum(exp)).pvalue)


@pytest.mark.parametrize(("process", "ts"), [("truncation", [0, 1, 2, 3]), ("masking", [0.0, 0.4, 1.5, 5.0])])
def test_draws_from_a_point_mass_follow_the_exact_fr_law(process, ts):
    # FR_t({point}) starts from the only sequence of the point mass, so it is the law of one scan of it.
    mix = tiny(process)
    sampler = DiscreteMixtureSampler(mix)
    n = 20_000
    rows = sampler.forward_reverse((0, 0, 0), ts, n, np.random.default_rng(1))
    for t, row in zip(ts, rows, strict=True):
        assert all(isinstance(s, tuple) and all(type(v) is int for v in s) for s in row)
        law = forward_reverse_law(mix, [0], t)
        assert chi_square_p(Counter(row), law, n) > P_MIN, t


@pytest.mark.parametrize(("process", "t"), [("truncation", 1), ("truncation", 2), ("masking", 0.7)])
def test_draws_from_a_sub_mixture_follow_the_exact_fr_law(process, t):
    # FR_t(S) for S = {markov}: x ~ p^S, then one forward-reverse draw from x (grouped by x for speed).
    mix = tiny(process)
    sampler = DiscreteMixtureSampler(mix)
    rng = np.random.default_rng(2)
    n = 20_000
    xs = Counter(DiscreteMixtureSampler(mix.restrict([2])).sample(n, rng))
    counts: Counter = Counter()
    for x, k in sorted(xs.items()):
        counts.update(sampler.forward_reverse(x, [t], k, rng)[0])
    assert chi_square_p(counts, forward_reverse_law(mix, [2], t), n) > P_MIN


def test_sample_draws_the_mixture():
    mix = tiny("truncation")
    n = 20_000
    draws = DiscreteMixtureSampler(mix).sample(n, np.random.default_rng(3))
    assert chi_square_p(Counter(draws), mix.law(), n) > P_MIN


@pytest.mark.parametrize("process", ["truncation", "masking"])
def test_t_zero_keeps_x(process):
    sampler = DiscreteMixtureSampler(tiny(process))
    (row,) = sampler.forward_reverse((1, 1, 0), [0], 50, np.random.default_rng(0))
    assert row == [(1, 1, 0)] * 50


def test_truncation_keeps_the_prefix():
    sampler = DiscreteMixtureSampler(tiny("truncation"))
    for t, row in zip([1, 2], sampler.forward_reverse((1, 0, 1), [1, 2], 200, np.random.default_rng(0)),
                      strict=True):
        assert {s[: 3 - t] for s in row} == {(1, 0, 1)[: 3 - t]}


def test_masking_at_large_t_draws_the_marginal():
    mix = tiny("masking")
    sampler = DiscreteMixtureSampler(mix, t_max=30.0)
    n = 20_000
    (row,) = sampler.forward_reverse((0, 0, 0), [30.0], n, np.random.default_rng(4))
    assert chi_square_p(Counter(row), mix.law(), n) > P_MIN


def test_masking_uses_a_fresh_visible_set_per_draw():
    # Token 0 decides point vs the rest only when visible: at t = ln 2 it is visible in half the draws,
    # independently, so the share of draws starting with 1 is binomial with the exact FR probability.
    mix = tiny("masking")
    t = math.log(2.0)
    n = 4000
    (row,) = DiscreteMixtureSampler(mix).forward_reverse((0, 0, 0), [t], n, np.random.default_rng(5))
    law = forward_reverse_law(mix, [0], t)
    p1 = sum(p for s, p in law.items() if s[0] == 1)
    k = sum(s[0] == 1 for s in row)
    assert stats.binomtest(k, n, p1).pvalue > P_MIN
    assert 0.05 < p1 < 0.95


def brute_curve(process: str, x: tuple[int, ...], t: float, classes: dict[str, list[int]]) -> float:
    """P(Bayes class of X' = class of x | x, t) by enumerating {0, 1}^3 and every visible set by hand."""
    w = np.array([0.3, 0.3, 0.4])
    seqs = list(itertools.product([0, 1], repeat=3))
    probs = {s: brute_component_probs(s) for s in seqs}

    def cls(s):
        return max(classes, key=lambda c: (sum(w[k] * probs[s][k] for k in classes[c]),
                                           -list(classes).index(c)))

    ref = cls(x)
    if process == "truncation":
        sets = [(tuple(range(3 - int(t))), 1.0)]
    else:
        s_vis = math.exp(-t)
        sets = [(o, s_vis ** len(o) * (1 - s_vis) ** (3 - len(o)))
                for k in range(4) for o in itertools.combinations(range(3), k)]
    total = 0.0
    for o, p_o in sets:
        match = [s for s in seqs if all(s[i] == x[i] for i in o)]
        den = sum(w @ probs[s] for s in match)
        num = sum(w @ probs[s] for s in match if cls(s) == ref)
        total += p_o * num / den
    return total


@pytest.mark.parametrize("process", ["truncation", "masking"])
@pytest.mark.parametrize("x", [(0, 0, 0), (1, 1, 1), (0, 1, 0)])
def test_exact_curve_equals_brute_force(process, x):
    classes = {"point": [0], "rest": [1, 2]}
    ts = [0, 1, 2, 3] if process == "truncation" else [0.0, 0.2, 1.0, 3.0]
    got = exact_curve(tiny(process), x, ts, classes)
    assert got.t.tolist() == [float(t) for t in ts]
    assert np.all(got.se == 0)
    want = [brute_curve(process, x, t, classes) for t in ts]
    assert got.p == pytest.approx(want, abs=1e-12)
    assert got.p[0] == 1.0


def test_exact_curve_matches_the_fr_law_and_the_sampler():
    # From the point mass, P(kept) = Σ_{x'} FR_t({point})(x') 1[class(x') = class((0, 0, 0))].
    mix = tiny("masking")
    classes = {"point+product": [0, 1], "markov": [2]}
    feature = SequenceClass(mix, classes)
    ts = [0.3, 1.0]
    got = exact_curve(mix, (0, 0, 0), ts, classes).p
    ref = feature((0, 0, 0))
    for t, p in zip(ts, got, strict=True):
        law = forward_reverse_law(mix, [0], t)
        assert p == pytest.approx(sum(q for s, q in law.items() if feature(s) == ref), abs=1e-12)
    n = 4000
    rows = DiscreteMixtureSampler(mix).forward_reverse((0, 0, 0), ts, n, np.random.default_rng(6))
    for p, row in zip(got, rows, strict=True):
        assert stats.binomtest(sum(feature(s) == ref for s in row), n, p).pvalue > P_MIN


def test_sequence_class_is_the_bayes_class():
    mix = tiny("truncation")
    classes = {"point": [0], "product": [1], "markov": [2]}
    feature = SequenceClass(mix, classes)
    w = np.array([0.3, 0.3, 0.4])
    seqs = list(itertools.product([0, 1], repeat=3))
    want = [list(classes)[int(np.argmax(w * brute_component_probs(s)))] for s in seqs]
    assert [feature(s) for s in seqs] == want == feature.batch(seqs)
    assert feature((0, 0, 2)) is None and feature((0, 0)) is None and feature("abc") is None
    assert SequenceClass(mix).names == ("point", "product", "markov")
    # Ties go to the class listed first.
    tie = DiscreteMixture([{(0,): 1.0}, {(0,): 1.0}], [0.5, 0.5], "truncation")
    assert SequenceClass(tie, {"b": [1], "a": [0]})((0,)) == "b"


def test_bad_input_is_one_line_errors():
    mix = tiny("truncation")
    sampler = DiscreteMixtureSampler(mix)
    two = DiscreteMixture([{(0, 1): 1.0}, {(1, 1): 1.0}], [0.5, 0.5], "truncation")
    rng = np.random.default_rng(0)
    cases = [
        (lambda: sampler.forward_reverse((1, 1, 2), [0], 2, rng), "tokens outside 0..1"),
        (lambda: DiscreteMixtureSampler(two).forward_reverse((0, 0), [1], 2, rng), "probability 0"),
        (lambda: sampler.forward_reverse((0, 0), [0], 2, rng), "has 2 tokens"),
        (lambda: sampler.forward_reverse((0, 0, 0), [1.5], 2, rng), "whole numbers of tokens"),
        (lambda: sampler.forward_reverse((0, 0, 0), [4], 2, rng), "whole numbers of tokens"),
        (lambda: DiscreteMixtureSampler(tiny("masking")).forward_reverse((0, 0, 0), [7.0], 2, rng), "t_max"),
        (lambda: DiscreteMixtureSampler(mix, t_max=2), "leave t_max"),
        (lambda: DiscreteMixtureSampler(tiny("masking"), t_max=math.inf), "finite masking time"),
        (lambda: DiscreteMixtureSampler(GaussianMixture([[0.0]], 1.0, [1.0])), "DiscreteMixture"),
        (lambda: SequenceClass(mix, {"a": [0, 1]}), "exactly once"),
        (lambda: exact_curve(mix, (0, 0, 0), [0.5]), "whole numbers"),
    ]
    for fn, text in cases:
        with pytest.raises(CritwinError) as exc:
            fn()
        assert text in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("process", ["truncation", "masking"])
def test_passes_the_sampler_conformance_checks(process):
    notes = check_sampler(DiscreteMixtureSampler(tiny(process)), n=64)
    assert all(v == "ok" or v.startswith("skipped") for v in notes.values()), notes


def test_docstring_examples_run():
    result = doctest.testmod(discrete_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
