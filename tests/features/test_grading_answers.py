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
    find_numbers,
    find_value_candidates,
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


# The last-number reader never takes a digit out of maths, a list, a bound or a power, and reads
# numbers written with thousands separators or a decimal comma (the outside tester's failures).
LAST_VALUE = [
    (r"So the probability is $\frac{1}{3}$.", r"\frac{1}{3}"),
    (r"so \frac{1}{3} of the cards are red", r"\frac{1}{3}"),
    (r"Hence $x \geq 5$.", r"x \geq 5"),
    (r"Hence x \geq 5", r"x \geq 5"),
    ("so the condition is x > 5", "x > 5"),
    ("The midpoint is (1,4.5).", "(1,4.5)"),
    ("The midpoint is $(1, 4.5)$.", "(1, 4.5)"),
    ("The interval is [2, 3).", "[2,3)"),
    (r"$\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}$", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}"),
    (r"M = \begin{bmatrix} 1 & 0 \\ 0 & 1 \end{bmatrix}", r"\begin{bmatrix} 1 & 0 \\ 0 & 1 \end{bmatrix}"),
    (r"We get $x = \frac{1}{3}$", r"\frac{1}{3}"),
    (r"The diagonal is 3\sqrt{2}", r"3\sqrt{2}"),
    ("The number of subsets is 2^10", "2^10"),
    ("The total is 1 000.", "1000"),
    ("The total is 1\u202f000 items.", "1000"),
    (r"The total is 1\,000 items.", "1000"),
    ("The total is 1000,99 euros.", "1000.99"),
    ("Le prix est de 2,74 euros.", "2.74"),
    ("The total is 1,000.5", "1000.5"),
    ("values 1,2,3", "3"),
    ("It costs $5 and $10.", "10"),
    ("The area is 12 cm^2", "12"),
    ("Let $n$ be the count; then 7.", "7"),
]


@pytest.mark.parametrize("text, value", LAST_VALUE)
def test_last_number_reads_maths_whole_and_locale_numbers(text, value):
    got = find_answer(text, methods=("last_number",))
    assert got is not None and got.value == value
    assert got.start < got.end <= len(text)


def test_find_numbers_skips_digits_inside_maths():
    text = r"With $\frac{1}{3}$ of 1 200 people, x^2 and (1,2), we get 400."
    assert [n for n, _, _ in find_numbers(text)] == ["1200", "400"]
    assert [v for v, _, _ in find_value_candidates(text)] == [r"\frac{1}{3}", "1200", "(1,2)", "400"]


@pytest.mark.parametrize(
    "text, value",
    [
        ("Final Answer: The largest $n$ is 34.", "34"),
        ("Final Answer: The final answer is $34$. I hope it is correct.", "34"),
        ("Answer: It is 7", "7"),
        ("Answer: The capital is Paris.", "Paris"),
        ("answer: the value of $x$ is $\\frac{1}{2}$.", r"\frac{1}{2}"),
        ("Answer: 3 is prime", "3 is prime"),  # no subject of its own: nothing is cut
    ],
)
def test_answer_statement_in_a_sentence_of_its_own(text, value):
    assert extract_answer(text, methods=("answer_is",)) == value


def test_arith_style_reader_needs_an_explicit_statement():
    # The arith task reads only "The answer is N": an unfinished chain has no answer, not its last number.
    assert extract_answer("7 + 5 = 12\n12 + 9 = 21", methods=("answer_is",)) is None
    assert extract_answer("7 + 5 = 12\n12 + 9 = 21\nThe answer is 21.", methods=("answer_is",)) == "21"


# (text, letters, expected letter): realistic replies to multiple-choice questions, read as a careful
# human reads them. None where the text commits to no option; a wrong letter is never acceptable.
CHOICES = [
    # explicit answer statements
    ("The answer is (B).", "ABCD", "B"),
    ("The answer is B.", "ABCD", "B"),
    ("the answer is b", "ABCD", "B"),
    ("So the answer is (c).", "ABCD", "C"),
    ("Answer: C", "ABCD", "C"),
    ("answer: b", "ABCD", "B"),
    ("Answer - D", "ABCD", "D"),
    ("Answer – A", "ABCD", "A"),
    ("Answer: (E)", "ABCDE", "E"),
    ("**Answer:** C", "ABCD", "C"),
    ("**Answer: B**", "ABCD", "B"),
    ("Final Answer: D", "ABCD", "D"),
    ("My final answer is C.", "ABCD", "C"),
    ("the correct option is **D**", "ABCD", "D"),
    ("The correct choice is: D", "ABCD", "D"),
    ("The best answer is (A) because it names the only metal.", "ABCD", "A"),
    ("So the final answer is option B", "ABCD", "B"),
    ("The answer is A because it is the only metal.", "ABCD", "A"),
    ("The answer should be C.", "ABCD", "C"),
    ("The answer is probably B.", "ABCD", "B"),
    ("The correct answer is B, not C.", "ABCD", "B"),
    ("I'm not sure, but the answer is B.", "ABCD", "B"),
    ("I think A is wrong, so Answer: C", "ABCD", "C"),
    ("I believe the answer is I.", "ABCDEFGHIJ", "I"),
    ("The answer is I think (G).", "ABCDEFGHIJ", "G"),
    ("Answer: I think it is C.", "ABCD", "C"),
    ("I first thought the answer is A. On reflection, the answer is D.", "ABCD", "D"),
    ("The answer is (A)? No wait, it's (C).", "ABCD", "C"),
    ("Answer: (B)\n\nExplanation: Option A is incorrect because it ignores friction.", "ABCD", "B"),
    # verdicts and picks
    ("option B is correct", "ABCD", "B"),
    ("Option B is correct: the others contradict the passage.", "ABCD", "B"),
    ("So B is correct.", "ABCD", "B"),
    ("Therefore, (B) is the right answer.", "ABCD", "B"),
    ("Option (A) is tempting but (D) is right.", "ABCD", "D"),
    ("C is the answer.", "ABCD", "C"),
    ("Neither A nor D fits. B is the correct one.", "ABCD", "B"),
    ("I'd pick D", "ABCD", "D"),
    ("I would choose (B).", "ABCD", "B"),
    ("I'd go with c.", "ABCD", "C"),
    ("In the end I chose G.", "ABCDEFGHIJ", "G"),
    ("Let's go with A.", "ABCD", "A"),
    ("If I had to pick, I'd pick C.", "ABCD", "C"),
    ("If the answer were A, the premise would fail; so it must be D.", "ABCD", "D"),
    ("I don't think the answer is A, since Berlin is in Germany. It is B.", "ABCD", "B"),
    (r"Therefore $\boxed{C}$", "ABCD", "C"),
    (r"Therefore \boxed{\text{(B)}}", "ABCD", "B"),
    (r"The correct option is $\boxed{b}$.", "ABCD", "B"),
    # bare letters that end or start the reply
    ("Based on the passage, B.", "ABCD", "B"),
    ("Considering all four options carefully:\nC", "ABCD", "C"),
    ("B", "ABCD", "B"),
    ("(D)", "ABCD", "D"),
    ("**A**", "ABCD", "A"),
    ("c", "ABCD", "C"),
    ("B. Paris", "ABCD", "B"),
    ("C) 42", "ABCD", "C"),
    ("(D) none of the above", "ABCD", "D"),
    ("The smallest odd prime is 3, which is option B.", "ABCDE", "B"),
    ("(A) is yellowish, (C) is banded, (D) is pale. That leaves B.", "ABCD", "B"),
    # written blind, before running the reader on them
    ("After eliminating the other three, we are left with option C.", "ABCD", "C"),
    ("The passage says the author disagrees, which matches (A).", "ABCD", "A"),
    ("Correct answer: D. The others are distractors.", "ABCD", "D"),
    ("ANSWER: B", "ABCD", "B"),
    ("The answer is: (C) 1914", "ABCD", "C"),
    ("Thus, the correct option is (B) mitochondria.", "ABCD", "B"),
    ("So my answer would be A.", "ABCD", "A"),
    ("Initially I leaned towards B, but the data supports D. Final answer: D", "ABCD", "D"),
    ("The best choice here is D because it covers every case.", "ABCD", "D"),
    ("Answer: (b)", "ABCD", "B"),
    ("final answer is c.", "ABCD", "C"),
    ("I choose option A.", "ABCD", "A"),
    ("We can rule out A and B. Between C and D, D fits better. So D.", "ABCD", "D"),
    ("The statement in C is false, so the answer must be B.", "ABCD", "B"),
    ("I would go with option (C) here.", "ABCD", "C"),
    ("Answer:\n\n**C**", "ABCD", "C"),
    ("The right answer: A", "ABCD", "A"),
    ("Option D: All of the above. This is the answer.", "ABCD", None),
    ("B and D are wrong because they contradict the premise.", "ABCD", None),
    ("A is a prime number, B is composite.", "ABCD", None),
    ("The correct answer is not listed.", "ABCD", None),
    ("I can't determine the answer from the information given.", "ABCD", None),
    ("Hmm, could it be A? Or maybe C? I'm unsure.", "ABCD", None),
    ("Section B of the report discusses costs.", "ABCD", None),
    ("Mr. A. Lincoln was the 16th president.", "ABCD", None),
    ("It's definitely not D.", "ABCD", None),
    ("Group A had higher scores than group B.", "ABCD", None),
    ("The answer is A, B and C.", "ABCD", None),
    # mentions as a last resort
    ("A bit of thought shows B) works", "ABCD", "B"),
    ("Looking at (A) and (C), only (C) survives.", "ABCD", "C"),
    # stray capitals and hedges in prose: no choice
    ("I am sure about this.", "ABCDEFGHIJ", None),
    ("A common mistake is to forget the sign.", "ABCD", None),
    ("Answer: A common mistake is to forget the sign.", "ABCD", None),
    ("The answer is I think obvious.", "ABCDEFGHIJ", None),
    ("I believe B is plausible but I am unsure", "ABCD", None),
    ("the answer is a matter of taste", "ABCD", None),
    ("Plan B is the best way forward.", "ABCD", None),
    ("Vitamin C is correct for scurvy.", "ABCD", None),
    ("Type A personalities are common.", "ABCD", None),
    ("Neither A nor B is correct.", "ABCD", None),
    ("I don't think the answer is A.", "ABCD", None),
    ("If the answer is A, then the premise fails.", "ABCD", None),
    ("I'd say A is wrong.", "ABCD", None),
    ("The answer is B or C.", "ABCD", None),
    ("Either B or C could be argued.", "ABCD", None),
    ("It is not B.", "ABCD", None),
    ("It is not A. It is not C either.", "ABCD", None),
    ("Is it C? I'm not sure.", "ABCD", None),
    ("The USA and the UK signed it in 1945.", "ABCD", None),
    ("Dr. B. Smith argued otherwise in his paper.", "ABCD", None),
    ("A and B are both reasonable, so I cannot decide.", "ABCD", None),
    ("I. Introduction: first we restate the question.", "ABCD", None),
    # letters outside the valid set are never read
    ("Answer: (E)", "ABCD", None),
    ("Answer: F", "ABCDE", None),
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


def test_normalize_answer_math_keeps_a_final_factorial():
    assert normalize_answer("5!", math=True) == "5!" != normalize_answer("5", math=True)
    assert normalize_answer(r"$\boxed{5!}$", math=True) == "5!"
    assert normalize_answer("The answer is 5!") == normalize_answer("the answer is 5")  # prose: exclamation


def test_normalize_answer_keeps_different_answers_apart():
    assert normalize_answer("12") != normalize_answer("1,2")  # a pair, not a thousands separator
    assert normalize_answer("X", case_sensitive=True) != normalize_answer("x", case_sensitive=True)


def test_elicitation_prompt_and_its_reply_parse():
    for task in ("math", "mc", "exact"):
        assert "The answer is" in elicitation_prompt(task)
    assert extract_choice("The answer is (C)") == "C"
    with pytest.raises(CritwinError, match="task"):
        elicitation_prompt("essay")
