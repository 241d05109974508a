"""Plots of theory TV curves against forward time with the predicted windows shaded (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from critwin.theory.spec import PairResult, TheorySpec  # noqa: E402

AXIS_LABELS = {
    "ou": "OU time t (more noise →)",
    "tokens": "tokens removed t (more truncation →)",
    "mask": "masking time t (more tokens masked →)",
}


def _t_grid(spec: TheorySpec, results: Sequence[PairResult]) -> np.ndarray:
    mix = spec.mixture
    if mix.time_unit == "tokens":
        return np.arange(int(mix.t_max) + 1, dtype=float)
    edges = [
        e.hi
        for r in results
        for e in (r.t_before, r.t_after, r.window.lo, r.window.hi)
        if e is not None and math.isfinite(e.hi)
    ]
    t_end = 1.3 * max(edges) if edges else 5.0
    return np.linspace(0.0, max(t_end, 1.0), 161)


def tv_curves(spec: TheorySpec, results: Sequence[PairResult], ts: np.ndarray) -> list[dict]:
    """The curves the plot shows: per pair, TV(targ, init)(t) (its fall through ε ends the window) and
    TV(targ, Θ∖targ)(t) (its fall through 1 − ε² starts it), as estimates with standard errors."""
    mix = spec.mixture
    out = []
    for r in results:
        kw = {"seed": spec.seed, "se_target": max(spec.se_target, 0.01)}
        inner = mix.tv_curve(r.targ, r.init, **kw)
        curves = {"pair": r, "ts": ts, "inner": [inner(t) for t in ts]}
        rest = mix.complement(r.targ)  # the window starts where targ stops being separated from the rest
        if rest:
            outer = mix.tv_curve(r.targ, rest, **kw)
            curves["outer"] = [outer(t) for t in ts]
        out.append(curves)
    return out


def plot_windows(spec: TheorySpec, results: Sequence[PairResult], path: str | Path) -> Path:
    """Draw TV curves vs forward time, thresholds ε and 1 − ε², each pair's window shaded; save to `path`."""
    mix = spec.mixture
    ts = _t_grid(spec, results)
    curves = tv_curves(spec, results, ts)
    fig, ax = plt.subplots(figsize=(8.0, 4.6), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    step = "steps-post" if mix.time_unit == "tokens" else "default"
    for i, c in enumerate(curves):
        r: PairResult = c["pair"]
        col = colors[i % len(colors)]
        name_t, name_i = mix.describe(r.targ), mix.describe(r.init)
        v = np.array([e.value for e in c["inner"]])
        se = np.array([e.se for e in c["inner"]])
        ax.plot(ts, v, color=col, lw=2, drawstyle=step, label=f"TV({name_t}, {name_i})")
        if np.any(se > 0):
            ax.fill_between(ts, v - 2 * se, v + 2 * se, color=col, alpha=0.15, lw=0)
        if "outer" in c:
            vo = np.array([e.value for e in c["outer"]])
            rest = mix.describe(mix.complement(r.targ))
            ax.plot(ts, vo, color=col, lw=1.5, ls="--", drawstyle=step, label=f"TV({name_t}, rest {rest})")
        lo = r.window.lo.t if r.window.lo is not None else None
        hi = r.window.hi.t if r.window.hi is not None else None
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and hi > lo:
            ax.axvspan(lo, hi, color=col, alpha=0.12, lw=0)
            ax.annotate(
                f"window of {name_t} in {name_i}",
                xy=(0.5 * (lo + hi), 1.02),
                ha="center",
                va="bottom",
                fontsize=8,
                color=col,
                annotation_clip=False,
            )
        for e in (r.window.lo, r.window.hi):
            if e is not None and math.isfinite(e.t):
                ax.axvline(e.t, color=col, lw=0.8, ls=":")
                if e.hi > e.lo:
                    ax.axvspan(e.lo, e.hi, color=col, alpha=0.3, lw=0)
    ax.axhline(spec.eps, color="0.4", lw=0.8, ls="-.", label=f"ε = {spec.eps:g}")
    ax.axhline(1 - spec.eps**2, color="0.6", lw=0.8, ls="-.", label=f"1 − ε² = {1 - spec.eps**2:g}")
    ax.set_xlabel(AXIS_LABELS.get(mix.time_unit, "forward time t (more degradation →)"))
    ax.set_ylabel("total variation distance")
    ax.set_ylim(-0.02, 1.08)
    ax.set_xlim(ts[0], ts[-1])
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="center right", framealpha=0.9)
    ax.set_title("Theory: TV curves and critical windows (shaded)", fontsize=11, pad=16)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
