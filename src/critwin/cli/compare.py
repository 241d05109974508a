"""`critwin compare RUN...`: the methods of several reasoning runs side by side (no model needed)."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin.cli.app import app, emit_json, log


@app.command("compare", short_help="Compare where the methods of several runs place the decisive step.")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Reasoning run directories (critwin scan, critical-tokens, "
                                      "pivotal) of one model on the same problems."),
    tolerance: int = typer.Option(3, "--tolerance", help="Tokens of slack when comparing positions."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the comparison) on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Folder for an HTML report (index.html) and "
                                    "comparison.json: new, empty, or an earlier compare report to rewrite."),
) -> None:
    """Where each method places the decisive step of the same problems (window, critical token, most
    harmful pivotal token), how often each pair agrees (within --tolerance tokens), how often each sits at
    the first wrong step (running-sum task), and the draws each spent; with --out also as an HTML page."""
    from critwin.errors import CritwinError

    if tolerance < 0:
        raise CritwinError(f"--tolerance {tolerance}: use a whole number >= 0")
    if out is not None:
        from critwin.report.compare import check_out

        check_out(out)  # before reading any run: a bad --out costs nothing and writes nothing
    from critwin.experiments.compare import compare_runs

    result = compare_runs(runs, tolerance)
    index = None
    if out is not None:
        from critwin.report.compare import write_compare_report

        index = write_compare_report(result, runs, out)
    if as_json:
        emit_json(result if index is None else {**result, "index": str(index)})
        return

    def fmt(share: dict) -> str:
        if share["rate"] is None:
            return "—"
        return f"{share['rate']:.2f} [{share['ci'][0]:.2f}, {share['ci'][1]:.2f}] of {share['n']}"

    log(f"{result['n_problems']} problems in common")
    for name, m in result["methods"].items():
        log(f"{name}: a position in {m['n_with_position']} problems; at the first wrong step "
            f"{fmt(m['at_first_error'])}; {m['mean_draws']:.0f} draws per problem")
    for pair, share in result["agreement"].items():
        log(f"{pair}: agree {fmt(share)}")
    if index is not None:
        log(f"report: {index}")
