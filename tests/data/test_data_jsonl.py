"""JSONL problems with a field mapping: fields land in place, bad rows are counted, strict errors."""

from __future__ import annotations

import json

import pytest

from critwin.data import FieldMap, Problem, load_jsonl, load_problems
from critwin.errors import CritwinError


def write_jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_default_mapping_math(tmp_path):
    f = write_jsonl(tmp_path / "probs.jsonl", [
        {"id": "p1", "question": "1+1?", "answer": 2},
        {"id": "p2", "question": "Half of one?", "answer": r"\frac{1}{2}"},
    ])
    ps = load_jsonl(f, task="math")
    assert [p.id for p in ps] == ["p1", "p2"]
    assert ps[0] == Problem(id="p1", question="1+1?", gold="2", task="math")
    assert ps[1].gold == r"\frac{1}{2}"
    assert ps.n_rows == 2 and ps.n_skipped == 0
    assert ps.report().endswith("2 of 2 rows loaded")


def test_custom_and_dotted_mapping(tmp_path):
    f = write_jsonl(tmp_path / "nested.jsonl", [
        {"uid": 7, "q": {"stem": "Pick the metal."}, "opts": [{"text": "wood"}, {"text": "iron"}], "key": 1},
    ])
    ps = load_jsonl(f, task="mc", fields="question=q.stem,gold=key,choices=opts.text,id=uid")
    p = ps[0]
    assert (p.id, p.question, p.choices) == ("7", "Pick the metal.", ("wood", "iron"))
    assert (p.gold, p.letters) == ("B", "AB")
    assert p.prompt() == "Pick the metal.\n\n(A) wood\n(B) iron"


@pytest.mark.parametrize(
    "gold, letter", [(0, "A"), (2, "C"), ("C", "C"), ("(b)", "B"), ("blue", "D"), ("d", "D")]
)
def test_mc_gold_forms(tmp_path, gold, letter):
    f = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": "Colour?", "choices": ["red", "green", "yellow", "blue"], "answer": gold},
    ])
    assert load_jsonl(f, task="mc")[0].gold == letter


def test_missing_fields_are_counted_and_reported(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [
        {"id": "ok", "question": "Q?", "choices": ["x", "y"], "answer": 0},
        {"id": "noq", "choices": ["x", "y"], "answer": 0},
        {"id": "blank", "question": "   ", "choices": ["x", "y"], "answer": 1},
        {"id": "nogold", "question": "Q?", "choices": ["x", "y"]},
        {"id": "nochoices", "question": "Q?", "answer": 0},
        {"id": "range", "question": "Q?", "choices": ["x", "y"], "answer": 5},
        {"id": "ok", "question": "Q again?", "choices": ["x", "y"], "answer": 1},
        ["not", "an", "object"],
    ], extra_lines=["{broken json"])
    ps = load_jsonl(f, task="mc")
    assert [p.id for p in ps] == ["ok"]
    assert ps.n_rows == 9 and ps.n_skipped == 8 and len(ps) + ps.n_skipped == ps.n_rows
    reasons = {issue.id: issue.reason for issue in ps.issues}
    assert reasons["noq"] == "missing 'question'"
    assert reasons["blank"] == "missing 'question'"
    assert reasons["nogold"] == "missing 'gold'"
    assert reasons["nochoices"] == "missing 'choices'"
    assert reasons["range"] == "gold names no choice"
    assert ps.missing_counts == {"question": 2, "gold": 1, "choices": 1}
    rows = {issue.row: issue.reason for issue in ps.issues}
    assert rows[6] == "duplicate id" and rows[7] == "row is not a JSON object"
    assert rows[8].startswith("invalid JSON on line 9")
    assert "1 of 9 rows loaded, 8 skipped" in ps.report()


def test_strict_makes_bad_rows_an_error(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Q?", "answer": "1"}, {"question": "Q2?"}])
    assert len(load_jsonl(f)) == 1
    with pytest.raises(CritwinError, match=r"1 of 2 rows loaded, 1 skipped: missing 'gold'.*--strict"):
        load_jsonl(f, strict=True)


def test_ids_default_to_row_numbers_and_limit(tmp_path):
    f = write_jsonl(tmp_path / "plain.jsonl", [{"question": f"Q{i}", "answer": str(i)} for i in range(5)])
    ps = load_jsonl(f, limit=3)
    assert [p.id for p in ps] == ["plain-0", "plain-1", "plain-2"] and ps.n_rows == 3


def test_json_array_file(tmp_path):
    f = tmp_path / "arr.json"
    f.write_text(json.dumps([{"question": "Q", "answer": "A"}]), encoding="utf-8")
    assert load_jsonl(f)[0].gold == "A"


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(CritwinError, match="no such file"):
        load_jsonl(tmp_path / "nope.jsonl")
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"question": "Q"}])
    with pytest.raises(CritwinError, match="no usable rows"):
        load_jsonl(empty)
    with pytest.raises(CritwinError, match="task"):
        load_jsonl(empty, task="essay")
    with pytest.raises(CritwinError, match="unknown field"):
        FieldMap.parse({"prompt": "q"})
    with pytest.raises(CritwinError, match="field=key"):
        FieldMap.parse("question")
    with pytest.raises(CritwinError, match="gold 'E' is not one of 'AB'"):
        Problem(id="x", question="q", gold="E", choices=("a", "b"), task="mc")


def test_load_problems_dispatches_to_jsonl(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"problem": "Q", "sol": "4"}])
    ps = load_problems(f, task="math", fields={"question": "problem", "gold": "sol"})
    assert ps[0].task == "math" and ps[0].gold == "4"
