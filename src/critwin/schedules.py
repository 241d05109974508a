"""Cut grids in one place: where the forward–reverse experiment degrades a sample (forward times t).

t grows with degradation everywhere. For LLM responses t counts the tokens removed from the end of a
response of `length` tokens, and displays use the fraction KEPT, f = 1 − t/length. For diffusion testbeds t
is OU time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from critwin.errors import CritwinError

PAPER_FRACTIONS: tuple[float, ...] = (0.05, 0.1, 0.3, 0.5, 0.7, 0.9)
"""Fractions of the response KEPT at which the paper cuts reasoning traces."""

DENSE_FRACTIONS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Fractions kept 0.05, 0.10, …, 0.95: a dense grid that costs ~3× the paper's six cuts."""



def cut_positions(
    length: int, fractions: Sequence[float] | None = PAPER_FRACTIONS, *, dense: bool = False, step: int = 1
) -> list[int]:
    """Numbers of response tokens KEPT for each fraction kept (floor(f · length)), in the given order.

    `dense=True` ignores `fractions` and returns every `step`-th cut 0, step, 2·step, …, length.
    Fractions must lie in [0, 1]. Equal cuts are not merged, so results line up with `fractions`.
    """
    if length < 0:
        raise CritwinError(f"length={length}: a response length is >= 0")
    if dense:
        if step < 1:
            raise CritwinError(f"step={step}: use a positive integer number of tokens")
        kept = list(range(0, length + 1, step))
        return kept if kept[-1] == length else [*kept, length]
    fractions = PAPER_FRACTIONS if fractions is None else fractions
    out = []
    for f in fractions:
        if not 0.0 <= float(f) <= 1.0:
            raise CritwinError(f"fraction kept {f}: use values in [0, 1] (the share of the response kept)")
        out.append(int(np.floor(float(f) * length + 1e-9)))
    return out


def ts_from_fractions(
    length: int, fractions: Sequence[float] | None = PAPER_FRACTIONS, *, dense: bool = False, step: int = 1
) -> list[int]:
    """Forward times t (tokens removed from the end) for fractions kept; t = length - kept."""
    return [length - k for k in cut_positions(length, fractions, dense=dense, step=step)]


def fraction_kept(length: int, t: float) -> float:
    """The display coordinate of t for a response of `length` tokens: 1 - t / length."""
    return 1.0 - float(t) / length if length else 0.0


def kept_positions(
    length: int, fractions: Sequence[float] = PAPER_FRACTIONS, dense_step: int | None = None
) -> list[int]:
    """Response tokens KEPT at each cut of a response of `length` tokens, ascending, without repeats:
    floor(f · length) per fraction kept f, or every `dense_step` tokens 0, step, 2·step, … when given."""
    if dense_step is not None:
        kept = list(range(0, length + 1, dense_step))
    else:
        kept = [int(np.floor(float(f) * length + 1e-9)) for f in fractions]
    return sorted({k for k in kept if 0 <= k <= length})
