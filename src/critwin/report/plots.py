"""Figures for reports (matplotlib, Agg backend, PNG bytes).

`curve_figure` draws one case: measured P(kept) with its Wilson intervals, the exact curve, the theory's
windows shaded and the detected windows marked. The x axis is forward time t (t grows with degradation);
for token curves a second axis shows the fraction of the text kept, 1 − t/t_max.

Legends sit outside the axes (`outside_legend`), so they never hide data; every figure is made with
layout="constrained", which keeps room for them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, never need a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from critwin.report.figcache import cached
from critwin.rundir import CaseRecord  # noqa: E402

THEORY_COLOUR = "#f2b134"
DETECTED_COLOUR = "#c0392b"
MEASURED_COLOUR = "#1f4e9c"
EXACT_COLOUR = "#222222"
UNIT_NAMES = {"ou": "OU time t", "tokens": "tokens removed t", "mask": "masking time t"}


def png_bytes(fig: plt.Figure) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def outside_legend(fig: plt.Figure, ax: plt.Axes, *, ncol: int | None = None, fontsize: float = 8) -> None:
    """The axes' legend above the plotting area, outside it (the figure needs layout="constrained")."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncol=ncol or min(len(handles), 4),
                   fontsize=fontsize, frameon=False)


def bar_labels(ax: plt.Axes, x: Sequence[float], values: Sequence[float | None], *, fontsize: float = 7,
               horizontal: bool = False, at: Sequence[float | None] | None = None) -> None:
    """Print each bar's value at its end, or at `at` (e.g. above its error bar); "n/a" where it is
    undefined, at 0. A bar of height 0 is then still visible."""
    for i, (xi, v) in enumerate(zip(x, values, strict=True)):
        text = "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}"
        pos = None if at is None else at[i]
        at_i = float(pos) if pos is not None and math.isfinite(pos) else (0.0 if text == "n/a" else float(v))
        if horizontal:
            ax.annotate(text, (at_i, xi), xytext=(3, 0), textcoords="offset points", ha="left", va="center",
                        fontsize=fontsize)
        else:
            ax.annotate(text, (xi, at_i), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=fontsize, rotation=90 if len(x) > 8 else 0)


def message_png(fig: plt.Figure, ax: plt.Axes, text: str) -> bytes:
    """PNG of `fig` with `ax` showing only `text` (for a case without data to plot)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return png_bytes(fig)


@cached
def curve_figure(rec: CaseRecord, *, level: float = 0.99, title: str | None = None) -> bytes:
    """PNG of one case: measured P(kept) ± `level` Wilson intervals, exact curve, theory windows (shaded
    bands, with edge uncertainty hatched where the theory used Monte Carlo), detected windows (red bars
    above the curve and dashed edges)."""
    curve = rec.curve
    fig, ax = plt.subplots(figsize=(8.6, 4.4), layout="constrained")
    if curve is None:
        return message_png(fig, ax, "no curve stored for this case")
    t = curve.t
    p = curve.p_hat
    lo, hi = curve.wilson(level)
    span = float(t.max() - t.min()) if len(t) > 1 else 1.0
    x_lo, x_hi = float(t.min()) - 0.02 * span, float(t.max()) + 0.02 * span

    for i, w in enumerate(rec.theory):
        a, b = max(w.lo, x_lo), min(w.hi, x_hi)
        if b > a:
            ax.axvspan(a, b, color=THEORY_COLOUR, alpha=0.28, lw=0, label="theory window" if i == 0 else None)
        for iv in (w.lo_interval, w.hi_interval):
            if iv is not None and iv[1] > iv[0] and math.isfinite(iv[0]) and math.isfinite(iv[1]):
                ax.axvspan(iv[0], iv[1], color=THEORY_COLOUR, alpha=0.5, lw=0, hatch="///", fill=False)

    if rec.exact is not None and np.any(np.isfinite(rec.exact)):
        ok = np.isfinite(rec.exact)
        step = curve.time_unit == "tokens"
        ax.plot(
            t[ok],
            rec.exact[ok],
            color=EXACT_COLOUR,
            lw=1.6,
            label="exact",
            drawstyle="steps-mid" if step else "default",
            zorder=3,
        )
    valid = curve.n_valid > 0
    ax.errorbar(
        t[valid],
        p[valid],
        yerr=np.clip([p[valid] - lo[valid], hi[valid] - p[valid]], 0.0, None),
        fmt="o",
        ms=3.2,
        color=MEASURED_COLOUR,
        ecolor=MEASURED_COLOUR,
        elinewidth=0.9,
        capsize=1.5,
        alpha=0.9,
        label=f"measured ({int(round(level * 100))}% Wilson)",
        zorder=4,
    )
    for i, w in enumerate(rec.detected):
        ax.plot(
            [w.t_lo, w.t_hi],
            [1.075, 1.075],
            color=DETECTED_COLOUR,
            lw=5,
            solid_capstyle="butt",
            label="detected window" if i == 0 else None,
            zorder=5,
        )
        for x in (w.t_lo, w.t_hi):
            ax.axvline(x, color=DETECTED_COLOUR, ls="--", lw=0.9, alpha=0.8, zorder=2)
    failed = curve.n_failed > 0
    if np.any(failed):
        ax.plot(t[failed], np.full(failed.sum(), -0.06), "x", color="#7f7f7f", ms=4, label="has failed draws")

    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(-0.1, 1.13)
    ax.set_ylabel("P(feature kept)")
    ax.set_xlabel(UNIT_NAMES.get(curve.time_unit, f"t ({curve.time_unit})") + "  →  more degraded")
    ax.grid(alpha=0.25)
    if curve.time_unit == "tokens" and curve.t_max:
        tm = float(curve.t_max)
        sec = ax.secondary_xaxis("top", functions=(lambda x: 1 - x / tm, lambda f: tm * (1 - f)))
        sec.set_xlabel("fraction of text kept")
    if title:
        ax.set_title(title, fontsize=11, loc="left")
    outside_legend(fig, ax)
    return png_bytes(fig)


@cached
def summary_figure(names: Sequence[str], coverage: Sequence[float], level: float = 0.99) -> bytes:
    """PNG bar chart of the share of points whose interval contains the exact value, per case."""
    fig, ax = plt.subplots(figsize=(8.6, 1.2 + 0.42 * len(names)), layout="constrained")
    y = np.arange(len(names))
    cov = np.array([np.nan if c is None else c for c in coverage], dtype=float)
    ax.barh(y, np.nan_to_num(cov), color=MEASURED_COLOUR, alpha=0.8, label="coverage")
    bar_labels(ax, y, list(cov), fontsize=8, horizontal=True)
    ax.axvline(level, color=DETECTED_COLOUR, ls="--", lw=1, label=f"nominal {level:.0%}")
    ax.set_yticks(y, names, fontsize=9)
    ax.set_xlim(0, 1.1)  # room for the value labels right of a full bar
    ax.set_xlabel("coverage: share of points whose interval contains the exact value")
    ax.invert_yaxis()
    outside_legend(fig, ax)
    return png_bytes(fig)
