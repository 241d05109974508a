"""Sentence anchors (`critwin.methods.anchors`): sentence splitting and cut placement, the KL divergence by
hand, and on the hierarchical toy language, whose exact conditionals give each "sentence's" true
importance, the coverage of the reported Newcombe intervals over 100 seeded scans."""

from __future__ import annotations

import math

import numpy as np
import pytest

from critwin.curves import scan
from critwin.errors import CritwinError
from critwin.methods.anchors import boundary_tokens, kl_divergence, sentence_importance, sentence_spans
from critwin.samplers.toy_lm import ToyLMSampler, demo_language
from critwin.stats import newcombe_interval
from critwin.strategies import Fixed


def test_sentences_end_at_stops_before_whitespace_and_at_line_breaks():
    text = "b: 05+7=12\nc: 12+9=21\nThe answer is 3.5. Done!  ok"
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "b: 05+7=12\n", "c: 12+9=21\n", "The answer is 3.5.", " Done!", "  ok"]
    assert sentence_spans("no boundary at all") == [(0, 18)]
    assert sentence_spans("  \n\n") == []


def test_cuts_go_to_the_next_token_boundary():
    # tokens start at characters 0, 3, 5, 9 and the text has 12 characters
    offsets = [0, 3, 5, 9, 12]
    assert boundary_tokens([(0, 4), (4, 9), (9, 12)], offsets) == [0, 2, 3, 4]


def test_kl_by_hand():
    after, before = {"a": 3, "b": 1}, {"a": 1, "b": 3}
    pa, pb = {"a": 3.5 / 5, "b": 1.5 / 5}, {"a": 1.5 / 5, "b": 3.5 / 5}
    want = sum(pa[k] * math.log(pa[k] / pb[k]) for k in pa)
    assert kl_divergence(after, before) == pytest.approx(want)
    assert kl_divergence({"a": 4}, {"a": 9}) == 0.0


def test_importance_is_the_difference_across_each_sentence_with_newcombe():
    spans = [(0, 4), (4, 9), (9, 12)]
    success = {0: (6, 10), 2: (6, 10), 3: (1, 10), 4: (1, 10)}
    answers = {k: {"x": s, "y": n - s} for k, (s, n) in success.items()}
    got = sentence_importance(spans, [0, 2, 3, 4], success, answers, 0.9)
    assert [(g.index, g.kept_lo, g.kept_hi) for g in got] == [(0, 0, 2), (1, 2, 3), (2, 3, 4)]
    assert got[1].importance == pytest.approx(-0.5)
    assert got[1].importance_ci == pytest.approx(newcombe_interval(1, 10, 6, 10, 0.9))
    assert got[0].importance == 0.0 and got[0].kl == 0.0
    with pytest.raises(CritwinError):
        sentence_importance(spans, [0, 2], success, answers)


def test_on_the_toy_language_the_intervals_cover_the_exact_importance():
    """The demo language's segments play the sentences (filler, topic, filler, field, …); success is
    "the field is music". The exact P(success | prefix) comes from the language's enumeration; the 95%
    Newcombe interval of each segment's importance must cover the exact difference in about 95% of
    (segment, text) pairs: at least 0.95 − 3 binomial standard errors over the pairs scored."""
    lang = demo_language()
    sampler = ToyLMSampler(lang)
    field = lang.choice("field")
    music = field.option_names.index("music")
    key = lang.feature_key(["field"])[:, 0]
    ends = np.cumsum([getattr(seg, "length", None) or len(seg.options[0]) for seg in lang.segments])
    bounds = [0, *map(int, ends)]
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))  # token spans (offsets are the identity)
    offsets = list(range(lang.length + 1))

    def exact(x, kept):
        return float(lang.conditional(x[:kept])[key == music].sum())

    def is_music(text):
        return lang.parse(text)["field"] == "music"

    rng = np.random.default_rng(3)
    covered = total = 0
    for run in range(100):
        (x,) = sampler.sample(1, rng)
        kept = boundary_tokens(spans, offsets)
        curve = scan(sampler, x, feature=is_music, strategy=Fixed([lang.length - k for k in kept], 200),
                     seed=run, reference=True)
        ks = [int(lang.length - t) for t in curve.t]
        success = {k: (int(a), int(b)) for k, a, b in zip(ks, curve.n_kept, curve.n_valid, strict=True)}
        answers = {k: dict(c) for k, c in zip(ks, curve.label_counts, strict=True)}
        for imp in sentence_importance(spans, kept, success, answers, 0.95):
            truth = exact(x, imp.kept_hi) - exact(x, imp.kept_lo)
            covered += imp.importance_ci[0] - 1e-12 <= truth <= imp.importance_ci[1] + 1e-12
            total += 1
    assert total == 100 * len(spans)
    assert covered / total >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / total)


def test_the_kl_interval_by_hand_and_its_coverage_on_the_toy_language():
    """The box of two Clopper–Pearson intervals at √0.95 each: by hand for one pair of counts; on the toy
    language's segments (success: the field is music), the interval covers the exact binary KL of the two
    cuts' success probabilities in at least 95% − 3 SE of (segment, text) pairs."""
    from critwin.methods.anchors import kl_interval
    from critwin.stats import clopper_pearson_interval

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in ((p, q), (1 - p, 1 - q)) if a > 0)

    (alo, ahi), (blo, bhi) = (clopper_pearson_interval(k, 40, math.sqrt(0.95)) for k in (36, 8))
    lo, hi = kl_interval({True: 36, False: 4}, {True: 8, False: 32})
    assert lo == pytest.approx(kl(alo, bhi)) and hi == pytest.approx(max(kl(p, q) for p in (alo, ahi)
                                                                             for q in (blo, bhi)))
    assert kl_interval({True: 5, False: 5}, {True: 6, False: 4})[0] == 0.0  # the intervals overlap
    # before's interval reaches q = 1, where KL(p || q) is infinite for every p < 1: no upper bound
    assert kl_interval({True: 3, False: 6}, {True: 9})[1] is None
    assert kl_interval({"a": 1, "b": 1, "c": 1}, {"a": 3}) is None

    lang = demo_language()
    sampler = ToyLMSampler(lang)
    music = lang.choice("field").option_names.index("music")
    key = lang.feature_key(["field"])[:, 0] == music
    ends = np.cumsum([getattr(seg, "length", None) or len(seg.options[0]) for seg in lang.segments])
    bounds = [0, *map(int, ends)]
    kept = bounds
    rng = np.random.default_rng(8)
    covered = total = 0
    for run in range(60):
        (x,) = sampler.sample(1, rng)
        curve = scan(sampler, x, feature=lambda s: lang.parse(s)["field"] == "music",
                     strategy=Fixed([lang.length - k for k in kept], 100), seed=run, reference=True)
        counts = {int(lang.length - t): dict(c) for t, c in zip(curve.t, curve.label_counts, strict=True)}
        for a, b in zip(kept[:-1], kept[1:], strict=True):
            p, q = (float(lang.conditional(x[:k])[key].sum()) for k in (b, a))
            if p in (0.0, 1.0) or q in (0.0, 1.0):
                continue  # an outcome the language rules out: the true KL can be infinite or undefined
            lo, hi = kl_interval(counts[b], counts[a])
            covered += lo - 1e-12 <= kl(p, q) and (hi is None or kl(p, q) <= hi + 1e-12)
            total += 1
    assert total >= 100
    assert covered / total >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / total)
