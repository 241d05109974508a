"""`EveryPrefix`: n draws at every unit of t in one round (Critical Tokens' rollouts from every prefix;
Lin et al., "Critical Tokens Matter", 2024, use 64 per prefix), as a dense baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from critwin.strategies.base import Request
from critwin.strategies.points import check_counts, check_resolution, checked_times, first_round_draws

if TYPE_CHECKING:
    from critwin.curves import Curve


@dataclass(frozen=True)
class EveryPrefix:
    """n draws at t = 0, resolution, 2·resolution, …, t_max (or at every `support` time <= t_max), in
    one round; with a `budget`, n shrinks to budget // points (an error below one draw per point).

    Example:
        Every prefix of an 18-token toy-language text, 4 draws each:

        >>> from critwin.strategies import EveryPrefix
        >>> reqs = EveryPrefix(n=4).propose(None, t_max=18.0)
        >>> len(reqs), reqs[0], reqs[-1]
        (19, Request(t=0.0, n=4), Request(t=18.0, n=4))
    """

    n: int = 64
    resolution: float = 1.0
    support: Sequence[float] | None = None
    budget: int | None = None

    def __post_init__(self) -> None:
        who = type(self).__name__
        check_counts(who, n=self.n, budget=self.budget)
        object.__setattr__(self, "resolution", check_resolution(who, self.resolution))
        object.__setattr__(self, "support", checked_times(who, self.support, "support"))

    def times(self, t_max: float) -> list[float]:
        if self.support is not None:
            return [t for t in self.support if t <= t_max]
        m = int(math.floor(t_max / self.resolution + 1e-9))
        ts = [round(i * self.resolution, 12) for i in range(m + 1)]
        return ts if ts[-1] >= t_max - 1e-12 else [*ts, float(t_max)]

    def propose(self, curve: Curve | None, t_max: float) -> tuple[Request, ...]:
        if curve is not None:
            return ()
        ts = self.times(t_max)
        n = first_round_draws(self.n, len(ts), self.budget)
        return tuple(Request(t, n) for t in ts)
