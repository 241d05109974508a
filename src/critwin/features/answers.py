"""Read the answer out of a model's text: a free continuation or the reply to an elicitation turn.

Two ways to read an LLM's answer exist and they measure different things (DESIGN.md §2):

* from the **free continuation** — the chain of thought itself usually ends with "The answer is …",
  a ``\\boxed{…}`` or just a number; `find_answer` / `extract_answer` read that;
* by the paper's **elicitation turn** — a follow-up user message (`elicitation_prompt`) asks for the
  answer, decoded greedily, and the same readers parse the reply.

Multiple-choice letters are read by `extract_choice`, which only accepts explicit answer statements
("(B)", "B)", "answer is B", "Answer: B", ``\\boxed{B}``) so that stray capitals in prose ("I think",
"A common mistake") are never read as a choice. Every reader returns None when no answer is present:
an unparseable item is a failed item, never an outcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from critwin.errors import CritwinError

Method = Literal["boxed", "answer_is", "last_number"]
DEFAULT_METHODS: tuple[Method, ...] = ("boxed", "answer_is", "last_number")
_KNOWN_METHODS = frozenset(DEFAULT_METHODS)


@dataclass(frozen=True)
class ExtractedAnswer:
    """An answer found in a text: its string value, which reader found it and its span [start, end)."""

    value: str
    method: Method
    start: int
    end: int


# --------------------------------------------------------------------------------------------------
# \boxed{...}
# --------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")


def _balanced_group(text: str, open_at: int) -> int | None:
    """Index just past the '}' closing the '{' at `open_at`, or None when it never closes.

    LaTeX-escaped braces (\\{ and \\}) are literal characters and do not open or close groups.
    """
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character (\{, \}, \\, \frac ...)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def find_boxed(text: str) -> list[tuple[str, int, int]]:
    """All ``\\boxed{…}`` / ``\\fbox{…}`` contents in order, as (content, start, end) with nested braces.

    Also reads the brace-less form ``\\boxed 5`` (one token). Unclosed boxes are ignored.
    """
    found: list[tuple[str, int, int]] = []
    for m in _BOX_RE.finditer(text):
        j = m.end()
        if j < len(text) and text[j] == "{":
            end = _balanced_group(text, j)
            if end is None:
                continue
            content = text[j + 1 : end - 1]
        elif m.group(0)[-1].isspace():  # brace-less form: "\boxed 5" takes one token
            tok = re.match(r"[^\s$,;{}]+", text[j:])
            if tok is None:
                continue
            content, end = tok.group(0).rstrip("."), j + tok.end()
        else:
            continue
        content = content.strip()
        if content:
            found.append((content, m.start(), end))
    return found


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` in `text` (nested braces kept), or None."""
    boxes = find_boxed(text)
    return boxes[-1][0] if boxes else None


# --------------------------------------------------------------------------------------------------
# "The answer is ..."
# --------------------------------------------------------------------------------------------------

_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:\*\*)?\s*(?:is|:|=|would\s+be|will\s+be)\s*(?::\s*)?",
    re.IGNORECASE,
)
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|\n")
# A new clause after the answer ends it; the words are ones no final answer continues with.
_CLAUSE_RE = re.compile(
    r",?\s+(?:because|since|as|which|so|but|from|given|by|if|then|thus|hence|therefore|where|when)\b"
)


def _strip_markup(s: str) -> str:
    s = s.strip()
    for _ in range(3):  # peel nested decorations such as **"$5$"**
        before = s
        s = s.strip().strip("*_`\"'“”").strip()
        s = s.rstrip(".,;:!?").strip()
        for lo, hi in _MATH_DELIMS:
            if s.startswith(lo) and s.endswith(hi) and len(s) >= len(lo) + len(hi):
                inner = s[len(lo) : len(s) - len(hi)]
                if lo != "$" or "$" not in inner:
                    s = inner.strip()
                    break
        if s == before:
            break
    return s


def _answer_after(text: str, pos: int) -> tuple[str, int] | None:
    """The answer phrase that starts at `pos` (right after "answer is"), and where it ends."""
    rest = text[pos:]
    lead = len(rest) - len(rest.lstrip(" \t*_"))
    body = rest[lead:]
    boxed = find_boxed(body)
    if boxed and boxed[0][1] <= 2:  # "answer is \boxed{…}" / "answer is $\boxed{…}$"
        content, _, end = boxed[0]
        return content, pos + lead + end
    for lo, hi in _MATH_DELIMS:
        if body.startswith(lo):
            close = body.find(hi, len(lo))
            if close > len(lo):
                return body[len(lo) : close].strip(), pos + lead + close + len(hi)
    m = _SENTENCE_END_RE.search(body)
    stop = m.start() if m else len(body)
    m = _CLAUSE_RE.search(body, 0, stop)  # "12 because 3*4=12" -> "12"
    if m is not None and m.start() > 0:
        stop = m.start()
    value = _strip_markup(body[:stop])
    return (value, pos + lead + stop) if value else None


def find_answer_statements(text: str) -> list[tuple[str, int, int]]:
    """Every "The answer is X" / "Answer: X" statement as (X, start, end), in order of appearance."""
    found = []
    for m in _ANSWER_IS_RE.finditer(text):
        got = _answer_after(text, m.end())
        if got is not None:
            value, end = got
            found.append((value, m.start(), end))
    return found


# --------------------------------------------------------------------------------------------------
# last number
# --------------------------------------------------------------------------------------------------

# A minus sign only when it cannot be a hyphen or a binary minus ("3-4" reads as 4, not -4);
# thousands separators only in proper groups of three ("1,000" but "(1,2)" reads 1 and 2).
_NUMBER_RE = re.compile(r"(?:(?<![\w)\]}])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\d])")


def find_numbers(text: str) -> list[tuple[str, int, int]]:
    """All numbers (integers, decimals, a/b fractions) as (normalised value, start, end)."""
    return [(m.group(0).replace(",", ""), m.start(), m.end()) for m in _NUMBER_RE.finditer(text)]


# --------------------------------------------------------------------------------------------------
# public readers
# --------------------------------------------------------------------------------------------------


def _check_methods(methods: Iterable[str]) -> tuple[Method, ...]:
    methods = tuple(methods)
    bad = [m for m in methods if m not in _KNOWN_METHODS]
    if bad or not methods:
        raise CritwinError(
            f"answer methods {list(methods)!r} invalid: use a non-empty subset of {list(DEFAULT_METHODS)}"
        )
    return methods  # type: ignore[return-value]


def find_answer(text: str | None, methods: Sequence[str] = DEFAULT_METHODS) -> ExtractedAnswer | None:
    """The answer in a free continuation: the first reader in `methods` that finds one wins.

    Readers: "boxed" (last ``\\boxed{…}``, nested braces kept), "answer_is" (last "The answer is X" /
    "Answer: X" statement, X up to the end of its sentence or inside its ``$…$``), "last_number" (the
    last number in the text). None when no reader finds anything.
    """
    if not text:
        return None
    for method in _check_methods(methods):
        if method == "boxed":
            hits = find_boxed(text)
        elif method == "answer_is":
            hits = find_answer_statements(text)
        else:
            hits = find_numbers(text)
        if hits:
            value, start, end = hits[-1]
            return ExtractedAnswer(value=value, method=method, start=start, end=end)
    return None


def extract_answer(text: str | None, methods: Sequence[str] = DEFAULT_METHODS) -> str | None:
    """The answer string read from `text` by `find_answer`, or None when there is none."""
    found = find_answer(text, methods)
    return found.value if found is not None else None


# --------------------------------------------------------------------------------------------------
# multiple choice
# --------------------------------------------------------------------------------------------------

# Capitals that are also English words: "A" and "I" followed by a lower-case word are prose.
_WORD_LETTERS = frozenset("AI")


def _choice_patterns(letters: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    cls = "[" + re.escape(letters) + "]"
    # After the letter: end of text, punctuation, or whitespace (then checked for prose).
    after = r"(?=$|[\s.,;:!?)\]*\"'$])"
    statement = re.compile(
        r"(?:final\s+answer|answer|correct\s+(?:answer|option|choice))\s*(?:\*\*)?\s*"
        r"(?P<sep>is|:|=|would\s+be|will\s+be)\s*:?\s*(?:\*\*)?\s*(?:option\s+|choice\s+)?"
        r"(?:\$?\\boxed\{\s*(?:\\text\{)?\s*)?"
        r"\(?(?P<letter>" + cls + r")\)?" + after,
        re.IGNORECASE,
    )
    boxed = re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{\s*)?\(?(?P<letter>" + cls + r")\)?\s*\}")
    mention = re.compile(r"(?<![\w(])\(?(?P<letter>" + cls + r")\)(?![\w])")
    return statement, boxed, mention


_PATTERN_CACHE: dict[str, tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]] = {}


def _is_prose(text: str, letter_end: int, letter: str, sep: str) -> bool:
    """True when the capital just before `letter_end` starts English prose, not a choice.

    "I" followed by a lower-case word is the pronoun ("the answer is I think B"); "A" followed by one
    is the article only where a new sentence starts ("Answer: A common mistake …"), since after
    "the answer is" a capital "A because …" is a choice.
    """
    if letter not in _WORD_LETTERS or re.match(r"\s+[a-z]", text[letter_end:]) is None:
        return False
    return letter == "I" or sep.strip() in (":", "=")


def extract_choice(text: str | None, letters: str | Sequence[str] = "ABCD", *,
                   mentions: bool = True) -> str | None:
    """The multiple-choice letter the text commits to, or None.

    Looks, in this order, for the last explicit statement ("The answer is (B)", "Answer: B",
    "correct option is B"), then the last ``\\boxed{B}``, then (when `mentions`) the last
    parenthesised mention "(B)" or "B)". Only capitals from `letters` count; a bare capital in prose
    ("I think", "A bit") is never read as a choice. Returns the upper-case letter.
    """
    letters = "".join(letters).upper()
    if not letters or not letters.isalpha() or not letters.isascii() or len(set(letters)) != len(letters):
        raise CritwinError(f"letters {letters!r} invalid: give distinct capital letters such as 'ABCD'")
    if not text:
        return None
    pats = _PATTERN_CACHE.get(letters)
    if pats is None:
        pats = _PATTERN_CACHE[letters] = _choice_patterns(letters)
    statement, boxed, mention = pats

    # The statement pattern is case-insensitive for its words only: the letter must be a capital.
    hits = [m for m in statement.finditer(text) if m.group("letter").isupper()
            and not _is_prose(text, m.end("letter"), m.group("letter"), m.group("sep"))]
    if hits:
        return hits[-1].group("letter")
    hits = list(boxed.finditer(text))
    if hits:
        return hits[-1].group("letter")
    if mentions:
        hits = list(mention.finditer(text))
        if hits:
            return hits[-1].group("letter")
    return None


def choice_letters(n: int) -> str:
    """The letters labelling n choices: 'ABCD' for 4 (at most 26)."""
    if not 1 <= n <= 26:
        raise CritwinError(f"number of choices {n} out of range: multiple choice needs 1 to 26 options")
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n]


# --------------------------------------------------------------------------------------------------
# normalisation and elicitation
# --------------------------------------------------------------------------------------------------

_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\{([^{}]*)\}")


def normalize_answer(answer: str, *, case_sensitive: bool = False) -> str:
    """A canonical string for an answer: math delimiters, spacing commands, \\left/\\right, \\text{…}
    wrappers, \\dfrac/\\tfrac, thousands separators, trailing punctuation and all whitespace removed.

    Two answers with the same normal form are the same answer; different forms may still be
    mathematically equal (math graders decide that with math-verify).
    """
    s = _strip_markup(answer)
    inner = last_boxed(s)
    if inner is not None and s.startswith(("\\boxed", "\\fbox")):
        s = inner
    s = _TEXT_CMD_RE.sub(r"\1", s)
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[,;:! ]", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\%", "%")
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    return s if case_sensitive else s.lower()


_ELICIT = {
    "math": "What is your final answer? Reply with one sentence of the form \"The answer is X\", "
    "where X is the final answer only.",
    "mc": "Which option is your final answer? Reply with one sentence of the form \"The answer is (X)\", "
    "where X is the letter of the option.",
    "exact": "What is your final answer? Reply with one sentence of the form \"The answer is X\", "
    "where X is the final answer only.",
}
ELICITATION_PREFIX = "The answer is"


def elicitation_prompt(task: str) -> str:
    """The follow-up user message that asks for the final answer (the paper's elicitation turn).

    The reply is decoded greedily and read with `extract_answer` (math, exact) or `extract_choice` (mc);
    backends may also prefill the assistant turn with `ELICITATION_PREFIX`.
    """
    try:
        return _ELICIT[task]
    except KeyError:
        raise CritwinError(f"task {task!r} unknown: use one of {sorted(_ELICIT)}") from None
