"""A synthetic reasoning task with a known first wrong step: running sums written as a chain of thought.

A problem is a sum of named single-digit terms, "Add up a=7, b=5, c=9, d=3.". The chain of thought adds
one term per line to a running total (written with two digits), then states the answer::

    b: 07+5=12
    c: 12+9=21
    d: 21+3=24
    The answer is 24.

Every line builds on the total written in the line before it, so an error at a step (a dropped carry,
12+9=11) is carried faithfully to the final answer. The format keeps every lookup easy for a tiny model
(each line has the same width; each term has a unique name), so its errors come from the arithmetic.

Because the correct chain is fully determined by the question, the first wrong step of any (model-written)
chain is the first character where it departs from the correct chain; `first_wrong_step` returns that step
and character. The bundled reasoning model is trained on such chains with carries dropped at a known rate
(scripts/train_reasoning_model.py), so it is right often but not always and its errors sit at carry steps.

The tokenizer is character level (every printable ASCII character is one token) with a small chat template,
so the chat path of the transformers backend is exercised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from critwin.errors import CritwinError
from critwin.features.answers import elicitation_prompt

__all__ = [
    "ArithProblem",
    "NAMES",
    "format_question",
    "StepError",
    "SPECIAL_TOKENS",
    "CHAT_TEMPLATE",
    "ELICIT_PROMPTS",
    "generate_problems",
    "parse_question",
    "correct_chain",
    "chain_lines",
    "sample_training_chain",
    "answer_line",
    "extract_answer",
    "step_spans",
    "first_wrong_step",
    "wrong_steps",
    "char_to_token_index",
    "build_tokenizer",
]

# Role markers and end-of-turn; the chat template below writes them, the tokenizer keeps each one whole.
SPECIAL_TOKENS = ("<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Follow-up user turns the bundled model is trained to answer with "The answer is N." (the paper's
# elicitation turn). The first one is what critwin's reasoning experiment sends for --task arith; the
# generic math/exact one is included so that the bundled model also answers it.
ELICIT_PROMPTS = (
    "What is the final answer? Reply in the form: The answer is N.",
    elicitation_prompt("exact"),
    "State your final answer.",
    "So, what is the answer?",
)

_TERM_RE = re.compile(r"([a-z])\s*=\s*(\d)")
_QUESTION_RE = re.compile(r"^\s*Add up\s+([a-z]\s*=\s*\d(?:\s*,\s*[a-z]\s*=\s*\d)*)\s*\.?\s*$")
_ANSWER_RE = re.compile(r"The answer is\s*(-?\d+)\s*\.?")
NAMES = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class ArithProblem:
    """A running-sum problem: single-digit `operands` (1..9) named a, b, c, ... and summed in that order."""

    operands: tuple[int, ...]
    id: str

    @property
    def question(self) -> str:
        """The user message, e.g. "Add up a=7, b=5, c=9, d=3."."""
        return format_question(self.operands)

    @property
    def answer(self) -> str:
        """The gold answer as a decimal string."""
        return str(sum(self.operands))

    def to_record(self) -> dict[str, str]:
        """The JSONL row read by critwin's dataset loader: id, question, answer."""
        return {"id": self.id, "question": self.question, "answer": self.answer}


@dataclass(frozen=True)
class StepError:
    """Where a chain first departs from the correct chain.

    `step` is the 0-based line index of the response (the last line is the "The answer is" line); `char` is
    the character offset in the response of the first wrong character; `expected` / `found` are the correct
    and the written line ("" when the written chain ended early).
    """

    step: int
    char: int
    expected: str
    found: str


def generate_problems(
    n: int,
    seed: int | np.random.Generator,
    n_terms: tuple[int, int] = (4, 8),
    max_total: int = 99,
    id_prefix: str = "arith",
) -> list[ArithProblem]:
    """Draw n problems with a number of terms uniform in [n_terms[0], n_terms[1]] and terms uniform in 1..9.

    Sums above `max_total` (at most 99) are redrawn so that every running total has two digits.
    """
    lo, hi = n_terms
    if not (2 <= lo <= hi <= len(NAMES)):
        raise CritwinError(f"n_terms={n_terms!r} must satisfy 2 <= lo <= hi <= {len(NAMES)}")
    if not 2 <= max_total <= 99:
        raise CritwinError(f"max_total={max_total} must lie in 2..99 (totals are written with two digits)")
    rng = np.random.default_rng(seed)
    out: list[ArithProblem] = []
    while len(out) < n:
        k = int(rng.integers(lo, hi + 1))
        ops = tuple(int(v) for v in rng.integers(1, 10, size=k))
        if sum(ops) > max_total:
            continue
        out.append(ArithProblem(ops, f"{id_prefix}-{len(out):04d}"))
    return out


def format_question(operands: Sequence[int]) -> str:
    """The question for `operands`, "Add up a=7, b=5, c=9, d=3."."""
    return "Add up " + ", ".join(f"{NAMES[i]}={d}" for i, d in enumerate(operands)) + "."


def parse_question(question: str) -> tuple[int, ...]:
    """The operands of a question such as "Add up a=7, b=5, c=9, d=3."."""
    m = _QUESTION_RE.match(question)
    terms = _TERM_RE.findall(m.group(1)) if m else []
    if m is None or [name for name, _ in terms] != list(NAMES[: len(terms)]) or len(terms) < 2:
        raise CritwinError(
            f"question {question[:60]!r} is not a running-sum problem; write it as 'Add up a=7, b=5, c=9.'"
        )
    return tuple(int(d) for _, d in terms)


def answer_line(total: int) -> str:
    """The final line of a chain, "The answer is N."."""
    return f"The answer is {total}."


def chain_lines(operands: Sequence[int], drops: Iterable[int] = ()) -> list[str]:
    """The lines of a chain for `operands`, dropping the carry at the steps listed in `drops`.

    Step k (0-based) adds term k+1 to the running total, "c: 12+9=21"; a dropped carry writes
    total + term - 10 instead ("c: 12+9=11", only possible when the units digits carry). Totals are written
    with two digits. The last line states the final total.
    """
    drop_set = set(drops)
    total = operands[0]
    lines = []
    for k, d in enumerate(operands[1:]):
        carries = total % 10 + d >= 10
        new = total + d - (10 if (k in drop_set and carries) else 0)
        lines.append(f"{NAMES[k + 1]}: {total:02d}+{d}={new:02d}")
        total = new
    lines.append(answer_line(total))
    return lines


def correct_chain(operands: Sequence[int]) -> str:
    """The correct chain of thought for `operands` (lines joined by newlines)."""
    return "\n".join(chain_lines(operands))


def sample_training_chain(operands: Sequence[int], rng: np.random.Generator, drop_prob: float) -> str:
    """A chain in which every carrying step independently drops its carry with probability `drop_prob`."""
    drops = [k for k in range(len(operands) - 1) if rng.random() < drop_prob]
    return "\n".join(chain_lines(operands, drops))


def extract_answer(text: str) -> str | None:
    """The N of the last "The answer is N" in `text`, or None when there is none."""
    found = _ANSWER_RE.findall(text)
    return found[-1] if found else None


def step_spans(response: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the lines (steps) of a response, newline excluded."""
    spans, start = [], 0
    for line in response.split("\n"):
        spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


def first_wrong_step(operands: Sequence[int] | str, response: str) -> StepError | None:
    """The first step at which `response` departs from the correct chain, or None if it is correct.

    `operands` may be the question text. Trailing whitespace is ignored; anything after the answer line
    counts as a departure. The departure is located to the character, so it names the token that decided it.
    """
    ops = parse_question(operands) if isinstance(operands, str) else tuple(operands)
    want = correct_chain(ops)
    got = response.rstrip()
    if got == want:
        return None
    n = min(len(want), len(got))
    char = next((i for i in range(n) if want[i] != got[i]), n)
    step = got.count("\n", 0, char)
    # A departure at a line break belongs to the next line: the chain starts a line it should not have
    # (extra text after the answer) or ends where another line should start.
    if (char < len(got) and got[char] == "\n") or (char == len(got) and want[char : char + 1] == "\n"):
        step += 1
    want_lines, got_lines = want.split("\n"), got.split("\n")
    expected = want_lines[step] if step < len(want_lines) else ""
    found = got_lines[step] if step < len(got_lines) else ""
    return StepError(step=step, char=char, expected=expected, found=found)


def wrong_steps(operands: Sequence[int] | str, response: str) -> list[StepError]:
    """Every step of `response` that is wrong given the line before it (a slip), in order.

    Step k is checked against the previous line's written total: "c: 12+9=21" is right after a line ending
    in "=12" even when 12 itself was wrong. So the first slip is the first wrong step (`first_wrong_step`)
    and later slips are the further errors a chain carries to its answer. `expected` is the locally right
    line; checking stops at a line whose total cannot be read. Missing or extra lines are slips too.
    """
    ops = parse_question(operands) if isinstance(operands, str) else tuple(operands)
    got = response.rstrip()
    lines = got.split("\n")
    starts = [s for s, _ in step_spans(got)]
    out: list[StepError] = []
    prev = ops[0]
    for k in range(len(ops)):
        if k < len(ops) - 1:
            want = f"{NAMES[k + 1]}: {prev:02d}+{ops[k + 1]}={prev + ops[k + 1]:02d}"
        else:
            want = answer_line(prev)
        if k >= len(lines):
            out.append(StepError(step=k, char=len(got), expected=want, found=""))
            return out
        line = lines[k]
        if line != want:
            n = min(len(line), len(want))
            col = next((i for i in range(n) if line[i] != want[i]), n)
            out.append(StepError(step=k, char=starts[k] + col, expected=want, found=line))
        if k < len(ops) - 1:
            m = re.search(r"=(\d+)$", line)
            if m is None:
                return out
            prev = int(m.group(1))
    if len(lines) > len(ops):
        k = len(ops)
        out.append(StepError(step=k, char=starts[k] - 1, expected="", found=lines[k]))
    return out


def char_to_token_index(decode: Callable[[Sequence[int]], str], token_ids: Sequence[int], char: int) -> int:
    """Index of the token of `token_ids` whose decoded text covers character `char` of the decoded text.

    `decode` turns token ids into text (an LM sampler's `decode`). Decodes growing prefixes, so it is exact
    for any tokenizer whose decoding is prefix-stable (as the character-level one is); returns
    len(token_ids) when `char` lies past the end.
    """
    ids = list(token_ids)
    lo, hi = 0, len(ids)
    # Smallest p with len(decode(ids[:p+1])) > char, by bisection on the monotone decoded length.
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[: mid + 1])) > char:
            hi = mid
        else:
            lo = mid + 1
    return lo


def build_tokenizer():
    """A character-level `PreTrainedTokenizerFast` with a chat template (built in code, nothing downloaded).

    Vocabulary: the special tokens, newline and every printable ASCII character; unknown characters map to
    the ordinary "?" token (not a special token, so decoding keeps real question marks). End of turn
    "<|end|>" is the eos token.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    # Each character is its own token; decoding concatenates them back without separators.
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<|end|>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
        model_max_length=1024,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
