"""Strategies decide which forward times a scan draws at, and how often: `Strategy.propose(curve, t_max)`
returns the next round of `Request(t, n)` (empty: stop). `Fixed` is the classic grid; adaptive ones (spend
draws where the curve moves, bisect for a window edge, every prefix) plug in as one module each."""

from critwin.strategies.base import Request, Strategy
from critwin.strategies.fixed import Fixed

__all__ = ["Fixed", "Request", "Strategy"]
