"""Graders: math-verify equivalence, multiple choice, exact match, user callables, answer labels."""

from __future__ import annotations

import pytest

from critwin.errors import CritwinError
from critwin.features.grading import (
    NO_ANSWER,
    AnswerFeature,
    AnswerLabeler,
    CallableGrader,
    ExactMatchGrader,
    Grader,
    GradingPool,
    MathGrader,
    MultipleChoiceGrader,
    grader_for,
    math_equal,
    verdict_counts,
)
from critwin.samplers.base import Failure


@pytest.fixture(scope="module")
def pool():
    with GradingPool(n_workers=1, timeout_s=20.0) as p:
        yield p


@pytest.fixture(scope="module")
def math_grader(pool):
    return MathGrader(pool=pool, timeout_s=20.0)


EQUAL = [
    ("0.5", r"\frac{1}{2}"),
    (r"\frac12", "1/2"),
    ("1/2", "0.5"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    ("x = 3", "3"),
    (r"10\%", "0.1"),
    (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2"),
    ("1,000", "1000"),
    (r"\{1, 2\}", r"\{2,1\}"),
    (r"2\sqrt{3}", r"\sqrt{12}"),
]
NOT_EQUAL = [
    ("2", "3"),
    ("-4", "4"),
    (r"\frac{1}{3}", "0.34"),
    (r"\sqrt{2}", "1.41"),
    ("(1,2)", "(2,1)"),
]


def test_math_equivalences_in_the_pool(math_grader):
    verdicts = math_grader.grade_many([(a, g) for a, g in EQUAL] + [(a, g) for a, g in NOT_EQUAL])
    assert verdicts == [True] * len(EQUAL) + [False] * len(NOT_EQUAL)


def test_math_equal_direct_call_agrees():
    assert math_equal(r"\frac{1}{2}", "0.5") is True
    assert math_equal("2", "3") is False
    # unparseable on either side: falls back to normal forms
    assert math_equal(r"\text{blue}", r"\text{blue}") is True


def test_missing_answer_is_a_failure_not_an_outcome(math_grader):
    verdicts = math_grader.grade_many([(None, "1"), ("  ", "1"), ("1", "1")])
    assert verdicts[0] is NO_ANSWER and verdicts[1] is NO_ANSWER and verdicts[2] is True
    assert verdict_counts(verdicts) == {"correct": 1, "wrong": 0, "failed": 2}


def test_math_grader_extracts_then_grades(math_grader):
    text = r"We simplify and get $\boxed{\frac{2}{4}}$."
    answer = math_grader.extract(text)
    assert answer == r"\frac{2}{4}"
    assert math_grader.grade(answer, "0.5") is True


def test_math_labeler_merges_equivalent_answers(math_grader):
    labeler = math_grader.labeler()
    labels = labeler.label_many([r"\frac{1}{2}", "0.5", "1/2", "3", r"\dfrac{1}{2}", None, "6/2", "x"])
    half, three = labels[0], labels[3]
    assert labels == [half, half, half, three, half, None, three, "x"]
    assert half != three
    assert labeler.labels == (half, three, "x")
    assert labeler("0.50") == half  # callable: a scan feature


def test_labeler_failed_comparison_gives_none():
    calls = []

    def flaky(pairs):
        calls.append(list(pairs))
        return [Failure("time-out")] * len(pairs)

    labeler = AnswerLabeler(flaky)
    assert labeler("7") == "7"  # first answer: nothing to compare with
    assert labeler("8") is None  # could not be decided: a failed item
    assert labeler.labels == ("7",)
    assert labeler("7") == "7" and len(calls) == 1  # same form: no new comparison


def test_multiple_choice_grader():
    g = MultipleChoiceGrader("ABCDE")
    assert g.extract("I think so. The answer is (E).") == "E"
    assert g.extract("I am not sure") is None
    assert g.grade_many([("B", "B"), ("b", "B"), ("C", "B"), (None, "B")]) == [True, True, False, NO_ANSWER]
    labeler = g.labeler()
    assert labeler.label_many(["B", "b", "C", None]) == ["B", "B", "C", None]
    with pytest.raises(CritwinError):
        MultipleChoiceGrader("AA")


def test_exact_match_grader_normalises():
    g = ExactMatchGrader()
    verdicts = g.grade_many([(r"$\text{Paris}$.", "paris"), ("Rome", "Paris"), ("", "x")])
    assert verdicts == [True, False, NO_ANSWER]
    assert ExactMatchGrader(case_sensitive=True).grade("Paris", "paris") is False
    assert g.labeler().label_many(["Paris", "paris.", "Rome"]) == ["paris", "paris", "rome"]


def test_callable_grader_inline_errors_and_bad_returns_are_failures():
    def grade(answer, gold):
        if answer == "boom":
            raise RuntimeError("bad grader")
        if answer == "maybe":
            return "yes"
        return answer.lower() == gold.lower()

    g = CallableGrader(grade)
    verdicts = g.grade_many([("A", "a"), ("B", "a"), ("boom", "a"), ("maybe", "a"), (None, "a")])
    assert verdicts[:2] == [True, False]
    assert isinstance(verdicts[2], Failure) and "bad grader" in verdicts[2].reason
    assert isinstance(verdicts[3], Failure) and "expected bool" in verdicts[3].reason
    assert verdicts[4] is NO_ANSWER


def test_callable_grader_equivalence_for_labels():
    g = CallableGrader(lambda a, b: a == b, equivalent=lambda a, b: a.split()[0] == b.split()[0])
    assert g.labeler().label_many(["red car", "red bus", "blue car"]) == ["redcar", "redcar", "bluecar"]
    with pytest.raises(CritwinError, match="not callable"):
        CallableGrader("not a function")  # type: ignore[arg-type]


def test_grader_for_and_protocol(pool):
    assert isinstance(grader_for("math", pool=pool), MathGrader)
    mc = grader_for("mc", letters="ABC")
    assert isinstance(mc, MultipleChoiceGrader) and mc.letters == "ABC"
    assert isinstance(grader_for("exact"), ExactMatchGrader)
    for g in (grader_for("math", pool=pool), mc, grader_for("exact"), CallableGrader(lambda a, b: True)):
        assert isinstance(g, Grader)
    with pytest.raises(CritwinError, match="task 'essay' unknown"):
        grader_for("essay")
    with pytest.raises(CritwinError, match="timeout_s"):
        MathGrader(timeout_s=0)


class _Resp:
    def __init__(self, response_text):
        self.response_text = response_text


def test_answer_feature_labels_samples_by_same_answer(math_grader):
    feature = AnswerFeature(math_grader)
    original = _Resp(r"... so the result is \boxed{\frac{1}{2}}")
    ref = feature(original)
    assert ref == r"\frac{1}{2}"
    samples = [_Resp("The answer is 0.5."), _Resp("The answer is 2."), _Resp("no idea"), "Answer: 1/2", 42]
    labels = feature.label_many(samples)
    assert labels[0] == ref and labels[3] == ref  # same answer, different spelling: kept
    assert labels[1] == "2" and labels[1] != ref
    assert labels[2] is None and labels[4] is None  # unreadable: failed items
    mc = AnswerFeature(MultipleChoiceGrader("ABCD"))
    assert [mc(s) for s in ("Answer: (C)", "I think so", _Resp("The answer is B."))] == ["C", None, "B"]
