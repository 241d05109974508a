"""Report sections of jailbreak runs (experiment "jailbreak"; config "kind" prefill, repeat or detect).

- prefill: P(comply) against the length of the prefill kept, one figure per case, windows marked;
- repeat: the requests (their text), the word × repeat-count grid of P(comply) as a heat map, then the
  generic per-curve sections;
- detect: AUROC and TPR at fixed FPRs per split with small-sample intervals, the ROC's resolution and
  "not estimable" where there are too few benign rows for a target FPR, and ROC curves per split.

The writers `write_prefill_report`, `write_repeat_report` and `write_detect_report` (registered in
`critwin.report.writer_for` for ("jailbreak", kind)) recompute each kind's own files from the run directory
alone — jailbreak.json, repeat_grid.csv, metrics.json and metrics.csv — then write index.html and
summary.json; the driver calls them at the end of a run and `critwin report` / `critwin repair` call the
same ones, so a re-drawn report equals the one the run wrote.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from critwin.experiments import jailbreak as J  # noqa: E402
from critwin.experiments import jailbreak_detect as D  # noqa: E402
from critwin.report.build import case_section, register_sections, write_report  # noqa: E402
from critwin.report.figcache import cached
from critwin.report.html import Figure, Section, Table  # noqa: E402
from critwin.report.plots import (  # noqa: E402
    DETECTED_COLOUR,
    MEASURED_COLOUR,
    message_png,
    outside_legend,
    png_bytes,
)
from critwin.rundir import CaseRecord, RunDir, atomic_write, write_json  # noqa: E402
from critwin.serialize import jsonable  # noqa: E402

LEVEL = 0.99


CI_NAMES = {"wilson": "Wilson", "confidence_sequence": "confidence-sequence"}


@cached
def prefill_figure(rec: CaseRecord, *, level: float = LEVEL) -> bytes:
    """PNG: P(comply) with per-cut intervals against the prefill units kept (Wilson's, or confidence
    sequences when a strategy chose the cuts and draws adaptively: cuts may then sit anywhere, with
    different numbers of draws); detected windows shaded."""
    curve = rec.curve
    fig, ax = plt.subplots(figsize=(8.6, 4.0), layout="constrained")
    if curve is None:
        return message_png(fig, ax, "no curve stored")
    length = float(rec.meta.get("length", curve.t_max or curve.t.max()))
    kept = length - curve.t
    p = curve.p_hat
    method = str(rec.meta.get("ci_method", "wilson"))
    lo, hi = J.cut_intervals(curve, level, method)
    ok = curve.n_valid > 0
    ax.fill_between(kept[ok], lo[ok], hi[ok], color=MEASURED_COLOUR, alpha=0.18, lw=0, step=None)
    ax.plot(kept[ok], p[ok], "o-", ms=3.5, color=MEASURED_COLOUR,
            label=f"P(comply), {level:.0%} {CI_NAMES.get(method, method)} band")
    for i, w in enumerate(rec.detected):
        ax.axvspan(length - w.t_hi, length - w.t_lo, color=DETECTED_COLOUR, alpha=0.2, lw=0,
                   label="detected window" if i == 0 else None)
    prefill = str(rec.meta.get("prefill", ""))
    unit = rec.meta.get("unit", curve.time_unit)
    if unit == "chars" and 0 < len(prefill) <= 90:
        ax.set_xticks(np.arange(len(prefill)) + 0.5, [c if c.strip() else "·" for c in prefill], fontsize=7,
                      family="monospace")
    ax.set_xlim(-0.5, length + 0.5)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(f"prefill {unit} kept" + ("; tick labels: the character added" if unit == "chars" else ""))
    ax.set_ylabel("P(comply)")
    outside_legend(fig, ax, fontsize=7)
    return png_bytes(fig)


def _prefill_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    rows = []
    for rec in cases:
        c = rec.curve
        if c is None:
            continue
        length = rec.meta.get("length")
        big = max(rec.detected, key=lambda w: w.jump, default=None)
        where = "none"
        if big is not None and length is not None:
            a, b = int(length - big.t_hi), int(length - big.t_lo)
            pre = str(rec.meta.get("prefill", ""))
            text = f" ({pre[:a]!r} → {pre[:b]!r})" if rec.meta.get("unit") == "chars" else ""
            where = f"{a} → {b} {rec.meta.get('unit')}{text}, jump {big.jump:.2f}"
        p = c.p_hat
        none_kept = f"{p[-1]:.2f}" if c.n_valid[-1] else None
        all_kept = f"{p[0]:.2f}" if c.n_valid[0] else None
        rows.append([rec.name, none_kept, all_kept, where, int(c.n_failed.sum())])
    overview = Section(
        "Prefill attack: overview",
        "Each case starts the assistant turn with a growing part of the prefill and judges K continuations. "
        "A window is a short stretch of prefill over which P(comply) jumps.",
        [Table(["case", "P(comply) without prefill", "with the full prefill", "largest window (kept)",
                "unclear / failed"], rows)],
    )
    sections = [overview]
    for rec in cases:
        rows = [["prompt", rec.meta.get("prompt")], ["prefill", rec.meta.get("prefill")],
                ["continuations per cut", _per_cut(rec)]]
        if "strategy" in rec.meta:
            rows.append(["strategy", f"{rec.meta['strategy']} ({int(rec.curve.n_total.sum())} draws; "
                         f"intervals: {CI_NAMES.get(rec.meta.get('ci_method'), 'Wilson')})"
                         if rec.curve is not None else rec.meta["strategy"]])
        det = Table(["", ""], rows)
        fig = Figure(prefill_figure(rec), alt=f"P(comply) against prefill length for {rec.name}")
        sections.append(Section(str(rec.meta.get("title", rec.name)), "", [det], [fig]))
    return sections


def _per_cut(rec: CaseRecord) -> Any:
    """Continuations per cut: the number, or its range when a strategy drew more at some cuts."""
    c = rec.curve
    if c is None or not len(c) or "strategy" not in rec.meta:
        return rec.meta.get("n")
    lo, hi = int(c.n_total.min()), int(c.n_total.max())
    return lo if lo == hi else f"{lo}–{hi} ({len(c)} cuts)"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@cached
def grid_figure(table: pd.DataFrame, requests: dict[int, str] | None = None) -> bytes:
    """Heat map of P(comply) with rows (request, word) and columns repeat counts; rows are labelled with
    the request's text (shortened) when it is known."""
    piv = table.pivot_table(index=["request", "word"], columns="repeats", values="p_comply")
    size = (3.2 + 0.6 * piv.shape[1], 1.2 + 0.35 * piv.shape[0])
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    im = ax.imshow(piv.to_numpy(float), vmin=0, vmax=1, cmap="magma", aspect="auto")
    ax.set_xticks(range(piv.shape[1]), [str(c) for c in piv.columns])
    names = requests or {}
    labels = [f"{_short(names.get(int(r), f'request {r}'), 40)} × {w}" for r, w in piv.index]
    ax.set_yticks(range(piv.shape[0]), labels, fontsize=7)
    ax.set_xlabel("repeat count")
    fig.colorbar(im, ax=ax, label="P(comply)")
    return png_bytes(fig)


def request_texts(run: RunDir, cases: list[CaseRecord]) -> dict[int, str]:
    """Request index -> its text: from the run's config ("requests") when it is stored there, else read
    off each case's stored prompt (the template's request followed by the repeated word: the trailing run
    of the word is cut off)."""
    stored = run.config.get("requests")
    if isinstance(stored, list) and all(isinstance(r, str) for r in stored):
        return dict(enumerate(stored))
    out: dict[int, str] = {}
    for rec in cases:
        req, word, prompt = rec.meta.get("request"), rec.meta.get("word"), rec.meta.get("prompt")
        if req is None or not isinstance(prompt, str):
            continue
        text = prompt
        if isinstance(word, str) and word:
            text = re.sub(rf"(?:{re.escape(word)}\s*)+$", "", prompt)
        out.setdefault(int(req), text.strip())
    return out


def _repeat_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    sections = []
    requests = request_texts(run, cases)
    if requests:
        sections.append(Section(
            "Repeated-word attack: requests",
            "The requests attacked (rows of the grid below), each sent with a word repeated r times "
            f"({run.config.get('position', 'prompt')} position).",
            [Table(["request", "text"], [[i, t] for i, t in sorted(requests.items())])],
        ))
    path = run.path / "repeat_grid.csv"
    if path.is_file():
        table = pd.read_csv(path)
        rows = [
            [r.request, _short(requests.get(int(r.request), ""), 80) or None, r.word, r.repeats, r.n_comply,
             r.n_refuse, r.n_unclear,
             None if not math.isfinite(r.p_comply) else f"{r.p_comply:.2f} [{r.ci_lo:.2f}, {r.ci_hi:.2f}]"]
            for r in table.itertuples(index=False)
        ]
        sections.append(Section(
            "Repeated-word attack: grid",
            "Each request is sent with a word repeated r times; cells are P(comply) with 95% Wilson "
            "intervals. Curves below count refusals as kept, so a window is where refusals break down as "
            "r grows.",
            [Table(["request", "request text", "word", "repeats", "comply", "refuse", "unclear", "P(comply)"],
                   rows)],
            [Figure(grid_figure(table, requests), alt="P(comply) over words and repeat counts")],
        ))
    for rec in cases:
        sec = case_section(rec)
        req = rec.meta.get("request")
        text = requests.get(int(req)) if req is not None else None
        intro = f"Request {req}: {text!r}; word {rec.meta.get('word')!r}." if text else sec.intro
        sections.append(Section(sec.title, intro, sec.tables, sec.figures, sec.html))
    return sections


@cached
def roc_figure(per_stat: dict, title: str) -> bytes:
    """ROC curves of every statistic of one split (likelihood ratios solid, single-model baselines dashed)."""
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    for name, e in per_stat.items():
        if not isinstance(e, dict) or "roc" not in e:
            continue
        ls = "-" if name.startswith("lr_") else "--"
        ax.plot(e["roc"]["fpr"], e["roc"]["tpr"], ls, lw=1.3, label=f"{name} ({e['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.03)  # a perfect ROC runs along TPR = 1: keep it off the frame
    ax.set_xlabel("false-positive rate (benign flagged)")
    ax.set_ylabel("true-positive rate (jailbreaks caught)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="statistic (AUROC)",
              title_fontsize=7)
    return png_bytes(fig)


def _fmt_ci(e: dict, key: str) -> str | None:
    if e.get(key) is None:
        reason = e.get(key + "_reason")
        if not reason:
            return None
        # "not estimable: 15 negatives give ...; TPR at 1% FPR needs at least 100" -> the short form.
        need = re.search(r"needs at least (\d+)", reason)
        return f"not estimable (needs ≥ {need.group(1)} benign)" if need else reason
    ci = e.get(key + "_ci")
    return f"{e[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _detect_sections(run: RunDir) -> list[Section]:
    path = run.path / "metrics.json"
    if not path.is_file():
        return [Section("Jailbreak detection", "metrics.json is missing from this run directory.")]
    metrics = json.loads(path.read_text())
    fpr_keys = sorted({k for per in metrics["splits"].values() if isinstance(per, dict)
                       for e in per.values() if isinstance(e, dict)
                       for k in e if k.startswith("tpr_at_") and k.endswith("pct_fpr")},
                      key=lambda k: float(k.split("_")[2].removesuffix("pct")))
    level = metrics.get("level", 0.95)
    methods = metrics.get("ci_methods") or {}
    sections = []
    for split, per in metrics["splits"].items():
        if "skipped" in per:
            sections.append(Section(f"Split {split}", f"Skipped: {per['skipped']}"))
            continue
        rows = []
        for stat, e in per.items():
            if "skipped" in e:
                rows.append([stat, e["skipped"], *[None] * (len(fpr_keys) + 2)])
                continue
            res = e.get("fpr_resolution")
            rows.append([stat, _fmt_ci(e, "auroc"), *[_fmt_ci(e, k) for k in fpr_keys],
                         f"{e['n_pos']} / {e['n_neg']} ({e['negatives']})",
                         None if res is None else f"{res:.1%}"])
        cols = ["statistic", "AUROC",
                *[f"TPR at {k.split('_')[2].removesuffix('pct')}% FPR" for k in fpr_keys],
                "jailbreaks / benign", "FPR resolution (1 / benign)"]
        if methods:
            caption = (f"{level:.0%} intervals. AUROC: {methods.get('auroc_ci')}. TPR: "
                       f"{methods.get('tpr_ci')}. A TPR at FPR f needs at least 1/f benign rows to be "
                       "defined at all (the FPR moves in steps of 1/benign). Every score is oriented so "
                       "that higher means jailbreak.")
        else:  # metrics written before the small-sample intervals
            caption = (f"Bootstrap {level:.0%} intervals ({metrics.get('n_boot')} resamples). Every score is "
                       "oriented so that higher means jailbreak.")
        table = Table(cols, rows, caption=caption)
        fig = Figure(roc_figure(per, f"split {split}"), alt=f"ROC curves of split {split}")
        sections.append(Section(f"Split {split}", "", [table], [fig]))
    desc = [[k, v] for k, v in metrics.get("statistics", {}).items()]
    skipped = metrics.get("skip_reasons") or {}
    intro = (
        "Per-token log-probabilities (raw log-softmax at temperature 1) of the prompt and the completion, "
        "located through each model's chat template, under an aligned and an unaligned model. "
        f"Rows skipped: {metrics.get('skipped_rows', 0)}"
        + (" (" + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")" if skipped else "") + "."
    )
    head = Section("Jailbreak detection: likelihood ratio", intro, [Table(["statistic", "definition"], desc)])
    return [head, *sections]


@register_sections("jailbreak", replace_cases=True, overview=False)
def jailbreak_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    """Sections for the run's kind (prefill, repeat or detect)."""
    kind = run.config.get("kind")
    if kind == "detect":
        return _detect_sections(run)
    if kind == "repeat":
        return _repeat_sections(run, cases)
    return _prefill_sections(run, cases)


# ----------------------------------------------------------------------------------------------------------
# Writers: each kind's files, then the report, from the run directory alone
# ----------------------------------------------------------------------------------------------------------
PREFILL_SUMMARY = "jailbreak.json"
REPEAT_GRID = "repeat_grid.csv"
METRICS, METRICS_CSV = "metrics.json", "metrics.csv"


def write_prefill_report(run: RunDir) -> dict[str, Any]:
    """jailbreak.json (`J.prefill_summary` of the finished cases), index.html and summary.json of a prefill
    run; returns summary.json's content."""
    result = J.read_prefill_run(run)
    if result.cases:
        write_json(run.path / PREFILL_SUMMARY, jsonable(result.summary), indent=1)
    return write_report(run)


def write_repeat_report(run: RunDir) -> dict[str, Any]:
    """repeat_grid.csv (`J.grid_table` of the finished pairs' draws), index.html and summary.json of a
    repeated-word run; returns summary.json's content."""
    result = J.read_repeat_run(run)
    if len(result.draws):
        atomic_write(run.path / REPEAT_GRID, lambda p: result.table.to_csv(p, index=False))
    return write_report(run)


def write_detect_report(run: RunDir) -> dict[str, Any]:
    """metrics.json (with ROC points) and metrics.csv (`D.evaluate` of the stored scores with the run's
    statistics settings), index.html and summary.json of a detection run; returns summary.json's content."""
    scored = D.read_detect_run(run)
    if scored is not None:
        metrics = D.evaluate_run(run, scored.table)
        write_json(run.path / METRICS, D.plain(metrics), indent=1)
        atomic_write(run.path / METRICS_CSV, lambda p: D.metrics_frame(metrics).to_csv(p, index=False))
    return write_report(run)


def missing_units(run: RunDir) -> list[str]:
    """The units of work of a jailbreak run that are not stored finished (they need the model): cases of a
    prefill run, (request, word) pairs of a repeat run, or ["scores"] for a detection run without any."""
    kind = run.config.get("kind")
    if kind == "detect":
        return [] if run.read_parts(D.SCORES) is not None else ["scores"]
    if kind == "repeat":
        names = J.repeat_case_names(run.config) or run.case_names()
    else:
        names = [str(c.get("id")) for c in run.config.get("cases", []) if isinstance(c, dict)]
        names = names or run.case_names()
    return [n for n in names if J.stored_draws(run, n) is None]
