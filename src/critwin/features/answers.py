"""Read the answer out of a model's text: a free continuation or the reply to an elicitation turn.

Two ways to read an LLM's answer exist and they measure different things (DESIGN.md §2):

* from the **free continuation** — the chain of thought itself usually ends with "The answer is …",
  a ``\\boxed{…}`` or just a number; `find_answer` / `extract_answer` read that;
* by the paper's **elicitation turn** — a follow-up user message (`elicitation_prompt`) asks for the
  answer, decoded greedily, and the same readers parse the reply.

These are the readers of the exact-match and arith tasks; maths answers are read by math-verify
(`critwin.features.grading.MathGrader`). The last-number reader never takes a digit out of LaTeX, a list,
a bound or a power (``\\frac{1}{3}``, ``x \\geq 5``, "(1,4.5)" and matrices are read whole) and reads
"1 000" and "1000,99" as the numbers they are.

Multiple-choice letters are read by `extract_choice`, which only accepts commitments ("(B)", "B)",
"answer is B", "Answer - D", "option B is correct", "I'd pick D", ``\\boxed{B}``, a letter ending the
reply) so that stray capitals in prose ("I think", "A common mistake", "Plan B") and hedged statements
("I don't think the answer is A") are never read as a choice. Every reader returns None when no answer
is present: an unparseable item is a failed item, never an outcome.
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


_SUBJECT_RE = re.compile(
    r"(?:(?:so|thus|hence|therefore),?\s+)?(?:the|it|this|that|our|my)\b[^.\n]*?\s"
    r"(?:is|are|was|equals|=|would\s+be|will\s+be|must\s+be)\s+(?P<value>\S.*)$",
    re.IGNORECASE | re.DOTALL,
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
    phrase = body[:stop]
    # "Final Answer: The largest $n$ is 34." states the answer in a sentence of its own: keep what follows
    # its verb (a sentence with a subject of its own, so "Answer: 3 is prime" is not cut).
    m = _SUBJECT_RE.match(phrase)
    if m is not None:
        phrase = m.group("value")
    value = _strip_markup(phrase)
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
# last number (or the last maths expression, when the number sits inside one)
# --------------------------------------------------------------------------------------------------

# A number as people write it. Thousands are grouped by ",", a (thin / no-break) space, "\\," or "{,}"
# ("1,000", "1 000", "1\\,000"); a decimal comma is read where it cannot be a thousands group ("1000,99",
# "2,5") and is not part of a list ("1,2,3"). A minus sign only where it cannot be a hyphen or a binary
# minus ("3-4" reads as 4, not -4). Digits glued to a word, an exponent or a LaTeX argument are not numbers.
_SEP = r"(?:,|[ \u00a0\u2009\u202f]|\\,|\{,\})"
_NUMBER_RE = re.compile(
    r"(?P<sign>(?<![\w)\]}])-)?(?<![\w.^_{}\\/])"
    r"(?:(?P<grouped>\d{1,3}(?:" + _SEP + r"\d{3})+)(?![\d])(?P<gdec>\.\d+)?"
    r"|(?<!\d,)(?P<cint>\d+),(?P<cdec>\d+)(?![\d,])"
    r"|(?P<int>\d+)(?P<dec>\.\d+)?)"
    r"(?P<den>/\d+)?(?![\d^_{])"
)
_SEP_RE = re.compile(_SEP)
# Maths spans: display and inline, "$...$" only where it is not a currency sign ("costs $5 and $10").
_MATH_SPAN_RE = re.compile(
    r"\$\$(?P<dd>.+?)\$\$|\\\[(?P<db>.+?)\\\]|\\\((?P<ip>.+?)\\\)"
    r"|(?<![\\$])\$(?P<id>(?:\\\$|[^$\n])+?)(?<!\\)\$(?!\d)",
    re.DOTALL,
)
_ENV_RE = re.compile(r"\\begin\{(?P<env>[a-zA-Z*]+)\}.*?\\end\{(?P=env)\}", re.DOTALL)
_COMMAND_RE = re.compile(r"(?:-?\d+(?:\.\d+)?\s*)?\\[a-zA-Z]+")
_NUM = r"-?\d+(?:[.,]\d+)?"
# A bracketed list of numbers in plain text is a tuple or an interval: "(1,4.5)", "[2, 3)".
_LIST_RE = re.compile(r"[(\[]\s*" + _NUM + r"(?:\s*[,;]\s*" + _NUM + r")+\s*[)\]]")
# A bound is not a value: "x > 5", "n \\geq 5", "t ≤ 3" are read whole.
_RELATION_RE = re.compile(
    r"[A-Za-z0-9_^{}]+\s*(?:\\(?:geq|leq|ge|le|neq|ne|gt|lt)(?![a-zA-Z])|[<>≤≥≠]=?)\s*" + _NUM
)
_POWER_RE = re.compile(r"(?<![\w.])\d+\s*\^\s*(?:\{[^{}]*\}|\d+)")
# The last top-level "=" of an expression (not part of <=, >=, !=, \\leq ...).
_EQUALS_RE = re.compile(r"(?<![<>!\\=])=(?!=)")


def _mask(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _math_value(content: str) -> str:
    """The value a maths span states: its right-hand side after the last top-level "=" ("x = 3" -> 3)."""
    content = content.strip()
    depth, last_eq = 0, None
    for m in re.finditer(r"[{}]|" + _EQUALS_RE.pattern, content):
        ch = m.group(0)
        depth += 1 if ch == "{" else -1 if ch == "}" else 0
        if ch == "=" and depth == 0:
            last_eq = m.end()
    value = content[last_eq:].strip() if last_eq is not None else content
    return value.rstrip(".,;").strip() or content


def _number_value(m: re.Match[str]) -> str:
    sign, den = m.group("sign") or "", m.group("den") or ""
    if m.group("grouped") is not None:
        return sign + _SEP_RE.sub("", m.group("grouped")) + (m.group("gdec") or "") + den
    if m.group("cint") is not None:
        return f"{sign}{m.group('cint')}.{m.group('cdec')}{den}"
    return sign + m.group("int") + (m.group("dec") or "") + den


def _latex_command_runs(text: str) -> list[tuple[int, int]]:
    """Spans of LaTeX commands written without maths delimiters, with their brace arguments and a
    leading coefficient ("2\\sqrt{3}", "\\frac{1}{3}")."""
    runs = []
    pos = 0
    while True:
        m = _COMMAND_RE.search(text, pos)
        if m is None:
            return runs
        end = m.end()
        while True:  # the command's arguments: [opt] and {…} groups, possibly after ^ or _
            rest = re.match(r"\s*(?:[\^_]\s*)?(?=[{\[])", text[end:])
            if rest is None:
                break
            j = end + rest.end()
            close = _balanced_group(text, j) if text[j] == "{" else (text.find("]", j) + 1 or None)
            if close is None:
                break
            end = close
        runs.append((m.start(), end))
        pos = end


def _candidates(text: str) -> list[tuple[str, int, int, bool]]:
    """(value, start, end, is_plain_number) for every final-value candidate, in order of position."""
    found: list[tuple[str, int, int, bool]] = []
    masked = text

    def take(value: str, start: int, end: int, number: bool = False) -> None:
        nonlocal masked
        found.append((value, start, end, number))
        masked = _mask(masked, start, end)

    for m in _MATH_SPAN_RE.finditer(text):
        content = next(g for g in m.groups() if g is not None)
        if re.search(r"\d", content):
            take(_math_value(content), m.start(), m.end())
        else:  # "$n$": not a value, but its letters and digits belong to no other candidate
            masked = _mask(masked, m.start(), m.end())
    for pattern in (_ENV_RE, _RELATION_RE, _POWER_RE):
        for m in pattern.finditer(masked):
            take(m.group(0).strip(), m.start(), m.end())
    for start, end in _latex_command_runs(masked):
        run = masked[start:end]
        if re.search(r"\d", run):
            take(run.strip(), start, end)
        else:
            masked = _mask(masked, start, end)
    for m in _LIST_RE.finditer(masked):
        take(re.sub(r"\s+", "", m.group(0)), m.start(), m.end())
    for m in _NUMBER_RE.finditer(masked):
        found.append((_number_value(m), m.start(), m.end(), True))
    found.sort(key=lambda f: (f[2], f[1]))
    return found


def find_value_candidates(text: str) -> list[tuple[str, int, int]]:
    """Every final-value candidate of a text as (value, start, end), in order of position.

    Candidates are maths spans that contain a digit (value: their right-hand side after the last "="),
    ``\\begin…\\end`` blocks (matrices), LaTeX commands with their arguments, bracketed number lists
    (tuples, intervals), bounds ("x > 5"), powers ("2^10") and plain numbers (see `find_numbers`). A
    digit inside any of the former is never a number of its own, so "\\frac{1}{3}" reads whole, not as 3.
    """
    return [(v, a, b) for v, a, b, _ in _candidates(text)]


def find_numbers(text: str) -> list[tuple[str, int, int]]:
    """The plain numbers of a text as (normalised value, start, end): integers, decimals, a/b fractions,
    with thousands separators removed and a decimal comma made a point ("1 000" -> 1000, "1000,99" ->
    1000.99). Digits inside maths, LaTeX commands, bracketed lists, bounds and powers are not counted."""
    return [(v, a, b) for v, a, b, number in _candidates(text) if number]


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
    last number in the text, or the last maths expression when that comes later: ``$\\frac{1}{3}$``,
    ``x \\geq 5``, "(1,4.5)" and matrices read whole, never as a digit taken out of them; see
    `find_value_candidates`). None when no reader finds anything.
    """
    if not text:
        return None
    for method in _check_methods(methods):
        if method == "boxed":
            hits = find_boxed(text)
        elif method == "answer_is":
            hits = find_answer_statements(text)
        else:
            hits = find_value_candidates(text)
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

# Words before a statement that take back its commitment: "I don't think the answer is A", "if the
# answer is A", "neither A nor B is correct". Looked for in the statement's own clause only.
_HEDGE_RE = re.compile(
    r"\b(?:not|never|if|whether|unless|nor|neither|why|doubt|rather\s+than|instead\s+of|except)\b|n't\b",
    re.IGNORECASE,
)
# After a letter: "A or B", "B and C", "B/C", "A, B" commit to no single option.
_SEVERAL_RE = re.compile(r"\s*(?:\bor\b|\band\b|/|,|&)\s*\(?[A-Z]\)?(?![\w'])")
# After a letter: a verb makes the letter the subject of a new claim ("I'd say A is wrong").
_CLAIM_RE = re.compile(
    r"\s+(?:is|are|was|were|does|doesn't|isn't|can|cannot|has|seems|would|could|might|looks|says|states)\b"
)
# Words that may stand right before "B is correct" (any other word makes "Plan B", "Vitamin C").
_SUBJECT_PREFIX_RE = re.compile(
    r"(?:^|[.,;:!?(\"'“*]\s*|\n\s*|(?i:\b(?:option|choice|answer|letter|so|thus|hence|therefore|then|think|"
    r"believe|guess|but|and|clearly|only|say|sure|conclusion))\s+)$"
)


@dataclass(frozen=True)
class _ChoicePatterns:
    statement: re.Pattern[str]  # "the answer is (B)", "Answer: b", "Answer - D", "correct option is B"
    correct: re.Pattern[str]  # "option B is correct", "B is the right answer"
    pick: re.Pattern[str]  # "I'd pick D", "I would choose (B)"
    it_is: re.Pattern[str]  # "I think it is C."
    boxed: re.Pattern[str]  # \boxed{B}
    final: re.Pattern[str]  # "Based on the passage, B." (a bare letter ends the text)
    leading: re.Pattern[str]  # "B. Paris" (the reply starts with the option)
    mention: re.Pattern[str]  # "(B)", "B)"


def _choice_patterns(letters: str) -> _ChoicePatterns:
    up = "[" + re.escape(letters) + "]"
    both = "[" + re.escape(letters + letters.lower()) + "]"

    def letter(cls: str) -> str:
        return r"(?P<open>[(\[])?(?P<letter>" + cls + r")(?(open)[)\]]|\)?)"

    after = r"(?=$|[\s.,;:!?)\]*\"'$}])"
    statement = re.compile(
        r"(?i:\b(?:(?:final|correct|right|best|true|my|our)\s+(?:answer|option|choice|pick|selection)s?"
        r"|answer)\b)(?i:\s+(?:here|then|thus|therefore|overall))?\s*(?:\*\*)?\s*"
        r"(?P<sep>(?i:is|would\s+be|will\s+be|should\s+be|must\s+be|has\s+to\s+be)|:|=|-|–|—)"
        r"\s*:?\s*(?:\*\*)?\s*"
        r"(?i:(?:probably|likely|clearly|definitely|most\s+likely|certainly|indeed|therefore|thus)\s*,?\s+)?"
        r"(?i:(?:option|choice|letter)\s+)?(?:\$?\\boxed\{\s*(?:\\text(?:bf)?\{\s*)?)?"
        + letter(both) + after
    )
    correct = re.compile(
        r"(?<![\w'])(?i:(?:option|choice|answer|letter)\s+)?" + letter(up)
        + r"\s+(?i:is|seems\s+to\s+be|appears\s+to\s+be|must\s+be|should\s+be)\s+(?i:the\s+)?"
        r"(?:(?i:(?:correct|right|best|true)(?:\s+(?:answer|option|choice|one))?)"
        r"(?=\s*(?:$|[.!,;:)*]|\s(?i:because|since|as|here|for|given)))"
        r"|(?i:answer\b))"
    )
    pick = re.compile(
        r"(?i:\b(?:i'd|i\s+would|i'll|i\s+will|i\s+am\s+going\s+to|i'm\s+going\s+to|i|we'd|we\s+would|we|"
        r"let's|let\s+me)\s+(?:pick|picked|choose|chose|select|selected|go\s+with|went\s+with|opt\s+for|say|"
        r"answer|mark|circle)\s+"
        r"(?:(?:option|choice|answer|letter)\s+)?)" + letter(both) + after
    )
    it_is = re.compile(
        r"(?i:\b(?:it|this|that)(?:'s|’s|\s+is|\s+must\s+be|\s+should\s+be|\s+would\s+be|\s+has\s+to\s+be)\s+"
        r"(?:(?:option|choice|answer)\s+)?)" + letter(up) + r"(?=\s*(?:\*\*)?\s*(?:[.!]|$))"
    )
    boxed = re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{\s*)?\(?(?P<letter>" + both + r")\)?\s*\}")
    final = re.compile(
        r"(?:^|[\n,:;]|\s[-–—]|(?i:\b(?:which\s+is|that\s+is|leaves|leaving|option|choice|so|thus|hence|"
        r"therefore))\s)\s*(?:\*\*)?"
        + letter(up) + r"(?:\*\*)?\s*[.!]?\s*(?:\*\*)?\s*$"
    )
    leading = re.compile(r"^\s*(?:\*\*)?(?:(?P<open>\()(?P<letter>" + up + r")\)|(?P<letter2>" + up
                         + r")(?:[.):]|\s+[-–—]))(?:\*\*)?(?=\s|$)")
    mention = re.compile(r"(?<![\w(])\(?(?P<letter>" + up + r")\)(?![\w])")
    return _ChoicePatterns(statement, correct, pick, it_is, boxed, final, leading, mention)


_PATTERN_CACHE: dict[str, _ChoicePatterns] = {}


def _is_prose(text: str, letter_end: int, letter: str, sep: str) -> bool:
    """True when the capital just before `letter_end` starts English prose, not a choice.

    "I" followed by a lower-case word is the pronoun ("the answer is I think B"); "A" followed by one
    is the article only where a new sentence starts ("Answer: A common mistake …"), since after
    "the answer is" a capital "A because …" is a choice.
    """
    if letter.upper() not in _WORD_LETTERS or re.match(r"\s+[a-z]", text[letter_end:]) is None:
        return False
    return letter.upper() == "I" or sep.strip().lower() not in ("is", "would be", "will be", "should be",
                                                                  "must be", "has to be")


def _clause_before(text: str, start: int) -> str:
    """The text of the clause that ends at `start` (back to the previous , ; . ! ? or line break)."""
    cut = max(text.rfind(ch, 0, start) for ch in ",;.!?\n")
    return text[cut + 1 : start]


def _committed(text: str, m: re.Match[str], sep: str = "is") -> bool:
    """Whether match `m` commits to its letter: not prose, not hedged, not one of several options, and a
    lower-case letter ("the answer is b") only where nothing but punctuation follows it."""
    letter, end = m.group("letter"), m.end()
    if _is_prose(text, m.end("letter"), letter, sep):
        return False
    if _HEDGE_RE.search(_clause_before(text, m.start())):
        return False
    if _SEVERAL_RE.match(text, end):
        return False
    if letter.islower():
        # "the answer is a matter of taste": a lower-case letter counts only at the end of its sentence.
        if re.match(r"\s*[.!)\]]?\s*(?:$|\n)", text[end:]) is None:
            return False
    return True


def extract_choice(text: str | None, letters: str | Sequence[str] = "ABCD", *,
                   mentions: bool = True) -> str | None:
    """The multiple-choice letter the text commits to, or None.

    Reads, in this order:

    1. the last explicit commitment: an answer statement ("The answer is (B)", "the answer is b",
       "Answer: B", "Answer - D", "correct option is B"), a verdict ("option B is correct", "B is the
       right answer"), a pick ("I'd pick D"), "it is C." ending a sentence, or ``\\boxed{B}``;
    2. a bare letter that ends the text ("Based on the passage, B.", "That leaves B.", "which is option
       B.") or starts it ("B. Paris");
    3. when `mentions`, the last parenthesised mention "(B)" or "B)".

    A commitment inside a hedged clause ("I don't think the answer is A", "if the answer is A"), one
    naming several options ("B or C"), and a capital that is prose ("I think", "A common mistake",
    "Plan B", "vitamin C") are not read. Only letters from `letters` count, lower-case ones only right
    after an answer statement. Returns the upper-case letter; None when the text commits to none.
    """
    letters = "".join(letters).upper()
    if not letters or not letters.isalpha() or not letters.isascii() or len(set(letters)) != len(letters):
        raise CritwinError(f"letters {letters!r} invalid: give distinct capital letters such as 'ABCD'")
    if not text:
        return None
    pats = _PATTERN_CACHE.get(letters)
    if pats is None:
        pats = _PATTERN_CACHE[letters] = _choice_patterns(letters)

    strong: list[tuple[int, str]] = []
    for m in pats.statement.finditer(text):
        if _committed(text, m, m.group("sep")):
            strong.append((m.end("letter"), m.group("letter")))
    for m in pats.correct.finditer(text):
        if (_SUBJECT_PREFIX_RE.search(text, 0, m.start("letter") - (1 if m.group("open") else 0)) is not None
                and not _HEDGE_RE.search(_clause_before(text, m.start()))):
            strong.append((m.end("letter"), m.group("letter")))
    for m in pats.pick.finditer(text):
        if _committed(text, m, "pick") and not _CLAIM_RE.match(text, m.end()):
            strong.append((m.end("letter"), m.group("letter")))
    for m in pats.it_is.finditer(text):
        if _committed(text, m):
            strong.append((m.end("letter"), m.group("letter")))
    for m in pats.boxed.finditer(text):
        strong.append((m.end("letter"), m.group("letter")))
    if strong:
        return max(strong)[1].upper()

    m = pats.final.search(text)
    if m is not None:
        return m.group("letter")
    only = text.strip(" \t\n()*.!")
    if len(only) == 1 and only.upper() in letters:  # a reply that is one lower-case letter and nothing else
        return only.upper()
    m = pats.leading.match(text)
    if m is not None:
        return m.group("letter") or m.group("letter2")
    if mentions:
        hits = list(pats.mention.finditer(text))
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


def normalize_answer(answer: str, *, case_sensitive: bool = False, math: bool = False) -> str:
    """A canonical string for an answer: math delimiters, spacing commands, \\left/\\right, \\text{…}
    wrappers, \\dfrac/\\tfrac, thousands separators, trailing punctuation and all whitespace removed.

    With `math`, a final "!" is kept: in "5!" it is a factorial, not an exclamation. Two answers with
    the same normal form are the same answer; different forms may still be mathematically equal (math
    graders decide that with math-verify).
    """
    if math:  # shield a final factorial sign from the punctuation stripping below
        answer = re.sub(r"!(?=[\s$}]*$)", "\x00", answer)
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
    s = s.rstrip(".").replace("\x00", "!")
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
