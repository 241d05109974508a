"""Plots and self-contained HTML reports, one module per experiment.

`writer_for(experiment, kind)` is the function that writes the report and summary.json of a run of that
experiment (and kind, for experiments that come in kinds) from the run directory alone, returning the
summary; it is imported on first use, so looking one up costs no plotting import. The writer reuses the
figures the run's last report drew from the same data (`critwin.report.figcache`)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

_WRITERS = {
    ("reasoning", None): "critwin.report.reasoning:write_report",
    ("structured", None): "critwin.report.structured:write_report",
    ("diffusion", None): "critwin.report.diffusion:write_report",
    ("jailbreak", "prefill"): "critwin.report.jailbreak:write_prefill_report",
    ("jailbreak", "repeat"): "critwin.report.jailbreak:write_repeat_report",
    ("jailbreak", "detect"): "critwin.report.jailbreak:write_detect_report",
}


def writer_for(experiment: str, kind: str | None = None) -> Callable[[Any], dict[str, Any]] | None:
    """The registered report writer of (experiment, kind), or None when it has none."""
    spec = _WRITERS.get((experiment, kind))
    if spec is None:
        return None
    module, attr = spec.split(":")
    write = getattr(importlib.import_module(module), attr)
    from critwin.report.figcache import figure_cache

    @functools.wraps(write)
    def cached_write(run: Any) -> dict[str, Any]:
        with figure_cache(run.path):
            return write(run)

    return cached_write
