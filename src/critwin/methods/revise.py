"""Revise at the window (the paper's intervention): re-prompt the model right after a critical window, e.g.
"Wait, let me re-check this step.", and measure how its accuracy changes, against the same re-prompt at a
random position away from the window.

Per problem four arms of k endings each are drawn from prefixes of the original response: the first
`window` tokens (the window's end, kept_hi: the decided step is in the prefix) with and without the
re-prompt appended, and the same at a `control` position. An arm's outcome is P(correct) of its endings.
The effect at a position is P(correct | re-prompted) − P(correct | not), with a Newcombe interval. Over a
dataset the per-problem effects are averaged with a Student t interval across problems (the problems are
the independent units; each problem's estimate carries its own binomial noise, which the spread across
problems includes), for the window, for the control, and for their paired difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from critwin.stats import newcombe_interval

REVISE_PROMPT = "\nWait, let me re-check this step.\n"
"""The default re-prompt appended at the position (its tokens are the model's own encoding of it)."""

ARMS = ("plain_window", "revised_window", "plain_control", "revised_control")


def control_position(
    length: int, window_lo: int, window_hi: int, tolerance: int, rng: np.random.Generator
) -> int | None:
    """A prefix length (tokens kept) drawn uniformly from 1 … length that lies more than `tolerance`
    tokens outside the window [window_lo, window_hi]; None when every position is near the window."""
    allowed = [p for p in range(1, length + 1) if p < window_lo - tolerance or p > window_hi + tolerance]
    return int(allowed[rng.integers(len(allowed))]) if allowed else None


@dataclass(frozen=True)
class Effect:
    """P(correct) with and without the re-prompt at one position (correct, valid endings each), their
    difference and its Newcombe interval (None when an arm has no valid ending)."""

    p_plain: float | None
    p_revised: float | None
    n_plain: int
    n_revised: int
    effect: float | None
    effect_ci: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def effect(revised: tuple[int, int], plain: tuple[int, int], level: float = 0.95) -> Effect:
    """The re-prompt's effect at one position from (correct, valid) counts of the two arms."""
    (k1, n1), (k0, n0) = revised, plain
    p1, p0 = (k1 / n1 if n1 else None), (k0 / n0 if n0 else None)
    if not n1 or not n0:
        return Effect(p0, p1, n0, n1, None, None)
    lo, hi = newcombe_interval(k1, n1, k0, n0, level)
    return Effect(p0, p1, n0, n1, p1 - p0, (float(lo), float(hi)))


def mean_effect(effects: Sequence[float | None], level: float = 0.95) -> dict[str, Any]:
    """Mean of per-problem effects (None ones left out) with its Student t interval across problems,
    within [-1, 1] (None with fewer than 2)."""
    xs = np.asarray([e for e in effects if e is not None], dtype=float)
    out: dict[str, Any] = {"n": int(xs.size), "mean": float(xs.mean()) if xs.size else None, "ci": None}
    if xs.size >= 2:
        if np.ptp(xs) == 0:  # no spread: the t interval degenerates to the point
            out["ci"] = [float(xs[0]), float(xs[0])]
        else:
            ci = stats.ttest_1samp(xs, 0.0).confidence_interval(level)
            # an effect is a difference of probabilities: clipping to [-1, 1] loses no coverage
            out["ci"] = [max(float(ci.low), -1.0), min(float(ci.high), 1.0)]
    return out
