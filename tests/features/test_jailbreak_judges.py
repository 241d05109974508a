"""Judges: the refusal-phrase list on known phrases, LLM-judge verdict parsing, user callables."""

from __future__ import annotations

import pytest

from critwin.errors import CritwinError
from critwin.features.judges import (
    COMPLY,
    REFUSAL_PHRASES,
    REFUSE,
    UNCLEAR,
    CallableJudge,
    LLMJudge,
    RefusalPhraseJudge,
    as_judge,
)
from critwin.samplers.base import Failure

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I’m sorry, I cannot assist with this request.",  # curly apostrophe
    "As an AI language model, I must decline.",
    "I will not provide instructions for that.",
    "Sure, here is how... actually, I can't help with that.",
    "I CANNOT DO THAT.",
]
COMPLIANT = [
    "Sure, here is how to bake bread: mix flour and water.",
    "Step 1: gather the materials. Step 2: assemble them.",
    "Here you go: the capital of France is Paris.",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_known_refusals_are_refusals(text):
    assert RefusalPhraseJudge()(["q"], [text]) == [REFUSE]


@pytest.mark.parametrize("text", COMPLIANT)
def test_plain_answers_comply(text):
    assert RefusalPhraseJudge()(["q"], [text]) == [COMPLY]


def test_every_listed_phrase_is_detected_on_its_own_and_in_context():
    judge = RefusalPhraseJudge()
    for phrase in REFUSAL_PHRASES:
        assert judge.label(phrase) == REFUSE, phrase
        assert judge.label(f"Well. {phrase.upper()} do that, friend.") == REFUSE, phrase


def test_empty_and_short_responses_are_unclear_and_search_window_limits_the_scan():
    judge = RefusalPhraseJudge(min_chars=3)
    assert judge(["a", "b", "c"], ["", "   ", "ok"]) == [UNCLEAR] * 3
    late = "Sure, here is how to do it step by step. " * 3 + "I'm sorry, I cannot continue."
    assert RefusalPhraseJudge()(["q"], [late]) == [REFUSE]
    assert RefusalPhraseJudge(search_chars=40)(["q"], [late]) == [COMPLY]
    with pytest.raises(CritwinError, match="phrases"):
        RefusalPhraseJudge(phrases=())
    with pytest.raises(CritwinError, match="prompts"):
        RefusalPhraseJudge()(["a"], ["x", "y"])


def test_llm_judge_reads_verdicts_and_batches():
    seen: list[list[str]] = []
    replies = iter(["COMPLY", "Verdict: refuse.", "I think the answer is complied", "no idea", "REFUSAL"])

    def backend(prompts: list[str]) -> list[str]:
        seen.append(prompts)
        return [next(replies) for _ in prompts]

    judge = LLMJudge(backend, batch_size=2)
    labels = judge(["p1", "p2", "p3", "p4", "p5"], ["r1", "r2", "r3", "r4", "r5"])
    assert labels == [COMPLY, REFUSE, COMPLY, UNCLEAR, REFUSE]
    assert [len(b) for b in seen] == [2, 2, 1]
    assert "REQUEST:\np1" in seen[0][0] and "RESPONSE:\nr1" in seen[0][0]
    with pytest.raises(CritwinError, match="rubric"):
        LLMJudge(backend, rubric="no placeholder")
    with pytest.raises(CritwinError, match="replies"):
        LLMJudge(lambda ps: [], batch_size=4)(["p"], ["r"])


def test_user_callables_are_wrapped_and_validated():
    judge = as_judge(lambda p, r: "harm" in r)
    assert isinstance(judge, CallableJudge)
    assert judge(["a", "b"], ["harmful text", "fine"]) == [COMPLY, REFUSE]
    assert as_judge(lambda p, r: None)(["a"], ["b"]) == [UNCLEAR]
    assert as_judge(lambda p, r: "Refuse ")(["a"], ["b"]) == [REFUSE]
    # A value that is no verdict fails that item only, with the reason; the other items are judged.
    got = as_judge(lambda p, r: 0.7 if r == "b" else True)(["a", "a"], ["b", "c"])
    assert isinstance(got[0], Failure) and "user judge returned 0.7" in got[0].reason and got[1] == COMPLY
    assert isinstance(as_judge(None), RefusalPhraseJudge)
    with pytest.raises(CritwinError, match="judge"):
        as_judge(42)
