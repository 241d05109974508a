"""Report sections of structured-output runs: the staircase of each distinct output, read left to right.

Registered for experiment "structured" (replacing the generic per-case sections). Each figure shows
P(output = s | first j units of s) against the number of units kept j, with the units' text as tick
labels, the predicted plateaus p(s | choices decided so far), the one-unit theory windows at the deciding
unit of each chosen word, and the detected one-step windows.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from critwin.report.build import register_sections  # noqa: E402
from critwin.report.html import Figure, Section, Table  # noqa: E402
from critwin.report.plots import (  # noqa: E402
    DETECTED_COLOUR,
    EXACT_COLOUR,
    MEASURED_COLOUR,
    THEORY_COLOUR,
    message_png,
    png_bytes,
)
from critwin.rundir import CaseRecord, RunDir  # noqa: E402

LEVEL = 0.99


def staircase_figure(rec: CaseRecord, *, level: float = LEVEL) -> bytes:
    """PNG of one staircase against units kept j = L − t (generation order, left to right)."""
    curve = rec.curve
    width = max(6.0, min(16.0, 0.32 * (len(curve) if curve is not None else 10)))
    fig, ax = plt.subplots(figsize=(width, 3.8))
    if curve is None:
        return message_png(fig, ax, "no curve stored")
    length = float(curve.t_max if curve.t_max is not None else curve.t.max())
    j = length - curve.t
    p = curve.p_hat
    lo, hi = curve.wilson(level)
    for i, w in enumerate(rec.theory):
        if math.isfinite(w.lo) and math.isfinite(w.hi):
            ax.axvspan(length - w.hi, length - w.lo, color=THEORY_COLOUR, alpha=0.35, lw=0,
                       label="theory window (deciding unit)" if i == 0 else None)
    if rec.exact is not None and np.isfinite(rec.exact).any():
        ax.step(j, rec.exact, where="post", color=EXACT_COLOUR, lw=1.2, label="predicted plateau")
    ok = curve.n_valid > 0
    yerr = np.clip([p[ok] - lo[ok], hi[ok] - p[ok]], 0.0, None)  # rounding can make a bar slightly negative
    ax.errorbar(j[ok], p[ok], yerr=yerr, fmt="o", ms=3.5, color=MEASURED_COLOUR,
                ecolor=MEASURED_COLOUR, elinewidth=0.8, capsize=0, label=f"measured ({level:.0%} Wilson)")
    for i, w in enumerate(rec.detected):
        ax.annotate("", xy=(length - w.t_lo, w.p_before), xytext=(length - w.t_hi, w.p_after),
                    arrowprops={"arrowstyle": "-", "color": DETECTED_COLOUR, "lw": 2.2})
        if i == 0:
            ax.plot([], [], color=DETECTED_COLOUR, lw=2.2, label="detected step")
    pieces = list(rec.meta.get("pieces") or [])
    if pieces and len(pieces) <= 120:
        # Unit k (0-based) is added between j = k and j = k + 1: label it at k + 0.5.
        labels = [repr(x)[1:-1].replace(" ", "␣") or "·" for x in pieces]
        ax.set_xticks(np.arange(len(pieces)) + 0.5, labels, rotation=90, fontsize=7, family="monospace")
        ax.set_xticks(np.arange(len(pieces) + 1), minor=True)
    ax.set_xlim(-0.5, length + 0.5)
    ax.set_ylim(-0.03, 1.03)
    unit = curve.time_unit
    ax.set_xlabel(f"{unit} of the output kept (j); tick labels: the {unit[:-1]} added")
    ax.set_ylabel("P(output = s | prefix)")
    ax.grid(alpha=0.25, which="minor", axis="x")
    ax.legend(fontsize=7, loc="lower right")
    return png_bytes(fig)


def _read_json(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@register_sections("structured", replace_cases=True)
def structured_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    """Overview (template, sample counts, plateau fit) and one section per distinct output."""
    summary = _read_json(run.path / "structured.json")
    rows = [[k, v] for k, v in (
        ("template", run.config.get("template")),
        ("model", run.config.get("model")),
        ("samples drawn", summary.get("n_samples")),
        ("filled the template", summary.get("n_ok")),
        ("status counts", ", ".join(f"{k}: {v}" for k, v in (summary.get("status_counts") or {}).items())),
        ("distinct outputs", summary.get("n_distinct")),
        ("equality", summary.get("equality")),
        ("plateau prediction", summary.get("prediction")),
        ("plateaus fitted", summary.get("n_plateaus")),
        ("max |measured − predicted|", summary.get("max_abs_residual")),
        ("RMSE", summary.get("rmse")),
        (f"predictions inside the {summary.get('ci_level', 0.95):.0%} intervals", summary.get("coverage")),
        ("detected steps at a deciding unit", f"{summary.get('windows_at_deciding_token')} of "
         f"{summary.get('windows_detected')}"),
    ) if v is not None]
    tables = [Table(["", ""], rows)]
    fit_path = run.path / "fit.csv"
    if fit_path.is_file():
        fit = pd.read_csv(fit_path)
        cols = ["target", "unit", "choices_revealed", "n", "measured", "ci_lo", "ci_hi", "predicted",
                "residual"]
        fit_rows = [[(f"{v:.3f}" if isinstance(v, float) else v) for v in r]
                    for r in fit[cols].itertuples(index=False)]
        tables.append(Table(cols, fit_rows, caption="Plateau fit: the measured P(output = s | prefix) at the "
                            "first prefix of each plateau against the product of conditional choice "
                            "frequencies p(s | first m choices)."))
    intro = ("A model filled a template with blanks; each distinct output s has a staircase "
             "P(output = s | first j units of s), estimated from the samples themselves. The theory puts a "
             "one-unit window at the deciding unit of each chosen word and flat plateaus in between.")
    sections = [Section("Structured output: overview", intro, tables)]
    for rec in cases:
        if rec.meta.get("kind") != "structured":
            continue
        det = ", ".join(f"[{w.t_lo:g}, {w.t_hi:g}] jump {w.jump:.2f}" for w in rec.detected) or "none"
        theory = ", ".join(f"{w.label} at t ∈ [{w.lo:g}, {w.hi:g}]" for w in rec.theory)
        table = Table(["", ""], [
            ["output", rec.meta.get("text")],
            ["samples with these choices", rec.meta.get("count")],
            ["theory windows (t = units removed)", theory],
            ["detected steps", det],
        ])
        fig = Figure(staircase_figure(rec), alt=f"staircase of {rec.meta.get('text')!r}",
                     caption="Blue: measured with 99% Wilson intervals; black: predicted plateaus; shaded: "
                     "the deciding unit of each chosen word; red: detected steps.")
        sections.append(Section(str(rec.meta.get("title", rec.name)), "", [table], [fig]))
    return sections
