"""`critwin report RUN_DIR`: re-draw a run's report from its files, without any model."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin.cli.app import app, emit_json, log


@app.command("report")
def report(
    run_dir: Path = typer.Argument(..., help="A folder written by a critwin run (holds config.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the summary) on stdout."),
) -> None:
    """Rewrite RUN_DIR/index.html and RUN_DIR/summary.json from the stored curves and windows."""
    from critwin.report.build import write_report
    from critwin.rundir import RunDir

    run = RunDir.open(run_dir)
    summary = write_report(run)
    index = run.path / "index.html"
    if as_json:
        emit_json({"index": str(index), **summary})
        return
    log(f"report of {len(summary['cases'])} case(s) written")
    print(index)
