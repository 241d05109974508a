"""`critwin demo`: both exact testbeds, measured against exact truth and the theory, as an HTML report."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer

from critwin.cli import checks
from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError


@app.command("demo", short_help="The built-in demo: exact testbeds and the bundled model.")
def demo(
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the run (new or empty); default: a fresh temporary folder, printed."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw (same seed, same files)."),
    n: int = typer.Option(200, "--n", help="Resamples per forward time t (Gaussian cases)."),
    n_language: int = typer.Option(2000, "--n-language", help="Resamples per t for the language cases."),
    reasoning: bool = typer.Option(
        True, "--reasoning/--no-reasoning", help="Also scan the bundled reasoning model (about 20 s)."
    ),
    diffusion: bool = typer.Option(
        True, "--diffusion/--no-diffusion", help="Also scan the bundled digit diffusion model (about 2 min)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Run the built-in demo (exact testbeds + bundled reasoning model); write index.html and summary.json."""
    # Check the arguments before the (slow) scientific imports so that mistakes fail fast.
    for flag, value in (("--n", n), ("--n-language", n_language)):
        if value < 1:
            raise CritwinError(f"{flag} {value}: use a whole number >= 1 (resamples per t)")
    if seed < 0:
        raise CritwinError(f"--seed {seed}: use a whole number >= 0")
    if out is not None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise CritwinError(f"--out {out} exists and is not an empty folder; choose a new folder")
        checks.out_dir(out, "demo")
    from critwin.demo import run_demo
    from critwin.report.demo import format_rate

    folder = Path(tempfile.mkdtemp(prefix="critwin-demo-")) if out is None else out
    log(f"critwin demo: writing to {folder}")
    start = time.perf_counter()
    summary = run_demo(
        folder,
        seed=seed,
        n=n,
        n_language=n_language,
        progress=True,
        log=log,
        reasoning=reasoning,
        diffusion=diffusion,
    )
    seconds = time.perf_counter() - start
    index = folder / "index.html"
    if as_json:
        emit_json({"out": str(folder), "index": str(index), "seconds": seconds, **summary})
        return
    for case in summary["cases"]:
        cov = case["coverage"]
        log(
            f"  {case['name']:<32} theory {_pairs(case['theory_windows'])}  detected "
            f"{_pairs(case['detected_windows'])}  coverage {'—' if cov is None else f'{cov:.0%}'}"
        )
    r = summary.get("reasoning")
    if r:
        log(
            f"  reasoning (bundled model)        {r['n_problems']} problems, accuracy {r['accuracy']:.2f}, "
            f"window at first wrong step {format_rate(r['window_at_first_error_rate'])} "
            f"(of {r['n_problems_with_window']} with a window)"
        )
    log(f"done in {seconds:.1f} s")
    print(index)


def _pairs(pairs: list[list[float | None]]) -> str:
    return (
        "["
        + ", ".join("[" + ", ".join("inf" if v is None else f"{v:g}" for v in p) + "]" for p in pairs)
        + "]"
        if pairs
        else "none"
    )
