"""The running-sum task: generator, chain format, first-wrong-step locator and tokenizer (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from critwin.errors import CritwinError
from critwin.experiments import arith


def test_correct_chain_known_answer():
    assert arith.correct_chain((7, 5, 9, 3)) == "b: 07+5=12\nc: 12+9=21\nd: 21+3=24\nThe answer is 24."
    assert arith.format_question((7, 5, 9, 3)) == "Add up a=7, b=5, c=9, d=3."


def test_generator_is_seeded_and_in_range():
    a = arith.generate_problems(200, 3, n_terms=(3, 9))
    b = arith.generate_problems(200, 3, n_terms=(3, 9))
    assert a == b
    assert a != arith.generate_problems(200, 4, n_terms=(3, 9))
    for p in a:
        assert 3 <= len(p.operands) <= 9
        assert all(1 <= d <= 9 for d in p.operands)
        assert sum(p.operands) <= 99
        assert p.answer == str(sum(p.operands))
        assert arith.parse_question(p.question) == p.operands
        assert p.to_record() == {"id": p.id, "question": p.question, "answer": p.answer}
    assert len({p.id for p in a}) == len(a)


@pytest.mark.parametrize(
    "question",
    ["What is 7+5?", "Add up a=7.", "Add up a=7, c=5.", "Add up a=12, b=3.", "", "Add up b=1, a=2."],
)
def test_parse_question_rejects_other_text(question):
    with pytest.raises(CritwinError, match="running-sum"):
        arith.parse_question(question)


def test_generator_rejects_bad_ranges():
    with pytest.raises(CritwinError, match="n_terms"):
        arith.generate_problems(1, 0, n_terms=(1, 3))
    with pytest.raises(CritwinError, match="max_total"):
        arith.generate_problems(1, 0, max_total=150)


def test_first_wrong_step_on_hand_made_chains():
    ops = (7, 5, 9, 3)
    good = "b: 07+5=12\nc: 12+9=21\nd: 21+3=24\nThe answer is 24."
    assert arith.first_wrong_step(ops, good) is None
    assert arith.first_wrong_step(ops, good + "\n  ") is None  # trailing whitespace is not a step
    # Dropped carry at step c (12+9 written as 11): the tens digit at offset 11 + 8 = 19 is the first slip.
    slip = "b: 07+5=12\nc: 12+9=11\nd: 11+3=14\nThe answer is 14."
    err = arith.first_wrong_step(ops, slip)
    assert (err.step, err.char, err.expected, err.found) == (1, 19, "c: 12+9=21", "c: 12+9=11")
    assert slip[err.char] == "1" and good[err.char] == "2"
    # Only the stated answer is wrong.
    err = arith.first_wrong_step(ops, "b: 07+5=12\nc: 12+9=21\nd: 21+3=24\nThe answer is 25.")
    assert (err.step, err.char) == (3, len(good) - 2)
    # A chain that stops early departs where it ends; extra text after the answer is a departure too.
    err = arith.first_wrong_step(ops, "b: 07+5=12\nc: 12+9=2")
    assert (err.step, err.char, err.found) == (1, 20, "c: 12+9=2")
    err = arith.first_wrong_step(ops, good + "\nmore")
    assert (err.step, err.char, err.expected, err.found) == (4, len(good), "", "more")
    # The question text works as well as the operands.
    assert arith.first_wrong_step("Add up a=7, b=5, c=9, d=3.", slip).char == 19


def test_wrong_steps_follow_the_written_totals():
    ops = (5, 7, 9, 4)
    chain = "\n".join(arith.chain_lines(ops, drops=[0, 1]))
    assert chain == "b: 05+7=02\nc: 02+9=01\nd: 01+4=05\nThe answer is 5."
    slips = arith.wrong_steps(ops, chain)
    assert [(e.step, e.char) for e in slips] == [(0, 8), (1, 19)]
    assert slips[1].expected == "c: 02+9=11"  # right given the (wrong) 02 above it
    assert arith.wrong_steps(ops, arith.correct_chain(ops)) == []
    # A missing last line, and a line whose total cannot be read (checking stops there).
    assert [e.step for e in arith.wrong_steps(ops, "b: 05+7=12\nc: 12+9=21")] == [2]
    assert [e.step for e in arith.wrong_steps(ops, "b: 05+7=12\nc: 12+9=2x\nzzz")] == [1]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(st.integers(1, 9), min_size=2, max_size=12).filter(lambda o: sum(o) <= 99),
    drops=st.sets(st.integers(0, 10)),
)
def test_generator_and_checker_agree(ops, drops):
    """A chain with dropped carries: the slips are exactly the carrying steps that dropped, the first slip
    is the first wrong step, and the stated answer is the true sum minus 10 per effective drop."""
    ops = tuple(ops)
    chain = "\n".join(arith.chain_lines(ops, drops))
    total, effective = ops[0], []
    for k, d in enumerate(ops[1:]):
        if k in drops and total % 10 + d >= 10:
            effective.append(k)
            total += d - 10
        else:
            total += d
    slips = arith.wrong_steps(ops, chain)
    assert [e.step for e in slips] == effective
    first = arith.first_wrong_step(ops, chain)
    assert (first is None) == (not effective)
    if first is not None:
        assert (first.step, first.char) == (slips[0].step, slips[0].char)
    assert arith.extract_answer(chain) == str(sum(ops) - 10 * len(effective))


def test_training_chains_drop_carries_at_the_requested_rate():
    rng = np.random.default_rng(0)
    probs = arith.generate_problems(3000, 1, n_terms=(6, 10))
    n_carry = n_drop = 0
    for p in probs:
        chain = arith.sample_training_chain(p.operands, rng, 0.3)
        slips = arith.wrong_steps(p.operands, chain)
        n_drop += len(slips)
        total = p.operands[0]
        for line, d in zip(chain.split("\n"), p.operands[1:], strict=False):
            n_carry += total % 10 + d >= 10
            total = int(line.rsplit("=", 1)[1])
    rate = n_drop / n_carry
    se = np.sqrt(0.3 * 0.7 / n_carry)
    assert abs(rate - 0.3) < 4 * se


def test_extract_answer():
    assert arith.extract_answer("x\nThe answer is 24.") == "24"
    assert arith.extract_answer("The answer is 3. The answer is 7.") == "7"
    assert arith.extract_answer("b: 07+5=12") is None


def test_character_tokenizer_and_chat_template():
    tok = arith.build_tokenizer()
    text = "".join(chr(c) for c in range(32, 127)) + "\nb: 07+5=12"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    for special in arith.SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    msgs = [{"role": "user", "content": "Add up a=1, b=2."}, {"role": "assistant", "content": "b: 01+2=03"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    assert rendered == "<|user|>Add up a=1, b=2.<|end|><|assistant|>b: 01+2=03<|end|>"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|end|><|assistant|>")
    assert tok.eos_token == "<|end|>" and tok.pad_token_id == 0
    # Character positions map to token positions one to one.
    def decode(ids):
        return tok.decode(list(ids), skip_special_tokens=True)

    for c in (0, 5, len(text) - 1):
        assert arith.char_to_token_index(decode, ids, c) == c
    assert arith.char_to_token_index(decode, ids, len(text)) == len(ids)
