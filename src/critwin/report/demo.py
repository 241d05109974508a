"""Report section of the built-in demo pointing at its reasoning scan (its own run dir `reasoning/`)."""

from __future__ import annotations

import json
from typing import Any

from critwin.report.build import register_sections
from critwin.report.html import Section, Table
from critwin.rundir import CaseRecord, RunDir

REASONING_DIR = "reasoning"


def format_rate(value: Any) -> str:
    """A rate with two decimals, or a dash when it is undefined (no problems to compute it on)."""
    return "—" if value is None else f"{value:.2f}"


@register_sections("demo")
def demo_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    """One section summarising the reasoning scan of the bundled model, linking to its own report."""
    path = run.path / REASONING_DIR / "summary.json"
    if not path.is_file():
        return []
    datasets = json.loads(path.read_text()).get("datasets", {})
    rows = [
        [
            name,
            d.get("n_problems"),
            format_rate(d.get("accuracy")),
            format_rate(d.get("share_with_window")),
            format_rate(d.get("accuracy_with_window")),
            format_rate(d.get("accuracy_without_window")),
            f"{format_rate(d.get('window_at_first_error_rate'))} (of {d.get('n_with_window')})",
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
        "first wrong step (of the problems with a window).",
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
