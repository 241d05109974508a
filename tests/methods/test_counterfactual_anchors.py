"""Counterfactual importance of sentence anchors (`critwin.methods.anchors.counterfactual_importance`): the
replacement sentence and the filtering by hand, the bundled embedder against sentence-transformers'
published all-MiniLM-L6-v2 similarities, and on the hierarchical toy language, where "differs in meaning"
is exact (another option or filler word) and the exact conditionals give the true importance, the
coverage of the Newcombe intervals over 100 seeded texts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from critwin.curves import scan
from critwin.errors import CritwinError
from critwin.methods.anchors import (
    boundary_tokens,
    counterfactual_importance,
    kl_divergence,
    replacement_sentence,
)
from critwin.samplers.toy_lm import Choice, ToyLMSampler, demo_language
from critwin.stats import newcombe_interval
from critwin.strategies import Fixed


def test_the_replacement_is_the_first_sentence_written_from_the_cut():
    ending = "b: 05+7=12\nc: 12+8=20\nThe answer is 20."
    assert replacement_sentence(ending, 11) == "c: 12+8=20\n"
    assert replacement_sentence(ending, 22) == "The answer is 20."
    assert replacement_sentence(ending, len(ending)) == ""


def test_only_replacements_below_the_threshold_count():
    before = [(0.95, True), (0.8, True), (0.79, False), (0.1, False), (0.5, True)]
    got = counterfactual_importance(3, before, {True: 9, False: 1}, True, 0.8, 0.9)
    assert (got.index, got.n_before, got.n_different) == (3, 5, 3)  # 0.8 itself is "the same meaning"
    assert got.share_different == pytest.approx(3 / 5)
    assert got.p_different == pytest.approx(1 / 3) and got.p_after == pytest.approx(0.9)
    assert got.importance == pytest.approx(0.9 - 1 / 3)
    assert got.importance_ci == pytest.approx(newcombe_interval(9, 10, 1, 3, 0.9))
    assert got.kl == pytest.approx(kl_divergence({True: 9, False: 1}, {True: 1, False: 2}))
    none = counterfactual_importance(0, [(0.9, True)], {True: 2}, True, 0.8)
    assert none.n_different == 0 and none.importance is None and none.importance_ci is None


def test_the_bundled_embedder_gives_the_published_minilm_similarities():
    """sentence-transformers' quickstart prints these for all-MiniLM-L6-v2: 0.6660, 0.1046, 0.1411."""
    from critwin.features.similarity import SentenceEmbedder

    emb = SentenceEmbedder()
    a, b, c = "The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."
    got = emb.similarities([(a, b), (a, c), (b, c), (a, a), (a, "  ")])
    assert got[:3] == pytest.approx([0.6660, 0.1046, 0.1411], abs=1e-3)
    assert got[3] == pytest.approx(1.0) and got[4] == 0.0
    with pytest.raises(CritwinError, match="not a folder"):
        SentenceEmbedder("/nonexistent/model")


def test_on_the_toy_language_the_intervals_cover_the_exact_counterfactual_importance():
    """The demo language's segments play the sentences; a replacement differs in meaning when its tokens
    differ from the original's (similarity 0, else 1). Exact truth: P(music | text up to the segment's end)
    − P(music | text up to its start, the segment redrawn differently), from the language's enumeration
    (filler is independent of the choices, so for filler the second term is P(music | start)). The 95%
    intervals must cover it in at least 0.95 − 3 binomial SE of the (segment, text) pairs scored."""
    lang = demo_language()
    sampler = ToyLMSampler(lang)
    music = lang.choice("field").option_names.index("music")
    key = lang.feature_key(["field"])[:, 0] == music
    widths = [len(seg.options[0]) if isinstance(seg, Choice) else seg.length for seg in lang.segments]
    bounds = [0, *map(int, np.cumsum(widths))]
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    kept = boundary_tokens(spans, list(range(lang.length + 1)))
    tokens = lang.assignment_tokens

    def truth(x, i):
        a, b = spans[i]
        after = float(lang.conditional(x[:b])[key].sum())
        p = lang.conditional(x[:a])
        if not isinstance(lang.segments[i], Choice):
            return after - float(p[key].sum()), 1 - (1 / 3) ** (b - a)
        differ = np.any(tokens[:, a:b] != np.asarray(x[a:b]), axis=1)
        if p[differ].sum() == 0:
            return None, 0.0
        return after - float(p[differ & key].sum() / p[differ].sum()), float(p[differ].sum())

    rng = np.random.default_rng(5)
    covered = total = 0
    for run in range(100):
        (x,) = sampler.sample(1, rng)
        draws = []
        scan(
            sampler,
            x,
            feature=lambda s: lang.parse(s)["field"] == "music",
            strategy=Fixed([lang.length - k for k in kept], 200),
            seed=run,
            reference=True,
            on_draws=draws.append,
        )
        (d,) = draws
        by_kept = {
            int(lang.length - t): list(zip(row, labels, strict=True))
            for t, row, labels in zip(d.ts, d.samples, d.labels, strict=True)
        }
        for i, (a, b) in enumerate(spans):
            before = [(float(tuple(s[a:b]) == tuple(x[a:b])), lab) for s, lab in by_kept[a]]
            after = {True: sum(lab for _, lab in by_kept[b]), False: sum(not lab for _, lab in by_kept[b])}
            got = counterfactual_importance(i, before, after, True, 0.8, 0.95)
            want, p_differ = truth(x, i)
            if want is None:
                assert got.n_different == 0
                continue
            assert (
                abs(got.share_different - p_differ) <= 5 * math.sqrt(p_differ * (1 - p_differ) / 200) + 1e-9
            )
            if got.importance is None:
                continue
            covered += got.importance_ci[0] - 1e-12 <= want <= got.importance_ci[1] + 1e-12
            total += 1
    assert total >= 500
    assert covered / total >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / total)
