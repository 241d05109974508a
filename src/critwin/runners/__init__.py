"""Runners decide where work runs: `Local` here, `Ray` on the actors of a Ray cluster, both behind the
`Runner` protocol (`critwin.runners.ray` imports Ray only when a run starts)."""

from critwin.runners.base import Runner
from critwin.runners.local import Local
from critwin.runners.ray import Ray

__all__ = ["Local", "Ray", "Runner"]
