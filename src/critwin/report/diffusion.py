"""The report of diffusion runs (`critwin diffusion scan/demo`), from the run directory alone.

Sections registered for experiment "diffusion": an overview table (class, measured windows in OU time and
in DDPM steps, t_S, the Gaussian-mixture theory window, the clone-agreement crossing and its ratio to t_S),
then per case the curve (measured P(same class | t) with intervals, theory window shaded, detected windows,
t_S and the clone agreement) and the image grid (one row of re-denoised images per t; the left column is
the original). summary.json gets {"diffusion": {"cases": [...]}} next to the generic "cases".
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

from critwin.experiments.diffusion import CLONE_CROSSING  # noqa: E402
from critwin.report.build import register_sections  # noqa: E402
from critwin.report.build import write_report as write_generic_report  # noqa: E402
from critwin.report.html import Figure, Section, Table  # noqa: E402
from critwin.report.plots import curve_figure, outside_legend, png_bytes  # noqa: E402
from critwin.rundir import CaseRecord, RunDir, case_key  # noqa: E402

LEVEL = 0.99
SUMMARY_KEYS = (
    "name",
    "class",
    "measured_windows",
    "measured_windows_steps",
    "t_S",
    "theory_windows",
    "clone_agreement_crossing",
)


def _records(run: RunDir) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in run.records("records"):
        if "case" in row:
            latest[row["case"]] = row
    return latest


def _num(v: Any, digits: int = 2) -> str | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _pairs(pairs: list[list[Any]] | None, digits: int = 2) -> str:
    if not pairs:
        return "none"
    return ", ".join(f"[{_num(a, digits) or '−∞'}, {_num(b, digits) or '∞'}]" for a, b in pairs)


def image_grid(run: RunDir, case: str) -> bytes | None:
    """PNG of the stored re-denoised images: one row per t, the original on the left."""
    df = run.read_part("images", case_key(case))
    if df is None or df.empty:
        return None
    ts = sorted(t for t in df["t"].unique() if t > 0)
    cols = int(df["k"].max()) + 1
    fig, axes = plt.subplots(
        len(ts),
        cols + 1,
        figsize=(0.75 * (cols + 1) + 1.2, 0.75 * len(ts) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    orig = df[df["k"] == -1]
    for i, t in enumerate(ts):
        rows = df[(df["t"] == t) & (df["k"] >= 0)]
        axes[i, 0].set_ylabel(f"t={t:.2f}", rotation=0, ha="right", va="center", fontsize=8)
        if len(orig):
            r = orig.iloc[0]
            axes[i, 0].imshow(_pixels(r), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for _, r in rows.iterrows():
            ax = axes[i, int(r["k"]) + 1]
            ax.imshow(_pixels(r), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title("?" if pd.isna(r["label"]) else str(r["label"]), fontsize=7, pad=1)
    axes[0, 0].set_title("original", fontsize=7, pad=1)
    return png_bytes(fig)


def _pixels(r: Any) -> np.ndarray:
    im = np.frombuffer(r["pixels"], dtype=np.uint8).reshape(int(r["h"]), int(r["w"]), int(r["c"]))
    return im[..., 0] if im.shape[2] == 1 else im


def clone_figure(record: dict[str, Any]) -> bytes | None:
    """PNG of the clone agreement against OU time, with its 0.775 crossing and the speciation time t_S."""
    agreement, ts, t_s = record.get("clone_agreement"), record.get("ts"), record.get("t_S")
    if agreement is None and t_s is None:
        return None
    fig, ax = plt.subplots(figsize=(8.6, 3.0), layout="constrained")
    if agreement is not None:
        ax.plot(ts, agreement, "o-", color="0.45", ms=3, label="P(clone has the original's class)")
        ax.axhline(CLONE_CROSSING, color="0.6", lw=0.8, ls=":")
        c = record.get("clone_agreement_crossing")
        if c is not None:
            ax.axvline(c, color="0.3", lw=1, label=f"crosses {CLONE_CROSSING} at t = {c:.2f}")
    if t_s is not None:
        ax.axvline(t_s, color="tab:purple", ls="--", lw=1.2, label=f"speciation time t_S = {t_s:.2f}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("OU time t (noise grows →)")
    ax.set_ylabel("clone agreement")
    outside_legend(fig, ax)
    return png_bytes(fig)


@register_sections("diffusion", replace_cases=True, overview=False)
def diffusion_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    records = _records(run)
    by_name = {rec.name: rec for rec in cases}
    rows, sections = [], []
    for case, r in sorted(records.items(), key=lambda kv: tuple(kv[1].get("order", (0,)))):
        if r.get("status") != "ok":
            rows.append([case, None, f"failed: {r.get('error')}", None, None, None, None, None])
            continue
        rows.append(
            [
                r["name"],
                r["class"],
                _pairs(r["measured_windows"]),
                ", ".join(f"[{a}, {b}]" for a, b in r["measured_windows_steps"]) or "none",
                _num(r["t_S"]),
                _pairs(r["theory_windows"]),
                _num(r["clone_agreement_crossing"]),
                _num(r.get("crossing_over_t_S")),
            ]
        )
        figs = []
        rec = by_name.get(case)
        if rec is not None:
            png = curve_figure(rec, level=LEVEL, title=rec.meta.get("title"))
            figs.append(
                Figure(
                    png,
                    f"P(same class | t) for {r['name']}",
                    "Measured with 99% Wilson intervals; shaded: the Gaussian-mixture theory window; "
                    "red: detected windows.",
                )
            )
        clones = clone_figure(r)
        if clones is not None:
            figs.append(
                Figure(
                    clones,
                    f"clone agreement of {r['name']}",
                    "Trajectory branching: the trajectory restarted at t with fresh noise; dashed: t_S.",
                )
            )
        grid = image_grid(run, case)
        if grid is not None:
            figs.append(
                Figure(
                    grid,
                    f"re-denoised images of {r['name']} at each t",
                    "Each row: images re-denoised from the original noised to OU time t, with their "
                    "classifier labels (? = unreadable).",
                )
            )
        sections.append(
            Section(f"{r['name']} · class {r['class']}", "", (), tuple(figs), anchor=case_key(case))
        )
    ok = [r for r in records.values() if r.get("status") == "ok"]
    ratios = [r["crossing_over_t_S"] for r in ok if r.get("crossing_over_t_S") is not None]
    intro = (
        f"{len(ok)} of {len(records)} cases measured. The speciation time t_S = ½ ln Λ is computed from "
        "the training data's covariance, the theory window from a Gaussian-mixture model of it; neither "
        "is fitted to the measurement."
    )
    if ratios:
        intro += (
            f" Measured clone-agreement crossing / predicted t_S: median {np.median(ratios):.2f} "
            f"(range {min(ratios):.2f}–{max(ratios):.2f}; Biroli et al. report 0.82–1.02)."
        )
    overview = Section(
        "Overview",
        intro,
        (
            Table(
                [
                    "case",
                    "class",
                    "measured windows (OU t)",
                    "measured windows (DDPM step)",
                    "t_S",
                    "theory window",
                    "clone crossing",
                    "crossing / t_S",
                ],
                rows,
            ),
        ),
    )
    return [overview, *sections]


def write_report(run: RunDir) -> dict[str, Any]:
    """index.html and summary.json, with {"diffusion": {"cases": [...]}} added to the summary."""
    summary = write_generic_report(run)
    cases = []
    for case, r in sorted(_records(run).items(), key=lambda kv: tuple(kv[1].get("order", (0,)))):
        if r.get("status") == "ok":
            cases.append(
                {k: r.get(k) for k in SUMMARY_KEYS}
                | {"case": case, "crossing_over_t_S": r.get("crossing_over_t_S")}
            )
        else:
            cases.append({"case": case, "status": "failed", "error": r.get("error")})
    summary = {**summary, "diffusion": {"cases": cases}}
    (run.path / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary
