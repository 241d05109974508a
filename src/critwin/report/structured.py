"""The report of structured-output runs: the analysis over all batches of outputs (`write_report`, the
writer `critwin.driver.run` and `critwin report` call), and the staircase of each distinct output, read
left to right.

Sections registered for experiment "structured" (replacing the generic overview and per-case sections: the
cases' stored "exact" curves are predictions, not exact values). Each figure shows P(output = s | first j
units of s) against the number of units kept j, with the units' text as tick labels, the predicted plateaus
p(s | choices decided so far), the one-unit theory windows at the deciding unit of each chosen word, and
the detected one-step windows; tables give positions as units kept j, like the figures.
"""

from __future__ import annotations

import json
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from critwin.experiments import structured as S  # noqa: E402
from critwin.report.build import register_sections  # noqa: E402
from critwin.report.build import write_report as write_generic_report  # noqa: E402
from critwin.report.figcache import cached
from critwin.report.html import Figure, Section, Table  # noqa: E402
from critwin.report.plots import (  # noqa: E402
    DETECTED_COLOUR,
    EXACT_COLOUR,
    MEASURED_COLOUR,
    THEORY_COLOUR,
    message_png,
    outside_legend,
    png_bytes,
)
from critwin.rundir import CaseRecord, RunDir  # noqa: E402

LEVEL = 0.99


@cached
def staircase_figure(rec: CaseRecord, *, level: float = LEVEL) -> bytes:
    """PNG of one staircase against units kept j = L − t (generation order, left to right)."""
    curve = rec.curve
    width = max(6.0, min(16.0, 0.32 * (len(curve) if curve is not None else 10)))
    fig, ax = plt.subplots(figsize=(width, 4.3), layout="constrained")
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
    outside_legend(fig, ax, fontsize=7)
    return png_bytes(fig)


def _read_json(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _num(v, digits: int = 3) -> str | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return f"{v:.{digits}f}"


def _kept(rec: CaseRecord, t_lo: float, t_hi: float) -> str:
    """A stretch of forward time [t_lo, t_hi] (units removed) as units kept j: "j → j'" plus the text of the
    units added in between."""
    curve = rec.curve
    length = float(rec.meta.get("length") or (curve.t_max if curve is not None and curve.t_max else 0))
    if not length and curve is not None:
        length = float(curve.t.max())
    a, b = int(round(length - t_hi)), int(round(length - t_lo))
    pieces = list(rec.meta.get("pieces") or [])
    added = "".join(pieces[a:b]) if pieces and b <= len(pieces) else ""
    return f"j {a} → {b}" + (f" (adds {added!r})" if added else "")


def _fit_table(run: RunDir, summary: dict) -> Table | None:
    path = run.path / "fit.csv"
    if not path.is_file():
        return None
    fit = pd.read_csv(path)
    if "residual_lo" not in fit:  # a run written before the held-out check: show what it has
        cols = [c for c in ("target", "unit", "choices_revealed", "n", "measured", "predicted", "residual")
                if c in fit]
        return Table(cols, [[_num(v) if isinstance(v, float) else v for v in r]
                            for r in fit[cols].itertuples(index=False)],
                     caption="Plateau fit of an older run (predictions from the same samples).")
    rows = []
    for r in fit.itertuples(index=False):
        pred_n = "" if not math.isfinite(r.n_pred) else f" (n {int(r.n_pred)})"
        verdict = ("not tested" if not r.tested else
                   "rejected" if r.rejected else "covered" if r.covered else "outside interval")
        rows.append([
            r.target, r.unit, r.choices_revealed, r.j,
            f"{_num(r.measured)} (n {r.n})" if r.n else None,
            f"{_num(r.predicted)}{pred_n}" if math.isfinite(r.predicted) else None,
            f"{_num(r.residual)} [{_num(r.residual_lo)}, {_num(r.residual_hi)}]" if r.tested else None,
            verdict,
        ])
    level = summary.get("ci_level", 0.95)
    caption = (
        "Theory check, one row per plateau (m = choices decided in the prefix): "
        + str(summary.get("check_description", ""))
        + f". Measured at j, the last prefix of the plateau (just before the next deciding unit, where text "
        "that gives a later choice away would show). 'covered': the interval of measured − predicted "
        f"contains 0; 'rejected': Holm's procedure rejects the plateau at family-wise error {1 - level:.0%}. "
        "The last plateau (all choices known) is 1 = 1 by definition and not tested."
    )
    return Table(["output", "unit", "m", "j", "measured", "predicted", f"measured − predicted ({level:.0%})",
                  "verdict"], rows, caption=caption)


@register_sections("structured", replace_cases=True, overview=False, exact_is_truth=False)
def structured_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    """Overview (template, sample counts, the held-out plateau check) and one section per distinct output."""
    summary = _read_json(run.path / "structured.json")
    level = summary.get("ci_level", 0.95)
    check = summary.get("check")
    rows = [[k, v] for k, v in (
        ("template", run.config.get("template")),
        ("model", run.config.get("model")),
        ("samples drawn", summary.get("n_samples")),
        ("filled the template", summary.get("n_ok")),
        ("status counts", ", ".join(f"{k}: {v}" for k, v in (summary.get("status_counts") or {}).items())),
        ("distinct outputs", summary.get("n_distinct")),
        ("equality", summary.get("equality")),
        ("theory check", summary.get("check_description") or summary.get("prediction")),
        ("samples for the predictions / for the measurements",
         None if check in (None, "exact") else
         f"{summary.get('n_prediction_samples')} / {summary.get('n_measurement_samples')}"),
        ("plateaus tested", None if summary.get("n_tested") is None else
         f"{summary.get('n_tested')} of {summary.get('n_plateaus')}"),
        ("max |measured − predicted|", _num(summary.get("max_abs_residual"))),
        ("RMSE of measured − predicted", _num(summary.get("rmse"))),
        (f"plateaus whose {level:.0%} interval of measured − predicted contains 0",
         None if summary.get("coverage") is None else f"{summary['coverage']:.1%} (nominal {level:.0%})"),
        (f"plateaus rejected (Holm, family-wise {1 - level:.0%})", summary.get("n_rejected")),
        ("detected steps at a deciding unit", f"{summary.get('windows_at_deciding_token')} of "
         f"{summary.get('windows_detected')}"),
    ) if v is not None]
    tables = [Table(["", ""], rows)]
    fit_table = _fit_table(run, summary)
    if fit_table is not None:
        tables.append(fit_table)
    intro = ("A model filled a template with blanks; each distinct output s has a staircase "
             "P(output = s | first j units of s), estimated from the samples themselves. The theory puts a "
             "one-unit window at the deciding unit of each chosen word and flat plateaus in between, at "
             "p(s | choices decided so far). The check below measures the plateaus on samples the "
             "predictions did not use, so it can fail; across many runs its coverage should be close to "
             "the nominal level, and any Holm rejection is evidence against the theory.")
    sections = [Section("Structured output: overview", intro, tables)]
    source = {"held_out": "the choice frequencies of the prediction half of the samples",
              "other_sample": "the choice frequencies of another sample",
              "exact": "exact probabilities"}.get(str(check), "the choice frequencies of the samples")
    for rec in cases:
        if rec.meta.get("kind") != "structured":
            continue
        det = ", ".join(f"{_kept(rec, w.t_lo, w.t_hi)}: {w.p_after:.2f} → {w.p_before:.2f}"
                        for w in rec.detected) or "none"
        theory = ", ".join(f"{w.label}: {_kept(rec, w.lo, w.hi)}" for w in rec.theory)
        table = Table(["", ""], [
            ["output", rec.meta.get("text")],
            ["samples with these choices", rec.meta.get("count")],
            ["theory windows (units kept j)", theory],
            ["detected steps (units kept j: P before → after)", det],
        ])
        fig = Figure(staircase_figure(rec), alt=f"staircase of {rec.meta.get('text')!r}",
                     caption="Blue: measured on all samples, with 99% Wilson intervals; black: predicted "
                     f"plateaus p(s | choices decided so far) from {source}; shaded: the deciding unit of "
                     "each chosen word; red: detected steps.")
        sections.append(Section(str(rec.meta.get("title", rec.name)), "", [table], [fig]))
    return sections


def write_report(run: RunDir) -> dict[str, Any]:
    """The analysis of a structured run, from its run directory alone: once every batch of outputs is
    stored, `analyze` them with the settings of config.json and store the staircases (curves, windows),
    fit.csv and structured.json (`write_run`); then index.html and summary.json. Returns the summary.
    With outputs missing (a run not finished), only the report of what is stored is drawn: an analysis of
    some of the outputs would be another result (`S.missing_outputs` says how many are missing)."""
    if not S.missing_outputs(run):
        S.write_run(S.analyze_run(run), run)
    return write_generic_report(run)
