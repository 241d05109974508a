"""`Fixed`: one round with n draws at every t of a schedule, then stop (the classic forward–reverse scan)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from critwin.errors import CritwinError
from critwin.strategies.base import Request

if TYPE_CHECKING:
    from critwin.curves import Curve


@dataclass(frozen=True)
class Fixed:
    """n draws at every forward time of `schedule` in one round (one batched sampler call), then stop.

    `scan(sampler, x, schedule, n, feature)` is `scan(sampler, x, feature=feature, strategy=Fixed(schedule,
    n))`: same draws, same random stream, same curve. The schedule keeps its order (the sampler sees the
    times in that order); each t is listed once; `scan` checks that every t lies in [0, t_max].

    Example:
        One round of 20 draws at t = 0, 9 and 18 tokens removed, then stop; on the exact toy language it
        gives the same curve as the schedule form of `scan` (t = 0 keeps the whole text, so every draw
        keeps its topic):

        >>> import numpy as np
        >>> import critwin as cw
        >>> from critwin.strategies import Fixed
        >>> strategy = Fixed([0, 9, 18], n=20)
        >>> strategy.propose(None, t_max=18.0)
        (Request(t=0.0, n=20), Request(t=9.0, n=20), Request(t=18.0, n=20))
        >>> sampler = cw.load_sampler("toy_lm")
        >>> x = sampler.sample(1, np.random.default_rng(0))[0]
        >>> def topic(text):
        ...     return sampler.language.parse(text)["topic"]
        >>> a = cw.scan(sampler, x, feature=topic, strategy=strategy, seed=1)
        >>> b = cw.scan(sampler, x, [0, 9, 18], 20, topic, seed=1)
        >>> a.t.tolist(), a.n_kept.tolist() == b.n_kept.tolist(), int(a.n_kept[0])
        ([0.0, 9.0, 18.0], True, 20)
        >>> strategy.propose(a, t_max=18.0)
        ()
    """

    schedule: Sequence[float]
    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 1:
            raise CritwinError(f"Fixed: n={self.n!r} must be a whole number >= 1 (resamples per t)")
        try:
            ts = tuple(float(t) for t in self.schedule)
        except (TypeError, ValueError) as err:
            raise CritwinError(
                f"Fixed: schedule must be a list of numbers (forward times); got {self.schedule!r}"
            ) from err
        if not ts:
            raise CritwinError("Fixed: schedule is empty; give at least one forward time t")
        bad = next((t for t in ts if not math.isfinite(t) or t < 0), None)
        if bad is not None:
            raise CritwinError(f"Fixed: t={bad:g} in the schedule; forward times are finite and >= 0")
        if len(set(ts)) != len(ts):
            raise CritwinError(
                "Fixed: schedule has repeated t values; list each t once (raise n for more draws)"
            )
        object.__setattr__(self, "schedule", ts)
        object.__setattr__(self, "n", int(self.n))

    def propose(self, curve: Curve | None, t_max: float) -> tuple[Request, ...]:
        """Every t of the schedule with n draws before the first round; nothing (stop) after it."""
        if curve is not None:
            return ()
        return tuple(Request(t, self.n) for t in self.schedule)
