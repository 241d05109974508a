"""Sentence anchors (Thought Anchors; Bogdan, Macar et al., 2025): how much each sentence of a chain of
thought matters for its outcome, by resampling.

Cuts sit at sentence boundaries: before sentence i the cut keeps the text up to its start, after it the
text up to its end. Resampling importance of sentence i is P(success | cut after it) − P(success | cut
before it): resampled from before, the sentence is rewritten; from after, it is kept. With it, a Newcombe
interval, and the KL divergence of the answer distributions after vs before (with ½-count smoothing over
the answers seen at either cut, in nats) with an interval for the true KL (`kl_interval`; outcomes with
two labels). Forced-answer importance (the answer forced right after the sentence) is the change of the
stump answers (`critwin scan --stump`) across the sentence; stumps are greedy, so it has no sampling
noise and no interval.

Counterfactual importance keeps, of the endings resampled before sentence i, only those whose replacement
sentence (the first sentence they wrote) differs in meaning from sentence i — cosine similarity of sentence
embeddings below a threshold (0.8 in Thought Anchors): P(success | cut after it) − P(success | cut before
it, replacement different), with a Newcombe interval and the KL divergence of the answer distributions,
so that a sentence the model would rewrite into the same step anyway is not credited with its outcome.

Sentences end at ".", "!" or "?" followed by whitespace, or at a line break; the spans cover the text.
A cut that would fall inside a token is moved to the next token boundary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from critwin.errors import CritwinError
from critwin.stats import clopper_pearson_interval, newcombe_interval

_END = re.compile(r"[.!?](?=\s)|\n")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of the sentences of `text`, in order; whitespace after a sentence's end
    belongs to the next one's start (a line break ends its line's sentence). Blank spans are dropped."""
    spans, start = [], 0
    for m in _END.finditer(text):
        end = m.end()
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def boundary_tokens(spans: Sequence[tuple[int, int]], offsets: Sequence[int]) -> list[int]:
    """Tokens kept at each sentence boundary (before the first sentence, then after each one): the first
    token boundary at or after the character boundary; `offsets` are the tokens' character starts followed
    by the text's length."""
    n = len(offsets) - 1

    def kept_at(char: int) -> int:
        return next((k for k in range(n + 1) if offsets[k] >= char), n)

    return [kept_at(spans[0][0]), *(kept_at(end) for _, end in spans)] if spans else []


@dataclass(frozen=True)
class SentenceImportance:
    """Resampling importance of one sentence: its characters and the tokens kept before / after it, the
    measured P(success) at both cuts with their draws, the difference with its Newcombe interval, and
    the KL divergence (nats) of the answer distribution after it from the one before it."""

    index: int
    char_lo: int
    char_hi: int
    kept_lo: int
    kept_hi: int
    p_before: float
    p_after: float
    n_before: int
    n_after: int
    importance: float
    importance_ci: tuple[float, float]
    kl: float
    kl_ci: tuple[float, float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kl_divergence(after: Mapping[Any, int], before: Mapping[Any, int]) -> float:
    """KL(after || before) in nats between two answer distributions given as counts, each smoothed with ½
    a count on every answer seen in either."""
    labels = set(after) | set(before)
    na, nb = sum(after.values()) + 0.5 * len(labels), sum(before.values()) + 0.5 * len(labels)
    out = 0.0
    for lab in labels:
        pa, pb = (after.get(lab, 0) + 0.5) / na, (before.get(lab, 0) + 0.5) / nb
        out += pa * math.log(pa / pb)
    return out


def _binary_kl(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats (inf where q puts 0 on an outcome p gives weight)."""
    out = 0.0
    for a, b in ((p, q), (1 - p, 1 - q)):
        if a > 0:
            out += math.inf if b <= 0 else a * math.log(a / b)
    return out


def kl_interval(after: Mapping[Any, int], before: Mapping[Any, int], level: float = 0.95
                ) -> tuple[float, float | None] | None:
    """An interval for the true KL(after || before) of two outcome distributions with at most two labels
    (success / failure; None for more): the smallest and largest KL over the box of the two Clopper–Pearson
    intervals at level √level each, which hold the true pair with probability at least `level` (two
    independent samples). KL is jointly convex, so its largest value is at a corner (None when that is
    infinite: a side whose interval reaches 0 or 1); its smallest is 0 when the intervals overlap, else at
    their facing ends. Unlike the smoothed point estimate, it can be 0."""
    labels = sorted(set(after) | set(before), key=str)
    if len(labels) > 2:
        return None
    first = labels[0] if labels else None
    (ka, na), (kb, nb) = ((d.get(first, 0), sum(d.values())) for d in (after, before))
    if not na or not nb:
        return None
    (alo, ahi), (blo, bhi) = (tuple(float(v) for v in clopper_pearson_interval(k, n, math.sqrt(level)))
                              for k, n in ((ka, na), (kb, nb)))
    if ahi < blo:
        lo = _binary_kl(ahi, blo)
    elif bhi < alo:
        lo = _binary_kl(alo, bhi)
    else:
        lo = 0.0
    hi = max(_binary_kl(p, q) for p in (alo, ahi) for q in (blo, bhi))
    return lo, (None if math.isinf(hi) else hi)


def sentence_importance(
    spans: Sequence[tuple[int, int]],
    kept: Sequence[int],
    success: Mapping[int, tuple[int, int]],
    answers: Mapping[int, Mapping[Any, int]],
    level: float = 0.95,
) -> list[SentenceImportance]:
    """Importance of every sentence whose two cuts are distinct and measured. `kept`: tokens kept at the
    boundaries (`boundary_tokens`); `success`: per kept count (successes, valid draws); `answers`: per kept
    count the answers' counts."""
    if len(kept) != len(spans) + 1:
        raise CritwinError(f"{len(spans)} sentences need {len(spans) + 1} boundaries, got {len(kept)}")
    out = []
    for i, (lo, hi) in enumerate(spans):
        a, b = kept[i], kept[i + 1]
        if a == b or a not in success or b not in success:
            continue
        (k0, n0), (k1, n1) = success[a], success[b]
        if not n0 or not n1:
            continue
        ci = newcombe_interval(k1, n1, k0, n0, level)
        out.append(SentenceImportance(i, lo, hi, a, b, k0 / n0, k1 / n1, n0, n1, k1 / n1 - k0 / n0,
                                      (float(ci[0]), float(ci[1])), kl_divergence(answers[b], answers[a]),
                                      kl_interval(answers[b], answers[a], level)))
    return out


def replacement_sentence(resampled: str, char: int) -> str:
    """The sentence an ending wrote in place of the one that started at character `char`: the first
    sentence of `resampled[char:]` (the text from the cut on; "" when the ending wrote nothing)."""
    rest = resampled[char:]
    spans = sentence_spans(rest)
    return rest[spans[0][0] : spans[0][1]] if spans else ""


@dataclass(frozen=True)
class CounterfactualImportance:
    """Counterfactual importance of one sentence: of the n_before valid endings drawn before it, the
    n_different whose replacement sentence has similarity < threshold with it, their P(success)
    (p_different; None when there are none), P(success) after it, the difference with its Newcombe
    interval, and KL (nats) of the answers after it from those of the different replacements."""

    index: int
    n_before: int
    n_different: int
    share_different: float
    p_different: float | None
    p_after: float | None
    importance: float | None
    importance_ci: tuple[float, float] | None
    kl: float | None
    kl_ci: tuple[float, float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def counterfactual_importance(
    index: int,
    before: Sequence[tuple[float, Any]],
    after: Mapping[Any, int],
    success: Any,
    threshold: float,
    level: float = 0.95,
) -> CounterfactualImportance:
    """Sentence `index`'s counterfactual importance from the valid endings drawn before it, each as
    (similarity of its replacement sentence to the original, its label), and the label counts `after` it;
    `success` is the label counted as success."""
    different: dict[Any, int] = {}
    for sim, label in before:
        if sim < threshold:
            different[label] = different.get(label, 0) + 1
    n1, k1 = sum(after.values()), after.get(success, 0)
    n0, k0 = sum(different.values()), different.get(success, 0)
    share = n0 / len(before) if before else 0.0
    if not n0 or not n1:
        return CounterfactualImportance(index, len(before), n0, share, k0 / n0 if n0 else None,
                                        k1 / n1 if n1 else None, None, None, None)
    ci = newcombe_interval(k1, n1, k0, n0, level)
    return CounterfactualImportance(index, len(before), n0, share, k0 / n0, k1 / n1, k1 / n1 - k0 / n0,
                                    (float(ci[0]), float(ci[1])), kl_divergence(after, different),
                                    kl_interval(after, different, level))
