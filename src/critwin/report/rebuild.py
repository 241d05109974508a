"""Rebuild every derived file of a run directory from its raw records, then re-draw the report.

Raw records (config.json, samples and experiment parts, case records, record streams) are what a run wrote
as it went; everything else (curves.parquet, windows.json, the experiments' summaries, index.html,
summary.json) is recomputed here, so a damaged or deleted derived file heals without the model, and the
re-drawn report equals the one the run wrote (`critwin report`, `critwin repair`). Cases whose raw records
were damaged cannot be recomputed without the model: they are listed, and rerunning the run's command
computes just those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critwin.rundir import RunDir


@dataclass
class Rebuilt:
    """What `rebuild_run` did: the report summary, the repairs `RunDir.open` made, and the cases (or units
    of work) that are missing and need the run's command to be rerun."""

    summary: dict[str, Any]
    healed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def rebuild_run(run: RunDir) -> Rebuilt:
    """Recompute the derived files of `run` (see the module docstring) and write its report."""
    from critwin.report.build import write_report
    from critwin.report.reasoning import write_report as write_reasoning_report

    run.sync_derived()
    experiment = run.config.get("experiment")
    if experiment == "reasoning":  # its summary has per-dataset numbers only its own writer computes
        return Rebuilt(write_reasoning_report(run), list(run.healed), sorted(run.damaged_cases))
    if experiment == "jailbreak":  # the writers the driver calls at the end of a run: one code path
        from critwin.report import writers
        from critwin.report.jailbreak import missing_units

        write = writers.get("jailbreak", run.config.get("kind"))
        if write is not None:
            summary = write(run)
            missing = missing_units(run)
            return Rebuilt(summary, list(run.healed), missing)
    if experiment == "structured":  # the writer the driver calls at the end of a run
        from critwin.experiments.structured import missing_outputs
        from critwin.report.structured import write_report as write_structured_report

        return Rebuilt(write_structured_report(run), list(run.healed), missing_outputs(run))
    rebuild = {"demo": _demo}.get(experiment)
    missing = sorted(run.damaged_cases) if rebuild is None else rebuild(run)
    return Rebuilt(write_report(run), list(run.healed), missing)


def _demo(run: RunDir) -> list[str]:
    """Re-derive the demo's "reasoning" numbers from its reasoning sub-run (rebuilt itself first)."""
    from critwin.experiments.demo import set_json_key
    from critwin.experiments.reasoning import demo_numbers
    from critwin.report.reasoning import write_report as write_reasoning_report

    sub = run.path / "reasoning"
    if (sub / "config.json").is_file():
        numbers = {**demo_numbers(write_reasoning_report(RunDir.open(sub))), "out": "reasoning"}
        set_json_key(run.path / "summary.json", "reasoning", numbers)
    return sorted(run.damaged_cases)


def missing_line(rebuilt: Rebuilt, path: Path) -> str | None:
    """One line for the user about cases that need the model again, or None."""
    n = len(rebuilt.missing)
    if not n:
        return None
    return (f"{n} case(s) of {path} lost raw records and need the model: rerun the command that made the run "
            "with the same --out to compute just those")
