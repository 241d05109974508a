"""`critwin theory SPEC`: window edges, bounds and widths of a mixture, with a plot; `critwin theory demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin.cli import checks
from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError

PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")
"""Plot file types matplotlib writes without extra packages."""

SPEC_HELP = """Mixture spec (JSON or YAML), or 'demo' for the built-in example. Minimal form:
{"mixture": {"kind": "gaussian", "means": [[0, 0], [1, 0], [20, 0]], "variances": [1, 1, 1],
"weights": [0.25, 0.25, 0.5]}, "process": "ou", "eps": 0.1, "pairs": [{"targ": [0], "init": [0, 1]}]}.
Optional: "labels", "chain" (nested sets, innermost first), "seed", "se_target"; discrete mixtures with
"kind": "discrete", "components" and "process": "truncation" | "masking"."""


def _floats(text: str, field: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise CritwinError(f"{field}: must be numbers separated by commas, got {text!r}") from None


def _flag_spec(
    means: str,
    variances: str | None,
    weights: str | None,
    pairs: list[str],
    eps: float | None,
    seed: int,
    se_target: float,
):
    from critwin.theory.spec import gaussian_spec

    rows = [_floats(r, "--means") for r in means.split(";") if r.strip()]
    if not rows:
        raise CritwinError('--means: give one mean per component, e.g. "0,0; 1,0; 20,0"')
    k = len(rows)
    var = _floats(variances, "--variances") if variances else [1.0] * k
    w = _floats(weights, "--weights") if weights else [1.0 / k] * k
    parsed = []
    for p in pairs or ["0:" + ",".join(str(i) for i in range(min(2, k)))]:
        if ":" not in p:
            raise CritwinError(f'--pair: use TARG:INIT with comma-separated indices, e.g. "0:0,1"; got {p!r}')
        a, b = p.split(":", 1)
        try:
            parsed.append(
                ([int(x) for x in a.split(",") if x.strip()], [int(x) for x in b.split(",") if x.strip()])
            )
        except ValueError:
            raise CritwinError(f'--pair: indices must be integers, e.g. "0:0,1"; got {p!r}') from None
    return gaussian_spec(rows, var, w, parsed, 0.1 if eps is None else eps, seed=seed, se_target=se_target)


def _number(text: str | None, field: str, kind: type) -> float | int | None:
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise CritwinError(
            f"{field}: must be {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


@app.command("theory", short_help="Window edges, bounds and widths of a mixture.")
def theory(
    spec: str = typer.Argument(None, help=SPEC_HELP, show_default=False),
    json_out: bool = typer.Option(
        False, "--json", help='Print one JSON object {"results": [...]} on stdout.'
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Plot file (.png/.svg/.pdf); for 'demo' the HTML page. "
        "Default: theory_windows.png (theory_demo.html for demo).",
    ),
    no_plot: bool = typer.Option(False, "--no-plot", help="Skip the plot."),
    means: str = typer.Option(
        None, "--means", help='Gaussian means instead of a SPEC, e.g. "0,0; 1,0; 20,0".'
    ),
    variances: str = typer.Option(
        None, "--variances", help="Isotropic variances, e.g. 1,1,1 (default all 1)."
    ),
    weights: str = typer.Option(None, "--weights", help="Weights, e.g. 0.25,0.25,0.5 (default uniform)."),
    pair: list[str] = typer.Option(
        None, "--pair", metavar="TARG:INIT", help='TARG:INIT index lists, e.g. "0:0,1" (repeatable).'
    ),
    # Numbers are parsed here (not by typer) so that a bad value gets the usual one-line error and exit 2.
    eps_text: str = typer.Option(None, "--eps", metavar="NUMBER", help="ε in (0, 1) (overrides the spec's)."),
    seed_text: str = typer.Option(
        None, "--seed", metavar="INT", help="Seed of Monte Carlo estimates (overrides the spec's; default 0)."
    ),
    se_text: str = typer.Option(
        None,
        "--se-target",
        metavar="NUMBER",
        help="Monte Carlo standard-error target per TV (overrides the spec's; default 0.005).",
    ),
) -> None:
    """Window edges T_before/T_after, the theorem's bound and window widths of a mixture; TV-curve plot."""
    from dataclasses import replace

    from critwin.theory.mixtures import check_eps
    from critwin.theory.spec import evaluate, evaluate_chain, load_spec, result_json

    eps = _number(eps_text, "--eps", float)
    seed = _number(seed_text, "--seed", int)
    se_target = _number(se_text, "--se-target", float)
    if eps is not None and not 0 < eps < 1:
        raise CritwinError(f"--eps {eps_text}: use a number strictly between 0 and 1, e.g. 0.1")
    demo = spec == "demo" and means is None
    # The output file is checked before any evaluation, so that a bad name costs nothing.
    if demo:
        checks.out_file(out or Path("theory_demo.html"), "--out", (".html", ".htm"), "theory_demo.html")
    elif not no_plot:
        checks.out_file(out or Path("theory_windows.png"), "--out", PLOT_SUFFIXES, "theory_windows.png")

    if demo:
        from critwin.theory.demo import write_demo_page

        page, results = write_demo_page(out or Path("theory_demo.html"))
        from critwin.theory.demo import demo_spec

        parsed = demo_spec()
        log(f"wrote {page}")
    else:
        if means is not None:
            if spec is not None:
                raise CritwinError("SPEC: give either a spec file or --means, not both")
            parsed = _flag_spec(means, variances, weights, pair, eps, seed or 0, se_target or 0.005)
        elif spec is None:
            raise CritwinError("SPEC: missing; give a JSON/YAML spec file, 'demo', or --means (see --help)")
        else:
            parsed = load_spec(spec)
            if eps is not None:
                parsed = replace(parsed, eps=check_eps(eps))
            if seed is not None:
                parsed = replace(parsed, seed=seed)
            if se_target is not None:
                if not 0 < se_target < 0.5:
                    raise CritwinError(f"--se-target: must lie in (0, 0.5), got {se_target:g}; e.g. 0.005")
                parsed = replace(parsed, se_target=se_target)
        results = evaluate(parsed)
        if not no_plot:
            from critwin.theory.plot import plot_windows

            path = plot_windows(parsed, results, out or Path("theory_windows.png"))
            log(f"wrote {path}")
    records = [result_json(parsed.mixture, r) for r in results]
    if json_out:
        emit_json({"results": records})
        return
    _print_table(parsed, results)
    for i, w in enumerate(evaluate_chain(parsed)):
        mix = parsed.mixture
        print(
            f"staircase step {i + 1}: {mix.describe(w.targ)} inside {mix.describe(w.init)}: "
            f"[{_t(w.lo)}, {_t(w.hi)}]"
        )


def _t(e) -> str:
    if e is None:
        return "none"
    return f"{e.t:.4g}" if e.exact else f"{e.t:.4g} (in [{e.lo:.4g}, {e.hi:.4g}])"


def _print_table(parsed, results) -> None:
    from rich.console import Console
    from rich.table import Table

    from critwin.theory.demo import TABLE_HEADER, table_rows

    table = Table(title=f"critical windows (ε = {parsed.eps:g}, time unit: {parsed.mixture.time_unit})")
    for h in TABLE_HEADER:
        table.add_column(h)
    for row in table_rows(parsed, results):
        table.add_row(*row)
    Console(width=140).print(table)
