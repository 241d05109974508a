"""`critwin grade` end to end: the --json contract, verdicts checked against hand-graded fixtures, the
readable table, bad input (one line, exit 2, checked before any grading) and a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from critwin.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "grading"
CRITWIN = Path(sys.executable).parent / "critwin"
# Rows of math_pairs.jsonl on which math-verify's reading differs from the human verdict (see
# test_grading_graders.test_math_grading_agrees_with_human_verdicts_on_known_answers).
KNOWN_MATH_DISAGREEMENTS = {"boxed_int-02", "latex_digits-15"}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _check_contract(out: str, n: int) -> dict:
    """stdout is exactly one JSON object whose results hold one {answer, correct} per row."""
    doc = json.loads(out)  # fails if anything but one JSON document is printed
    assert out.count("\n") == 1
    assert len(doc["results"]) == n
    for res in doc["results"]:
        assert set(res) == {"answer", "correct"}
        assert res["answer"] is None or isinstance(res["answer"], str)
        assert res["correct"] in (True, False, None)
        if res["answer"] is None:
            assert res["correct"] is None  # no answer: a failed item, never wrong
    return doc


def test_mc_fixture_through_the_cli_matches_the_human_reading(capsys):
    rows = _rows("mc_answers.jsonl")
    data = str(FIXTURES / "mc_answers.jsonl")
    code, out, err = _cli(capsys, "grade", "--task", "mc", "--data", data, "--json")
    assert code == 0, err
    doc = _check_contract(out, len(rows))
    got = [(r["answer"], r["correct"]) for r in doc["results"]]
    want = [(r["expected_answer"], r["expected_correct"]) for r in rows]
    assert got == want
    assert doc["correct"] == sum(w[1] is True for w in want)
    assert doc["failed"] == sum(w[0] is None for w in want)
    assert [f["row"] for f in doc["failures"]] == [i for i, w in enumerate(want) if w[0] is None]


def test_math_rows_through_the_cli_agree_with_the_human_verdicts(capsys, tmp_path):
    rows = [r for r in _rows("math_pairs.jsonl") if r["id"] not in KNOWN_MATH_DISAGREEMENTS][::5]
    data = _write(tmp_path / "math.jsonl", [{"response": r["response"], "gold": r["gold"]} for r in rows])
    code, out, err = _cli(capsys, "grade", "--task", "math", "--data", str(data), "--json")
    assert code == 0, err
    doc = _check_contract(out, len(rows))
    for r, res in zip(rows, doc["results"], strict=True):
        assert (res["correct"] is True) == r["expected"], (r["id"], res)
    assert doc["n"] == len(rows) and doc["correct"] == sum(r["expected"] for r in rows)


def test_exact_task_reads_numbers_and_maths_whole(capsys, tmp_path):
    rows = [
        {"response": "Adding up, the total is 1 000.", "gold": "1000"},
        {"response": "Le total est 1000,99.", "gold": "1000.99"},
        {"response": r"So the probability is $\frac{1}{3}$.", "gold": r"\frac{1}{3}"},
        {"response": r"So the probability is $\frac{1}{3}$.", "gold": "3"},
        {"response": "The midpoint is (1,4.5).", "gold": "4.5"},
        {"response": "Final Answer: The largest $n$ is 34.", "gold": 34},
        {"response": "The answer is Paris.", "gold": "paris"},
        {"response": "I do not know.", "gold": "7"},
        {"response": None, "gold": "7"},
    ]
    data = str(_write(tmp_path / "e.jsonl", rows))
    code, out, err = _cli(capsys, "grade", "--task", "exact", "--data", data, "--json")
    assert code == 0, err
    doc = _check_contract(out, len(rows))
    assert [r["answer"] for r in doc["results"]] == [
        "1000", "1000.99", r"\frac{1}{3}", r"\frac{1}{3}", "(1,4.5)", "34", "Paris", None, None]
    assert [r["correct"] for r in doc["results"]] == [True, True, True, False, False, True, True, None, None]
    assert (doc["correct"], doc["wrong"], doc["failed"]) == (5, 2, 2)
    assert doc["accuracy"] == pytest.approx(5 / 7)


def test_readable_table_without_json(capsys, tmp_path):
    rows = [{"response": "The answer is (B).", "gold": "B", "letters": "abc"},
            {"response": "No idea.", "gold": "(c)", "choices": ["x", "y", "z"]}]
    code, out, err = _cli(capsys, "grade", "--task", "mc", "--data", str(_write(tmp_path / "m.jsonl", rows)))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["row", "line", "answer", "verdict"]
    assert lines[1].split() == ["0", "1", "B", "correct"]
    assert lines[2].split()[:4] == ["1", "2", "—", "failed:"] and "no answer" in lines[2]
    assert "2 rows: 1 correct, 0 wrong, 1 failed" in err


GOOD = {"response": "The answer is 5.", "gold": "5"}
# (task, file content or None for "no file", what the error names)
BAD_INPUT = [
    ("essay", [GOOD], "--task 'essay' unknown"),
    ("math", None, "no such file"),
    ("math", "DIR", "is a folder"),
    ("math", b'{"response": "x", "gold": "1"}\n\xff\xfe\n', "not UTF-8 text (byte 0xff on line 2)"),
    ("math", '{"response": "x", "gold": "1"}\nnot json\n', "line 2: not valid JSON"),
    ("math", "[1, 2]\n", "line 1: expected a JSON object"),
    ("math", '{"gold": "1"}\n', "line 1: missing field 'response'"),
    ("exact", json.dumps(GOOD) + '\n{"response": "y"}\n', "line 2: missing field 'gold'"),
    ("math", '{"response": 5, "gold": "5"}\n', "'response' must be a string"),
    ("math", '{"response": "5", "gold": true}\n', "'gold' must be a string or a number"),
    ("math", '{"response": "5", "gold": "  "}\n', "'gold' is empty"),
    ("math", "\n\n", "has no rows"),
    ("mc", '{"response": "B", "gold": "B"}\n', "needs 'choices'"),
    ("mc", '{"response": "B", "gold": "E", "choices": ["a", "b"]}\n', "'E' is not one of the letters AB"),
    ("mc", '{"response": "B", "gold": "B", "choices": "ab"}\n', "'choices' must be a list"),
    ("mc", '{"response": "B", "gold": "B", "choices": []}\n', "has 0 options"),
    ("mc", '{"response": "B", "gold": "B", "letters": "AAB"}\n', "'letters' must be distinct letters"),
]


@pytest.mark.parametrize("task, content, message", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_before_any_grading(capsys, tmp_path, task, content, message):
    path = tmp_path / "rows.jsonl"
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        _write(path, content)
    code, out, err = _cli(capsys, "grade", "--task", task, "--data", str(path), "--json")
    assert code == 2
    assert out == ""  # nothing graded, nothing printed
    assert err.count("\n") == 1 and err.startswith("critwin: error: ") and message in err
    assert "Traceback" not in err


def test_bad_timeout_is_refused(capsys, tmp_path):
    data = _write(tmp_path / "r.jsonl", [GOOD])
    code, out, err = _cli(capsys, "grade", "--task", "math", "--data", str(data), "--timeout", "0")
    assert code == 2 and out == "" and "--timeout 0" in err


@pytest.mark.timeout(120)
def test_math_reading_that_times_out_is_a_failed_item_with_its_reason(capsys, tmp_path):
    slow = r"$\boxed{" + "+".join(f"\\frac{{{i}}}{{{i + 1}}}" for i in range(1, 2000)) + "}$"  # ~10 s
    rows = [{"response": slow, "gold": "1"}, {"response": r"$\boxed{3}$", "gold": "3"}]
    data = str(_write(tmp_path / "slow.jsonl", rows))
    code, out, err = _cli(capsys, "grade", "--task", "math", "--data", data, "--timeout", "1", "--json")
    assert code == 0, err
    doc = _check_contract(out, 2)
    assert doc["results"] == [{"answer": None, "correct": None}, {"answer": "3", "correct": True}]
    assert [f["row"] for f in doc["failures"]] == [0] and "time-out" in doc["failures"][0]["reason"]


@pytest.mark.timeout(300)
def test_real_subprocess(tmp_path):
    rows = [{"response": r"So $x = \boxed{\frac{2}{4}}$.", "gold": "0.5"},
            {"response": r"The answer is $\frac{1+\sqrt{5}}{2}$.", "gold": "2"},
            {"response": "I give up.", "gold": "3"}]
    data = _write(tmp_path / "math.jsonl", rows)
    proc = subprocess.run([str(CRITWIN), "grade", "--task", "math", "--data", str(data), "--json"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = _check_contract(proc.stdout, 3)
    assert doc["results"] == [{"answer": r"\frac{2}{4}", "correct": True},
                              {"answer": r"\frac{1+\sqrt{5}}{2}", "correct": False},
                              {"answer": None, "correct": None}]
    missing = str(tmp_path / "missing.jsonl")
    proc = subprocess.run([str(CRITWIN), "grade", "--task", "math", "--data", missing],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("critwin: error: --data") and proc.stderr.count("\n") == 1
