"""The report of `critwin compare RUN... --out DIR`: DIR/index.html (one self-contained page) and
DIR/comparison.json (the dict `critwin.experiments.compare.compare_runs` returns).

The page shows the methods (rate at the first wrong step with its Wilson interval, draws per problem) as a
table and a figure, the pairwise agreement, each problem's spans and links to every compared run's own
report. Its figure is drawn through the figure cache in DIR/.critwin/figures, so rewriting the report of
unchanged runs reuses it.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import matplotlib.pyplot as plt
import numpy as np

from critwin.errors import CritwinError
from critwin.experiments.compare import LEVEL
from critwin.files import check_writable_in, check_writable_parent
from critwin.report.figcache import cached, figure_cache
from critwin.report.html import Figure, Section, Table, render_html
from critwin.report.plots import MEASURED_COLOUR, bar_labels, png_bytes
from critwin.rundir import atomic_write, write_json

COMPARISON = "comparison.json"
INDEX = "index.html"
DRAWS_COLOUR = "#7f8c8d"


def check_out(out: Path, flag: str = "--out") -> None:
    """Refuse (CritwinError) an `out` that cannot hold a compare report: a file, a folder we cannot write
    in, or a non-empty folder that is not an earlier compare report (one holding comparison.json)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CritwinError(f"{flag} {out} is a file; choose a folder")
    if not out.exists():
        check_writable_parent(out, flag)
        return
    if any(out.iterdir()) and not (out / COMPARISON).is_file():
        raise CritwinError(
            f"{flag} {out} exists and is not a critwin compare report; choose a new or empty folder"
        )
    check_writable_in(out, out, flag)


def fmt_share(share: Mapping[str, Any]) -> str | None:
    """A share as "rate [lo, hi]" (two decimals); None (an em dash on the page) when nothing was judged."""
    if share["rate"] is None:
        return None
    return f"{share['rate']:.2f} [{share['ci'][0]:.2f}, {share['ci'][1]:.2f}]"


def fmt_span(span: Sequence[int] | None) -> str | None:
    """A token span as "[kept_lo, kept_hi)"; None when the method placed none."""
    return None if span is None else f"[{span[0]}, {span[1]})"


@cached
def methods_figure(
    names: Sequence[str],
    rates: Sequence[float | None],
    cis: Sequence[Sequence[float] | None],
    draws: Sequence[float],
    level: float = LEVEL,
) -> bytes:
    """Per method: the rate at the first wrong step with its Wilson interval (left; "n/a" where no wrong
    chain was judged) and the mean draws per problem on a log scale (right)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.6, 3.8), layout="constrained")
    x = np.arange(len(names))
    rate = np.array([np.nan if r is None else r for r in rates], float)
    # max(0, ·): a Wilson end at 0 or 1 can sit a rounding hair past the estimate.
    lo = [0.0 if r is None or ci is None else max(0.0, r - ci[0]) for r, ci in zip(rates, cis, strict=True)]
    hi = [0.0 if r is None or ci is None else max(0.0, ci[1] - r) for r, ci in zip(rates, cis, strict=True)]
    ax.errorbar(x, rate, yerr=[lo, hi], fmt="o", ms=5, color=MEASURED_COLOUR, capsize=3, elinewidth=1)
    bar_labels(ax, list(x), list(rates), fontsize=7.5, at=[v + h for v, h in zip(rate, hi, strict=True)])
    ax.set_ylim(-0.05, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel(f"at the first wrong step ({level:.0%} Wilson)")
    d = np.asarray(draws, float)
    pos = d > 0
    # A log axis cannot show 0 draws: those bars are left out and only their value is printed.
    bx.bar(x[pos], d[pos], 0.6, color=DRAWS_COLOUR)
    if pos.any():
        bx.set_yscale("log")
        bx.set_ylim(d[pos].min() / 3, d[pos].max() * 4)
    for xi, v in zip(x, d, strict=True):
        bx.annotate(
            f"{v:.0f}",
            (xi, v if v > 0 else (d[pos].min() / 3 if pos.any() else 0)),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7.5,
        )
    bx.set_ylabel("mean draws per problem (log scale)")
    long = any(len(n) > 10 for n in names)
    for a in (ax, bx):
        a.set_xticks(x, names, fontsize=8.5, rotation=25 if long else 0, ha="right" if long else "center")
        a.set_xlim(-0.6, len(names) - 0.4)
        a.grid(axis="y", alpha=0.25)
    return png_bytes(fig)


def _links(runs: Sequence[Path], methods: Mapping[str, Mapping[str, Any]], out: Path) -> str:
    """A list of links, relative to `out`, to each run's own index.html, with the methods it gave."""
    items = []
    for run in runs:
        names = [m for m, e in methods.items() if e["run"] == str(run)]
        gave = ", ".join(names) if names else "no method with a position"
        page = run / INDEX
        # Relative links keep working when DIR and the runs are moved or served together.
        href = quote(Path(os.path.relpath(page.absolute(), out.absolute())).as_posix())
        note = (
            ""
            if page.is_file()
            else (f" (no report yet: draw it with <code>critwin report {html.escape(str(run))}</code>)")
        )
        items.append(
            f'<li><a href="{html.escape(href)}">{html.escape(str(run))}</a>: {html.escape(gave)}{note}</li>'
        )
    return "<ul>" + "".join(items) + "</ul>"


def compare_sections(result: Mapping[str, Any], runs: Sequence[Path], out: Path) -> list[Section]:
    """The sections of the compare page: methods (table and figure), agreement, problems, runs."""
    methods = result["methods"]
    tol = result["tolerance_tokens"]
    names = list(methods)
    rows = [
        [
            name,
            m["run"],
            m["n_with_position"],
            fmt_share(m["at_first_error"]),
            m["at_first_error"]["n"],
            f"{m['mean_draws']:.1f}",
        ]
        for name, m in methods.items()
    ]
    table = Table(
        [
            "method",
            "run",
            "problems with a position",
            f"at the first wrong step ({LEVEL:.0%} Wilson)",
            "n (wrong chains judged)",
            "mean draws per problem",
        ],
        rows,
        caption="A position sits at the first wrong step when that step's first wrong token lies in its "
        f"span ± {tol} tokens; judged are the wrong chains whose first wrong step is known and where the "
        "method placed a position. Draws: the run's scan and, with forks, the forced branches' endings.",
    )
    fig = Figure(
        methods_figure(
            names,
            [m["at_first_error"]["rate"] for m in methods.values()],
            [m["at_first_error"]["ci"] for m in methods.values()],
            [m["mean_draws"] for m in methods.values()],
        ),
        alt="per method the rate at the first wrong step and the mean draws per problem",
        caption="Left: share of judged wrong chains where the method's position sits at the first wrong "
        f"step, with {LEVEL:.0%} Wilson intervals (n/a: none judged). Right: mean draws per problem, log "
        "scale.",
    )
    intro = (
        f"{result['n_problems']} problems in common; positions agree when they lie within {tol} tokens "
        "of each other."
    )
    agreement = Table(
        ["pair", f"agree ({LEVEL:.0%} Wilson)", "n (problems where both place a position)"],
        [[pair, fmt_share(s), s["n"]] for pair, s in result["agreement"].items()],
    )
    first = result.get("first_errors", {})
    problems = Table(
        ["case", "first wrong token", *(f"{n} [kept_lo, kept_hi)" for n in names)],
        [
            [case, first.get(case), *(fmt_span(spans.get(n)) for n in names)]
            for case, spans in result["problems"].items()
        ],
        caption="Each method's span of tokens of the original response (— : none placed); first wrong token: "
        "the token index of the first wrong step (running-sum task; — : correct chain or not known).",
    )
    return [
        Section("Methods", intro, [table], [fig]),
        Section(
            "Agreement",
            "How often two methods place the decisive step within the tolerance of each "
            "other, on the problems where both place one.",
            [agreement],
        ),
        Section("Problems", "", [problems]),
        Section("Runs", "Each compared run's own report.", html=_links(runs, methods, out)),
    ]


def write_compare_report(result: Mapping[str, Any], runs: Sequence[str | Path], out: Path) -> Path:
    """Write `out`/comparison.json (`result` as is) and `out`/index.html; return the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # comparison.json first: it marks the folder as a compare report, so a build that fails after the
    # figure cache wrote into the folder can still be retried with the same --out.
    write_json(out / COMPARISON, dict(result))
    with figure_cache(out):
        page = render_html(
            "critwin — methods compared",
            compare_sections(result, [Path(r) for r in runs], out),
            subtitle=f"{len(result['methods'])} methods on {result['n_problems']} problems",
            footer="critwin compare; comparison.json holds the numbers of this page.",
        )
    index = out / INDEX
    atomic_write(index, lambda p: p.write_text(page, encoding="utf-8"))
    return index
