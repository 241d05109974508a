"""critwin: find, measure and explain critical windows in generative models.

Implements Li, Karan & Chen, "Blink of an eye: a simple theory for feature localization in
generative models" (ICML 2025). Time t grows with degradation everywhere in the code.

`import critwin as cw` is the one import a user needs: `cw.scan`, `cw.Curve`, `cw.detect_windows`,
`cw.Window`, `cw.load_sampler`, `cw.run`, `cw.RunDir`, `cw.Failure`, the modules `cw.schedules`,
`cw.strategies`, `cw.runners`, `cw.theory`, and the theory's entry points (`cw.t_before`, `cw.t_after`,
`cw.critical_window`, `cw.staircase`, `cw.theorem_bound`, …). Names load on first use, so
`import critwin` stays light (no torch, no pandas).
"""

from __future__ import annotations

import importlib
from typing import Any

from critwin.errors import CritwinError

__version__ = "0.1.0"

_EXPORTS = {
    "scan": "critwin.curves",
    "Curve": "critwin.curves",
    "Draws": "critwin.curves",
    "detect_windows": "critwin.windows",
    "paper_rule_windows": "critwin.windows",
    "Window": "critwin.windows",
    "load_sampler": "critwin.samplers.registry",
    "sampler_kinds": "critwin.samplers.registry",
    "Failure": "critwin.samplers.base",
    "Response": "critwin.samplers.lm",
    "SamplingSettings": "critwin.samplers.lm",
    "check_sampler": "critwin.conformance",
    "run": "critwin.driver",
    "RunDir": "critwin.rundir",
    "Case": "critwin.experiments.base",
    "CaseResult": "critwin.experiments.base",
    "Experiment": "critwin.experiments.base",
    "GaussianMixture": "critwin.theory",
    "DiscreteMixture": "critwin.theory",
    "t_before": "critwin.theory",
    "t_after": "critwin.theory",
    "critical_window": "critwin.theory",
    "staircase": "critwin.theory",
    "theorem_bound": "critwin.theory",
    "pointwise_bound": "critwin.theory",
    "forward_reverse_law": "critwin.theory",
    "tv_exact": "critwin.theory",
}
_MODULES = ("schedules", "strategies", "runners", "theory", "stats", "experiments", "samplers")

__all__ = ["CritwinError", "__version__", *sorted(_EXPORTS), *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"critwin.{name}")
    else:
        raise AttributeError(f"module 'critwin' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return list(__all__)
