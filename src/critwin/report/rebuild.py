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

from critwin.rundir import RunDir, write_json
from critwin.serialize import jsonable


@dataclass
class Rebuilt:
    """What `rebuild_run` did: the report summary, the repairs `RunDir.open` made, and the cases (or units
    of work) that are missing and need the run's command to be rerun."""

    summary: dict[str, Any]
    healed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def rebuild_run(run: RunDir) -> Rebuilt:
    """Recompute the derived files of `run` (see the module docstring) and write its report."""
    from critwin.experiments.reasoning import write_reasoning_report
    from critwin.report.build import write_report

    run.sync_derived()
    experiment = run.config.get("experiment")
    if experiment == "reasoning":  # its summary has per-dataset numbers only its own writer computes
        return Rebuilt(write_reasoning_report(run), list(run.healed), sorted(run.damaged_cases))
    if experiment == "jailbreak":
        rebuild = _JAILBREAK.get(run.config.get("kind"))
    else:
        rebuild = {"structured": _structured, "demo": _demo}.get(experiment)
    missing = sorted(run.damaged_cases) if rebuild is None else rebuild(run)
    return Rebuilt(write_report(run), list(run.healed), missing)


def _structured(run: RunDir) -> list[str]:
    """Redo the analysis of the stored outputs once all of them are drawn (an analysis of some of them
    would be a different result); else say how many are missing."""
    from critwin.experiments import structured as S

    frame = run.read_parts(S.OUTPUTS_TABLE)
    have, want = (0 if frame is None else len(frame)), int(run.config.get("n", 0))
    if frame is None or (want and have < want):
        return [f"outputs ({have} of {want} drawn)"]
    template, outputs = S.read_run(run)
    cfg = run.config
    result = S.analyze(outputs, template, top=int(cfg.get("top", 8)), min_count=int(cfg.get("min_count", 1)),
                       equality=cfg.get("equality", "choices"))
    S.write_run(result, run)
    return []


def _stored_frames(run: RunDir, names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The judged draws of every finished unit by name, and the names of those that are not."""
    from critwin.experiments.jailbreak import stored_draws

    frames = {name: df for name in names if (df := stored_draws(run, name)) is not None}
    return frames, [name for name in names if name not in frames]


def _prefill(run: RunDir) -> list[str]:
    import pandas as pd

    from critwin.experiments import jailbreak as J

    cases = [J.AttackCase(**c) for c in run.config.get("cases", [])]
    frames, missing = _stored_frames(run, [c.id for c in cases])
    if frames:
        results = []
        for c in cases:
            if c.id in frames:
                rec = run.case(c.id)
                unit = rec.meta.get("unit", run.config.get("unit"))
                results.append(J.CaseCurve(c, unit, int(rec.meta["length"]), rec.curve, tuple(rec.detected)))
        summary = J.prefill_summary(results, pd.concat(frames.values(), ignore_index=True))
        write_json(run.path / "jailbreak.json", jsonable(summary), indent=1)
    return missing


def _repeat(run: RunDir) -> list[str]:
    import pandas as pd

    from critwin.experiments import jailbreak as J
    from critwin.rundir import atomic_write

    cfg = run.config
    words = [w.strip() for w in str(cfg.get("words", "")).split(",") if w.strip()]
    names = [J.repeat_case_name(i, w) for i in range(len(cfg.get("requests", []))) for w in words]
    frames, missing = _stored_frames(run, names)
    if frames:
        table = J.grid_table(pd.concat(frames.values(), ignore_index=True))
        atomic_write(run.path / "repeat_grid.csv", lambda p: table.to_csv(p, index=False))
    return missing


def _detect(run: RunDir) -> list[str]:
    from critwin.experiments import jailbreak_detect as D

    table = run.read_parts(D.SCORES)
    if table is None:
        return ["scores"]
    tokens = run.read_parts(D.TOKENS)
    cfg = run.config
    metrics = D.evaluate(table, n_boot=int(cfg.get("n_boot", 1000)), level=float(cfg.get("level", 0.95)),
                         seed=int(cfg.get("seed", 0)), negatives=cfg.get("negatives", "auto"))
    D.write_detect_run(D.ScoredSet(table, tokens), metrics, run)
    return []


_JAILBREAK = {"prefill": _prefill, "repeat": _repeat, "detect": _detect}


def _demo(run: RunDir) -> list[str]:
    """Re-derive the demo's "reasoning" numbers from its reasoning sub-run (rebuilt itself first)."""
    from critwin.experiments.demo import set_json_key
    from critwin.experiments.reasoning import demo_numbers, write_reasoning_report

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
