"""The report of diffusion runs (`critwin diffusion scan/demo`), from the run directory alone.

Sections registered for experiment "diffusion": an overview table (class, measured windows in OU time and
in DDPM steps, t_S, the Gaussian-mixture theory window, the clone-agreement crossing and its ratio to t_S),
then per case the curve (measured P(same class | t) with intervals, theory window shaded, detected windows,
t_S and the clone agreement) and the image grid (one row of re-denoised images per t; the left column is
the original). summary.json gets {"diffusion": {"cases": [...], "pooled_clone_agreement": {...}}} next to
the generic "cases".
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

from critwin.experiments.diffusion import CLONE_CROSSING, pooled_crossing  # noqa: E402
from critwin.report.build import register_sections  # noqa: E402
from critwin.report.build import write_report as write_generic_report  # noqa: E402
from critwin.report.figcache import cached
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
    """PNG of the stored re-denoised images: one row per t, the original on the left, each image's label
    above it. The tiles are pasted into one array and drawn as one image (one axes for the whole grid: a
    subplot per image took 2.7 s per case)."""
    df = run.read_part("images", case_key(case))
    if df is None or df.empty:
        return None
    ts = sorted(t for t in df["t"].unique() if t > 0)
    cols = int(df["k"].max()) + 2  # the original, then the re-denoised images
    first = _pixels(df.iloc[0])
    h, w = first.shape[:2]
    vgap, hgap = max(2, math.ceil(0.5 * h)), max(1, w // 8)  # room for a label above each tile
    step_y, step_x = h + vgap, w + hgap
    canvas = np.full((len(ts) * step_y, cols * step_x - hgap, *first.shape[2:]), 255, np.uint8)
    orig = df[df["k"] == -1]
    labels = []
    for i, t in enumerate(ts):
        tiles = [(0, orig.iloc[0], "original" if i == 0 else "")] if len(orig) else []
        tiles += [
            (int(r["k"]) + 1, r, "?" if pd.isna(r["label"]) else str(r["label"]))
            for _, r in df[(df["t"] == t) & (df["k"] >= 0)].iterrows()
        ]
        for j, r, label in tiles:
            y, x = vgap + i * step_y, j * step_x
            canvas[y : y + h, x : x + w] = _pixels(r)
            labels.append((x + w / 2, y - 0.5, label))
    tile_in = 0.75 / w  # inches per pixel: a tile is 0.75 in wide, as before
    fig, ax = plt.subplots(figsize=(canvas.shape[1] * tile_in + 1.2, canvas.shape[0] * tile_in + 0.2))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    for x, y, label in labels:
        ax.text(x, y, label, ha="center", va="bottom", fontsize=7)
    ax.set_yticks([vgap + i * step_y + h / 2 for i in range(len(ts))], [f"t={t:.2f}" for t in ts], fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_frame_on(False)
    return png_bytes(fig)


def _pixels(r: Any) -> np.ndarray:
    im = np.frombuffer(r["pixels"], dtype=np.uint8).reshape(int(r["h"]), int(r["w"]), int(r["c"]))
    return im[..., 0] if im.shape[2] == 1 else im


@cached
def clone_figure(record: dict[str, Any]) -> bytes | None:
    """PNG of the clone agreement against OU time, with its 0.775 crossing and the speciation time t_S."""
    agreement, t_s = record.get("clone_agreement"), record.get("t_S")
    ts = record.get("clone_ts") or record.get("ts")  # runs before the clone grid had their own: the scan's
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
    pooled = pooled_crossing(ok)
    if pooled is not None and pooled["crossing_over_t_S"] is not None:
        intro += (
            f" The clone agreement averaged over the {pooled['cases']} cases crosses {CLONE_CROSSING} at "
            f"t = {pooled['crossing']:.3f}, {pooled['crossing_over_t_S']:.2f} × t_S."
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
    """index.html and summary.json, with {"diffusion": {"cases": [...], "pooled_clone_agreement": {...}}}
    added to the summary (`pooled_crossing`; null without clones)."""
    summary = write_generic_report(run)
    records = _records(run)
    cases = []
    for case, r in sorted(records.items(), key=lambda kv: tuple(kv[1].get("order", (0,)))):
        if r.get("status") == "ok":
            cases.append(
                {k: r.get(k) for k in SUMMARY_KEYS}
                | {"case": case, "crossing_over_t_S": r.get("crossing_over_t_S")}
            )
        else:
            cases.append({"case": case, "status": "failed", "error": r.get("error")})
    pooled = pooled_crossing([r for r in records.values() if r.get("status") == "ok"])
    summary = {**summary, "diffusion": {"cases": cases, "pooled_clone_agreement": pooled}}
    (run.path / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary
