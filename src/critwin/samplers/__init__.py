"""Samplers: generative models that can run the forward–reverse experiment (see `base.Sampler`)."""

from critwin.samplers.base import Failure, Sampler

__all__ = ["Failure", "Sampler"]
