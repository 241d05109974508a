"""Mixtures of laws over equal-length token sequences, under truncation or masking; exact TV and BC.

Both forward processes reveal a random set O of positions and hide the rest:
- truncation at integer t: O = the first L − t positions (deterministic);
- masking at time t: each position visible independently with probability s = e^{-t}, so
  P(O) = s^{|O|} (1 − s)^{L − |O|}.
A degraded sequence therefore has law p_t(y) = P(O(y)) · P(X_O = y_O), and for any two sub-mixtures

    TV(p^a_t, p^b_t) = Σ_O P(O) · TV(p^a|_O, p^b|_O),    BC(p^a_t, p^b_t) = Σ_O P(O) · BC(p^a|_O, p^b|_O),

where p|_O is the marginal on the positions O. Marginals are exact: by enumeration for tables, by dynamic
programming (outer products / forward recursion) for `ProductComponent` and `MarkovComponent`, so a
structured component never needs its V^L support listed. Masking sums over all 2^L sets O (L ≤ 16).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from critwin.errors import CritwinError
from critwin.theory.forward import (
    DISCRETE_PROCESSES,
    check_process,
    check_time,
    check_truncation_time,
    masking_size_weights,
)
from critwin.theory.mixtures import Mixture, Selection
from critwin.theory.tv import ExactCurve, TVCurve, TVEstimate, bc_arrays, tv_arrays

#: Token shown at a masked position in degraded sequences returned by `DiscreteMixture.law`.
MASK = -1
#: Largest support a marginal of a structured component may have.
MAX_SUPPORT = 1 << 22
#: Largest sequence length for which masking enumerates all 2^L visible sets.
MAX_MASKING_LENGTH = 16


def encode(digits: np.ndarray, base: int) -> np.ndarray:
    """Integer codes of token rows (first token most significant) in base `base`; (n, m) -> (n,)."""
    digits = np.asarray(digits, dtype=np.int64)
    codes = np.zeros(digits.shape[0], dtype=np.int64)
    for j in range(digits.shape[1]):
        codes = codes * base + digits[:, j]
    return codes


def decode(codes: np.ndarray, width: int, base: int) -> np.ndarray:
    """Inverse of `encode`: (n,) codes -> (n, width) token rows."""
    codes = np.asarray(codes, dtype=np.int64)
    out = np.empty((codes.size, width), dtype=np.int64)
    for j in range(width - 1, -1, -1):
        out[:, j] = codes % base
        codes = codes // base
    return out


def _check_stochastic(arr: np.ndarray, field: str) -> np.ndarray:
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise CritwinError(f"{field}: probabilities must be finite and >= 0")
    sums = arr.sum(axis=-1)
    if np.any(np.abs(sums - 1.0) > 1e-6):
        raise CritwinError(f"{field}: each probability row must sum to 1; divide by its sum")
    return arr / sums[..., None]


def _check_size(n: int) -> None:
    if n > MAX_SUPPORT:
        raise CritwinError(
            f"components: a marginal has more than {MAX_SUPPORT} sequences of positive probability; "
            "use shorter sequences or a smaller vocabulary"
        )


@dataclass(frozen=True, eq=False)
class ProductComponent:
    """Independent tokens: `marginals[i, v]` = P(X_i = v), shape (L, V)."""

    marginals: np.ndarray

    def __post_init__(self) -> None:
        m = np.asarray(self.marginals, dtype=float)
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
            raise CritwinError("marginals: need an (L, V) table of per-position token probabilities")
        object.__setattr__(self, "marginals", _check_stochastic(m, "marginals"))

    @property
    def length(self) -> int:
        """Sequence length L."""
        return int(self.marginals.shape[0])

    @property
    def vocab_size(self) -> int:
        """Alphabet size V (tokens are 0..V−1)."""
        return int(self.marginals.shape[1])

    def marginal(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Law of (X_i)_{i ∈ positions} on its support: sorted `encode` codes and probabilities."""
        v = self.vocab_size
        codes, probs = np.zeros(1, dtype=np.int64), np.ones(1)
        for i in positions:
            nz = np.flatnonzero(self.marginals[i])
            codes = (codes[:, None] * v + nz[None, :]).ravel()
            probs = (probs[:, None] * self.marginals[i][nz][None, :]).ravel()
            _check_size(codes.size)
        return codes, probs


@dataclass(frozen=True, eq=False)
class MarkovComponent:
    """A Markov chain of length L: `initial` (V,), `transitions` (V, V) shared or (L − 1, V, V) per step."""

    initial: np.ndarray
    transitions: np.ndarray
    length: int

    def __post_init__(self) -> None:
        init = _check_stochastic(np.asarray(self.initial, dtype=float), "initial")
        tr = np.asarray(self.transitions, dtype=float)
        v = init.size
        if init.ndim != 1 or v == 0:
            raise CritwinError("initial: need a flat list of V token probabilities")
        if int(self.length) < 1:
            raise CritwinError("length: a Markov component needs length >= 1")
        if tr.ndim == 2:
            tr = np.broadcast_to(tr, (max(int(self.length) - 1, 0), *tr.shape))
        if tr.shape != (int(self.length) - 1, v, v):
            raise CritwinError(
                f"transitions: need shape ({v}, {v}) or ({int(self.length) - 1}, {v}, {v}), "
                f"got {np.asarray(self.transitions).shape}"
            )
        object.__setattr__(self, "initial", init)
        object.__setattr__(self, "transitions", _check_stochastic(np.array(tr), "transitions"))
        object.__setattr__(self, "length", int(self.length))

    @property
    def vocab_size(self) -> int:
        """Alphabet size V (tokens are 0..V−1)."""
        return int(self.initial.size)

    def marginal(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Law of (X_i)_{i ∈ positions} on its support by the forward recursion (zero branches pruned, so
        the cost follows the support size, not V^{|O|}): sorted `encode` codes and probabilities."""
        v = self.vocab_size
        wanted = set(positions)
        # codes[r] = observed tokens so far; a[r, x] = P(those tokens, X_i = x)
        codes, a = np.zeros(1, dtype=np.int64), self.initial[None, :]
        for i in range(max(positions, default=-1) + 1):
            if i > 0:
                a = a @ self.transitions[i - 1]
            if i in wanted:
                rows, xs = np.nonzero(a)
                new = np.zeros((rows.size, v))
                new[np.arange(rows.size), xs] = a[rows, xs]
                codes, a = codes[rows] * v + xs, new
                _check_size(codes.size)
        probs = a.sum(axis=1)
        keep = probs > 0
        return codes[keep], probs[keep]


@dataclass(frozen=True, eq=False)
class _Table:
    """An explicitly listed law: token rows `digits` (n, L) with probabilities `probs` (n,)."""

    digits: np.ndarray
    probs: np.ndarray


Component = Mapping[tuple[int, ...], float] | ProductComponent | MarkovComponent


def _table(comp: Mapping, i: int) -> _Table:
    rows, probs = [], []
    for seq, p in comp.items():
        try:
            row = tuple(int(x) for x in (seq if isinstance(seq, (tuple, list)) else (seq,)))
            if any(int(x) != x for x in (seq if isinstance(seq, (tuple, list)) else (seq,))):
                raise ValueError
            p = float(p)
        except (TypeError, ValueError):
            raise CritwinError(
                f"components[{i}]: keys must be token sequences (tuples of ints) and values "
                f"probabilities; got {seq!r}: {p!r}"
            ) from None
        if not math.isfinite(p) or p < 0:
            raise CritwinError(f"components[{i}]: probability of {row} must be finite and >= 0, got {p}")
        if any(x < 0 for x in row):
            raise CritwinError(f"components[{i}]: tokens must be integers >= 0, got {row}")
        if p > 0:
            rows.append(row)
            probs.append(p)
    if not rows:
        raise CritwinError(
            f"components[{i}]: the law is empty; give at least one sequence with probability > 0"
        )
    if len({len(r) for r in rows}) != 1:
        raise CritwinError(f"components[{i}]: all sequences must have the same length L")
    total = sum(probs)
    if abs(total - 1.0) > 1e-6:
        raise CritwinError(
            f"components[{i}]: probabilities must sum to 1 (they sum to {total:.6g}); "
            "divide them by their sum"
        )
    return _Table(np.array(rows, dtype=np.int64), np.array(probs) / total)


class DiscreteMixture(Mixture):
    """p = Σ_θ w_θ p_θ over token sequences of one length L, under "truncation" or "masking".

    `components`: each a mapping {token tuple: probability}, a `ProductComponent` or a `MarkovComponent`.
    Truncation: t = number of tokens deleted from the end, integer 0..L. Masking: continuous t ≥ 0, each token
    masked independently with probability 1 − e^{-t}. Everything is computed exactly.

    Example:
        Under truncation, t tokens are deleted from the end: components (0, 0) and (0, 1) differ only in
        their last token, so they can be told apart at t = 0 and not at t = 1. Under masking, two
        one-token components with disjoint values have TV_t = e^{-t} · TV_0 (DESIGN §1):

        >>> import math
        >>> import critwin as cw
        >>> mix = cw.DiscreteMixture([{(0, 0): 1.0}, {(0, 1): 1.0}, {(1, 0): 0.5, (1, 1): 0.5}],
        ...                          weights=[0.25, 0.25, 0.5], process="truncation")
        >>> mix.length, mix.t_max, mix.time_unit
        (2, 2.0, 'tokens')
        >>> [mix.tv([0], [1], t).value for t in (0, 1, 2)]
        [1.0, 0.0, 0.0]
        >>> mix.law([0, 1], t=1)
        {(0,): 1.0}
        >>> masked = cw.DiscreteMixture([{(0,): 1.0}, {(1,): 1.0}], weights=[0.5, 0.5], process="masking")
        >>> round(masked.tv([0], [1], t=1.0).value, 9), round(math.exp(-1.0), 9)
        (0.367879441, 0.367879441)
    """

    def __init__(
        self,
        components: Sequence[Component],
        weights: Sequence[float] | np.ndarray,
        process: str,
        labels: Sequence[str] | None = None,
        *,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__(weights, labels)
        self.process = check_process(process, DISCRETE_PROCESSES)
        comps = list(components) if not isinstance(components, Mapping) else [components]
        if len(comps) != self.n_components:
            raise CritwinError(
                f"components: got {len(comps)} components for {self.n_components} weights; "
                "give one weight per component"
            )
        parsed: list[_Table | ProductComponent | MarkovComponent] = []
        for i, c in enumerate(comps):
            if isinstance(c, (ProductComponent, MarkovComponent)):
                parsed.append(c)
            elif isinstance(c, Mapping):
                parsed.append(_table(c, i))
            else:
                raise CritwinError(
                    f"components[{i}]: must be a mapping {{token tuple: probability}}, "
                    "a ProductComponent or a MarkovComponent"
                )
        lengths = {c.digits.shape[1] if isinstance(c, _Table) else c.length for c in parsed}
        if len(lengths) != 1:
            raise CritwinError(
                f"components: all components must have the same sequence length L, got {sorted(lengths)}"
            )
        self.length = lengths.pop()
        max_token = (
            max(int(c.digits.max()) + 1 for c in parsed if isinstance(c, _Table))
            if any(isinstance(c, _Table) for c in parsed)
            else 0
        )
        structured = {c.vocab_size for c in parsed if not isinstance(c, _Table)}
        if len(structured) > 1:
            raise CritwinError("components: structured components must share one vocabulary size V")
        v = max([max_token, *structured, int(vocab_size or 0), 1])
        if structured and v != next(iter(structured)):
            raise CritwinError(
                f"components: table tokens must be < V = {next(iter(structured))}, "
                "the vocabulary size of the structured components"
            )
        if v**self.length >= 2**62:
            raise CritwinError(
                "components: V^L is too large to index sequences; use shorter sequences or fewer tokens"
            )
        if self.process == "masking" and self.length > MAX_MASKING_LENGTH:
            raise CritwinError(
                f"components: exact masking enumerates 2^L visible sets; L = {self.length} exceeds "
                f"{MAX_MASKING_LENGTH}, use shorter sequences"
            )
        self.vocab_size = v
        self._components = parsed
        self.components: tuple[Component, ...] = tuple(comps)
        self.time_unit = "tokens" if self.process == "truncation" else "mask"
        self.t_max = float(self.length) if self.process == "truncation" else math.inf
        self._marginals: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._per_size: dict[tuple, np.ndarray] = {}
        self._table_rows: np.ndarray | None = None

    def restrict(self, sel: Selection) -> DiscreteMixture:
        """p^S as a mixture of its own: the components in S with weights w_θ / W_S (labels kept)."""
        idx = list(self.select(sel))
        w = self.weights[idx]
        return DiscreteMixture(
            [self.components[i] for i in idx],
            w / w.sum(),
            self.process,
            [self.labels[i] for i in idx],
            vocab_size=self.vocab_size,
        )

    # ---- marginals ------------------------------------------------------------------------------
    def _all_table_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Union of the listed supports (rows) and each table component's probabilities on it (K, n)."""
        if self._table_rows is None:
            tables = [c for c in self._components if isinstance(c, _Table)]
            rows = (
                np.unique(np.concatenate([c.digits for c in tables]), axis=0)
                if tables
                else np.zeros((0, self.length), dtype=np.int64)
            )
            probs = np.zeros((self.n_components, rows.shape[0]))
            codes = encode(rows, self.vocab_size)
            for k, c in enumerate(self._components):
                if isinstance(c, _Table):
                    probs[k, np.searchsorted(codes, encode(c.digits, self.vocab_size))] = c.probs
            self._table_rows = (rows, probs)
        return self._table_rows

    def marginals(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Exact marginals on `positions`: sorted codes (n,) of observed tokens, probabilities (K, n)."""
        key = tuple(int(i) for i in positions)
        if key in self._marginals:
            return self._marginals[key]
        v = self.vocab_size
        rows, tprobs = self._all_table_rows()
        parts: list[np.ndarray] = []
        if rows.shape[0]:
            tcodes = encode(rows[:, list(key)], v)
            parts.append(tcodes)
        sparse: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for k, c in enumerate(self._components):
            if not isinstance(c, _Table):
                sparse[k] = c.marginal(key)
                parts.append(sparse[k][0])
        codes = np.unique(np.concatenate(parts)) if parts else np.zeros(1, dtype=np.int64)
        probs = np.zeros((self.n_components, codes.size))
        if rows.shape[0]:
            idx = np.searchsorted(codes, tcodes)
            for k, c in enumerate(self._components):
                if isinstance(c, _Table):
                    probs[k] = np.bincount(idx, weights=tprobs[k], minlength=codes.size)
        for k, (ck, pk) in sparse.items():
            probs[k, np.searchsorted(codes, ck)] = pk
        self._marginals[key] = (codes, probs)
        return codes, probs

    def observed_sets(self, t: float) -> list[tuple[tuple[int, ...], float]]:
        """The visible position sets O at time t with probabilities P(O) (zero-probability sets omitted)."""
        big_l = self.length
        if self.process == "truncation":
            tt = check_truncation_time(t, big_l)
            return [(tuple(range(big_l - tt)), 1.0)]
        size_w = masking_size_weights(big_l, check_time(t))
        return [
            (o, float(size_w[k]))
            for k in range(big_l + 1)
            if size_w[k] > 0
            for o in itertools.combinations(range(big_l), k)
        ]

    def _per_set(self, a: tuple[int, ...], b: tuple[int, ...], kind: str) -> np.ndarray:
        """TV or BC of the marginals on O, summed over O of each size k (masking) or per t (truncation)."""
        key = (a, b, kind)
        if key not in self._per_size:
            wa, wb = self.sub_weights(a), self.sub_weights(b)
            fn = tv_arrays if kind == "tv" else bc_arrays
            big_l = self.length
            out = np.zeros(big_l + 1)
            if self.process == "truncation":
                for tt in range(big_l + 1):  # out[t] = value at truncation time t
                    _, probs = self.marginals(range(big_l - tt))
                    out[tt] = fn(wa @ probs, wb @ probs)
            else:
                for k in range(big_l + 1):  # out[k] = Σ_{|O| = k} value on O
                    for o in itertools.combinations(range(big_l), k):
                        _, probs = self.marginals(o)
                        out[k] += fn(wa @ probs, wb @ probs)
            self._per_size[key] = out
        return self._per_size[key]

    def _value(self, a: Selection, b: Selection, t: float, kind: str) -> float:
        a, b = self.select(a, "a"), self.select(b, "b")
        per = self._per_set(a, b, kind)
        if self.process == "truncation":
            return float(per[check_truncation_time(t, self.length)])
        return float(masking_size_weights(self.length, check_time(t)) @ per)

    # ---- public distances -----------------------------------------------------------------------
    def tv(self, a: Selection, b: Selection, t: float, **_: object) -> TVEstimate:
        """Exact TV(p^a_t, p^b_t) (se = 0)."""
        return TVEstimate(min(1.0, max(0.0, self._value(a, b, t, "tv"))))

    def bc(self, a: Selection, b: Selection, t: float, **_: object) -> TVEstimate:
        """Exact Bhattacharyya coefficient BC(p^a_t, p^b_t) (se = 0)."""
        return TVEstimate(min(1.0, max(0.0, self._value(a, b, t, "bc"))))

    def tv_curve(self, a: Selection, b: Selection, **_: object) -> TVCurve:
        """Exact t ↦ TV(p^a_t, p^b_t); integer t for truncation."""
        a, b = self.select(a, "a"), self.select(b, "b")
        self._per_set(a, b, "tv")
        return ExactCurve(
            lambda t: self.tv(a, b, t).value, integer_t=self.process == "truncation", t_max=self.t_max
        )

    # ---- laws -----------------------------------------------------------------------------------
    def law(self, sel: Selection | None = None, t: float = 0.0) -> dict[tuple[int, ...], float]:
        """Exact law of Y_t under p^S (S = all when None): {degraded sequence: probability}.

        Truncation: the first L − t tokens; masking: length-L tuples with `MASK` at hidden positions.
        """
        w = self.weights if sel is None else self.sub_weights(sel)
        out: dict[tuple[int, ...], float] = {}
        for o, p_o in self.observed_sets(t):
            codes, probs = self.marginals(o)
            pv = w @ probs
            keep = pv > 0
            digits = decode(codes[keep], len(o), self.vocab_size)
            for row, p in zip(digits, pv[keep], strict=True):
                if self.process == "truncation":
                    seq = tuple(int(x) for x in row)
                else:
                    full = [MASK] * self.length
                    for pos, x in zip(o, row, strict=True):
                        full[pos] = int(x)
                    seq = tuple(full)
                out[seq] = out.get(seq, 0.0) + p_o * float(p)
        return out

    def full_support(self) -> tuple[np.ndarray, np.ndarray]:
        """All sequences with positive probability, (n, L), and each component's probabilities (K, n)."""
        codes, probs = self.marginals(range(self.length))
        keep = probs.sum(axis=0) > 0
        return decode(codes[keep], self.length, self.vocab_size), probs[:, keep]
