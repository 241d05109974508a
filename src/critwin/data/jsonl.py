"""Problems from a JSON Lines file with a configurable field mapping.

Each line is one JSON object. `FieldMap` says which keys hold the question, the gold answer, the
choices (multiple choice only) and the id; dotted keys reach into nested objects
("question.stem", "choices.text"). Rows that miss a required field, or whose gold answer names no
choice, are counted and reported in the returned `ProblemSet` (``strict=True`` makes any such row a
CritwinError). A missing id is replaced by "<file stem>-<row number>".

For multiple choice the gold may be a 0-based index (JSON number), a letter ("B", "(b)") or the
text of a choice; it is stored as the letter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from critwin.data.problem import TASKS, Problem, ProblemSet, RowIssue, finish, gold_letter, missing
from critwin.errors import CritwinError
from critwin.files import read_text


@dataclass(frozen=True)
class FieldMap:
    """Which (dotted) keys of a row hold each Problem field; `choices`/`id` may be None (absent)."""

    question: str = "question"
    gold: str = "answer"
    choices: str | None = "choices"
    id: str | None = "id"

    @classmethod
    def parse(cls, spec: str | Mapping[str, str] | FieldMap | None) -> FieldMap:
        """From "question=problem,gold=solution" (CLI form), a mapping, or a FieldMap; None = defaults."""
        if spec is None:
            return cls()
        if isinstance(spec, FieldMap):
            return spec
        if isinstance(spec, str):
            pairs = {}
            for part in filter(None, (p.strip() for p in spec.split(","))):
                key, sep, value = part.partition("=")
                if not sep or not key.strip() or not value.strip():
                    raise CritwinError(f"field mapping part {part!r} invalid: write field=key, e.g. "
                                       "'question=problem,gold=answer'")
                pairs[key.strip()] = value.strip()
            spec = pairs
        known = {f.name for f in fields(cls)}
        bad = sorted(set(spec) - known)
        if bad:
            raise CritwinError(f"field mapping names unknown field(s) {bad}: use {sorted(known)}")
        return cls(**{k: (None if v in ("", "none", "None") and k in ("choices", "id") else v)
                      for k, v in spec.items()})


_ABSENT = object()


def get_path(row: Any, key: str) -> Any:
    """row["a"]["b"] for key "a.b" (a list of dicts maps over its items); `_ABSENT` when missing."""
    cur: Any = row
    for part in key.split("."):
        if isinstance(cur, Mapping):
            if part not in cur:
                return _ABSENT
            cur = cur[part]
        elif isinstance(cur, list) and cur and all(isinstance(x, Mapping) for x in cur):
            if not all(part in x for x in cur):
                return _ABSENT
            cur = [x[part] for x in cur]
        else:
            return _ABSENT
    return cur


def _present(value: Any) -> bool:
    if value is _ABSENT or value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple)):
        return len(value) > 0
    return True


def row_to_problem(row: Any, index: int, fmap: FieldMap, task: str, default_id: str) -> Problem | RowIssue:
    """One row → a Problem, or a RowIssue saying which fields are missing or wrong."""
    if not isinstance(row, Mapping):
        return RowIssue(index, None, "row is not a JSON object")
    rid = get_path(row, fmap.id) if fmap.id else _ABSENT
    pid = str(rid).strip() if _present(rid) else default_id
    question = get_path(row, fmap.question)
    gold = get_path(row, fmap.gold)
    choices = get_path(row, fmap.choices) if (task == "mc" and fmap.choices) else _ABSENT
    lacking = [name for name, value in (("question", question), ("gold", gold)) if not _present(value)]
    if task == "mc" and not _present(choices):
        lacking.append("choices")
    if lacking:
        return RowIssue(index, pid, missing(*lacking), tuple(lacking))
    if task != "mc":
        return Problem(id=pid, question=str(question), gold=str(gold).strip(), task=task)
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, (str, int, float)) for c in choices):
        return RowIssue(index, pid, "choices is not a list of strings")
    texts = tuple(str(c) for c in choices)
    if not 2 <= len(texts) <= 26:
        return RowIssue(index, pid, "number of choices not in 2..26")
    letter = gold_letter(gold, len(texts), texts)
    if letter is None:
        return RowIssue(index, pid, "gold names no choice")
    return Problem(id=pid, question=str(question), gold=letter, choices=texts, task="mc")


def load_jsonl(path: str | Path, *, task: str = "exact",
               fields: str | Mapping[str, str] | FieldMap | None = None, strict: bool = False,
               limit: int | None = None) -> ProblemSet:
    """Problems from a JSON Lines file (or a .json file holding one array of objects).

    `task` is "math", "mc" or "exact"; `fields` maps Problem fields to row keys (see `FieldMap`).
    Unusable rows (bad JSON, missing fields, gold naming no choice, repeated id) are counted in the
    result's `issues`; with `strict` they raise CritwinError. `limit` keeps the first rows only.
    """
    if task not in TASKS:
        raise CritwinError(f"task {task!r} unknown: use one of {list(TASKS)}")
    fmap = FieldMap.parse(fields)
    p = Path(path).expanduser()
    text = read_text(p, "data file", "a UTF-8 JSONL file")
    raw: list[tuple[int, Any]] = []
    issues: list[RowIssue] = []
    if p.suffix == ".json" and text.lstrip().startswith("["):
        try:
            raw = list(enumerate(json.loads(text)))
        except json.JSONDecodeError as exc:
            raise CritwinError(f"data file {str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno})") \
                from None
    else:
        for lineno, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                raw.append((len(raw) + len(issues), json.loads(line)))
            except json.JSONDecodeError:
                issues.append(RowIssue(len(raw) + len(issues), None, f"invalid JSON on line {lineno + 1}"))
    rows: list[tuple[int, Problem]] = []
    n_rows = len(raw) + len(issues)
    if limit is not None:
        raw = [(i, r) for i, r in raw if i < limit]
        issues = [issue for issue in issues if issue.row < limit]
        n_rows = min(n_rows, limit)
    for index, row in raw:
        got = row_to_problem(row, index, fmap, task, f"{p.stem}-{index}")
        if isinstance(got, RowIssue):
            issues.append(got)
        else:
            rows.append((index, got))
    return finish(rows, issues, n_rows, str(p), strict=strict, name=p.stem)
