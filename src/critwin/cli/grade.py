"""`critwin grade`: read the answer out of each response of a JSONL file and grade it against its gold.

So that users can grade or re-grade any outputs, and so that critwin's grading can be checked from
outside. Each row is a JSON object with ``response`` (the model's text; null for a response that was
never produced) and ``gold``; multiple-choice rows also carry ``choices`` (the option texts, lettered
A, B, … in order) or ``letters`` (e.g. "ABCDE"), and their gold is a letter. With ``--json`` one object
goes to stdout: ``{"results": [{"answer": str | null, "correct": bool | null}, …]}`` in row order, plus
counts and the reason of every failed item; ``correct`` is null when no answer could be read or the
grader failed — a failed item, never counted as right or wrong.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError

_CHUNK = 512  # rows per grading call: progress is logged between calls


@dataclass(frozen=True)
class _Row:
    line: int
    response: str | None
    gold: str
    letters: str | None  # mc only


def _letters_of(row: dict[str, Any], where: str) -> str:
    """The option letters of a multiple-choice row, from its `choices` list or its `letters` string."""
    from critwin.features.answers import choice_letters

    if "choices" in row:
        choices = row["choices"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise CritwinError(f"{where}: 'choices' must be a list of option texts (strings)")
        if not 1 <= len(choices) <= 26:
            raise CritwinError(f"{where}: 'choices' has {len(choices)} options; give 1 to 26")
        return choice_letters(len(choices))
    if "letters" in row:
        letters = row["letters"]
        if (not isinstance(letters, str) or not letters.isascii() or not letters.isalpha()
                or len(set(letters.upper())) != len(letters)):
            raise CritwinError(f"{where}: 'letters' must be distinct letters such as \"ABCD\"")
        return letters.upper()
    raise CritwinError(
        f"{where}: a multiple-choice row needs 'choices' (a list of option texts) or 'letters'"
    )


def _read_rows(path: Path, task: str) -> list[_Row]:
    """Every row of the JSONL file, checked; a CritwinError naming the line for the first bad one."""
    from critwin.files import read_text

    text = read_text(path, "--data", "a JSONL file with one {\"response\": …, \"gold\": …} object per line")
    rows: list[_Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, spacing) hold no row
        where = f"--data {path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CritwinError(
                f"{where}: not valid JSON ({err.msg}); write one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise CritwinError(f"{where}: expected a JSON object with 'response' and 'gold'")
        for key in ("response", "gold"):
            if key not in row:
                raise CritwinError(f"{where}: missing field '{key}'; each row needs 'response' and 'gold'")
        response, gold = row["response"], row["gold"]
        if response is not None and not isinstance(response, str):
            raise CritwinError(f"{where}: 'response' must be a string (or null for no response)")
        if isinstance(gold, bool) or not isinstance(gold, str | int | float):
            raise CritwinError(f"{where}: 'gold' must be a string or a number")
        gold = str(gold).strip()
        if not gold:
            raise CritwinError(f"{where}: 'gold' is empty; give the correct answer")
        letters = None
        if task == "mc":
            letters = _letters_of(row, where)
            letter = gold.strip("() ").upper()
            if len(letter) != 1 or letter not in letters:
                raise CritwinError(f"{where}: gold {gold!r} is not one of the letters {letters}; give the "
                                   "letter of the correct option")
            gold = letter
        rows.append(_Row(number, response, gold, letters))
    if not rows:
        raise CritwinError(f"--data {path} has no rows; write one JSON object per line")
    return rows


def _grade(rows: list[_Row], task: str, timeout_s: float) -> tuple[list[str | None], list[Any]]:
    """The answer read from each row and its verdict (True / False / a Failure), in row order."""
    from critwin.features.grading import ExactMatchGrader, GradingPool, MathGrader, MultipleChoiceGrader

    answers: list[str | None] = []
    verdicts: list[Any] = []
    if task == "mc":
        graders: dict[str, MultipleChoiceGrader] = {}
        for row in rows:
            assert row.letters is not None
            g = graders.setdefault(row.letters, MultipleChoiceGrader(row.letters))
            answer = g.extract(row.response)
            answers.append(answer)
            verdicts.append(g.grade(answer, row.gold))
        return answers, verdicts
    if task == "exact":
        exact = ExactMatchGrader()
        answers = [exact.extract(row.response) for row in rows]
        return answers, exact.grade_many([(a, row.gold) for a, row in zip(answers, rows, strict=True)])
    from critwin.types import Failure

    with GradingPool(timeout_s=timeout_s) as pool:
        math = MathGrader(pool=pool, timeout_s=timeout_s)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            found = math.read_many([row.response for row in chunk])
            read = [None if isinstance(a, Failure) else a for a in found]
            graded = math.grade_many([(a, row.gold) for a, row in zip(read, chunk, strict=True)])
            # a reading that timed out keeps its own reason, not "no answer could be read"
            verdicts += [a if isinstance(a, Failure) else v for a, v in zip(found, graded, strict=True)]
            answers += read
            if len(rows) > _CHUNK:
                log(f"graded {len(answers)}/{len(rows)} rows")
    return answers, verdicts


def _cell(text: str | None, width: int) -> str:
    if text is None:
        return "—"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("grade", short_help="Grade the responses of a JSONL file.")
def grade_cmd(
    task: str = typer.Option(
        ..., "--task", help="math (math-verify), mc (option letters) or exact (normal forms)."
    ),
    data: Path = typer.Option(
        ..., "--data", help="JSONL file: one {\"response\", \"gold\"} object per line (mc: also \"choices\")."
    ),
    timeout_s: float = typer.Option(
        10.0, "--timeout", help="math: hard limit in seconds per answer read and per comparison."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object on stdout: {\"results\": [{\"answer\", \"correct\"}]}."
    ),
) -> None:
    """Read the answer of each response in DATA and grade it against the row's gold answer.

    Prints one line per row (the answer read and the verdict) and the counts. A row whose answer cannot
    be read, or whose grading fails, is a failed item (verdict null), never counted as right or wrong.
    """
    from critwin.data.problem import TASKS  # the tasks a Problem can have: math, mc, exact

    if task not in TASKS:
        raise CritwinError(f"--task {task!r} unknown: use {', '.join(TASKS[:-1])} or {TASKS[-1]}")
    if not timeout_s > 0:
        raise CritwinError(f"--timeout {timeout_s:g}: give a number of seconds > 0")
    rows = _read_rows(data, task)  # every row is checked before any grading starts

    from critwin.features.grading import verdict_counts
    from critwin.samplers.base import Failure

    answers, verdicts = _grade(rows, task, timeout_s)
    results = [{"answer": a, "correct": None if isinstance(v, Failure) else bool(v)}
               for a, v in zip(answers, verdicts, strict=True)]
    failures = [{"row": i, "line": row.line, "reason": v.reason}
                for i, (row, v) in enumerate(zip(rows, verdicts, strict=True)) if isinstance(v, Failure)]
    counts = verdict_counts(verdicts)
    graded = counts["correct"] + counts["wrong"]
    accuracy = counts["correct"] / graded if graded else None
    if as_json:
        emit_json({"task": task, "data": str(data), "n": len(rows), **counts, "accuracy": accuracy,
                   "results": results, "failures": failures})
        return
    width = max(6, min(48, max(len(_cell(a, 48)) for a in answers)))
    print(f"{'row':>5}  {'line':>5}  {'answer':<{width}}  verdict")
    for i, (row, res, v) in enumerate(zip(rows, results, verdicts, strict=True)):
        verdict = {True: "correct", False: "wrong"}.get(res["correct"], f"failed: {getattr(v, 'reason', '')}")
        print(f"{i:>5}  {row.line:>5}  {_cell(res['answer'], width):<{width}}  {verdict}")
    sys.stdout.flush()
    acc = "—" if accuracy is None else f"{accuracy:.3f}"
    log(f"{len(rows)} rows: {counts['correct']} correct, {counts['wrong']} wrong, {counts['failed']} failed "
        f"(no answer read or grader failure); accuracy of the graded rows {acc}")
