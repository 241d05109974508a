"""The built-in demo (`critwin demo`, `make demo`): the exact-testbed experiment, the reasoning scan of
the bundled model and the diffusion scan of the bundled digit DDPM, one run directory and one report.

The testbed cases go to `out/` (`critwin.experiments.demo.DemoExperiment`); the reasoning scan to its own
run directory `out/reasoning/` (`critwin.experiments.reasoning.demo_experiment`), whose numbers appear in
summary.json under "reasoning" and in the report; the diffusion scan
(`critwin.experiments.diffusion.DiffusionExperiment`) to `out/diffusion/`, its cases under "diffusion".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from critwin.driver import run
from critwin.experiments import reasoning as R
from critwin.experiments.demo import LEVEL, DemoExperiment, set_json_key
from critwin.experiments.diffusion import DiffusionExperiment
from critwin.report.build import write_report
from critwin.rundir import RunDir


def run_reasoning_demo(
    out: str | Path, seed: int = 0, progress: bool = False, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The reasoning scan of the bundled model on the bundled running-sum problems into `out`; returns the
    numbers for the demo's summary.json (`reasoning.demo_numbers`) and the run's seconds."""
    experiment = R.demo_experiment(seed)
    # The sampler picks its thread count by measurement ("auto"): one thread for the tiny bundled model.
    factory = R.lm_factory("hf", R.BUNDLED_MODEL, experiment, device="cpu")
    res = run(experiment, factory=factory, out=out, progress=progress, log=log)
    return {"out": str(res.out), **R.demo_numbers(res.summary), "seconds": res.seconds}


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    n: int = 200,
    n_language: int = 2000,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    reasoning: bool = True,
    diffusion: bool | dict[str, Any] = True,
) -> dict[str, Any]:
    """Run every demo case into the run directory `out` (new or empty) and write its report; with
    `reasoning`, also the bundled reasoning scan into `out/reasoning/`; with `diffusion` (True, or the
    `DiffusionExperiment` settings as a dict), the digit DDPM's scan into `out/diffusion/`. Returns the
    summary ({"cases": [...]}, windows in forward time t; "reasoning", "diffusion": their numbers)."""
    experiment = DemoExperiment(seed, n, n_language)
    res = run(experiment, out=out, report=False, progress=progress, log=log)
    if reasoning:
        if log:
            log("reasoning scan of the bundled model …")
        result = run_reasoning_demo(res.out / "reasoning", seed=seed, progress=progress, log=log)
        result.pop("seconds", None)  # wall time would make same-seed runs differ
        result["out"] = "reasoning"
        set_json_key(res.out / "summary.json", "reasoning", result)
    if diffusion:
        if log:
            log("diffusion scan of the bundled digit model …")
        exp = DiffusionExperiment(seed=seed, **({} if diffusion is True else diffusion))
        done = run(exp, factory=exp.sampler, out=res.out / "diffusion", progress=progress, log=log)
        set_json_key(
            res.out / "summary.json", "diffusion", {"out": "diffusion", **done.summary.get("diffusion", {})}
        )
    if log:
        log("drawing the report …")
    return write_report(RunDir.open(res.out), LEVEL)
