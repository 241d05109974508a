"""`critwin report RUN_DIR` and `critwin repair RUN_DIR`: re-draw a run's report from its raw records,
without any model, healing what was damaged on the way."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin.cli.app import app, emit_json, log


def _rebuild(run_dir: Path, full_check: bool = False):
    from critwin.report.rebuild import missing_line, rebuild_run
    from critwin.rundir import RunDir

    run = RunDir.open(run_dir, full_check=full_check)
    rebuilt = rebuild_run(run)
    for line in rebuilt.healed:
        log(f"repaired: {line}")
    note = missing_line(rebuilt, run.path)
    if note:
        log(note)
    return run, rebuilt


@app.command("report", short_help="Re-draw a run's report from its raw records.")
def report(
    run_dir: Path = typer.Argument(..., help="A folder written by a critwin run (holds config.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the summary) on stdout."),
) -> None:
    """Rewrite RUN_DIR/index.html and RUN_DIR/summary.json (and every other derived file) from the run's
    raw records."""
    run, rebuilt = _rebuild(run_dir)
    index = run.path / "index.html"
    if as_json:
        emit_json({"index": str(index), **rebuilt.summary})
        return
    log(f"report of {len(rebuilt.summary.get('cases', []))} case(s) written")
    print(index)


@app.command("repair", short_help="Heal a damaged run directory.")
def repair(
    run_dir: Path = typer.Argument(..., help="A folder written by a critwin run (holds config.json)."),
    as_json: bool = typer.Option(
        False, "--json", help='Print {"run_dir", "index", "healed": [...], "missing": [...]} on stdout.'
    ),
) -> None:
    """Heal a damaged run directory: move unreadable files to RUN_DIR/damaged/, restore config.json from its
    copy, upgrade a run written in an older format (2) in place, rebuild curves, windows, summaries and the
    report from the raw records, and list the cases that need the model again (rerun the run's command with
    the same --out to compute just those)."""
    run, rebuilt = _rebuild(run_dir, full_check=True)
    index = run.path / "index.html"
    if as_json:
        emit_json({"run_dir": str(run.path), "index": str(index), "healed": rebuilt.healed,
                   "missing": rebuilt.missing})
        return
    if not rebuilt.healed and not rebuilt.missing:
        log(f"{run.path}: nothing was damaged; derived files rebuilt")
    print(index)
