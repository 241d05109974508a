"""Graders: read an answer from text, decide whether it is correct, and label answers for "same answer".

Every grader follows the `Grader` protocol:

* ``extract(text) -> str | None`` — the answer in a free continuation or an elicited reply;
* ``grade_many(pairs) -> list[bool | Failure]`` — one verdict per (answer, gold) pair, in order;
  a missing answer (None), a grader time-out or a grader crash is a `Failure` (a failed item, never
  counted as right or wrong);
* ``labeler() -> AnswerLabeler`` — maps answers to canonical labels so that "same answer as the
  original" is decided with the grader's own notion of equivalence (math-verify for math).

Graders also have ``extract_many(texts)``, one batch (for math: one pool call, cached).

Graders: `MathGrader` (math-verify reads and compares, in a `GradingPool` with a hard time-out per item),
`MultipleChoiceGrader` (letters, no stray-letter matches), `ExactMatchGrader` (normalised strings)
and `CallableGrader` (any user function ``fn(answer, gold) -> bool``). `grader_for(task)` builds the
default grader for a task name ("math", "mc", "exact").
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

from critwin.errors import CritwinError
from critwin.features.answers import (
    DEFAULT_METHODS,
    _check_methods,
    extract_answer,
    extract_choice,
    normalize_answer,
)
from critwin.features.grading_pool import GradingPool, default_pool
from critwin.types import Failure

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
    """Shared `grade` and `extract_many`."""

    task: str = ""

    def grade(self, answer: str | None, gold: str) -> Verdict:
        """`grade_many` for one (answer, gold) pair."""
        return self.grade_many([(answer, gold)])[0]  # type: ignore[attr-defined]

    def extract_many(self, texts: Sequence[str | None]) -> list[str | None]:
        """`extract` for each text, in order."""
        return [self.extract(t) for t in texts]  # type: ignore[attr-defined]


class _LRU:
    """A bounded, thread-safe mapping that forgets the least recently used entry (the answer caches)."""

    _MISSING = object()

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value stored under `key` (now the most recently used), or `default`."""
        with self._lock:
            value = self._data.get(key, self._MISSING)
            if value is self._MISSING:
                return default
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


_INTEGER_RE = re.compile(r"-?\d+")
_UNSEEN = object()


def _math_form(answer: str) -> str:
    """The normal form under which two maths answers are the same without parsing (case and a final
    factorial sign kept)."""
    return normalize_answer(answer, case_sensitive=True, math=True)


def _quick_math_verdict(answer: str, gold: str) -> bool | None:
    """The verdict where it needs no parser: equal normal forms are equal, two different integers are
    not (the common case when labelling answers). None when math-verify has to decide."""
    a, g = _math_form(answer), _math_form(gold)
    if a == g:
        return True
    if _INTEGER_RE.fullmatch(a) and _INTEGER_RE.fullmatch(g):
        return int(a) == int(g)
    return None


class MathGrader(_GraderBase):
    """Reads and grades maths answers with math-verify, the answer and the gold through one parser.

    `extract` is math-verify's own extraction — its LaTeX and plain-expression configs, ``\\boxed{}``
    first (`boxed_priority`, 0 = before everything), then "final answer is …" / "Answer: …", then the
    last maths or number — and returns the answer as math-verify normalised it (a LaTeX string, e.g.
    ``\\frac{1}{3}``, ``x \\geq 5``, ``(1,4.5)``, "1000.99" for "1000,99"; several boxes in a row give
    their list, "2,3"). `grade_many` parses the answer and the gold with the same `parse_math_answer` and
    compares them with math-verify's `verify` (1/2 = 0.5 = \\frac12, x=3 = 3, 10\\% = 0.1 …).

    Both run in `pool` (the process-wide `default_pool()` unless given) under a hard `timeout_s` per item,
    since math-verify can hang and its own time-out works only on the main thread; a time-out is a failed
    item. What needs no parser stays in this process: equal normal forms are equal, different integers
    are not, and answers read or compared before come from bounded caches (`cache_size` entries). With
    `allow_set_relation_comp` an interval equals the inequality that describes it ("[5, \\infty)" =
    "x \\geq 5"), as a human grader reads them.
    """

    task = "math"

    def __init__(self, *, pool: GradingPool | None = None, timeout_s: float = 10.0,
                 float_rounding: int = 6, numeric_precision: int = 15, boxed_priority: int = 0,
                 allow_set_relation_comp: bool = True, cache_size: int = 65536) -> None:
        if not timeout_s > 0:
            raise CritwinError(f"timeout_s={timeout_s} invalid: the grader time-out must be > 0 seconds")
        if boxed_priority < 0:
            raise CritwinError(f"boxed_priority={boxed_priority} invalid: use 0 (boxed first) or more")
        self._pool = pool
        self.timeout_s = float(timeout_s)
        self.float_rounding = int(float_rounding)
        self.numeric_precision = int(numeric_precision)
        self.boxed_priority = int(boxed_priority)
        self.allow_set_relation_comp = bool(allow_set_relation_comp)
        self._answers = _LRU(cache_size)
        self._verdicts = _LRU(cache_size)
        self.n_extract_failures = 0  # extractions that timed out or crashed their worker (read as None)

    @property
    def pool(self) -> GradingPool:
        """The pool the parsing and the comparisons run in."""
        return self._pool if self._pool is not None else default_pool()

    def extract(self, text: str | None) -> str | None:
        """The answer math-verify reads in `text` (see the class docstring), or None."""
        return self.extract_many([text])[0]

    def extract_many(self, texts: Sequence[str | None]) -> list[str | None]:
        """`extract` for many texts in one pool call (texts seen before are not parsed again)."""
        return [None if isinstance(a, Failure) else a for a in self.read_many(texts)]

    def read_many(self, texts: Sequence[str | None]) -> list[str | Failure | None]:
        """Like `extract_many`, but a text whose reading timed out or crashed its worker gives that
        `Failure` (with its reason) instead of None. Failures are not cached: a later call retries."""
        out: list[str | Failure | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            if not text or not text.strip():
                continue
            cached = self._answers.get(text, _UNSEEN)
            if cached is _UNSEEN:
                todo.setdefault(text, []).append(i)
            else:
                out[i] = cached
        if todo:
            keys = list(todo)
            found = self.pool.run(math_extract, [(t, self.boxed_priority) for t in keys], self.timeout_s)
            for text, answer in zip(keys, found, strict=True):
                if isinstance(answer, Failure):
                    self.n_extract_failures += 1
                    answer = Failure(f"reading the answer failed: {answer.reason}")
                else:
                    self._answers[text] = answer
                for i in todo[text]:
                    out[i] = answer
        return out

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """True when math-verify finds the answer equal to the gold; a `Failure` for a missing answer
        or a comparison that timed out or crashed its worker. Each distinct pair is compared once."""
        out: list[Verdict | None] = [None] * len(pairs)
        todo: dict[tuple[str, str], list[int]] = {}
        for i, (answer, gold) in enumerate(pairs):
            if answer is None or not answer.strip():
                out[i] = NO_ANSWER
                continue
            key = (answer, str(gold))
            quick = self._verdicts.get(key)
            if quick is None:
                quick = _quick_math_verdict(*key)
            if quick is not None:
                out[i] = quick
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            keys = list(todo)
            args = [(gold, answer, self.float_rounding, self.numeric_precision, self.allow_set_relation_comp)
                    for answer, gold in keys]
            for key, verdict in zip(keys, self.pool.run(math_equal, args, self.timeout_s), strict=True):
                if not isinstance(verdict, Failure):
                    verdict = bool(verdict)
                    self._verdicts[key] = verdict
                for i in todo[key]:
                    out[i] = verdict
        return out  # type: ignore[return-value]

    def equivalent_many(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """Whether each (reference answer, answer) pair is mathematically the same answer."""
        return self.grade_many(pairs)

    def labeler(self) -> AnswerLabeler:
        """An `AnswerLabeler` whose equivalence is math-verify (in the pool, with the time-out)."""
        return AnswerLabeler(self.equivalent_many, normalize=_math_form)


# --------------------------------------------------------------------------------------------------
# math-verify, called inside the grading pool (no time-out of its own: the pool's is the hard limit)
# --------------------------------------------------------------------------------------------------

# Digits grouped by a space or a LaTeX space ("1 000", "1\,000", "12~345"): math-verify reads them as a
# product (1 000 -> 1*0) inside LaTeX, so the groups are joined before parsing.
_DIGIT_GROUPS_RE = re.compile(
    r"(?<![\d.,])(\d{1,3})((?:(?:\\,|\\ |~|\\thinspace\s*|[ \u00a0\u2009\u202f])\d{3})+)(?![\d])"
)
# Plain words are text, not a product of symbols (math-verify reads "Monday" as M*o*n*d*a*y); a number
# followed by words carries a unit ("5 dollars"), which LaTeX's \text{} lets math-verify drop.
_WORDS_RE = re.compile(r"[A-Za-z][A-Za-z'’\- ]*[A-Za-z]")
_NUMBER_WORDS_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s+([A-Za-z][A-Za-z ]*[A-Za-z])")
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc log ln exp sqrt arcsin arccos arctan sinh cosh tanh det max min lim gcd lcm "
    "mod pi inf oo".split()
)
_DELIMITED_RE = re.compile(r"\\boxed|\\fbox|(?<!\\)\$|\\\(|\\\[")


def _math_configs(boxed_priority: int) -> tuple[Any, Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return LatexExtractionConfig(boxed_match_priority=boxed_priority), ExprExtractionConfig()


# An escaped dollar before a number is a currency sign ("\$1.25"), which math-verify's number reader
# only skips when it is a bare "$".
_CURRENCY_RE = re.compile(r"\\\$(?=\s*\d)")


def _prepare(text: str) -> str:
    """The text with currency signs dropped and digit groups joined, as math-verify reads it best."""
    text = _CURRENCY_RE.sub("", text)
    return _DIGIT_GROUPS_RE.sub(lambda m: m.group(1) + re.sub(r"\D", "", m.group(2)), text)


def _read(text: str, boxed_priority: int) -> tuple[Any, str | None]:
    """math-verify's extraction of `text`: (parsed value, its normalised string) of the first match that
    parses, in math-verify's priority order (within a priority, the rightmost match first); (None, the
    first match's string) when no match parses; (None, None) when nothing matches.

    This is `math_verify.parse` (``extraction_mode="any_match"``, ``fallback_mode="first_match"``) with
    one difference: the string returned is the one of the match that parsed, not of the first match.
    """
    from math_verify.parser import extract_match, get_extraction_regexes

    targets = get_extraction_regexes(_math_configs(boxed_priority))
    patterns = sorted(((pattern, target, priority) for regexes, target in targets
                       for pattern, priority in regexes), key=lambda p: p[2])
    fallback = None
    for _, group in itertools.groupby(patterns, key=lambda p: p[2]):
        matches = sorted(((m, target) for pattern, target, _ in group for m in pattern.finditer(text)),
                         key=lambda mt: (mt[0].end(), -mt[0].start()), reverse=True)
        for match, target in matches:
            value, string = extract_match(match, target)
            if fallback is None and string:
                fallback = string
            if value is not None:
                return value, string
    return None, fallback


def _as_answer_string(value: Any, string: str) -> str:
    """The string that stands for a parsed value: math-verify's normalised string, with the percent sign
    that its plain-number reader keeps out of the string ("50%" -> "50\\%") and without a final full stop."""
    from math_verify.grader import get_pct_val

    # The plain-expression reader may keep the full stop that ends the sentence ("The answer is 1/2.").
    string = string.strip().rstrip(".").strip() or string
    if get_pct_val(value) is not None and "%" not in string:
        string += "\\%"
    return string


def math_extract(text: str, boxed_priority: int = 0) -> str | None:
    """The answer math-verify reads in a model's text, as a string (None when there is none).

    Runs math-verify's LaTeX and expression extraction (`boxed_priority` 0: ``\\boxed{}`` first). The
    string is math-verify's normal form of the match that parsed, so `parse_math_answer` reads it back
    as the same value. No time-out of its own: call it in a `GradingPool`.
    """
    value, string = _read(_prepare(text), boxed_priority)
    if value is None:
        return string or None
    return _as_answer_string(value, string) or None


@functools.lru_cache(maxsize=4096)
def parse_math_answer(answer: str) -> tuple[Any, ...]:
    """math-verify's parse of one answer — a gold answer or one `math_extract` read — for `verify`.

    A bare answer ("\\frac{1}{3}", "x \\in [1,2)", "1 000") is parsed whole, as the content of a
    ``\\boxed{}``, so no digit is ever read out of it; a text with maths delimiters or boxes (a full gold
    solution, "$2$") is read like a model's text. Plain words are text ("Monday" = \\text{Monday}) and a
    number followed by words has a unit ("5 dollars" = 5). Cached per process (a problem's gold is
    parsed once).
    """
    from math_verify import parse

    s = _prepare(answer.strip())
    if not s:
        return ()
    if _DELIMITED_RE.search(s):
        value, string = _read(s, 0)
        return (value, string) if value is not None else ((string,) if string else ())
    if _WORDS_RE.fullmatch(s) and (" " in s or len(s) >= 3) and s.lower() not in _MATH_WORDS:
        s = f"\\text{{{s}}}"
    else:
        m = _NUMBER_WORDS_RE.fullmatch(s)
        if m is not None and all(len(w) >= 3 and w.lower() not in _MATH_WORDS for w in m.group(2).split()):
            s = f"{m.group(1)}\\text{{ {m.group(2)}}}"
    latex, _ = _math_configs(0)
    # first_match: if the box does not parse, compare as a string rather than read a digit out of it.
    return tuple(parse(f"\\boxed{{{s}}}", [latex], fallback_mode="first_match",
                       extraction_mode="first_match", parsing_timeout=None))


def warm_up_grader_worker() -> None:
    """Run math-verify once, so that a grading-pool worker starts with its LaTeX parser built (the first
    parse in a process takes about a second). The pool calls it at worker start-up."""
    math_equal(r"\frac{1}{2}", str(math_extract(r"so $\boxed{0.5}$")))


def math_equal(gold: str, answer: str, float_rounding: int = 6, numeric_precision: int = 15,
               allow_set_relation_comp: bool = True) -> bool:
    """Whether `answer` equals `gold`: both parsed by `parse_math_answer`, compared by math-verify's
    `verify` (gold first: it is not symmetric). With `allow_set_relation_comp` an interval and the
    inequality that describes it are equal ("[5, \\infty)" = "x \\geq 5", as a human grader reads them).
    Compares normal forms when either side cannot be parsed. No time-out of its own: call it in a
    `GradingPool`.
    """
    from math_verify import verify

    gold_parsed, answer_parsed = parse_math_answer(gold), parse_math_answer(answer)
    if not gold_parsed or not answer_parsed:
        return _math_form(gold) == _math_form(answer)
    return bool(verify(list(gold_parsed), list(answer_parsed), float_rounding=float_rounding,
                       numeric_precision=numeric_precision, allow_set_relation_comp=allow_set_relation_comp,
                       timeout_seconds=None))


class MultipleChoiceGrader(_GraderBase):
    """Multiple choice: the answer is a letter from `letters`; gold is a letter (case-insensitive).

    `extract` only reads commitments to one option (see `critwin.features.answers.extract_choice`: "answer
    is B", "Answer - D", "option B is correct", "I'd pick D", ``\\boxed{B}``, a letter ending the reply …);
    set `mentions=False` to ignore bare "(B)" / "B)" mentions as a last resort.
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
        """Labels of many samples at once (answers read in one batch, batched equivalence checks)."""
        texts = [self.text_of(s) for s in samples]
        extract_many = getattr(self.grader, "extract_many", None)  # user graders may only have `extract`
        answers = extract_many(texts) if extract_many is not None else [self.grader.extract(t) for t in texts]
        return self.labeler.label_many(answers)


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
    "math_extract",
    "parse_math_answer",
    "sample_text",
    "verdict_counts",
    "warm_up_grader_worker",
]
