"""The `Sampler` protocol every backend implements (exact testbeds, transformers, later vLLM/API/diffusers).

Time t grows with degradation: t = 0 is the clean sample, t = `t_max` is full noise / an empty response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Failure:
    """Stands in for a sample the backend could not produce (engine error, OOM after retries, time-out).

    Scans count it as a failed item: never an outcome, never dropped.
    """

    reason: str


@runtime_checkable
class Sampler(Protocol):
    """A generative model that can draw samples and run the forward–reverse experiment FR_t.

    `time_unit` names the units of t ("ou" for OU time, "tokens" for tokens removed from the end,
    "mask" for absorbing-diffusion time); `t_max` is the largest meaningful t.
    """

    time_unit: str
    t_max: float

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw n independent samples X ~ p from the full model."""
        ...

    def forward_reverse(
        self, x: Any, ts: Sequence[float], n: int, rng: np.random.Generator
    ) -> list[list[Any]]:
        """For each t in `ts`, n draws X' ~ p(· | Y_t) where Y_t is `x` degraded to level t.

        Each of the n draws uses its own independent forward draw (fresh noise / mask), so the n
        outcomes are i.i.d. given x. Backends batch all (t, draw) pairs together. A draw that fails
        is returned as a `Failure` in its slot.
        """
        ...
