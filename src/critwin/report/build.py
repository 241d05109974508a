"""Build a run directory's report (index.html + summary.json) from its stored files alone.

A run gets an overview (summary table of theory and detected windows, and the coverage chart) when its
cases have theory windows or exact curves to compare with, and one section per case (curve figure and
window table). Experiments add sections of their own: a module `critwin.report.<experiment>` (imported on
demand when a run's config names that experiment) or any other module registers a builder with

    @register_sections("reasoning", replace_cases=True, overview=False)
    def reasoning_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]: ...

Its sections are appended after the generic ones, replace the per-case sections (`replace_cases=True`,
e.g. for runs with thousands of curves) and the overview (`overview=False`, for experiments whose cases
have no theory to compare with, or that show their own overview); `exact_is_truth=False` says that the
cases' "exact" column holds predictions, not exact values, so no coverage is computed against it.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from critwin.report.figcache import figure_cache
from critwin.report.html import Figure, Section, Table, render_html
from critwin.report.plots import curve_figure, summary_figure
from critwin.rundir import CaseRecord, RunDir
from critwin.serialize import jsonable
from critwin.windows import window_agreement

SectionBuilder = Callable[[RunDir, list[CaseRecord]], list[Section]]
LEVEL = 0.99


@dataclass(frozen=True)
class _Builder:
    fn: SectionBuilder
    replace_cases: bool
    overview: bool = True
    exact_is_truth: bool = True


_BUILDERS: dict[str, _Builder] = {}


def register_sections(
    experiment: str, *, replace_cases: bool = False, overview: bool = True, exact_is_truth: bool = True
) -> Callable[[SectionBuilder], SectionBuilder]:
    """Decorator: add the sections built by the decorated function to reports of runs of `experiment`
    (see the module docstring for the flags)."""

    def deco(fn: SectionBuilder) -> SectionBuilder:
        _BUILDERS[experiment] = _Builder(fn, replace_cases, overview, exact_is_truth)
        return fn

    return deco


def coverage(rec: CaseRecord, level: float = LEVEL) -> float | None:
    """Share of the curve's points (with valid draws and a known exact value) whose `level` Wilson interval
    contains the exact value; None when there is no exact curve."""
    if rec.curve is None or rec.exact is None:
        return None
    lo, hi = rec.curve.wilson(level)
    ok = (rec.curve.n_valid > 0) & np.isfinite(rec.exact)
    if not ok.any():
        return None
    inside = (rec.exact[ok] >= lo[ok] - 1e-12) & (rec.exact[ok] <= hi[ok] + 1e-12)
    return float(inside.mean())


def case_summary(rec: CaseRecord, level: float = LEVEL, *, exact_is_truth: bool = True) -> dict[str, Any]:
    """The summary.json entry of one case (windows in forward time t); coverage None unless the case has
    an exact curve that is a truth (`exact_is_truth`)."""
    theory = [[w.lo, w.hi] for w in rec.theory]
    detected = [[w.t_lo, w.t_hi] for w in rec.detected]
    agree = window_agreement([tuple(w) for w in theory], [tuple(w) for w in detected])
    return jsonable(
        {
            "name": rec.name,
            "theory_windows": theory,
            "detected_windows": detected,
            "coverage": coverage(rec, level) if exact_is_truth else None,
            "time_unit": None if rec.curve is None else rec.curve.time_unit,
            "points": 0 if rec.curve is None else len(rec.curve),
            "window_outside": list(agree.outside),
            "theory_hits": list(agree.hits),
        }
    )


def _fmt_windows(pairs: list[tuple[float, float]], unit: str | None, t_max: float | None = None) -> str:
    """Windows [t_lo, t_hi] in forward time; for token curves also as tokens kept (the LLM coordinate)."""
    if not pairs:
        return "none"
    digits = 0 if unit == "tokens" else 2
    out = []
    for a, b in pairs:
        text = f"[{_num(a, digits)}, {_num(b, digits)}]"
        if unit == "tokens" and t_max and math.isfinite(a) and math.isfinite(b):
            text += f" (kept {t_max - b:g}→{t_max - a:g} of {t_max:g})"
        out.append(text)
    return ", ".join(out)


def _pval(p: float) -> str:
    return "< 1e-300" if p <= 0 else f"{p:.1e}"


def _num(v: float, digits: int) -> str:
    if not math.isfinite(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}f}"


def has_overview_content(cases: list[CaseRecord]) -> bool:
    """Whether the overview table says anything: some case has a theory window or an exact curve (without
    either, every cell but the detected windows would be "none" or "—")."""
    return any(rec.theory or (rec.exact is not None and np.isfinite(rec.exact).any()) for rec in cases)


def overview_section(run: RunDir, cases: list[CaseRecord], level: float = LEVEL) -> Section:
    """Summary table over all cases and the coverage chart."""
    rows = []
    for rec in cases:
        s = case_summary(rec, level)
        unit = s["time_unit"]
        cov = s["coverage"]
        # An unmatched detected window reaches "infinitely" far outside; JSON stores that as null.
        out = max((math.inf if v is None else v for v in s["window_outside"]), default=0.0)
        t_max = None if rec.curve is None else rec.curve.t_max
        rows.append(
            [
                rec.meta.get("title", rec.name),
                _fmt_windows([tuple(w) for w in s["theory_windows"]], unit, t_max),
                _fmt_windows([tuple(w) for w in s["detected_windows"]], unit, t_max),
                "—" if cov is None else f"{cov:.1%}",
                "—"
                if not s["theory_windows"]
                else (f"{out:.2f}" if math.isfinite(out) else "no theory window"),
                s["points"],
            ]
        )
    table = Table(
        [
            "case",
            "theory windows [t_after, t_before]",
            "detected windows",
            f"coverage ({level:.0%})",
            "detected outside theory by",
            "points",
        ],
        rows,
        caption="Windows in forward time t of each case (t grows with degradation; for token curves also "
        "as tokens kept, the fraction of the text kept being kept / total). Coverage: share of "
        f"points whose {level:.0%} Wilson interval contains the exact P(kept). 'Outside by': how far a "
        "detected window reaches beyond the nearest theory window (0 = inside).",
    )
    figs = []
    covs = [case_summary(r, level)["coverage"] for r in cases]
    if any(c is not None for c in covs):
        figs.append(
            Figure(
                summary_figure([r.meta.get("title", r.name) for r in cases], covs, level),
                alt="coverage of the measured intervals per case",
            )
        )
    intro = run.config.get("description", "") or f"Run of experiment {run.config.get('experiment', '?')!r}."
    return Section("Summary", intro, [table], figs)


def case_section(rec: CaseRecord, level: float = LEVEL) -> Section:
    """One case: its curve figure, what was scanned, and its windows."""
    title = rec.meta.get("title", rec.name)
    unit = None if rec.curve is None else rec.curve.time_unit
    t_max = None if rec.curve is None else rec.curve.t_max
    rows = []
    for w in rec.theory:
        rows.append(
            [
                "theory" + (f" ({w.label})" if w.label else ""),
                _fmt_windows([(w.lo, w.hi)], unit, t_max),
                None,
                None,
                None,
            ]
        )
    for w in rec.detected:
        rows.append(
            [
                "detected",
                _fmt_windows([(w.t_lo, w.t_hi)], unit, t_max),
                f"{w.p_before:.3f} → {w.p_after:.3f}",
                f"{w.jump:.3f} [{w.jump_ci[0]:.3f}, {w.jump_ci[1]:.3f}]",
                _pval(w.p_value),
            ]
        )
    for w in rec.paper:
        rows.append(
            [
                "paper rule",
                _fmt_windows([(w.t_lo, w.t_hi)], unit, t_max),
                f"{w.p_before:.3f} → {w.p_after:.3f}",
                f"{w.jump:.3f}",
                None,
            ]
        )
    table = Table(
        ["window", "[t_lo, t_hi]", "P(kept) before → after", f"jump ({level:.0%} CI)", "p-value"], rows
    )
    details = [
        [k, v]
        for k, v in (
            ("sampler", rec.meta.get("sampler")),
            ("feature", rec.meta.get("feature")),
            ("sample", rec.meta.get("sample")),
            ("reference label", None if rec.curve is None else str(rec.curve.reference)),
            ("draws per t", rec.meta.get("n")),
            ("failed draws", None if rec.curve is None else int(rec.curve.n_failed.sum())),
            ("theory ε", rec.eps),
            ("coverage", None if coverage(rec, level) is None else f"{coverage(rec, level):.1%}"),
        )
        if v is not None
    ]
    fig = Figure(
        curve_figure(rec, level=level),
        alt=f"P(kept) against t for {title}",
        caption="Blue: measured P(kept) with 99% Wilson intervals; black: exact curve; shaded: theory "
        "windows "
        "[T_after, T_before]; red bars and dashed lines: detected windows.",
    )
    return Section(title, rec.meta.get("description", ""), [Table(["", ""], details), table], [fig])


def build_report(run: RunDir, level: float = LEVEL) -> tuple[str, dict[str, Any]]:
    """The report of a run: (HTML text, summary dict {"cases": [...]})."""
    cases = run.cases()
    experiment = str(run.config.get("experiment", ""))
    if experiment and experiment not in _BUILDERS and experiment.isidentifier():
        try:  # convention: critwin.report.<experiment> registers that experiment's sections
            importlib.import_module(f"critwin.report.{experiment}")
        except ModuleNotFoundError:
            pass
    extra = _BUILDERS.get(experiment)
    sections = []
    if (extra is None or extra.overview) and has_overview_content(cases):
        sections.append(overview_section(run, cases, level))
    elif run.config.get("description"):
        sections.append(Section("About this run", run.config["description"]))
    if extra is None or not extra.replace_cases:
        sections += [case_section(rec, level) for rec in cases]
    if extra is not None:
        sections += extra.fn(run, cases)
    if not sections:
        intro = run.config.get("description", "") or f"Run of experiment {experiment or '?'!r}."
        sections = [Section("Summary", intro + " No cases are stored in this run directory yet.")]
    title = run.config.get("title", f"critwin — {experiment or 'run'}")
    html = render_html(
        title,
        sections,
        subtitle=run.config.get("subtitle", ""),
        footer=f"critwin run directory format {run.config.get('critwin_run')}; "
        "re-draw with `critwin report DIR`.",
    )
    truth = extra is None or extra.exact_is_truth
    summary = {"cases": [case_summary(rec, level, exact_is_truth=truth) for rec in cases]}
    return html, summary


def write_report(run: RunDir, level: float = LEVEL) -> dict[str, Any]:
    """Write index.html and summary.json into the run directory; return the summary.

    Top-level keys that an experiment wrote into summary.json besides "cases" (e.g. the reasoning
    experiment's per-dataset "datasets") are kept: a re-drawn report must not lose them. Figures the last
    report drew from the same data are reused."""
    with figure_cache(run.path):
        html, summary = build_report(run, level)
    path = run.path / "summary.json"
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = {}
        if isinstance(previous, dict):
            summary = {**summary, **{k: v for k, v in previous.items() if k not in summary}}
    (run.path / "index.html").write_text(html)
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary
