"""Runners decide where work runs: `Local` here; more (Ray) behind the same `Runner` protocol."""

from critwin.runners.base import Runner
from critwin.runners.local import Local

__all__ = ["Local", "Runner"]
