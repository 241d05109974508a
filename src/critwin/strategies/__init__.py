"""Strategies decide which forward times a scan draws at, and how often: `Strategy.propose(curve, t_max)`
returns the next round of `Request(t, n)` (empty: stop). `Fixed` is the classic grid; `Sequential` adds
draws where a neighbour test is undecided; `Adaptive` also bisects confirmed drops down to one unit of t;
`Bisect` (PTS) and `EveryPrefix` (Critical Tokens) are the dense and bisection baselines; `CriticalBisect`
bisects to a critical token, certifying failure after it. `StrategySettings` picks one by name
(--strategy fixed|adaptive|bisect|every-prefix|critical)."""

from critwin.strategies.adaptive import Adaptive
from critwin.strategies.base import Request, Strategy
from critwin.strategies.bisect import Bisect
from critwin.strategies.critical import CriticalBisect
from critwin.strategies.every_prefix import EveryPrefix
from critwin.strategies.fixed import Fixed
from critwin.strategies.registry import STRATEGY_NAMES, StrategySettings
from critwin.strategies.sequential import Sequential

__all__ = [
    "STRATEGY_NAMES",
    "Adaptive",
    "Bisect",
    "CriticalBisect",
    "EveryPrefix",
    "Fixed",
    "Request",
    "Sequential",
    "Strategy",
    "StrategySettings",
]
