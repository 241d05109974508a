"""Strategies by name, for commands and configs: `StrategySettings` (--strategy, --budget, --n-min,
--n-max) and `StrategySettings.build`, which makes the strategy of one scan.

Names: "fixed" (the experiment's grid, n draws each), "adaptive" (`Adaptive`: sequential allocation on
the grid plus bisection to one unit), "bisect" (`Bisect`, PTS: n draws per point, |Δp| >= 0.2),
"every-prefix" (`EveryPrefix`: n draws at every unit of t), "critical" (`CriticalBisect`: bisection to the
critical token of a P(success) curve, certifying failure at every longer cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from critwin.errors import CritwinError
from critwin.strategies.adaptive import Adaptive
from critwin.strategies.base import Strategy
from critwin.strategies.bisect import Bisect
from critwin.strategies.critical import CriticalBisect
from critwin.strategies.every_prefix import EveryPrefix
from critwin.strategies.fixed import Fixed
from critwin.strategies.points import check_counts

STRATEGY_NAMES = ("fixed", "adaptive", "bisect", "every-prefix", "critical")

#: Draws per point of an adaptive search when --n-min / --n-max are not given.
DEFAULT_N_MIN = 8
DEFAULT_N_MAX = 128


@dataclass(frozen=True)
class StrategySettings:
    """Which strategy a scan uses and what it may spend. budget: most draws per scanned sample (None: no
    limit); n_min / n_max: first and most draws per point of an adaptive search (defaults 8 and 128).
    Checked on construction with the one-line errors of the command line."""

    strategy: str = "fixed"
    budget: int | None = None
    n_min: int | None = None
    n_max: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise CritwinError(
                f"--strategy {self.strategy!r} does not exist; use one of {', '.join(STRATEGY_NAMES)}"
            )
        for flag, v in (("--budget", self.budget), ("--n-min", self.n_min), ("--n-max", self.n_max)):
            try:
                check_counts("", x=v)
            except CritwinError:
                raise CritwinError(f"{flag} {v!r}: use a whole number >= 1 (draws)") from None
        if self.n_min is not None and self.n_max is not None and self.n_min > self.n_max:
            raise CritwinError(f"--n-min {self.n_min} > --n-max {self.n_max}: use --n-min <= --n-max")
        if self.strategy == "critical" and self.n_max is not None:
            raise CritwinError("--n-max caps --strategy adaptive; --strategy critical draws --n-min per new "
                               "cut and tops cuts up to what certifies --eps")
        per_point = self.n_min is not None or self.n_max is not None
        if self.strategy not in ("adaptive", "critical") and per_point:
            raise CritwinError(
                f"--n-min/--n-max set the draws per point of --strategy adaptive; --strategy {self.strategy} "
                "draws a fixed number per point (set it with the command's draws option)"
            )
        if self.strategy == "adaptive":
            n_min = DEFAULT_N_MIN if self.n_min is None else self.n_min
            n_max = max(DEFAULT_N_MAX, n_min) if self.n_max is None else self.n_max
            if n_min > n_max:
                raise CritwinError(f"--n-min {n_min} > --n-max {n_max}: use --n-min <= --n-max")

    @property
    def adaptive(self) -> bool:
        """Whether the draws per point depend on earlier draws (then report intervals must be anytime-valid:
        `critwin.stats.confidence_sequence`)."""
        return self.strategy in ("adaptive", "bisect", "critical")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_first_round(self, n_points: int, n: int) -> None:
        """A one-line error, before any draw, when the budget cannot give one draw to each of the first
        round's `n_points` points (adaptive: n_min draws; bisect: its two ends)."""
        if self.budget is None:
            return
        need = {"fixed": n_points, "every-prefix": n_points, "bisect": min(2, n_points),
                "adaptive": n_points, "critical": n_points}[self.strategy]
        searching = ("adaptive", "critical")
        if self.budget < need:
            raise CritwinError(
                f"--budget {self.budget} is smaller than one draw per initial point ({need} points); use "
                f"--budget {need * (self.n_min or DEFAULT_N_MIN if self.strategy in searching else n)} or "
                "more"
            )

    def build(
        self,
        *,
        grid: Sequence[float],
        n: int,
        resolution: float = 1.0,
        support: Sequence[float] | None = None,
        min_jump: float = 0.2,
        level: float = 0.99,
        eps: float = 0.05,
        ci_level: float = 0.95,
    ) -> Strategy:
        """The strategy of one scan. grid: the experiment's cut times (fixed: all of them; adaptive: its
        first round); n: draws per point of fixed, bisect and every-prefix; resolution / support: the
        finest step of t, or the allowed times when t is discrete; min_jump / level: the window rule's
        (adaptive tests and refines what that rule will report); eps / ci_level: what certifies a cut to
        fail (critical: P(success) <= eps at ci_level)."""
        self.check_first_round(len(set(grid)), n)
        if self.strategy == "fixed":
            ts = sorted({float(t) for t in grid})
            k = n if self.budget is None else max(1, min(n, self.budget // len(ts)))
            return Fixed(ts, k)
        if self.strategy == "every-prefix":
            return EveryPrefix(n=n, resolution=resolution, support=support, budget=self.budget)
        if self.strategy == "bisect":
            return Bisect(n=n, resolution=resolution, support=support, budget=self.budget)
        n_min = DEFAULT_N_MIN if self.n_min is None else self.n_min
        if self.strategy == "critical":
            return CriticalBisect(grid, n_min=n_min, eps=eps, level=ci_level, resolution=resolution,
                                  support=support, budget=self.budget)
        n_max = max(DEFAULT_N_MAX, n_min) if self.n_max is None else self.n_max
        return Adaptive(grid, n_min=n_min, n_max=n_max, budget=self.budget, min_jump=min_jump,
                        rule_level=level, resolution=resolution, support=support)
