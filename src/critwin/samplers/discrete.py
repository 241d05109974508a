"""Exact testbed for discrete sequence mixtures (`critwin.theory.DiscreteMixture`) under truncation or
masking: exact forward–reverse sampling, the Bayes class of a sequence, and the exact curve P(kept | x, t).

Data: p = Σ_k w_k p_k over token sequences of one length L, with its whole support enumerated
(`DiscreteMixture.full_support`: sequences (N, L) and each component's probabilities (K, N)); samples are
tuples of ints. Forward processes (t grows with degradation):

- "truncation": t = number of tokens deleted from the end (whole numbers 0..L); the visible set is
  O = the first L − t positions;
- "masking": each token stays visible independently with probability e^{-t} (continuous t >= 0; a fresh
  visible set per draw); `t_max` is finite (default 6: e^{-6} ≈ 0.0025, almost everything masked).

Reverse step, exact: X' ~ p(· | X'_O = x_O), the FULL mixture conditioned on the visible tokens, by
enumerating the support: P(x') ∝ p(x') 1[x'_O = x_O]. So FR_t(S) of `critwin.theory.forward_reverse_law`
is what the sampler draws when x ~ p^S.

Features are Bayes classes (`SequenceClass`): a partition of the components into named classes and
x' ↦ argmax_c Σ_{k∈c} w_k p_k(x') (ties go to the class listed first). The exact curve (`exact_curve`) is
P(class(X') = class(x) | x, t) = Σ_O P(O) · p(class(X') = class(x), X'_O = x_O) / p(X'_O = x_O): one set O
for truncation, all 2^L sets weighted by s^{|O|} (1 − s)^{L − |O|} (s = e^{-t}) for masking.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from critwin.errors import CritwinError
from critwin.samplers.gaussian import ExactCurve
from critwin.theory.discrete import DiscreteMixture, encode
from critwin.theory.forward import masking_size_weights

__all__ = ["DEFAULT_MASK_T_MAX", "DiscreteMixtureSampler", "SequenceClass", "check_classes", "exact_curve"]

#: Largest masking time scanned by default: e^{-6} ≈ 0.0025 of the tokens stay visible.
DEFAULT_MASK_T_MAX = 6.0


def _check_mixture(mixture: Any) -> DiscreteMixture:
    if not isinstance(mixture, DiscreteMixture):
        raise CritwinError(
            f"mixture: expected a critwin.theory.DiscreteMixture, got {type(mixture).__name__}; "
            "build one or load a spec with kind 'discrete'"
        )
    return mixture


class _Support:
    """The enumerated support of a mixture: rows (N, L), p(row) (N,), component probabilities (K, N)."""

    def __init__(self, mixture: DiscreteMixture):
        digits, probs = mixture.full_support()
        self.digits = np.asarray(digits, dtype=np.int64)
        self.probs = np.asarray(probs, dtype=float)
        self.p = mixture.weights @ self.probs
        self.codes = encode(self.digits, mixture.vocab_size)
        self.vocab_size = mixture.vocab_size
        self.length = mixture.length

    def index(self, x: Any, what: str = "x") -> int:
        """Position of the sequence x in the support; a CritwinError when it has probability 0."""
        row = _tokens(x, self.length, what)
        if np.any(row < 0) or np.any(row >= self.vocab_size):
            raise CritwinError(f"{what} = {tuple(row.tolist())} has tokens outside 0..{self.vocab_size - 1}; "
                               "scan a sequence of the mixture")
        code = encode(row[None, :], self.vocab_size)[0]
        i = int(np.searchsorted(self.codes, code))
        if i >= len(self.codes) or self.codes[i] != code:
            raise CritwinError(f"{what} = {tuple(row.tolist())} has probability 0 under the mixture; "
                               "scan a sequence the mixture can produce (e.g. one from sampler.sample)")
        return i

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """Support positions of many rows (n, L); −1 for rows outside the support."""
        codes = encode(rows, self.vocab_size)
        i = np.clip(np.searchsorted(self.codes, codes), 0, len(self.codes) - 1)
        return np.where(self.codes[i] == codes, i, -1)


def _tokens(x: Any, length: int, what: str = "x") -> np.ndarray:
    try:
        row = np.asarray([int(v) for v in x], dtype=np.int64)
        if any(int(v) != v for v in x):
            raise ValueError
    except (TypeError, ValueError):
        raise CritwinError(f"{what} = {x!r} is not a sequence of integer tokens") from None
    if row.shape != (length,):
        raise CritwinError(f"{what} has {row.size} tokens; sequences of this mixture have {length}")
    return row


def check_classes(
    mixture: DiscreteMixture, classes: Mapping[str, Sequence[int]] | None
) -> dict[str, tuple[int, ...]]:
    """A partition of the components into named classes (default: one class per component, by label)."""
    k = mixture.n_components
    if classes is None:
        return {lab: (i,) for i, lab in enumerate(mixture.labels)}
    out = {str(name): tuple(int(i) for i in idx) for name, idx in classes.items()}
    if sorted(i for idx in out.values() for i in idx) != list(range(k)):
        raise CritwinError(
            f"classes: must cover each of the {k} components exactly once; got {dict(out)}"
        )
    return out


def _class_of_rows(mixture: DiscreteMixture, support: _Support, partition: dict[str, tuple[int, ...]]
                   ) -> np.ndarray:
    """Bayes class index (into the partition's order) of every support row: argmax_c Σ_{k∈c} w_k p_k."""
    w = mixture.weights
    scores = np.stack([w[list(idx)] @ support.probs[list(idx)] for idx in partition.values()])
    return scores.argmax(axis=0)


class SequenceClass:
    """Bayes class of a sequence of a discrete mixture: argmax over the classes c of `classes` (name ->
    component indices; default one class per component, named by the labels) of Σ_{k∈c} w_k p_k(x);
    ties go to the class listed first. A sequence outside the support is unreadable (None).

    Example:
        Components (0, 0) and (0, 1) share their first token; the third one draws both tokens at random:

        >>> import critwin as cw
        >>> from critwin.samplers.discrete import SequenceClass
        >>> mix = cw.DiscreteMixture([{(0, 0): 1.0}, {(0, 1): 1.0}, {(1, 0): 0.5, (1, 1): 0.5}],
        ...                          weights=[0.25, 0.25, 0.5], process="truncation", labels=["a", "b", "c"])
        >>> feature = SequenceClass(mix, {"ab": [0, 1], "c": [2]})
        >>> feature((0, 1)), feature((1, 1)), feature((2, 2))
        ('ab', 'c', None)
    """

    def __init__(self, mixture: DiscreteMixture, classes: Mapping[str, Sequence[int]] | None = None):
        self.mixture = _check_mixture(mixture)
        self.partition = check_classes(mixture, classes)
        self.names = tuple(self.partition)
        self._support = _Support(mixture)
        self._cls = _class_of_rows(mixture, self._support, self.partition)

    def __call__(self, sample: Any) -> str | None:
        return self.batch([sample])[0]

    def batch(self, samples: list[Any]) -> list[str | None]:
        """Labels of many sequences at once (same as calling the feature on each)."""
        length = self.mixture.length
        rows, ok = np.zeros((len(samples), length), dtype=np.int64), np.zeros(len(samples), dtype=bool)
        for j, s in enumerate(samples):
            try:
                r = _tokens(s, length)
            except CritwinError:
                continue
            if np.all((r >= 0) & (r < self._support.vocab_size)):
                rows[j], ok[j] = r, True
        idx = self._support.lookup(rows) if len(samples) else np.zeros(0, dtype=np.int64)
        return [self.names[int(self._cls[i])] if good and i >= 0 else None
                for i, good in zip(idx, ok, strict=True)]


class DiscreteMixtureSampler:
    """`Sampler` for a discrete sequence mixture under its own process ("truncation" or "masking"), exact:
    the reverse step draws from the full mixture conditioned on the visible tokens, by enumeration.

    time_unit: the mixture's ("tokens" or "mask"); t_max: L for truncation, `t_max` (default 6.0) for
    masking. Samples are tuples of ints.

    Example:
        Truncated by one token, (0, 0) keeps its first token and the last one is redrawn from
        p(· | first token 0): (0, 0) or (0, 1), half each; at t = 0 nothing is redrawn:

        >>> import numpy as np
        >>> import critwin as cw
        >>> from critwin.samplers.discrete import DiscreteMixtureSampler
        >>> mix = cw.DiscreteMixture([{(0, 0): 1.0}, {(0, 1): 1.0}, {(1, 0): 0.5, (1, 1): 0.5}],
        ...                          weights=[0.25, 0.25, 0.5], process="truncation")
        >>> sampler = DiscreteMixtureSampler(mix)
        >>> sampler.time_unit, sampler.t_max
        ('tokens', 2.0)
        >>> at0, at1 = sampler.forward_reverse((0, 0), [0, 1], 1000, np.random.default_rng(0))
        >>> set(at0), sorted(set(at1)), abs(at1.count((0, 1)) / 1000 - 0.5) < 0.05
        ({(0, 0)}, [(0, 0), (0, 1)], True)
    """

    def __init__(self, mixture: DiscreteMixture, *, t_max: float | None = None):
        self.mixture = _check_mixture(mixture)
        self.time_unit = mixture.time_unit
        length = mixture.length
        if mixture.process == "truncation":
            if t_max is not None and t_max != length:
                raise CritwinError(
                    f"t_max={t_max!r}: a truncation testbed runs t = 0..L tokens (L = {length}); leave t_max "
                    "unset"
                )
            self.t_max = float(length)
        else:
            t_max = DEFAULT_MASK_T_MAX if t_max is None else t_max
            number = isinstance(t_max, int | float | np.integer | np.floating) and not isinstance(t_max, bool)
            if not (number and math.isfinite(t_max) and t_max > 0):
                raise CritwinError(f"t_max={t_max!r} must be a finite masking time > 0, e.g. 6")
            self.t_max = float(t_max)
        self._support = _Support(mixture)

    def sample(self, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """n exact draws from the mixture."""
        s = self._support
        idx = rng.choice(len(s.p), size=n, p=s.p / s.p.sum())
        return [tuple(int(v) for v in s.digits[i]) for i in idx]

    def _check_t(self, t: Any) -> float:
        number = isinstance(t, int | float | np.integer | np.floating) and not isinstance(t, bool)
        if self.mixture.process == "truncation":
            length = self.mixture.length
            if not (number and math.isfinite(t) and t == int(t) and 0 <= t <= length):
                raise CritwinError(f"t={t!r}: truncation times are whole numbers of tokens, 0..{length} here")
            return float(t)
        if not (number and math.isfinite(t) and 0 <= t <= self.t_max):
            raise CritwinError(f"t={t!r}: masking times must be numbers in [0, t_max={self.t_max:g}]; drop "
                               "it from the schedule or build the sampler with a larger t_max")
        return float(t)

    def _conditional(self, eq: np.ndarray, visible: np.ndarray, count: int, rng: np.random.Generator
                     ) -> np.ndarray:
        """`count` support positions drawn from p(· | the visible tokens of x)."""
        match = eq[:, visible].all(axis=1)
        w = np.where(match, self._support.p, 0.0)
        return rng.choice(len(w), size=count, p=w / w.sum())

    def forward_reverse(
        self, x: Any, ts: Sequence[float], n: int, rng: np.random.Generator
    ) -> list[list[tuple[int, ...]]]:
        """For each t in ts: n draws X' ~ p(· | X'_O = x_O), O the visible positions at t (truncation: the
        first L − t; masking: each position independently with probability e^{-t}, fresh per draw)."""
        s = self._support
        s.index(x)  # x must have positive probability (else the conditional law does not exist)
        row = _tokens(x, s.length)
        checked = [self._check_t(t) for t in ts]
        eq = s.digits == row[None, :]
        length = s.length
        out = []
        for t in checked:
            if self.mixture.process == "truncation":
                keep = length - int(t)
                visible = np.arange(length) < keep
                idx = self._conditional(eq, visible, n, rng)
            else:
                vis = rng.random((n, length)) < math.exp(-t)
                codes = vis @ (1 << np.arange(length, dtype=np.int64))
                idx = np.empty(n, dtype=np.int64)
                for code in np.unique(codes):
                    sel = np.flatnonzero(codes == code)
                    idx[sel] = self._conditional(eq, vis[sel[0]], sel.size, rng)
            out.append([tuple(int(v) for v in s.digits[i]) for i in idx])
        return out


def exact_curve(
    mixture: DiscreteMixture,
    x: Any,
    ts: Sequence[float],
    classes: Mapping[str, Sequence[int]] | None = None,
) -> ExactCurve:
    """Exact P(Bayes class of X' = Bayes class of x | x, t) for X' ~ FR_t(x) of `DiscreteMixtureSampler`,
    at each t in `ts` (the mixture's time unit); `classes` as in `SequenceClass`. se is 0.

    Example:
        Class "ab" = components (0, 0) and (0, 1): truncating the last token keeps the class (the first
        token tells it), truncating both keeps it with probability W_ab = ½:

        >>> import critwin as cw
        >>> from critwin.samplers.discrete import exact_curve
        >>> mix = cw.DiscreteMixture([{(0, 0): 1.0}, {(0, 1): 1.0}, {(1, 0): 0.5, (1, 1): 0.5}],
        ...                          weights=[0.25, 0.25, 0.5], process="truncation")
        >>> exact_curve(mix, (0, 0), [0, 1, 2], {"ab": [0, 1], "c": [2]}).p.tolist()
        [1.0, 1.0, 0.5]
    """
    mixture = _check_mixture(mixture)
    partition = check_classes(mixture, classes)
    s = _Support(mixture)
    cls = _class_of_rows(mixture, s, partition)
    same = cls == cls[s.index(x)]
    row = _tokens(x, s.length)
    eq = s.digits == row[None, :]
    length = s.length

    def value(visible: Sequence[int]) -> float:
        match = eq[:, list(visible)].all(axis=1)
        return float((s.p * (match & same)).sum() / (s.p * match).sum())

    ts_arr = np.asarray([float(t) for t in ts], dtype=float)
    p = np.empty(len(ts_arr))
    if mixture.process == "truncation":
        for i, t in enumerate(ts_arr):
            if t != int(t) or not 0 <= t <= length:
                raise CritwinError(f"t={t:g}: truncation times are whole numbers of tokens, 0..{length} here")
            p[i] = value(range(length - int(t)))
    else:
        if np.any(~np.isfinite(ts_arr)) or np.any(ts_arr < 0):
            raise CritwinError("ts: masking times must be finite numbers >= 0")
        per_size = np.zeros(length + 1)  # Σ over the visible sets O of each size k of the value on O
        for k in range(length + 1):
            for o in itertools.combinations(range(length), k):
                per_size[k] += value(o)
        for i, t in enumerate(ts_arr):
            p[i] = float(masking_size_weights(length, float(t)) @ per_size)
    return ExactCurve(ts_arr, np.clip(p, 0.0, 1.0), np.zeros(len(ts_arr)))
