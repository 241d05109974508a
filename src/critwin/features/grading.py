"""Graders: read an answer from text, decide whether it is correct, and label answers for "same answer".

Every grader follows the `Grader` protocol:

* ``extract(text) -> str | None`` — the answer in a free continuation or an elicited reply;
* ``grade_many(pairs) -> list[bool | Failure]`` — one verdict per (answer, gold) pair, in order;
  a missing answer (None), a grader time-out or a grader crash is a `Failure` (a failed item, never
  counted as right or wrong);
* ``labeler() -> AnswerLabeler`` — maps answers to canonical labels so that "same answer as the
  original" is decided with the grader's own notion of equivalence (math-verify for math).

Graders: `MathGrader` (math-verify, run in a `GradingPool` with a hard time-out per item),
`MultipleChoiceGrader` (letters, no stray-letter matches), `ExactMatchGrader` (normalised strings)
and `CallableGrader` (any user function ``fn(answer, gold) -> bool``). `grader_for(task)` builds the
default grader for a task name ("math", "mc", "exact").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from critwin.errors import CritwinError
from critwin.features.answers import (
    DEFAULT_METHODS,
    _check_methods,
    extract_answer,
    extract_choice,
    normalize_answer,
)
from critwin.features.grading_pool import GradingPool, default_pool
from critwin.samplers.base import Failure

Verdict = bool | Failure
EquivalenceFn = Callable[[Sequence[tuple[str, str]]], list[Verdict]]

NO_ANSWER = Failure("no answer could be read")


@runtime_checkable
class Grader(Protocol):
    """Reads answers, grades them against gold answers and labels them for same-answer checks."""

    task: str

    def extract(self, text: str | None) -> str | None:
        """The answer in `text`, or None when none can be read."""
        ...

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """True/False per (answer, gold) pair, or a `Failure` for a missing answer / time-out / crash."""
        ...

    def grade(self, answer: str | None, gold: str) -> Verdict:
        """`grade_many` for one pair."""
        ...

    def labeler(self) -> AnswerLabeler:
        """A fresh `AnswerLabeler` (one per problem) using this grader's answer equivalence."""
        ...


class AnswerLabeler:
    """Assigns each answer a canonical label; equivalent answers share the label of the first one seen.

    Answers with the same normal form (`normalize_answer`) share a label without further work; a new
    form is compared with each representative seen so far by `equivalent` (e.g. math-verify), in order
    of first appearance, and joins the first one it matches. The label is the representative's normal
    form, so labels are plain strings, stable within one labeler (use one labeler per problem,
    label the original answer first). A None answer, or one whose comparisons all failed without a
    match, gets None: a failed item. Callable, so ``labeler(answer)`` can serve as a scan feature.
    """

    def __init__(self, equivalent: EquivalenceFn | None = None,
                 normalize: Callable[[str], str] = normalize_answer) -> None:
        self._equivalent = equivalent
        self._normalize = normalize
        self._by_form: dict[str, str | None] = {}
        self._representatives: list[tuple[str, str]] = []  # (raw answer, label)

    @property
    def labels(self) -> tuple[str, ...]:
        """The distinct labels handed out so far, in order of first appearance."""
        return tuple(label for _, label in self._representatives)

    def __call__(self, answer: str | None) -> str | None:
        """The label of one answer (None for a missing or undecidable answer)."""
        return self.label_many([answer])[0]

    def label_many(self, answers: Sequence[str | None]) -> list[str | None]:
        """Labels for many answers, in order; equal normal forms are compared only once."""
        out: list[str | None] = []
        for answer in answers:
            if answer is None:
                out.append(None)
                continue
            form = self._normalize(answer)
            if not form:
                out.append(None)
                continue
            if form not in self._by_form:
                self._by_form[form] = self._classify(answer, form)
            out.append(self._by_form[form])
        return out

    def _classify(self, answer: str, form: str) -> str | None:
        label = None
        failed = False
        if self._equivalent is not None and self._representatives:
            verdicts = self._equivalent([(rep, answer) for rep, _ in self._representatives])
            for (_, rep_label), verdict in zip(self._representatives, verdicts, strict=True):
                if verdict is True:
                    label = rep_label
                    break
                failed = failed or isinstance(verdict, Failure)
        if label is None and not failed:
            label = form
            self._representatives.append((answer, label))
        return label


class _GraderBase:
    """Shared `grade` and missing-answer handling."""

    task: str = ""

    def grade(self, answer: str | None, gold: str) -> Verdict:
        """`grade_many` for one (answer, gold) pair."""
        return self.grade_many([(answer, gold)])[0]  # type: ignore[attr-defined]


class MathGrader(_GraderBase):
    """Math equivalence with math-verify (1/2 = 0.5 = \\frac12, x=3 = 3, 10\\% = 0.1 …).

    Each comparison runs in `pool` (the process-wide `default_pool()` unless given) under a hard
    `timeout_s`; answers whose normal forms are equal are accepted without math-verify. Extraction
    tries the readers in `methods` (see `critwin.features.answers.find_answer`).
    """

    task = "math"

    def __init__(self, *, pool: GradingPool | None = None, timeout_s: float = 10.0,
                 float_rounding: int = 6, numeric_precision: int = 15,
                 methods: Sequence[str] = DEFAULT_METHODS) -> None:
        if not timeout_s > 0:
            raise CritwinError(f"timeout_s={timeout_s} invalid: the grader time-out must be > 0 seconds")
        self._pool = pool
        self.timeout_s = float(timeout_s)
        self.float_rounding = int(float_rounding)
        self.numeric_precision = int(numeric_precision)
        self.methods = _check_methods(methods)

    @property
    def pool(self) -> GradingPool:
        """The pool the comparisons run in."""
        return self._pool if self._pool is not None else default_pool()

    def extract(self, text: str | None) -> str | None:
        """The answer in `text` ("boxed", then "The answer is …", then the last number by default)."""
        return extract_answer(text, self.methods)

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """True when math-verify finds the answer equal to the gold; a `Failure` for a missing answer
        or a comparison that timed out or crashed its worker."""
        out: list[Verdict | None] = [None] * len(pairs)
        todo: list[int] = []
        for i, (answer, gold) in enumerate(pairs):
            if answer is None or not answer.strip():
                out[i] = NO_ANSWER
            elif normalize_answer(answer, case_sensitive=True) == normalize_answer(gold, case_sensitive=True):
                out[i] = True
            else:
                todo.append(i)
        if todo:
            args = [(pairs[i][1], pairs[i][0], self.float_rounding, self.numeric_precision) for i in todo]
            for i, verdict in zip(todo, self.pool.run(math_equal, args, self.timeout_s), strict=True):
                out[i] = verdict if isinstance(verdict, Failure) else bool(verdict)
        return out  # type: ignore[return-value]

    def equivalent_many(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """Whether each (reference answer, answer) pair is mathematically the same answer."""
        return self.grade_many(pairs)

    def labeler(self) -> AnswerLabeler:
        """An `AnswerLabeler` whose equivalence is math-verify (in the pool, with the time-out)."""
        return AnswerLabeler(self.equivalent_many)


def _parse(expr: str) -> list:
    from math_verify import parse

    # Bare LaTeX such as "\frac12" is only recognised inside math delimiters; plain "1/2" either way.
    return parse(f"${expr}$", parsing_timeout=None) or parse(expr, parsing_timeout=None)


def math_equal(gold: str, answer: str, float_rounding: int = 6, numeric_precision: int = 15) -> bool:
    """Whether `answer` equals `gold` by math-verify (no time-out of its own: run it in a GradingPool).

    Falls back to comparing normal forms when either side cannot be parsed.
    """
    from math_verify import verify

    gold_parsed, answer_parsed = _parse(gold), _parse(answer)
    if not gold_parsed or not answer_parsed:
        return normalize_answer(gold, case_sensitive=True) == normalize_answer(answer, case_sensitive=True)
    return bool(verify(gold_parsed, answer_parsed, float_rounding=float_rounding,
                       numeric_precision=numeric_precision, timeout_seconds=None))


class MultipleChoiceGrader(_GraderBase):
    """Multiple choice: the answer is a letter from `letters`; gold is a letter (case-insensitive).

    `extract` only reads explicit answer statements ("(B)", "B)", "answer is B", "Answer: B",
    ``\\boxed{B}``); set `mentions=False` to ignore bare "(B)" / "B)" mentions as a last resort.
    """

    task = "mc"

    def __init__(self, letters: str | Sequence[str] = "ABCD", *, mentions: bool = True) -> None:
        self.letters = "".join(letters).upper()
        extract_choice("", self.letters)  # validates the letters (CritwinError on bad input)
        self.mentions = mentions

    def extract(self, text: str | None) -> str | None:
        """The letter `text` commits to, or None."""
        return extract_choice(text, self.letters, mentions=self.mentions)

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """True when the answer letter is the gold letter; a `Failure` for a missing answer."""
        out: list[Verdict] = []
        for answer, gold in pairs:
            if answer is None or not answer.strip():
                out.append(NO_ANSWER)
            else:
                out.append(answer.strip().upper() == str(gold).strip().upper())
        return out

    def labeler(self) -> AnswerLabeler:
        """Labels are the upper-case letters themselves."""
        return AnswerLabeler(None, normalize=lambda s: s.strip().upper())


class ExactMatchGrader(_GraderBase):
    """Exact match after `normalize_answer` (case-insensitive unless `case_sensitive`)."""

    task = "exact"

    def __init__(self, *, case_sensitive: bool = False, methods: Sequence[str] = DEFAULT_METHODS) -> None:
        self.case_sensitive = case_sensitive
        self.methods = _check_methods(methods)

    def _norm(self, s: str) -> str:
        return normalize_answer(s, case_sensitive=self.case_sensitive)

    def extract(self, text: str | None) -> str | None:
        """The answer in `text`, read like `MathGrader.extract`."""
        return extract_answer(text, self.methods)

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """True when the normal forms are equal; a `Failure` for a missing answer."""
        out: list[Verdict] = []
        for answer, gold in pairs:
            if answer is None or not self._norm(answer):
                out.append(NO_ANSWER)
            else:
                out.append(self._norm(answer) == self._norm(str(gold)))
        return out

    def labeler(self) -> AnswerLabeler:
        """Labels are the normal forms."""
        return AnswerLabeler(None, normalize=self._norm)


class CallableGrader(_GraderBase):
    """A user grader: ``fn(answer, gold) -> bool``.

    In-process by default (an exception is a failed item). With ``isolate=True`` each call runs in
    `pool` under a hard `timeout_s` (then `fn` must be picklable: a module-level function). Same
    answer is decided by normal form unless `equivalent` (``fn(a, b) -> bool``) is given, which then
    runs the same way as `fn`.
    """

    task = "custom"

    def __init__(self, fn: Callable[[str, str], bool], *, isolate: bool = False,
                 pool: GradingPool | None = None, timeout_s: float = 10.0,
                 extract: Callable[[str | None], str | None] | None = None,
                 equivalent: Callable[[str, str], bool] | None = None, task: str = "custom") -> None:
        if not callable(fn):
            raise CritwinError(f"grader {fn!r} is not callable: pass a function fn(answer, gold) -> bool")
        if not timeout_s > 0:
            raise CritwinError(f"timeout_s={timeout_s} invalid: the grader time-out must be > 0 seconds")
        self.fn = fn
        self.isolate = isolate
        self._pool = pool
        self.timeout_s = float(timeout_s)
        self._extract = extract
        self._equivalent_fn = equivalent
        self.task = task

    def extract(self, text: str | None) -> str | None:
        """The user's extractor if given, else `extract_answer`."""
        return self._extract(text) if self._extract is not None else extract_answer(text)

    def _call_many(self, fn: Callable[[str, str], bool], pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        if self.isolate:
            pool = self._pool if self._pool is not None else default_pool()
            raw = pool.run(fn, list(pairs), self.timeout_s)
        else:
            raw = []
            for a, b in pairs:
                try:
                    raw.append(fn(a, b))
                except Exception as exc:  # a user grader's bug is a failed item, not a crashed run
                    raw.append(Failure(f"grader error: {type(exc).__name__}: {exc}"))
        out: list[Verdict] = []
        for r in raw:
            if isinstance(r, Failure):
                out.append(r)
            elif isinstance(r, bool) or type(r).__name__ == "bool_":
                out.append(bool(r))
            else:
                out.append(Failure(f"grader returned {type(r).__name__}, expected bool"))
        return out

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """`fn(answer, gold)` per pair; a `Failure` for a missing answer, an error or a time-out."""
        out: list[Verdict | None] = [None] * len(pairs)
        todo = []
        for i, (answer, _) in enumerate(pairs):
            if answer is None or not answer.strip():
                out[i] = NO_ANSWER
            else:
                todo.append(i)
        verdicts = self._call_many(self.fn, [(pairs[i][0], pairs[i][1]) for i in todo])  # type: ignore[misc]
        for i, v in zip(todo, verdicts, strict=True):
            out[i] = v
        return out  # type: ignore[return-value]

    def labeler(self) -> AnswerLabeler:
        """Normal-form labels, merged further by `equivalent` when given."""
        if self._equivalent_fn is None:
            return AnswerLabeler(None)
        eq = self._equivalent_fn
        return AnswerLabeler(lambda pairs: self._call_many(eq, pairs))


def sample_text(sample: object) -> str | None:
    """The text of a sample: a str itself, else its `response_text` (LLM responses) or `text` attribute."""
    if sample is None or isinstance(sample, str):
        return sample
    for attr in ("response_text", "text"):
        value = getattr(sample, attr, None)
        if isinstance(value, str):
            return value
    return None


class AnswerFeature:
    """A scan feature: sample -> label of the answer read from its text, or None (failed item).

    Reads the answer with `grader.extract` from ``text_of(sample)`` (default `sample_text`) and labels
    it with one `AnswerLabeler` (the grader's equivalence), so "kept" means the same answer as the
    reference. Use one AnswerFeature per problem and label the original response first.
    """

    def __init__(self, grader: Grader, text_of: Callable[[object], str | None] = sample_text) -> None:
        self.grader = grader
        self.text_of = text_of
        self.labeler = grader.labeler()

    def __call__(self, sample: object) -> str | None:
        return self.labeler(self.grader.extract(self.text_of(sample)))

    def label_many(self, samples: Sequence[object]) -> list[str | None]:
        """Labels of many samples at once (batched equivalence checks)."""
        return self.labeler.label_many([self.grader.extract(self.text_of(s)) for s in samples])


def grader_for(task: str, *, letters: str | Sequence[str] = "ABCD", pool: GradingPool | None = None,
               timeout_s: float = 10.0) -> Grader:
    """The default grader for a task: "math" (math-verify), "mc" (letters) or "exact" (normal forms)."""
    if task == "math":
        return MathGrader(pool=pool, timeout_s=timeout_s)
    if task == "mc":
        return MultipleChoiceGrader(letters)
    if task == "exact":
        return ExactMatchGrader()
    raise CritwinError(f"task {task!r} unknown: use 'math', 'mc' or 'exact' (or a CallableGrader)")


def verdict_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Counts of correct / wrong / failed verdicts (failed items are reported, never outcomes)."""
    n_failed = sum(isinstance(v, Failure) for v in verdicts)
    n_correct = sum(v is True for v in verdicts)
    return {"correct": n_correct, "wrong": len(verdicts) - n_failed - n_correct, "failed": n_failed}


__all__ = [
    "AnswerFeature",
    "AnswerLabeler",
    "CallableGrader",
    "ExactMatchGrader",
    "Grader",
    "GradingPool",
    "MathGrader",
    "MultipleChoiceGrader",
    "NO_ANSWER",
    "Verdict",
    "default_pool",
    "grader_for",
    "math_equal",
    "sample_text",
    "verdict_counts",
]
