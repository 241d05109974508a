"""Discrete theory engine (truncation, masking) against naive enumeration and DESIGN §1 closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from test_theory_reference import bc as ref_bc
from test_theory_reference import degraded_law, forward_reverse, mixture_law
from test_theory_reference import tv as ref_tv

from critwin.theory import (
    MASK,
    DiscreteMixture,
    MarkovComponent,
    ProductComponent,
    critical_window,
    forward_reverse_law,
    forward_reverse_tv,
    t_after,
    t_before,
)


def random_mixture(rng: np.random.Generator, k: int, length: int, vocab: int, support: int):
    seqs = list(itertools.product(range(vocab), repeat=length))
    comps = []
    for _ in range(k):
        idx = rng.choice(len(seqs), size=min(support, len(seqs)), replace=False)
        p = rng.dirichlet(np.ones(idx.size))
        comps.append({seqs[i]: float(pi) for i, pi in zip(idx, p, strict=True)})
    return comps, list(rng.dirichlet(np.ones(k)))


def product_table(marginals) -> dict:
    """Explicit table of independent tokens (for closed-form tests and structured-vs-table checks)."""
    out = {}
    for seq in itertools.product(*[range(len(m)) for m in marginals]):
        p = math.prod(m[v] for m, v in zip(marginals, seq, strict=True))
        if p > 0:
            out[seq] = p
    return out


MASK_TIMES = [0.0, 0.1, 0.4, 1.0, 2.5, math.inf]


@pytest.mark.parametrize("process,times", [("truncation", None), ("masking", MASK_TIMES)])
def test_laws_tv_bc_and_fr_match_naive_enumeration(process, times):
    rng = np.random.default_rng(0)
    for _ in range(12):
        comps, w = random_mixture(rng, k=3, length=3, vocab=3, support=4)
        mix = DiscreteMixture(comps, w, process)
        for t in times or range(4):
            for a, b in [([0], [0, 1]), ([0, 1], [2]), ([1], [0, 2])]:
                pa = degraded_law(comps, w, a, process, t)
                pb = degraded_law(comps, w, b, process, t)
                assert mix.tv(a, b, t).value == pytest.approx(ref_tv(pa, pb), abs=1e-12)
                assert mix.bc(a, b, t).value == pytest.approx(ref_bc(pa, pb), abs=1e-12)
            law = mix.law([0, 1], t)
            ref = degraded_law(comps, w, [0, 1], process, t)
            ref = {tuple(MASK if x == -1 else x for x in y): p for y, p in ref.items()}
            assert ref_tv(law, ref) < 1e-12
            fr = forward_reverse_law(mix, [0], t)
            assert ref_tv(fr, forward_reverse(comps, w, [0], process, t)) < 1e-12
            assert forward_reverse_tv(mix, [0], [0, 1], t).value == pytest.approx(
                ref_tv(fr, mixture_law(comps, w, [0, 1])), abs=1e-12
            )


def test_masking_single_token_closed_form():
    """S_targ and S_init differ only in the law of token j: TV_t = e^{-t} · TV_0."""
    other = [[0.2, 0.5, 0.3], [0.6, 0.4, 0.0]]
    a_j, b_j = [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]
    targ = product_table([other[0], a_j, other[1]])
    alt = product_table([other[0], b_j, other[1]])
    unrelated = {(2, 2, 1): 1.0}
    mix = DiscreteMixture([targ, alt, unrelated], [0.3, 0.5, 0.2], "masking")
    w_alt = 0.5 / 0.8
    tv0 = w_alt * 0.5 * sum(abs(x - y) for x, y in zip(a_j, b_j, strict=True))
    assert mix.tv([0], [0, 1], 0.0).value == pytest.approx(tv0, abs=1e-12)
    for t in [0.0, 0.3, 1.0, 4.0]:
        truth = math.exp(-t) * tv0
        assert mix.tv([0], [0, 1], t).value == pytest.approx(truth, abs=1e-12)
        src, w = [targ, alt, unrelated], [0.3, 0.5, 0.2]
        naive = ref_tv(degraded_law(src, w, [0], "masking", t), degraded_law(src, w, [0, 1], "masking", t))
        assert naive == pytest.approx(truth, abs=1e-12)
    # Same with a ProductComponent representation.
    mix2 = DiscreteMixture(
        [ProductComponent([other[0], a_j, other[1]]), ProductComponent([other[0], b_j, other[1]]), unrelated],
        [0.3, 0.5, 0.2],
        "masking",
    )
    assert mix2.tv([0], [0, 1], 0.8).value == pytest.approx(math.exp(-0.8) * tv0, abs=1e-12)
    eps = 0.05
    assert t_before(mix, eps, [0], [0, 1]).t == pytest.approx(math.log(tv0 / eps), abs=1e-9)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_masking_m_revealing_tokens_closed_form(m):
    """Each of m tokens alone tells S_init from the rest: TV(p^init_t, rest_t) = 1 − (1 − e^{-t})^m."""
    big_l = 4
    shared = [0.5, 0.5, 0.0, 0.0]  # tokens {0, 1} at the non-revealing positions, same law for everyone
    init_m = [[0.0, 0.0, 0.3, 0.7] if i < m else shared for i in range(big_l)]  # revealing values {2, 3}
    rest_m = [[0.6, 0.4, 0.0, 0.0] if i < m else shared for i in range(big_l)]  # values {0, 1} there
    comps = [product_table(init_m), product_table(rest_m)]
    mix = DiscreteMixture(comps, [0.4, 0.6], "masking")
    for t in [0.0, 0.2, 1.0, 3.0]:
        truth = 1 - (1 - math.exp(-t)) ** m
        assert mix.tv([0], [1], t).value == pytest.approx(truth, abs=1e-12)
        assert ref_tv(
            degraded_law(comps, [0.4, 0.6], [0], "masking", t),
            degraded_law(comps, [0.4, 0.6], [1], "masking", t),
        ) == pytest.approx(truth, abs=1e-12)
    eps = 0.1
    ta = t_after(mix, eps, [0])
    assert ta.t == pytest.approx(-math.log(1 - (eps**2) ** (1 / m)), abs=1e-9)


def test_truncation_single_token_window():
    """Feature first expressed at token j, same law before: the window is token j, flat elsewhere."""
    big_l, j = 5, 2
    prefix = [[0.5, 0.5, 0.0]] * j
    suffix_a = [[0.0, 0.0, 1.0]] + [[0.3, 0.7, 0.0]] * (big_l - j - 1)
    suffix_b = [[1.0, 0.0, 0.0]] + [[0.3, 0.7, 0.0]] * (big_l - j - 1)
    mix = DiscreteMixture(
        [product_table(prefix + suffix_a), product_table(prefix + suffix_b)], [0.5, 0.5], "truncation"
    )
    curve = [mix.tv([0], [1], t).value for t in range(big_l + 1)]
    assert curve == [1.0] * (big_l - j) + [0.0] * (j + 1)
    win = critical_window(mix, 0.1, [0], [0, 1])
    assert (win.lo.t, win.hi.t) == (big_l - j - 1, big_l - j)
    assert win.width == 1


def test_markov_and_product_components_match_tables():
    rng = np.random.default_rng(3)
    big_l, v = 4, 3
    init = rng.dirichlet(np.ones(v))
    trans = rng.dirichlet(np.ones(v), size=(big_l - 1, v))
    markov = MarkovComponent(init, trans, big_l)
    marg = rng.dirichlet(np.ones(v), size=big_l)
    prod = ProductComponent(marg)
    table_m = {}
    for seq in itertools.product(range(v), repeat=big_l):
        p = init[seq[0]] * math.prod(trans[i, seq[i], seq[i + 1]] for i in range(big_l - 1))
        table_m[seq] = p
    table_p = product_table(marg)
    extra = {(0, 1, 2, 0): 0.5, (2, 2, 2, 2): 0.5}
    for process, times in [("truncation", range(big_l + 1)), ("masking", [0.0, 0.3, 1.2])]:
        s = DiscreteMixture([markov, prod, extra], [0.3, 0.3, 0.4], process)
        e = DiscreteMixture([table_m, table_p, extra], [0.3, 0.3, 0.4], process)
        for t in times:
            for a, b in [([0], [1]), ([0, 1], [2]), ([0], [0, 1, 2])]:
                assert s.tv(a, b, t).value == pytest.approx(e.tv(a, b, t).value, abs=1e-12)
                assert s.bc(a, b, t).value == pytest.approx(e.bc(a, b, t).value, abs=1e-12)
            assert ref_tv(forward_reverse_law(s, [0], t), forward_reverse_law(e, [0], t)) < 1e-12


def test_markov_shared_transition_matrix_and_long_sequences():
    """A (V, V) matrix is shared by all steps; marginals of long chains come from the recursion, not V^L."""
    mc = MarkovComponent([1.0, 0.0], [[0.9, 0.1], [0.0, 1.0]], 40)
    other = MarkovComponent([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], 40)
    mix = DiscreteMixture([mc, other], [0.5, 0.5], "truncation")
    # Prefix of n tokens: P(all zeros) = 0.9^(n−1) under mc and 1 under other, so TV = 1 − 0.9^(n−1).
    for t in (0, 10, 39):
        n = 40 - t
        assert mix.tv([0], [1], t).value == pytest.approx(1 - 0.9 ** (n - 1), abs=1e-12)


def test_tv_curve_is_exact_and_integer_for_truncation():
    comps, w = random_mixture(np.random.default_rng(1), 3, 3, 2, 3)
    mix = DiscreteMixture(comps, w, "truncation")
    curve = mix.tv_curve([0], [0, 1])
    assert curve.exact and curve.integer_t and curve.t_max == 3


def test_restrict_is_the_sub_population():
    comps, w = random_mixture(np.random.default_rng(5), 3, 2, 3, 3)
    mix = DiscreteMixture(comps, w, "masking", labels=["a", "b", "c"])
    sub = mix.restrict(["a", "c"])
    assert sub.labels == ("a", "c") and sum(sub.weights) == pytest.approx(1.0)
    assert ref_tv(sub.law(None, 0.7), mix.law(["a", "c"], 0.7)) < 1e-12
