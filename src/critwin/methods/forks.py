"""Forking tokens (Forking Paths; Bigelow et al., "Forking Paths in Neural Text Generation", 2024): at each
position of a response, force every alternative token the model itself gives at least `threshold`
probability, resample endings, and follow the outcome distribution along the text.

At position p (0-based: the prefix keeps tokens 0 … p − 1 and token p is forced) each branch w has its
outcome counts. Weighted by the model's probabilities q_p(w) (renormalised over the branches), the share
of endings with the original's outcome is `p_same`; the fork probability is Σ_{w ≠ x_p} q_p(w)·(1 − same_w),
the chance that drawing token p afresh leads to another outcome. Along the text, change points of the
p_same series (ruptures' PELT on the l2 cost, penalty 5 σ̂² ln P with σ̂² the mean binomial variance of the
points) mark where the outcome gets decided, and the survival S(p) = Π_{p' < p} (1 − fork probability at
p') is the chance that no fork before p has led elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from critwin.errors import CritwinError

THRESHOLD = 0.05


def check_threshold(threshold: float, flag: str = "--fork-threshold") -> float:
    """`threshold` when it is a probability in (0, 1], else a one-line CritwinError."""
    if not (isinstance(threshold, int | float) and 0 < threshold <= 1):
        raise CritwinError(f"{flag} {threshold}: use a probability in (0, 1] (the least probability of a "
                           "forced token)")
    return float(threshold)


def check_positions(positions: Sequence[int], flag: str = "--fork-positions") -> tuple[int, ...]:
    """Token positions (0-based) to fork at, sorted, when they are distinct whole numbers >= 0, else a
    one-line CritwinError."""
    if not positions:
        raise CritwinError(f"{flag} is empty; give token positions such as 0,10,20, or drop it for all")
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise CritwinError(f"{flag} {p!r}: positions are whole numbers >= 0 (0 is the response's first "
                               "token)")
    if len(set(positions)) != len(positions):
        raise CritwinError(f"{flag}: a position is given twice; list each once")
    return tuple(sorted(int(p) for p in positions))


def branch_tokens(probs: Mapping[int, float], threshold: float, exclude: Sequence[int] = ()) -> list[int]:
    """Tokens with probability at least `threshold` (most probable first; ties by id), except `exclude`
    (e.g. the end-of-sequence tokens)."""
    skip = set(exclude)
    keep = [(t, p) for t, p in probs.items() if p >= threshold - 1e-12 and t not in skip]
    return [t for t, _ in sorted(keep, key=lambda tp: (-tp[1], tp[0]))]


@dataclass(frozen=True)
class Branch:
    """Token `token_id` forced at a position (model probability `prob`): its endings' outcome counts."""

    token_id: int
    prob: float
    counts: Mapping[Any, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(sum(self.counts.values()))

    def share(self, reference: Any) -> float:
        """Share of the branch's endings with outcome `reference` (NaN without an ending)."""
        return self.counts.get(reference, 0) / self.n if self.n else math.nan


def position_summary(branches: Sequence[Branch], original_id: int, reference: Any) -> dict[str, Any]:
    """p_same (branches weighted by their renormalised probabilities), its binomial variance, and the fork
    probability (the mass of the other tokens times their share of other outcomes)."""
    live = [b for b in branches if b.n]
    if not live:
        return {"p_same": None, "variance": None, "fork_probability": None}
    mass = sum(b.prob for b in live)
    p_same = sum(b.prob * b.share(reference) for b in live) / mass
    variance = sum((b.prob / mass) ** 2 * b.share(reference) * (1 - b.share(reference)) / b.n for b in live)
    fork = sum(b.prob * (1 - b.share(reference)) for b in live if b.token_id != original_id)
    return {"p_same": float(p_same), "variance": float(variance), "fork_probability": float(fork)}


def change_points(series: Sequence[float], variances: Sequence[float]) -> list[int]:
    """Positions (indices into `series`) where a new segment of the series starts, by PELT on the l2 cost
    with penalty 5 σ̂² ln P (σ̂²: the mean of `variances`, at least 1e-4)."""
    import ruptures

    y = np.asarray(series, float)
    if len(y) < 2:
        return []
    sigma2 = max(float(np.mean(variances)), 1e-4)
    ends = ruptures.Pelt(model="l2", min_size=1, jump=1).fit(y.reshape(-1, 1)).predict(
        pen=5 * sigma2 * math.log(len(y)))
    return [int(b) for b in ends[:-1]]


def survival(fork_probabilities: Sequence[float]) -> list[float]:
    """S(p) = Π_{p' < p} (1 − fork probability at p'), for p = 0 … P (S(0) = 1)."""
    out, s = [1.0], 1.0
    for f in fork_probabilities:
        s *= 1.0 - f
        out.append(s)
    return out
