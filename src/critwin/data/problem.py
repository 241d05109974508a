"""`Problem` (one question with its gold answer) and `ProblemSet` (loaded problems plus the rows that
could not be used, counted and reported, never silently dropped)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from critwin.errors import CritwinError

TASKS = ("math", "mc", "exact")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Problem:
    """One problem.

    `task` is "math" (gold graded by math-verify), "mc" (gold is the letter of the right choice;
    `choices` are the option texts labelled A, B, C, … in order) or "exact" (normalised string match).
    `meta` keeps dataset extras (subject, level, original labels) and is ignored by equality.
    """

    id: str
    question: str
    gold: str
    choices: tuple[str, ...] = ()
    task: str = "exact"
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CritwinError(f"Problem {self.id!r}: task {self.task!r} unknown, use one of {list(TASKS)}")
        if self.task == "mc":
            if not 2 <= len(self.choices) <= len(LETTERS):
                raise CritwinError(f"Problem {self.id!r}: multiple choice needs 2 to 26 choices, "
                                   f"got {len(self.choices)}")
            if self.gold not in self.letters:
                raise CritwinError(f"Problem {self.id!r}: gold {self.gold!r} is not one of {self.letters!r}")

    @property
    def letters(self) -> str:
        """The letters labelling the choices ("ABCD" for four choices; "" when there are none)."""
        return LETTERS[: len(self.choices)]

    def prompt(self) -> str:
        """The question as shown to a model: the question text, then "(A) …" lines for the choices."""
        if not self.choices:
            return self.question
        lines = [f"({letter}) {text}" for letter, text in zip(self.letters, self.choices, strict=True)]
        return self.question.rstrip() + "\n\n" + "\n".join(lines)


@dataclass(frozen=True)
class RowIssue:
    """A source row that could not become a Problem: its 0-based row number, id if known, and why."""

    row: int
    id: str | None
    reason: str
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProblemSet:
    """Problems loaded from one source, with every unusable row accounted for.

    ``n_rows == len(problems) + len(issues)`` (up to `limit` when one was given).
    """

    problems: tuple[Problem, ...]
    issues: tuple[RowIssue, ...]
    n_rows: int
    source: str
    name: str = ""

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self):
        return iter(self.problems)

    def __getitem__(self, i: int) -> Problem:
        return self.problems[i]

    @property
    def n_skipped(self) -> int:
        """How many rows were unusable."""
        return len(self.issues)

    @property
    def missing_counts(self) -> dict[str, int]:
        """How many skipped rows lacked each field."""
        c: Counter[str] = Counter()
        for issue in self.issues:
            c.update(issue.missing)
        return dict(c)

    def without(self, reasons: Mapping[str, str], *, strict: bool = False) -> ProblemSet:
        """This set with the problems whose ids are in `reasons` moved to the issues, each with its reason
        (e.g. a prompt the model cannot hold). Their row numbers are positions among the loaded problems.
        With `strict` any such problem is a CritwinError, as is a set left with no problem."""
        if not reasons:
            return self
        kept = tuple(p for p in self.problems if p.id not in reasons)
        moved = [RowIssue(i, p.id, reasons[p.id]) for i, p in enumerate(self.problems) if p.id in reasons]
        out = ProblemSet(kept, tuple(sorted((*self.issues, *moved), key=lambda r: r.row)), self.n_rows,
                         self.source, self.name)
        if strict:
            raise CritwinError(f"{out.report()}; fix those rows or drop --strict to skip them")
        if not kept:
            raise CritwinError(
                f"{self.source}: no usable rows ({out.report()}); fix the rows or the settings"
            )
        return out

    def report(self) -> str:
        """One line: how many rows were loaded and why the others were skipped."""
        head = f"{self.source}: {len(self.problems)} of {self.n_rows} rows loaded"
        if not self.issues:
            return head
        reasons = Counter(issue.reason for issue in self.issues)
        why = "; ".join(f"{k} ({v})" for k, v in reasons.most_common(3))
        if len(reasons) > 3:
            why += f"; {len(reasons) - 3} other reasons"
        first = self.issues[0]
        return f"{head}, {self.n_skipped} skipped: {why}; first at row {first.row}"


def finish(rows: list[tuple[int, Problem]], issues: list[RowIssue], n_rows: int, source: str, *,
           strict: bool, name: str = "") -> ProblemSet:
    """Build a ProblemSet from (row number, Problem) pairs and the issues found so far.

    A repeated id makes the later row an issue. With `strict` any issue is a CritwinError; a source
    with no usable row always is.
    """
    issues = list(issues)
    seen: set[str] = set()
    problems: list[Problem] = []
    for row, problem in rows:
        if problem.id in seen:
            issues.append(RowIssue(row, problem.id, "duplicate id"))
            continue
        seen.add(problem.id)
        problems.append(problem)
    issues.sort(key=lambda issue: issue.row)
    ps = ProblemSet(tuple(problems), tuple(issues), n_rows, source, name)
    if issues and strict:
        raise CritwinError(f"{ps.report()}; fix those rows or drop --strict to skip them")
    if not problems:
        detail = f" ({ps.report()})" if issues else ""
        raise CritwinError(f"{source}: no usable rows{detail}; check the file and the field mapping")
    return ps


def missing(*fields: str) -> str:
    """The reason text for rows that lack fields: "missing 'gold'"."""
    return "missing " + ", ".join(repr(f) for f in fields)


def gold_letter(value: Any, n_choices: int, choice_texts: tuple[str, ...] = (),
                labels: tuple[str, ...] = ()) -> str | None:
    """The letter of the right choice from a gold value in any common form, or None if it names none.

    An int is a 0-based index; a string is one of the original choice `labels` (e.g. ARC's "1"–"4"),
    a letter ("b", "(B)"), or the text of a choice. Booleans and out-of-range values give None.
    """
    letters = LETTERS[:n_choices]
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return letters[value] if 0 <= value < n_choices else None
    if not isinstance(value, str):
        return None
    s = value.strip()
    if labels and s in labels:
        return letters[labels.index(s)]
    core = s.strip("()").strip()
    if len(core) == 1 and core.upper() in letters:
        return core.upper()
    if s in choice_texts:
        return letters[choice_texts.index(s)]
    return None
