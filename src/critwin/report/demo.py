"""Report section of the built-in demo pointing at its reasoning scan (its own run dir `reasoning/`)."""

from __future__ import annotations

import json
from typing import Any

from critwin.report.build import register_sections
from critwin.report.html import Section, Table
from critwin.rundir import CaseRecord, RunDir
from critwin.stats import wilson_interval

REASONING_DIR = "reasoning"
DIFFUSION_DIR = "diffusion"


def format_rate(value: Any) -> str:
    """A rate with two decimals, or a dash when it is undefined (no problems to compute it on)."""
    return "—" if value is None else f"{value:.2f}"


def format_interval(entry: dict, key: str) -> str:
    """A rate with its interval (entry[key + "_ci"]) when the summary has one: "0.70 [0.48, 0.85]"."""
    ci = entry.get(f"{key}_ci")
    value = format_rate(entry.get(key))
    return f"{value} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and entry.get(key) is not None else value


def _rate_of(rate: Any, n: Any, level: Any) -> str:
    """A share of n problems with its Wilson interval (the count is rate · n, a whole number)."""
    if rate is None or not isinstance(n, int) or n < 1:
        return format_rate(rate)
    lo, hi = wilson_interval(round(rate * n), n, level if isinstance(level, float) else 0.95)
    return f"{rate:.2f} [{float(lo):.2f}, {float(hi):.2f}]"


def _method(entry: dict) -> str:
    level = entry.get("ci_level")
    return (f"{level:.0%} " if isinstance(level, float) else "") + str(entry.get("ci_method") or "intervals")


@register_sections("demo")
def demo_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    """Sections summarising the reasoning scan of the bundled model and the diffusion scan of the bundled
    digit model, each linking to its own report."""
    return [*_reasoning_section(run), *_diffusion_section(run)]


def _diffusion_section(run: RunDir) -> list[Section]:
    path = run.path / DIFFUSION_DIR / "summary.json"
    if not path.is_file():
        return []
    diffusion = json.loads(path.read_text()).get("diffusion", {})
    cases, pooled = diffusion.get("cases", []), diffusion.get("pooled_clone_agreement")

    def pairs(ps: Any) -> str:
        return ", ".join(f"[{a:.2f}, {b:.2f}]" for a, b in ps or []) or "none"

    rows = [
        [
            c.get("name", c.get("case")),
            c.get("class"),
            pairs(c.get("measured_windows")),
            pairs(c.get("theory_windows")),
            format_rate(c.get("t_S")),
            format_rate(c.get("clone_agreement_crossing")),
        ]
        if c.get("status") != "failed"
        else [c.get("case"), None, f"failed: {c.get('error')}", None, None, None]
        for c in cases
    ]
    table = Table(
        ["case", "class", "measured windows (OU t)", "theory window", "t_S", "clone crossing"],
        rows,
        caption="Generated digits of the bundled DDPM: where P(same class | t) drops, next to the "
        "Gaussian-mixture theory window of the digit's class, the speciation time t_S and the "
        "clone-agreement crossing (0.775)."
        + (
            f" Averaged over the {pooled['cases']} digits, the clone agreement crosses 0.775 at "
            f"{pooled['crossing_over_t_S']:.2f} × t_S."
            if pooled and pooled.get("crossing_over_t_S") is not None
            else ""
        ),
    )
    return [
        Section(
            "Diffusion: the bundled digit model",
            "Critical windows in noise level of a small DDPM trained by critwin on scikit-learn's 8×8 "
            "digits.",
            [table],
            html=f'<p><a href="{DIFFUSION_DIR}/index.html">Per-digit curves and image grids</a></p>',
        )
    ]


def _reasoning_section(run: RunDir) -> list[Section]:
    path = run.path / REASONING_DIR / "summary.json"
    if not path.is_file():
        return []
    datasets = json.loads(path.read_text()).get("datasets", {})
    rows = [
        [
            name,
            d.get("n_problems"),
            format_interval(d, "accuracy"),
            format_interval(d, "share_with_window"),
            format_interval(d, "accuracy_with_window"),
            format_interval(d, "accuracy_without_window"),
            f"{_rate_of(d.get('window_at_first_error_rate'), d.get('n_with_window'), d.get('ci_level'))} "
            f"(of {d.get('n_with_window')})",
        ]
        for name, d in datasets.items()
    ]
    table = Table(
        [
            "dataset",
            "problems",
            "accuracy",
            "share with a window",
            "accuracy with window",
            "accuracy without",
            "window at first wrong step",
        ],
        rows,
        caption="The bundled model's chain of thought cut at fractions of the response kept and resampled; "
        "'window at first wrong step': share of problems with a window whose window sits at the chain's "
        "first wrong step (of the problems with a window). Brackets: "
        + _method(next(iter(datasets.values()), {}))
        + ".",
    )
    return [
        Section(
            "Reasoning: the bundled model",
            "Critical windows in a small transformer's chain of thought on synthetic running sums, where the "
            "first wrong step is known.",
            [table],
            html=f'<p><a href="{REASONING_DIR}/index.html">Per-problem curves and highlighted chains of '
            "thought</a></p>",
        )
    ]
