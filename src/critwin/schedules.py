"""Cut grids in one place: where the forward–reverse experiment degrades a sample (forward times t).

t grows with degradation everywhere. For LLM responses t counts the tokens removed from the end of a
response of `length` tokens, and displays use the fraction KEPT, f = 1 − t/length. For diffusion testbeds t
is OU time (`ou_grid`); for token testbeds every token (`token_grid`); for prefill attacks the cuts of a
text at the ends of its units, characters or tokens (`prefill_cuts`).
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

    Example:
        The paper's six cuts of a 200-token response, and every 4th cut of a 10-token one (the whole
        response is always the last cut):

        >>> from critwin.schedules import cut_positions
        >>> cut_positions(200)
        [10, 20, 60, 100, 140, 180]
        >>> cut_positions(10, [0.5, 0.25, 1.0])
        [5, 2, 10]
        >>> cut_positions(10, dense=True, step=4)
        [0, 4, 8, 10]
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
    """Forward times t (tokens removed from the end) for fractions kept; t = length - kept.

    Example:
        Keeping 5% of a 200-token response removes t = 190 tokens:

        >>> from critwin.schedules import ts_from_fractions
        >>> ts_from_fractions(200)
        [190, 180, 140, 100, 60, 20]
    """
    return [length - k for k in cut_positions(length, fractions, dense=dense, step=step)]


def fraction_kept(length: int, t: float) -> float:
    """The display coordinate of t for a response of `length` tokens: 1 - t / length.

    Example:
        >>> from critwin.schedules import fraction_kept
        >>> round(fraction_kept(200, 190), 6), fraction_kept(200, 0), fraction_kept(0, 0)
        (0.05, 1.0, 0.0)
    """
    return 1.0 - float(t) / length if length else 0.0


def kept_positions(
    length: int, fractions: Sequence[float] = PAPER_FRACTIONS, dense_step: int | None = None
) -> list[int]:
    """Response tokens KEPT at each cut of a response of `length` tokens, ascending, without repeats:
    floor(f · length) per fraction kept f, or every `dense_step` tokens 0, step, 2·step, … when given.

    Example:
        Fractions 0.05 and 0.1 of 10 tokens give the cuts 0 and 1; unlike `cut_positions(dense=True)`, a
        dense step does not add the whole response:

        >>> from critwin.schedules import kept_positions
        >>> kept_positions(10, (0.1, 0.05, 0.5, 0.3))
        [0, 1, 3, 5]
        >>> kept_positions(10, dense_step=4)
        [0, 4, 8]
    """
    if dense_step is not None:
        kept = list(range(0, length + 1, dense_step))
    else:
        kept = [int(np.floor(float(f) * length + 1e-9)) for f in fractions]
    return sorted({k for k in kept if 0 <= k <= length})


def ou_grid(t_end: float, step: float | None = None, *, num: int | None = None) -> np.ndarray:
    """Ascending OU times from 0 to `t_end` (both included) for the diffusion testbeds.

    step: every `step` OU time units, 0, step, 2·step, … up to t_end (t_end itself is included when it is a
    whole number of steps, within 1e-9), rounded to 10 decimals so that a grid of 0.1-steps holds 0.3, not
    0.30000000000000004. num: instead, `num` >= 2 evenly spaced times (numpy.linspace). Give one of them.

    Example:
        >>> from critwin.schedules import ou_grid
        >>> ou_grid(1.0, 0.3).tolist()
        [0.0, 0.3, 0.6, 0.9]
        >>> 0.3 in ou_grid(1.0, 0.1).tolist()
        True
        >>> ou_grid(2.0, num=5).tolist()
        [0.0, 0.5, 1.0, 1.5, 2.0]
    """
    if not (isinstance(t_end, int | float | np.integer | np.floating) and np.isfinite(t_end) and t_end > 0):
        raise CritwinError(f"t_end={t_end!r}: the last OU time must be a finite number > 0")
    if (step is None) == (num is None):
        raise CritwinError("ou_grid: give either step= (spacing in OU time) or num= (number of times), not "
                           f"{'both' if step is not None else 'neither'}")
    if num is not None:
        if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 2:
            raise CritwinError(f"num={num!r}: use a whole number >= 2 of OU times")
        return np.linspace(0.0, float(t_end), int(num))
    if not (isinstance(step, int | float | np.integer | np.floating) and np.isfinite(step) and step > 0):
        raise CritwinError(f"step={step!r}: the spacing of OU times must be a finite number > 0")
    return np.round(np.arange(0.0, float(t_end) + 1e-9, float(step)), 10)


def token_grid(length: int, step: int = 1) -> np.ndarray:
    """Ascending forward times t = 0, step, 2·step, …, length (tokens removed from the end), as floats;
    `length` itself is always included.

    Example:
        >>> from critwin.schedules import token_grid
        >>> token_grid(10, step=4).tolist()
        [0.0, 4.0, 8.0, 10.0]
    """
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 0:
        raise CritwinError(f"length={length!r}: a sequence length is a whole number >= 0")
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise CritwinError(f"step={step!r}: use a positive whole number of tokens")
    ts = list(range(0, int(length) + 1, int(step)))
    if ts[-1] != length:
        ts.append(int(length))
    return np.array(ts, dtype=float)


def prefill_cuts(ends: Sequence[int], step: int = 1, *, unit: str = "units") -> tuple[list[int], list[int]]:
    """Where to cut a text made of units (characters, tokens) every `step` units.

    ends: the character offsets at which its units end, ascending, the last one being the length of the
    whole text (for characters 1, 2, …, len(text)). Units that end at the same offset count once.
    Returns (character offsets of the cuts, number of units kept at each cut): both ascending, from 0
    (nothing kept) to the whole text (a last cut is added when `step` does not divide the number of
    units). `unit` names the units in error messages.

    Example:
        A prefill made of three words, cut after every word and after every second word:

        >>> from critwin.schedules import prefill_cuts
        >>> text = "Sure, here is"
        >>> cuts, kept = prefill_cuts([5, 10, 13], unit="words")
        >>> [text[:c] for c in cuts], kept
        (['', 'Sure,', 'Sure, here', 'Sure, here is'], [0, 1, 2, 3])
        >>> prefill_cuts([5, 10, 13], step=2)
        ([0, 10, 13], [0, 2, 3])
    """
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise CritwinError(f"step={step}: cut every step >= 1 {unit}")
    bounds = sorted({0, *(int(e) for e in ends)})
    if bounds[0] < 0:
        raise CritwinError(f"ends: unit end offsets must be >= 0, got {bounds[0]}")
    length = len(bounds) - 1
    kept = list(range(0, length + 1, int(step)))
    if kept[-1] != length:
        kept.append(length)
    return [bounds[j] for j in kept], kept
