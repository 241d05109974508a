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


def _missing(run: RunDir) -> list[str]:
    """The cases of `run` that lost raw records and need the model again."""
    experiment = run.config.get("experiment")
    if experiment == "jailbreak":
        from critwin.report.jailbreak import missing_units

        return missing_units(run)
    if experiment == "structured":
        from critwin.experiments.structured import missing_outputs

        return missing_outputs(run)
    return sorted(run.damaged_cases)


def rebuild_run(run: RunDir) -> Rebuilt:
    """Recompute the derived files of `run` (see the module docstring) and write its report: with the
    writer the driver calls at the end of a run of that experiment (one code path), else the generic one."""
    from critwin.report import writer_for
    from critwin.report.build import write_report

    run.sync_derived()
    if run.config.get("experiment") == "demo":
        _demo(run)  # first: the demo's report keeps the "reasoning" key this sets
    write = writer_for(run.config.get("experiment"), run.config.get("kind"))
    summary = write(run) if write is not None else write_report(run)
    return Rebuilt(summary, list(run.healed), _missing(run))


def _demo(run: RunDir) -> None:
    """Re-derive the demo's "reasoning" numbers from its reasoning sub-run (rebuilt itself first)."""
    from critwin.experiments.demo import set_json_key
    from critwin.experiments.reasoning import demo_numbers
    from critwin.report import writer_for

    write_reasoning_report = writer_for("reasoning")
    sub = run.path / "reasoning"
    if (sub / "config.json").is_file():
        numbers = {**demo_numbers(write_reasoning_report(RunDir.open(sub))), "out": "reasoning"}
        set_json_key(run.path / "summary.json", "reasoning", numbers)


def missing_line(rebuilt: Rebuilt, path: Path) -> str | None:
    """One line for the user about cases that need the model again, or None."""
    n = len(rebuilt.missing)
    if not n:
        return None
    return (f"{n} case(s) of {path} lost raw records and need the model: rerun the command that made the run "
            "with the same --out to compute just those")
