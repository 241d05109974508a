"""`critwin testbed SPEC`: scan an exact testbed defined by a theory spec with any strategy, and grade the
detected windows and the intervals against the theory's windows and the exact curve."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from critwin.cli import checks
from critwin.cli.app import app, emit_json, log
from critwin.cli.theory import SPEC_HELP
from critwin.errors import CritwinError


@app.command("testbed", short_help="Scan an exact testbed from a theory spec; grade it.")
def testbed(
    spec: str = typer.Argument(None, help=SPEC_HELP, show_default=False),
    strategy: str = typer.Option(
        "adaptive",
        "--strategy",
        help="Where and how often to draw: fixed (--draws at every point of the grid), adaptive (more draws "
        "where a drop is undecided, bisection down to the resolution; intervals become confidence "
        "sequences), bisect (PTS) or every-prefix (--draws at every unit).",
    ),
    budget: int = checks.BUDGET,
    n_min: int = checks.N_MIN,
    n_max: int = checks.N_MAX,
    draws: int = typer.Option(
        64, "-n", "--draws", help="Draws per point of fixed, bisect and every-prefix."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the scanned sample and of every draw."),
    sampler: str = typer.Option(
        None,
        "--sampler",
        help="Gaussian mixtures: posterior (exact, default) or ddpm (numerical, exact score); discrete "
        "mixtures are sampled exactly.",
        show_default=False,
    ),
    level: float = typer.Option(0.99, "--level", help="Confidence level of the window rule and intervals."),
    min_jump: float = typer.Option(0.2, "--min-jump", help="Smallest drop of P(kept) reported as a window."),
    t_max: float = typer.Option(
        None,
        "--t-max",
        help="Last forward time scanned: OU time (default 10) or masking time (default 6); truncation "
        "scans every token 0..L.",
        show_default=False,
    ),
    n_mc: int = typer.Option(
        20_000,
        "--n-mc",
        help="Monte Carlo draws per t of the exact curve of Gaussian mixtures without quadrature.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Run folder (new, empty, or this run to resume): stores the draws, curve and report "
        "(critwin report RUN re-draws it). Default: nothing is stored.",
        show_default=False,
    ),
    json_out: bool = typer.Option(
        False,
        "--json",
        help='Print one JSON object {"theory_windows", "detected_windows", "draws", "coverage", '
        '"strategy", ...} on stdout.',
    ),
) -> None:
    """Scan the exact testbed of SPEC (a Gaussian mixture under OU, or a discrete sequence mixture under
    truncation or masking) and compare: the theory's windows, the detected windows, the draws used and the
    coverage of the exact curve by the reported intervals."""
    from critwin.experiments.testbed import TestbedExperiment, result_of
    from critwin.theory.spec import load_spec

    # Every option is checked before the theory or any draw, so that a mistake costs nothing.
    settings = checks.search(strategy, budget, n_min, n_max)
    for flag, value in (("--level", level), ("--min-jump", min_jump), ("--t-max", t_max)):
        if value is not None and not math.isfinite(value):
            raise CritwinError(f"{flag} {value}: use a finite number")
    if spec is None:
        raise CritwinError("SPEC: missing; give a JSON/YAML spec file (see 'critwin theory --help') or demo")
    if out is not None:
        checks.out_dir(out, "testbed")
    if spec == "demo":
        from critwin.theory.demo import demo_spec

        parsed, label = demo_spec(), "demo"
    else:
        parsed, label = load_spec(spec), Path(spec).name
    experiment = TestbedExperiment(
        parsed, settings, n=draws, seed=seed, method=sampler, t_max=t_max, level=level, min_jump=min_jump,
        n_mc=n_mc, label=label,
    )
    if out is None:
        from critwin.seeds import case_rng

        (case,) = experiment.cases()
        res = experiment.run_case(experiment.sampler(), case, case_rng(seed, case.id))
        result = result_of(dict(res.record))
    else:
        result = _run_into(experiment, out)
    if json_out:
        if result["note"]:
            log(f"note: {result['note']}")
        emit_json(result)
        return
    _print_summary(label, result)


def _run_into(experiment: Any, out: Path) -> dict[str, Any]:
    """Run the experiment into the run folder `out` (resumed when it holds this run) and write its report;
    the command's JSON object, with "run_dir" and "index" added."""
    from critwin.driver import latest_records, records_stream, run
    from critwin.experiments.testbed import CASE_ID, result_of
    from critwin.report.build import write_report
    from critwin.rundir import RunDir

    done = run(experiment, experiment.sampler(), out=out, log=log)
    rundir = RunDir.open(done.out)
    write_report(rundir)
    record = latest_records(rundir, records_stream(experiment)).get(CASE_ID)
    if record is None:
        raise CritwinError(f"--out {out}: the testbed case left no record; rerun the same command")
    return {**result_of(record), "run_dir": str(done.out), "index": str(done.out / "index.html")}


def _pairs(pairs: list[list[float | None]], unit: str) -> str:
    if not pairs:
        return "none"
    digits = 0 if unit == "tokens" else 2

    def num(v: float | None, open_end: str) -> str:
        return open_end if v is None else f"{v:.{digits}f}"

    return ", ".join(f"[{num(a, '-inf')}, {num(b, 'inf')}]" for a, b in pairs)


def _print_summary(label: str, r: dict[str, Any]) -> None:
    unit = r["time_unit"]
    cov = r["coverage"]
    recall = r["recall"]
    lines = [
        f"testbed {label}: {r['sampler']} sampler, t in {unit} time up to {r['t_max']:g}, "
        f"chain {' ⊂ '.join('{' + ', '.join(s) + '}' for s in r['chain'])}",
        f"strategy {r['strategy']}: {r['draws']} draws at {len(r['points'])} points",
        f"theory windows:   {_pairs(r['theory_windows'], unit)}",
        f"detected windows: {_pairs(r['detected_windows'], unit)} (level {r['level']:g}, "
        f"min jump {r['min_jump']:g})",
        f"recall {'—' if recall is None else f'{recall:.2f}'}, false windows {r['false_windows']}; "
        f"coverage of the exact curve ({r['exact_method']}) "
        f"{'—' if cov is None else f'{cov:.1%}'} ({r['interval']} intervals)",
    ]
    if r.get("note"):
        lines.append(f"note: {r['note']}")
    if r.get("index"):
        lines.append(f"report: {r['index']}")
    print("\n".join(lines))
