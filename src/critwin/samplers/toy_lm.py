"""A hierarchical autoregressive toy language with an exact next-token distribution.

A text is a fixed sequence of segments: `Filler` stretches (each token drawn uniformly from a small
vocabulary, independent of everything else) and `Choice` points (one of a few options, each a fixed
run of tokens, with given probabilities, optionally conditional on an earlier choice: a hierarchy such
as topic → field). All options of a choice have the same number of tokens, so every text has the same
length L and the choice positions are fixed. This is a generative version of the paper's
fill-in-the-blank task.

Because the set of choice assignments is small, everything is exact: P(assignment | prefix) by
enumeration, the next-token law, the forward–reverse curve P(feature kept | x, t) and a
`critwin.theory.DiscreteMixture` (one point-mass component per assignment, filler fixed to its first
token — independent filler changes no TV under truncation) for the theory's windows at token resolution.

Forward process: truncation, t = number of tokens removed from the end (integer 0..L, `time_unit`
"tokens"). `ToyLMSampler.forward_reverse` resamples the removed tokens from the exact conditional law;
drawing the assignment given the prefix and then the fresh filler is the same law as decoding token by
token with `next_token_probs` (checked in the tests).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from critwin.errors import CritwinError

Tokens = tuple[int, ...]


@dataclass(frozen=True)
class Filler:
    """`length` tokens, each uniform over `vocab`, independent of everything else."""

    length: int
    vocab: tuple[str, ...] = ("·",)


@dataclass(frozen=True)
class Choice:
    """A choice point named `name` with `options` (each a tuple of tokens, all of one length).

    probs: one probability per option, or (with `given` = an earlier choice's name) a mapping from each
    option name of that earlier choice to such a list. Option names are their tokens joined by spaces.
    """

    name: str
    options: tuple[tuple[str, ...], ...]
    probs: tuple[float, ...] | Mapping[str, Sequence[float]]
    given: str | None = None

    @property
    def option_names(self) -> tuple[str, ...]:
        """Display name of each option (its tokens joined by spaces)."""
        return tuple(" ".join(o) for o in self.options)


@dataclass(frozen=True)
class _Slot:
    choice: Choice
    start: int
    width: int
    index: int  # position among the choices


@dataclass
class ToyLanguage:
    """The language defined by `segments` (see module docstring). Token ids index `vocab`."""

    segments: tuple[Filler | Choice, ...]
    vocab: tuple[str, ...] = field(init=False)
    length: int = field(init=False)

    def __post_init__(self) -> None:
        self.segments = tuple(self.segments)
        vocab: dict[str, int] = {}
        slots: list[_Slot] = []
        filler_at: dict[int, tuple[int, ...]] = {}
        pos = 0
        names: set[str] = set()
        for seg in self.segments:
            if isinstance(seg, Filler):
                if seg.length < 0 or not seg.vocab:
                    raise CritwinError("Filler: length must be >= 0 and vocab non-empty")
                ids = tuple(vocab.setdefault(tok, len(vocab)) for tok in seg.vocab)
                for i in range(seg.length):
                    filler_at[pos + i] = ids
                pos += seg.length
            elif isinstance(seg, Choice):
                if seg.name in names:
                    raise CritwinError(f"Choice {seg.name!r} appears twice; give every choice its own name")
                widths = {len(o) for o in seg.options}
                if len(seg.options) < 1 or len(widths) != 1 or 0 in widths:
                    raise CritwinError(
                        f"Choice {seg.name!r}: options must be non-empty token tuples of one length"
                    )
                if seg.given is not None and seg.given not in names:
                    raise CritwinError(
                        f"Choice {seg.name!r}: given={seg.given!r} must name an earlier choice"
                    )
                for o in seg.options:
                    for tok in o:
                        vocab.setdefault(tok, len(vocab))
                slots.append(_Slot(seg, pos, widths.pop(), len(slots)))
                names.add(seg.name)
                pos += slots[-1].width
            else:
                raise CritwinError(f"segments: {seg!r} is neither a Filler nor a Choice")
        if not slots:
            raise CritwinError("segments: a toy language needs at least one Choice")
        self.vocab = tuple(vocab)
        self.length = pos
        self._slots = {s.choice.name: s for s in slots}
        self._filler_at = filler_at
        self._build_assignments(slots)

    # -- the finite set of choice assignments --------------------------------------------------------------
    def _probs(self, slot: _Slot, parent_option: str | None) -> np.ndarray:
        c = slot.choice
        raw = c.probs if c.given is None else c.probs.get(parent_option)  # type: ignore[union-attr]
        if raw is None:
            raise CritwinError(f"Choice {c.name!r}: probs lack an entry for {c.given}={parent_option!r}")
        p = np.asarray(raw, dtype=float)
        if p.shape != (len(c.options),) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
            raise CritwinError(f"Choice {c.name!r}: probs must be {len(c.options)} numbers >= 0 summing to 1")
        return p

    def _build_assignments(self, slots: list[_Slot]) -> None:
        rows, probs = [], []
        for combo in itertools.product(*(range(len(s.choice.options)) for s in slots)):
            prob = 1.0
            for s, o in zip(slots, combo, strict=True):
                parent = None
                if s.choice.given is not None:
                    ps = self._slots[s.choice.given]
                    parent = ps.choice.option_names[combo[ps.index]]
                prob *= self._probs(s, parent)[o]
            if prob > 0:
                rows.append(combo)
                probs.append(prob)
        self.assignments = np.asarray(rows, dtype=np.int64)  # (A, n_choices) option index per choice
        self.assignment_probs = np.asarray(probs) / np.sum(probs)
        tokens = np.full((len(rows), self.length), -1, dtype=np.int64)  # -1 at filler positions
        index = {tok: i for i, tok in enumerate(self.vocab)}
        for a, combo in enumerate(rows):
            for s, o in zip(slots, combo, strict=True):
                tokens[a, s.start : s.start + s.width] = [index[tok] for tok in s.choice.options[o]]
        self.assignment_tokens = tokens
        self.choice_mask = tokens[0] >= 0

    # -- properties and parsing ----------------------------------------------------------------------------
    @property
    def choice_names(self) -> tuple[str, ...]:
        """Names of the choices in positional order."""
        return tuple(self._slots)

    def choice(self, name: str) -> Choice:
        """The Choice called `name`."""
        return self._slot(name).choice

    def _slot(self, name: str) -> _Slot:
        if name not in self._slots:
            raise CritwinError(f"unknown choice {name!r}; this language has {list(self._slots)}")
        return self._slots[name]

    def decision_position(self, name: str) -> int:
        """0-based position of the first token at which the options of choice `name` differ."""
        s = self._slot(name)
        opts = s.choice.options
        for i in range(s.width):
            if len({o[i] for o in opts}) > 1:
                return s.start + i
        return s.start + s.width - 1

    def decode(self, ids: Sequence[int]) -> str:
        """The text of a token-id sequence (tokens joined by spaces)."""
        return " ".join(self.vocab[i] for i in ids)

    def encode(self, text: str) -> Tokens:
        """Token ids of a space-separated text (CritwinError on unknown tokens)."""
        index = {tok: i for i, tok in enumerate(self.vocab)}
        try:
            return tuple(index[tok] for tok in text.split())
        except KeyError as err:
            raise CritwinError(f"token {err.args[0]!r} is not in this language's vocabulary") from None

    def assignment_of(self, ids: Sequence[int]) -> int | None:
        """Row of `assignments` that a full text realises, or None if it is not a text of the language."""
        x = np.asarray(ids, dtype=np.int64)
        if x.shape != (self.length,) or not self._filler_ok(x):
            return None
        hit = np.flatnonzero(
            np.all(self.assignment_tokens[:, self.choice_mask] == x[self.choice_mask], axis=1)
        )
        return int(hit[0]) if len(hit) else None

    def parse(self, ids: Sequence[int]) -> dict[str, str] | None:
        """Option name chosen at every choice point, or None if `ids` is not a text of the language."""
        a = self.assignment_of(ids)
        if a is None:
            return None
        return {n: s.choice.option_names[self.assignments[a, s.index]] for n, s in self._slots.items()}

    def _filler_ok(self, prefix: np.ndarray) -> bool:
        return all(int(prefix[p]) in ids for p, ids in self._filler_at.items() if p < len(prefix))

    # -- exact laws ----------------------------------------------------------------------------------------
    def conditional(self, prefix: Sequence[int]) -> np.ndarray:
        """P(assignment | the text starts with `prefix`) over the rows of `assignments` (exact)."""
        x = np.asarray(prefix, dtype=np.int64)
        ell = len(x)
        if ell > self.length or not self._filler_ok(x):
            raise CritwinError(f"prefix {self.decode(x)!r} cannot start a text of this language")
        mask = self.choice_mask[:ell]
        ok = np.all(self.assignment_tokens[:, :ell][:, mask] == x[mask], axis=1)
        p = self.assignment_probs * ok
        if p.sum() == 0:
            raise CritwinError(f"prefix {self.decode(x)!r} has probability 0 in this language")
        return p / p.sum()

    def next_token_probs(self, prefix: Sequence[int]) -> dict[int, float]:
        """Exact law of the next token after `prefix` (token id -> probability)."""
        ell = len(prefix)
        if ell >= self.length:
            raise CritwinError("prefix is already a full text; there is no next token")
        if ell in self._filler_at:
            ids = self._filler_at[ell]
            return {i: 1.0 / len(ids) for i in ids}
        p = self.conditional(prefix)
        out: dict[int, float] = {}
        for tok, q in zip(self.assignment_tokens[:, ell], p, strict=True):
            if q > 0:
                out[int(tok)] = out.get(int(tok), 0.0) + float(q)
        return out

    def sequence_prob(self, ids: Sequence[int]) -> float:
        """Probability of a full text."""
        a = self.assignment_of(ids)
        if a is None:
            return 0.0
        filler = math.prod(1.0 / len(v) for v in self._filler_at.values())
        return float(self.assignment_probs[a]) * filler

    def complete(self, prefix: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, L) texts drawn from the exact law given that they start with `prefix`."""
        ell = len(prefix)
        rows = rng.choice(len(self.assignment_probs), size=n, p=self.conditional(prefix))
        out = self.assignment_tokens[rows].copy()
        for p, ids in self._filler_at.items():
            if p >= ell:
                out[:, p] = np.asarray(ids)[rng.integers(len(ids), size=n)]
        out[:, :ell] = np.asarray(prefix, dtype=np.int64)
        return out

    def feature_key(self, names: Sequence[str]) -> np.ndarray:
        """(A, len(names)) option index of each named choice per assignment."""
        return self.assignments[:, [self._slot(n).index for n in names]]

    def exact_curve(self, x: Sequence[int], ts: Sequence[int], names: Sequence[str]) -> np.ndarray:
        """Exact P(the named choices of the resample equal those of x | first L − t tokens of x), per t."""
        a = self.assignment_of(x)
        if a is None:
            raise CritwinError("x is not a text of this language; scan a sample drawn from it")
        key = self.feature_key(names)
        same = np.all(key == key[a], axis=1)
        return np.array([float(self.conditional(list(x)[: self.length - int(t)])[same].sum()) for t in ts])

    # -- the theory's view --------------------------------------------------------------------------------
    def assignment_label(self, a: int) -> str:
        """Readable label of assignment row a, e.g. "topic=science|field=physics"."""
        return "|".join(
            f"{n}={s.choice.option_names[self.assignments[a, s.index]]}" for n, s in self._slots.items()
        )

    def discrete_mixture(self) -> Any:
        """The language as a `critwin.theory.DiscreteMixture` under truncation: one point-mass component per
        assignment (filler fixed to its first vocabulary token, tokens renumbered per position), weighted by
        the assignment probability."""
        from critwin.theory import DiscreteMixture

        seqs = self.assignment_tokens.copy()
        for p, ids in self._filler_at.items():
            seqs[:, p] = ids[0]
        # Relabel tokens per position (0, 1, … among the tokens seen there): a bijection of sequences that
        # commutes with truncation, so every TV is unchanged; it keeps V^L small for the theory's indexing.
        seqs = np.stack([np.unique(col, return_inverse=True)[1] for col in seqs.T], axis=1)
        comps = [{tuple(int(v) for v in row): 1.0} for row in seqs]
        labels = [self.assignment_label(a) for a in range(len(seqs))]
        return DiscreteMixture(comps, self.assignment_probs, process="truncation", labels=labels)

    def chain(self, x: Sequence[int], names: Sequence[str]) -> list[tuple[int, ...]]:
        """Nested sets of assignment rows for the staircase of the feature `names` of x, innermost first:
        S_k = rows agreeing with x on the first k choices (in text order) among `names` and the choices they
        depend on (`given`, recursively); the last set is all rows. Repeated sets are dropped."""
        a = self.assignment_of(x)
        if a is None:
            raise CritwinError("x is not a text of this language; scan a sample drawn from it")
        need: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n not in need:
                need.add(n)
                g = self._slot(n).choice.given
                if g is not None:
                    todo.append(g)
        order = sorted(need, key=self.decision_position)
        sets: list[tuple[int, ...]] = [tuple(range(len(self.assignments)))]
        for k in range(1, len(order) + 1):
            key = self.feature_key(order[:k])
            s = tuple(int(i) for i in np.flatnonzero(np.all(key == key[a], axis=1)))
            if s != sets[-1]:
                sets.append(s)
        return sets[::-1]


def demo_language() -> ToyLanguage:
    """The built-in demo language: topic → field (hierarchical), mood, and an ending whose options share
    their first token (so it is decided at the second one), separated by filler."""
    filler = ("um", "so", "well")
    return ToyLanguage(
        (
            Filler(2, filler),
            Choice("topic", (("science",), ("art",)), (0.6, 0.4)),
            Filler(3, filler),
            Choice(
                "field",
                (("physics",), ("biology",), ("music",), ("painting",)),
                {"science": (0.5, 0.5, 0.0, 0.0), "art": (0.0, 0.0, 0.7, 0.3)},
                given="topic",
            ),
            Filler(3, filler),
            Choice("mood", (("happy",), ("calm",), ("grim",)), (0.5, 0.3, 0.2)),
            Filler(3, filler),
            Choice("ending", (("the", "end"), ("the", "finale")), (0.6, 0.4)),
            Filler(2, filler),
        )
    )


class ToyLMSampler:
    """`Sampler` for a ToyLanguage under truncation; samples are tuples of token ids of length L."""

    time_unit = "tokens"

    def __init__(self, language: ToyLanguage):
        self.language = language
        self.t_max = float(language.length)

    def sample(self, n: int, rng: np.random.Generator) -> list[Tokens]:
        """n texts from the language."""
        return [tuple(int(v) for v in row) for row in self.language.complete((), n, rng)]

    def forward_reverse(
        self, x: Any, ts: Sequence[float], n: int, rng: np.random.Generator
    ) -> list[list[Tokens]]:
        """For each t: keep the first L − t tokens of x, draw n continuations from the exact law."""
        x = tuple(int(v) for v in x)
        if len(x) != self.language.length:
            raise CritwinError(f"x has {len(x)} tokens; texts of this language have {self.language.length}")
        length = self.language.length
        for t in ts:
            number = isinstance(t, int | float | np.integer | np.floating) and math.isfinite(t)
            if not (number and t == int(t) and 0 <= t <= length):
                raise CritwinError(f"t={t!r}: truncation times are whole numbers of tokens, 0..{length} here")
        out = []
        for t in ts:
            rows = self.language.complete(x[: self.language.length - int(t)], n, rng)
            out.append([tuple(int(v) for v in row) for row in rows])
        return out


def from_registry(path_or_url: Any = None, *, language: ToyLanguage | None = None) -> ToyLMSampler:
    """The registry's "toy_lm" factory: a `ToyLMSampler` of `language` (default `demo_language()`)."""
    if path_or_url is not None:
        raise CritwinError("sampler 'toy_lm' is defined in code and reads no file; pass "
                           "language=ToyLanguage(...), or nothing for the demo language")
    return ToyLMSampler(demo_language() if language is None else language)
