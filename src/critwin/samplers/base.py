"""The sampler protocols every backend implements (exact testbeds, transformers, later vLLM/API/diffusers):
`ForwardReverse` (run FR_t on a given sample), `Unconditional` (draw samples) and `Sampler` (both).

Time t grows with degradation: t = 0 is the clean sample, t = `t_max` is full noise / an empty response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from critwin.types import Failure

__all__ = ["Failure", "ForwardReverse", "Sampler", "Unconditional"]


@runtime_checkable
class ForwardReverse(Protocol):
    """A backend that can run the forward–reverse experiment FR_t on a given sample x.

    `time_unit` names the units of t ("ou" for OU time, "tokens" for tokens removed from the end,
    "mask" for absorbing-diffusion time); `t_max` is the largest meaningful t. t grows with degradation:
    t = 0 returns x itself (nothing degraded), t = `t_max` degrades x fully. A sample that knows its own
    largest t (e.g. a `critwin.samplers.lm.Response`, whose `t_max` is its length) bounds t by that instead.
    """

    time_unit: str
    t_max: float

    def forward_reverse(
        self, x: Any, ts: Sequence[float], n: int, rng: np.random.Generator
    ) -> Iterable[Sequence[Any]]:
        """For each t in `ts`, n draws X' ~ p(· | Y_t) where Y_t is `x` degraded to level t.

        Returns len(ts) rows of n draws, in the order of `ts`: a list, or an iterator that yields each row
        as it is ready (a backend that streams or chunks its draws; `scan` labels each row as it arrives
        and keeps the samples only when they are stored). Each of the n draws uses its own independent
        forward draw (fresh noise / mask), so the n outcomes are i.i.d. given x; the same `rng` state gives
        the same draws. Backends batch all (t, draw) pairs together. A draw that fails is returned as a
        `Failure` in its slot (never raised); a t outside [0, t_max] is a CritwinError.
        """
        ...


@runtime_checkable
class Unconditional(Protocol):
    """A backend that can draw samples from its full model."""

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw n independent samples X ~ p from the full model (a failed draw is a `Failure` in its slot)."""
        ...


@runtime_checkable
class Sampler(ForwardReverse, Unconditional, Protocol):
    """A generative model that can draw samples and run the forward–reverse experiment FR_t (both
    `ForwardReverse` and `Unconditional`)."""
