"""Toy hierarchical language: exact next-token law, exact curves by brute-force enumeration, theory windows
at the deciding tokens, and the acceptance checks (coverage, detected windows within one token)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _testbeds import small_language

from critwin.curves import scan
from critwin.errors import CritwinError
from critwin.features.base import ChoiceFeature
from critwin.samplers.toy_lm import Choice, ToyLanguage, ToyLMSampler, demo_language
from critwin.theory import staircase
from critwin.windows import detect_windows, window_agreement


def all_texts(lang: ToyLanguage) -> dict[tuple[int, ...], float]:
    """Brute force: every token sequence of length L over the vocabulary with its probability > 0."""
    out = {}
    for seq in itertools.product(range(len(lang.vocab)), repeat=lang.length):
        p = lang.sequence_prob(seq)
        if p > 0:
            out[seq] = p
    return out


def test_next_token_law_multiplies_to_the_sequence_law():
    lang = small_language()
    texts = all_texts(lang)
    assert sum(texts.values()) == pytest.approx(1.0)
    for seq, p in texts.items():
        chain = 1.0
        for i in range(lang.length):
            probs = lang.next_token_probs(seq[:i])
            assert sum(probs.values()) == pytest.approx(1.0)
            chain *= probs.get(seq[i], 0.0)
        assert chain == pytest.approx(p)


def test_exact_curve_matches_brute_force_conditionals():
    lang = small_language()
    texts = all_texts(lang)
    for x in list(texts)[:6]:
        for names in (["c1"], ["c2"], ["c1", "c2"]):
            key = tuple(lang.parse(x)[n] for n in names)
            ts = range(lang.length + 1)
            exact = lang.exact_curve(x, ts, names)
            for t, value in zip(ts, exact, strict=True):
                prefix = x[: lang.length - t]
                mass = {s: p for s, p in texts.items() if s[: len(prefix)] == prefix}
                kept = sum(p for s, p in mass.items() if tuple(lang.parse(s)[n] for n in names) == key)
                assert value == pytest.approx(kept / sum(mass.values()))


def test_complete_draws_the_exact_conditional_law():
    lang = small_language()
    texts = all_texts(lang)
    x = max(texts, key=texts.get)
    prefix = x[:2]
    draws = lang.complete(prefix, 40_000, np.random.default_rng(0))
    mass = {s: p for s, p in texts.items() if s[:2] == prefix}
    total = sum(mass.values())
    seen = {}
    for row in map(tuple, draws):
        seen[row] = seen.get(row, 0) + 1
    assert set(seen) <= set(mass)
    for s, p in mass.items():
        q = p / total
        assert seen.get(s, 0) / 40_000 == pytest.approx(q, abs=5 * np.sqrt(q * (1 - q) / 40_000) + 1e-9)


def test_theory_windows_sit_at_the_deciding_tokens():
    lang = demo_language()
    mix = lang.discrete_mixture()
    x = ToyLMSampler(lang).sample(1, np.random.default_rng(0))[0]
    L = lang.length
    for name in ("mood", "ending"):
        j = lang.decision_position(name)
        (w,) = staircase(mix, 0.1, lang.chain(x, [name]))
        assert (w.lo.t, w.hi.t) == (L - j - 1, L - j)
    ws = staircase(mix, 0.1, lang.chain(x, ["field"]))  # field depends on topic: a two-step staircase
    assert [(w.lo.t, w.hi.t) for w in ws] == [
        (L - lang.decision_position("field") - 1, L - lang.decision_position("field")),
        (L - lang.decision_position("topic") - 1, L - lang.decision_position("topic")),
    ]
    assert lang.decision_position("ending") == lang._slot("ending").start + 1  # options share "the"


@pytest.mark.parametrize(
    ("names", "n", "min_jump"),
    [(["field"], 1000, 0.2), (["mood"], 1000, 0.2), (["topic", "field", "mood", "ending"], 2000, 0.05)],
)
def test_detected_windows_within_one_token_and_coverage(names, n, min_jump):
    """Acceptance: windows within ±1 token of the theory's, every theory window with an exact drop of at
    least min_jump + 0.05 found; >= 95% of points inside their 99% intervals (pooled over runs)."""
    lang = demo_language()
    sampler = ToyLMSampler(lang)
    mix = lang.discrete_mixture()
    ts = np.arange(lang.length + 1.0)
    inside, agree = [], 0
    runs = 6
    for seed in range(runs):
        x = sampler.sample(1, np.random.default_rng([1, seed]))[0]
        c = scan(sampler, x, ts, n, ChoiceFeature(lang, names), seed=seed)
        exact = lang.exact_curve(x, ts, names)
        lo, hi = c.wilson(0.99)
        inside.extend((exact >= lo - 1e-12) & (exact <= hi + 1e-12))
        theory = [(w.lo.t, w.hi.t) for w in staircase(mix, 0.1, lang.chain(x, names))]
        big = [exact[int(a)] - exact[int(b)] >= min_jump + 0.05 for a, b in theory]
        ag = window_agreement(theory, [(w.t_lo, w.t_hi) for w in detect_windows(c, min_jump=min_jump)])
        agree += all(o <= 1 for o in ag.outside) and all(
            h > 0 for h, b in zip(ag.hits, big, strict=True) if b
        )
    assert np.mean(inside) >= 0.95
    assert agree >= runs - 1, agree


def test_bad_input():
    with pytest.raises(CritwinError, match="earlier choice"):
        ToyLanguage((Choice("b", (("x",),), (1.0,), given="a"),))
    with pytest.raises(CritwinError, match="summing to 1"):
        ToyLanguage((Choice("a", (("x",), ("y",)), (0.5, 0.6)),))
    with pytest.raises(CritwinError, match="one length"):
        ToyLanguage((Choice("a", (("x",), ("y", "z")), (0.5, 0.5)),))
    lang = demo_language()
    with pytest.raises(CritwinError, match="cannot start"):
        lang.conditional(lang.encode("science"))
    with pytest.raises(CritwinError, match="unknown choice"):
        ChoiceFeature(lang, "colour")
    s = ToyLMSampler(lang)
    x = s.sample(1, np.random.default_rng(0))[0]
    with pytest.raises(CritwinError, match="whole numbers"):
        s.forward_reverse(x, [1.5], 2, np.random.default_rng(0))
    assert ChoiceFeature(lang, "mood")(lang.encode("um") * lang.length) is None
