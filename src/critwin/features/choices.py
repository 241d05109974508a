"""Structured-output choices: templates with k blanks and a robust parser of filled outputs.

A template is literal text with blanks written ``{option one|option two|...}``; ``{{`` and ``}}`` are
literal braces. An output is parsed back into the tuple of chosen options, ignoring case and runs of
whitespace. Options that are prefixes of one another ("cat" / "cats") are resolved by the text that
follows; an output that matches no filling, or more than one different filling, is reported as such
(status ``"no_match"`` / ``"ambiguous"``), never guessed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

from critwin.errors import CritwinError

ParseStatus = Literal["ok", "empty", "no_match", "ambiguous"]


def normalize(text: str) -> tuple[str, tuple[int, ...]]:
    """Lower-case `text`, collapse whitespace runs to one space and strip the ends.

    Returns the normalized string and, for each of its characters, the index of the original character
    it came from (so that matches can be mapped back to character spans of the raw output).
    """
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            if out and out[-1] != " ":
                out.append(" ")
                origin.append(i)
            continue
        for low in ch.lower():  # lower() may expand one character into several (e.g. "İ")
            out.append(low)
            origin.append(i)
    if out and out[-1] == " ":
        out.pop()
        origin.pop()
    return "".join(out), tuple(origin)


def _norm(text: str) -> str:
    """Normalized form of a template piece: same case/whitespace rules but keeping edge spaces.

    Literal pieces keep a single leading/trailing space because they sit between options
    ("The {a|b} cat" has the literal " cat").
    """
    lead = " " if text[:1].isspace() else ""
    trail = " " if text[-1:].isspace() and text.strip() else ""
    core = normalize(text)[0]
    if not core:
        return " " if text and text.isspace() else ""
    return lead + core + trail


@dataclass(frozen=True)
class ChoiceParse:
    """The result of parsing one output against a template.

    `choices` is the tuple of chosen options (canonical spelling from the template) or None when the
    output does not fill the template exactly once; `spans` are the (start, end) character spans of the
    chosen options in the raw output text; `status` is "ok", "empty", "no_match" or "ambiguous".
    """

    choices: tuple[str, ...] | None
    spans: tuple[tuple[int, int], ...] | None
    status: ParseStatus


@dataclass(frozen=True)
class ChoiceTemplate:
    """Literal text with k blanks, each blank a tuple of at least two distinct options.

    `literals` has k + 1 pieces: literals[0] + option_1 + literals[1] + ... + option_k + literals[k].
    """

    literals: tuple[str, ...]
    options: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.options) == 0:
            raise CritwinError("template: no blanks found; write each blank as {option one|option two}")
        if len(self.literals) != len(self.options) + 1:
            raise CritwinError("template: literals must have exactly one more piece than there are blanks")
        for i, opts in enumerate(self.options):
            if len(opts) < 2:
                raise CritwinError(
                    f"template: blank {i + 1} has {len(opts)} option(s); give at least two, separated by '|'"
                )
            normed = [_norm(o).strip() for o in opts]
            if any(not n for n in normed):
                raise CritwinError(f"template: blank {i + 1} has an empty option; remove the stray '|'")
            if len(set(normed)) != len(normed):
                dup = sorted({n for n in normed if normed.count(n) > 1})
                raise CritwinError(
                    f"template: blank {i + 1} has duplicate options {dup} (case and whitespace are ignored); "
                    "make each option distinct"
                )

    @classmethod
    def parse(cls, text: str) -> ChoiceTemplate:
        """Read a template string such as ``"The {cat|dog} sat on the {mat|rug}."``."""
        literals: list[str] = []
        options: list[tuple[str, ...]] = []
        buf: list[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if text.startswith("{{", i) or text.startswith("}}", i):
                buf.append(ch)
                i += 2
                continue
            if ch == "{":
                end = text.find("}", i + 1)
                if end < 0:
                    raise CritwinError(f"template: '{{' at character {i} is never closed; add '}}' or write "
                                       f"'{{{{'")
                body = text[i + 1 : end]
                if "{" in body:
                    raise CritwinError(
                        f"template: nested '{{' inside the blank at character {i}; blanks cannot nest"
                    )
                literals.append("".join(buf))
                buf = []
                options.append(tuple(o.strip() for o in body.split("|")))
                i = end + 1
                continue
            if ch == "}":
                raise CritwinError(
                    f"template: unmatched '}}' at character {i}; write '}}}}' for a literal brace"
                )
            buf.append(ch)
            i += 1
        literals.append("".join(buf))
        return cls(tuple(literals), tuple(options))

    @property
    def k(self) -> int:
        """Number of blanks."""
        return len(self.options)

    def fill(self, choices: Sequence[str]) -> str:
        """The template text with blank i filled by choices[i]."""
        if len(choices) != self.k:
            raise CritwinError(f"choices: expected {self.k} choices, got {len(choices)}")
        parts = [self.literals[0]]
        for lit, choice in zip(self.literals[1:], choices, strict=True):
            parts += [choice, lit]
        return "".join(parts)

    def fillings(self) -> Iterator[tuple[str, ...]]:
        """Every tuple of choices, in template order (product of the option lists)."""
        return product(*self.options)

    def as_text(self) -> str:
        """The template written back in ``{a|b}`` syntax (braces in literals doubled)."""
        esc = [lit.replace("{", "{{").replace("}", "}}") for lit in self.literals]
        parts = [esc[0]]
        for lit, opts in zip(esc[1:], self.options, strict=True):
            parts += ["{" + "|".join(opts) + "}", lit]
        return "".join(parts)

    def prompt(self, instruction: str | None = None) -> str:
        """A user prompt asking a model to fill the blanks and answer with the completed sentence only."""
        head = instruction or DEFAULT_INSTRUCTION
        return f"{head}\n\n{self.as_text()}"


DEFAULT_INSTRUCTION = (
    "Fill in every blank below by choosing exactly one of the options inside the braces. "
    "Answer with the completed sentence only, without braces and without any other text."
)

# Our own five-blank, two-option template in the spirit of the paper's structured-output prompt. Within
# each blank the options start with different letters, so that the first token (or character) of the
# chosen word is also the one that decides it.
DEFAULT_TEMPLATE = "The {quick|lazy} {cat|dog} {sat|lay} on the {red|blue} {mat|rug}."


def parse_choices(
    template: ChoiceTemplate, text: str, *, mode: Literal["full", "search"] = "full"
) -> ChoiceParse:
    """Parse an output into the chosen options of `template`.

    mode "full": the whole output (case and whitespace runs ignored) must be the filled template.
    mode "search": the first place where a filled template occurs (extra text around it is ignored).
    Returns a `ChoiceParse`; an output with two different valid readings is "ambiguous" (choices None).
    """
    if mode not in ("full", "search"):
        raise CritwinError(f"mode: unknown parse mode {mode!r}; use 'full' or 'search'")
    norm, origin = normalize(text)
    if not norm:
        return ChoiceParse(None, None, "empty")
    lits = [_norm(lit) for lit in template.literals]
    opts = [[(o, _norm(o).strip()) for o in blank] for blank in template.options]
    # A literal's edge space may meet the start/end of the stripped output.
    lits[0] = lits[0].lstrip() if mode == "full" else lits[0]
    lits[-1] = lits[-1].rstrip() if mode == "full" else lits[-1]

    def match_lit(piece: str, pos: int) -> int | None:
        # After normalization, spacing must be exactly as in the template (one space where it has any).
        if norm.startswith(piece, pos):
            return pos + len(piece)
        return None

    def walk(i: int, pos: int, full: bool) -> list[tuple[tuple[str, ...], tuple[tuple[int, int], ...], int]]:
        # All readings of blanks i.. starting at `pos` (after literal i has been matched).
        if i == template.k:
            end = match_lit(lits[-1], pos)
            if end is None or (full and end != len(norm)):
                return []
            return [((), (), end)]
        found = []
        for canon, o in opts[i]:
            if not norm.startswith(o, pos):
                continue
            nxt = pos + len(o)
            if i + 1 < template.k:
                after = match_lit(lits[i + 1], nxt)
                if after is None:
                    continue
                rest = walk(i + 1, after, full)
            else:
                rest = walk(i + 1, nxt, full)
            for ch, sp, end in rest:
                found.append(((canon, *ch), ((pos, nxt), *sp), end))
        return found

    starts = [0] if mode == "full" else [p for p in range(len(norm)) if norm.startswith(lits[0], p)]
    for start in starts:
        first = match_lit(lits[0], start)
        if first is None:
            continue
        readings = walk(0, first, mode == "full")
        if not readings:
            continue
        distinct = {r[0] for r in readings}
        if len(distinct) > 1:
            return ChoiceParse(None, None, "ambiguous")
        ch, spans, _ = readings[0]
        raw_spans = tuple((origin[a], origin[b - 1] + 1) for a, b in spans)
        return ChoiceParse(ch, raw_spans, "ok")
    return ChoiceParse(None, None, "no_match")


@dataclass(frozen=True)
class TemplateChoiceFeature:
    """Feature for scans: a sample's text -> tuple of chosen options, or None if it fills the template badly.

    The text of a sample is the sample itself if it is a string, else its `response_text` / `text`.
    """

    template: ChoiceTemplate
    mode: Literal["full", "search"] = "full"

    def __call__(self, sample: Any) -> tuple[str, ...] | None:
        return parse_choices(self.template, sample_text(sample), mode=self.mode).choices


def sample_text(sample: Any) -> str:
    """The text of a sample: a str itself, or the `response_text` / `text` attribute of a response object."""
    if isinstance(sample, str):
        return sample
    for attr in ("response_text", "text"):
        val = getattr(sample, attr, None)
        if isinstance(val, str):
            return val
    raise CritwinError(
        f"sample: cannot read text from a {type(sample).__name__}; pass strings or objects with "
        ".response_text"
    )
