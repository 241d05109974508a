"""Samplers: generative models that can run the forward–reverse experiment.

`base` holds the protocols (`ForwardReverse`, `Unconditional`, `Sampler` = both) and `Failure`; `lm` the
torch-free language-model types and the `LMSampler` protocol; `registry` builds any backend by name
(`load_sampler`). Nothing imported here pulls in torch or transformers.
"""

from critwin.samplers.base import Failure, ForwardReverse, Sampler, Unconditional
from critwin.samplers.lm import Continuation, LMSampler, Prompt, Response, SamplingSettings
from critwin.samplers.registry import load_sampler, register_sampler, sampler_kinds

__all__ = [
    "Continuation",
    "Failure",
    "ForwardReverse",
    "LMSampler",
    "Prompt",
    "Response",
    "Sampler",
    "SamplingSettings",
    "Unconditional",
    "load_sampler",
    "register_sampler",
    "sampler_kinds",
]
