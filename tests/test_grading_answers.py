"""Known-answer fixtures for reading answers out of free text (critwin.features.answers)."""

from __future__ import annotations

import pytest

from critwin.errors import CritwinError
from critwin.features.answers import (
    choice_letters,
    elicitation_prompt,
    extract_answer,
    extract_choice,
    find_answer,
    find_boxed,
    last_boxed,
    normalize_answer,
)

# (text, expected answer, expected reader)
FREE_TEXT = [
    (r"So the probability is \boxed{\frac{1}{2}}.", r"\frac{1}{2}", "boxed"),
    (r"First \boxed{3}, then corrected: \boxed{\frac{\sqrt{2}}{2}} done", r"\frac{\sqrt{2}}{2}", "boxed"),
    (r"Nested braces: \boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}", "boxed"),
    (r"Escaped braces stay literal: \boxed{\{1,2\}} ok", r"\{1,2\}", "boxed"),
    (r"Deep nesting \boxed{a_{b_{c}} + {d}}!", r"a_{b_{c}} + {d}", "boxed"),
    (r"Brace-less form \boxed 5.", "5", "boxed"),
    (r"\fbox{12}", "12", "boxed"),
    (r"The answer is $\boxed{5}$.", "5", "boxed"),
    (r"The answer is $\frac{1}{2}$.", r"\frac{1}{2}", "answer_is"),
    (r"The answer is \(\sqrt{3}\)", r"\sqrt{3}", "answer_is"),
    ("The answer is 3.5.", "3.5", "answer_is"),
    ("Thus the final answer is: **42**", "42", "answer_is"),
    ("Answer: $x = 7$", "x = 7", "answer_is"),
    ("The answer is 12 because 3*4=12", "12", "answer_is"),
    ("The answer is 5, so we are done.", "5", "answer_is"),
    ("I thought the answer is 3. Checking again, the answer is 4.", "4", "answer_is"),
    ("She has 3 apples and 4 pears, 7 fruits in total.", "7", "last_number"),
    ("Costs rose to 1,250 dollars", "1250", "last_number"),
    ("Temperatures fell to -5 and then 3-4 more", "4", "last_number"),
    ("Half of it: 1/2", "1/2", "last_number"),
]


@pytest.mark.parametrize("text, value, method", FREE_TEXT)
def test_find_answer_known_cases(text, value, method):
    got = find_answer(text)
    assert got is not None
    assert (got.value, got.method) == (value, method)
    # the span points at the text the answer was read from
    assert value.replace(",", "") in text[got.start:got.end].replace(",", "")


@pytest.mark.parametrize("text", ["", None, "no digits and no statement here", r"\boxed{unclosed"])
def test_find_answer_returns_none_without_an_answer(text):
    assert find_answer(text) is None
    assert extract_answer(text) is None


def test_reader_order_is_configurable():
    text = r"The answer is 4. Earlier we wrote \boxed{3}."
    assert extract_answer(text) == "3"
    assert extract_answer(text, methods=("answer_is", "boxed")) == "4"
    assert extract_answer("the total is 9", methods=("boxed", "answer_is")) is None


def test_bad_methods_are_a_critwin_error():
    with pytest.raises(CritwinError, match="answer methods"):
        extract_answer("x", methods=("guess",))


def test_find_boxed_lists_all_with_spans():
    text = r"a \boxed{1} b \boxed{\frac{2}{3}}"
    boxes = find_boxed(text)
    assert [b[0] for b in boxes] == ["1", r"\frac{2}{3}"]
    assert text[boxes[1][1]:boxes[1][2]] == r"\boxed{\frac{2}{3}}"
    assert last_boxed(text) == r"\frac{2}{3}"


# (text, letters, expected letter)
CHOICES = [
    ("The answer is (B).", "ABCD", "B"),
    ("The answer is B.", "ABCD", "B"),
    ("Answer: C", "ABCD", "C"),
    ("Answer: (E)", "ABCDE", "E"),
    ("the correct option is **D**", "ABCD", "D"),
    ("So the final answer is option B", "ABCD", "B"),
    ("The answer is A because it is the only metal.", "ABCD", "A"),
    (r"Therefore $\boxed{C}$", "ABCD", "C"),
    (r"Therefore \boxed{\text{(B)}}", "ABCD", "B"),
    ("Option (A) is tempting but (D) is right.", "ABCD", "D"),
    ("A bit of thought shows B) works", "ABCD", "B"),
    ("I think A is wrong, so Answer: C", "ABCD", "C"),
    # stray capitals in prose are never choices
    ("I am sure about this.", "ABCDEFGHIJ", None),
    ("A common mistake is to forget the sign.", "ABCD", None),
    ("Answer: A common mistake is to forget the sign.", "ABCD", None),
    ("The answer is I think obvious.", "ABCDEFGHIJ", None),
    ("I believe B is plausible but I am unsure", "ABCD", None),
    # a letter outside the valid set is not read
    ("Answer: (E)", "ABCD", None),
    # lower-case letters are prose, not choices
    ("the answer is a matter of taste", "ABCD", None),
    ("answer: b", "ABCD", None),
]


@pytest.mark.parametrize("text, letters, expected", CHOICES)
def test_extract_choice_known_cases(text, letters, expected):
    assert extract_choice(text, letters) == expected


def test_extract_choice_statement_beats_later_mention_and_mentions_can_be_off():
    text = "The answer is (A). Note that (C) was a distractor."
    assert extract_choice(text) == "A"
    assert extract_choice("Perhaps (C) fits", mentions=False) is None
    assert extract_choice("Perhaps (C) fits") == "C"


@pytest.mark.parametrize("letters", ["", "AAB", "A1"])
def test_extract_choice_bad_letters(letters):
    with pytest.raises(CritwinError, match="letters"):
        extract_choice("Answer: A", letters)


def test_choice_letters():
    assert choice_letters(4) == "ABCD"
    assert choice_letters(5) == "ABCDE"
    with pytest.raises(CritwinError):
        choice_letters(0)


@pytest.mark.parametrize(
    "a, b",
    [
        (r"$\dfrac{1}{2}$.", r"\frac{1}{2}"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\text{Yes}", "yes"),
        ("1,000", "1000"),
        (r"\boxed{7}", "7"),
        (r"10\%", "10%"),
        (r"x \, = \! 3", "x=3"),
    ],
)
def test_normalize_answer_identifies_spellings(a, b):
    assert normalize_answer(a) == normalize_answer(b)


def test_normalize_answer_keeps_different_answers_apart():
    assert normalize_answer("12") != normalize_answer("1,2")  # a pair, not a thousands separator
    assert normalize_answer("X", case_sensitive=True) != normalize_answer("x", case_sensitive=True)


def test_elicitation_prompt_and_its_reply_parse():
    for task in ("math", "mc", "exact"):
        assert "The answer is" in elicitation_prompt(task)
    assert extract_choice("The answer is (C)") == "C"
    with pytest.raises(CritwinError, match="task"):
        elicitation_prompt("essay")
