"""The built-in demo: both exact testbeds, measured against exact truth and the theory's windows.

Cases (forward time t grows with degradation):

- gaussian/*: a 1-D two-level Gaussian hierarchy, groups A (weight 0.2), B (0.8) at ∓300 and two
  unit-variance components 6 apart in each (scales 600 vs 6, so the fine and the coarse feature are
  decided in disjoint windows). The scanned sample is the centre of component A1.
  Feature: the Bayes class of the resample (component, or
  group). Samplers: the exact posterior and the numerical DDPM sampler with the exact score (100 steps).
  Exact curve by quadrature; theory windows from the staircase {A1} ⊂ A ⊂ all (or A ⊂ all for the group).
- language/*: the hierarchical toy language (topic → field, mood, ending); t = tokens removed from the end.
  Features: the field (a 2-step staircase, since the topic already tells half of it) and all choices
  (a 4-step staircase, as in the paper's structured-output task). Exact curve and windows by enumeration.

Every case scans n resamples per t (one batched sampler call), detects windows at level 0.99 and writes
everything to a run directory, then the report (index.html, summary.json).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from critwin.errors import CritwinError
from critwin.features.base import ChoiceFeature, MixtureClass
from critwin.rundir import RunDir, theory_intervals
from critwin.samplers.gaussian import GaussianMixtureSampler, exact_curve
from critwin.samplers.toy_lm import ToyLMSampler, demo_language
from critwin.scan import scan
from critwin.serialize import jsonable
from critwin.theory import GaussianMixture, staircase
from critwin.windows import detect_windows, paper_rule_windows

EPS = 0.1
LEVEL = 0.99
GROUP_SEP = 600.0
COMPONENT_SEP = 6.0


def demo_mixture() -> GaussianMixture:
    """The demo's 1-D two-level hierarchy: groups A (−300, weight 0.2) and B (+300, weight 0.8), each of
    two unit-variance components 6 apart with equal weights."""
    g, c = GROUP_SEP / 2, COMPONENT_SEP / 2
    return GaussianMixture(
        np.array([[-g - c], [-g + c], [g - c], [g + c]]),
        1.0,
        [0.1, 0.1, 0.4, 0.4],
        labels=["A1", "A2", "B1", "B2"],
    )


GROUPS = {"A": (0, 1), "B": (2, 3)}


@dataclass(frozen=True)
class CaseResult:
    """What the demo measured for one case."""

    name: str
    theory_windows: list[tuple[float, float]]
    detected_windows: list[tuple[float, float]]


def _gaussian_cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    mix = demo_mixture()
    x0 = mix.means[0].copy()  # the centre of component A1: a typical sample (per-sample curves vary with x0)
    ts = np.round(np.arange(0.0, 8.0 + 1e-9, 0.1), 10)
    comp = ["A1"]
    group = ["A1", "A2"]
    everything = ["A1", "A2", "B1", "B2"]
    sample = f"x0 = {x0[0]:g} (the centre of component A1)"
    out = []
    for method, steps_note in (("posterior", "exact posterior"), ("ddpm", "DDPM, exact score, 100 steps")):
        out.append(
            dict(
                name=f"gaussian/component/{method}",
                title=f"Gaussian hierarchy · component feature · {steps_note}",
                description="Which of the four components the resample belongs to. Two windows: the fine "
                "feature (A1 vs A2) is lost first, the coarse one (group A vs B) much later.",
                sampler=GaussianMixtureSampler(mix, method=method, steps=100, t_max=10.0),
                feature=MixtureClass(mix),
                feature_name="Bayes class among components A1, A2, B1, B2",
                x=x0,
                ts=ts,
                exact=lambda x0=x0, ts=ts: exact_curve(mix, x0, ts).p,
                theory=lambda: staircase(mix, EPS, [comp, group, everything]),
                theory_labels=["{A1} inside A", "A inside all"],
                sample=sample,
                min_jump=0.2,
            )
        )
    out.append(
        dict(
            name="gaussian/group/posterior",
            title="Gaussian hierarchy · group feature · exact posterior",
            description="Which group (A or B) the resample belongs to: one window, at the coarse scale.",
            sampler=GaussianMixtureSampler(mix, method="posterior", t_max=10.0),
            feature=MixtureClass(mix, GROUPS),
            feature_name="Bayes class among groups A = {A1, A2}, B = {B1, B2}",
            x=x0,
            ts=ts,
            exact=lambda x0=x0, ts=ts: exact_curve(mix, x0, ts, GROUPS).p,
            theory=lambda: staircase(mix, EPS, [group, everything]),
            theory_labels=["A inside all"],
            sample=sample,
            min_jump=0.2,
        )
    )
    return out


def _language_cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    lang = demo_language()
    sampler = ToyLMSampler(lang)
    x = sampler.sample(1, rng)[0]
    ts = np.arange(0, lang.length + 1, dtype=float)
    mix = lang.discrete_mixture()
    out = []
    for names, title, desc, min_jump in (
        (
            ["field"],
            "Toy language · field of study",
            "The field is chosen at its token, but the topic chosen earlier already tells half of it: "
            "a two-step staircase.",
            0.2,
        ),
        (
            list(lang.choice_names),
            "Toy language · all four choices",
            "The whole tuple of choices (the paper's structured-output task): one window at the deciding "
            "token of each choice, flat in between. P(kept) is a product of the choices' probabilities, so "
            "the later steps are small; this case detects windows with min_jump = 0.05.",
            0.05,
        ),
    ):
        chain = lang.chain(x, names)
        out.append(
            dict(
                name="language/" + ("+".join(names) if len(names) < 3 else "all"),
                title=title,
                description=desc,
                sampler=sampler,
                feature=ChoiceFeature(lang, names),
                feature_name="options chosen at " + ", ".join(names),
                x=x,
                ts=ts,
                exact=lambda names=names: lang.exact_curve(x, ts, names),
                theory=lambda chain=chain: staircase(mix, EPS, chain),
                theory_labels=None,
                sample=lang.decode(x),
                min_jump=min_jump,
            )
        )
    return out


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    n: int = 200,
    n_language: int = 2000,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    reasoning: bool = True,
) -> dict[str, Any]:
    """Run every demo case into the run directory `out` (new or empty) and write its report.

    reasoning: also run the reasoning scan of the bundled model into `out/reasoning/` (a run directory of
    its own, linked from the report); its numbers go to summary.json under "reasoning".

    n: resamples per t for the Gaussian cases; n_language: for the language cases (cheap, and the later
    steps of the all-choices staircase are small, ~0.1, so they need more draws to be resolved).
    Returns the summary ({"cases": [...]}, windows in forward time t)."""
    from critwin.report.build import write_report  # report sits above experiments in the import order

    for name, value in (("n", n), ("n_language", n_language)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CritwinError(f"{name}={value!r} must be a whole number >= 1 (resamples per t)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CritwinError(f"seed={seed!r} must be a whole number >= 0")
    run = RunDir.create(
        out,
        "demo",
        {
            "seed": seed,
            "n": n,
            "n_language": n_language,
            "eps": EPS,
            "level": LEVEL,
            "title": "critwin demo — critical windows on exact testbeds",
            "subtitle": "Measured forward–reverse curves against exact truth and the theory's windows",
            "description": "Each case noises (or truncates) one sample to level t, resamples n times with "
            "the "
            "full model and counts how often a feature survives. Measured points carry 99% Wilson intervals; "
            "the black line is the exact curve; shaded bands are the theory's windows [T_after, T_before] "
            f"at ε = {EPS}; red marks are windows detected from the measurements alone.",
        },
    )
    root = np.random.default_rng(seed)
    rng_g, rng_l = (np.random.default_rng(s) for s in root.bit_generator.seed_seq.spawn(2))
    cases = [dict(c, n=n) for c in _gaussian_cases(rng_g)] + [
        dict(c, n=n_language) for c in _language_cases(rng_l)
    ]
    bar = tqdm(cases, desc="critwin demo", unit="case", file=sys.stderr, disable=not progress)
    for i, case in enumerate(bar):
        bar.set_postfix_str(case["name"])
        curve = scan(
            case["sampler"],
            case["x"],
            case["ts"],
            case["n"],
            case["feature"],
            seed=np.random.default_rng([seed, i]),
            on_draws=run.draws_writer(case["name"]),
        )
        run.write_curve(case["name"], curve, exact=case["exact"]())
        theory = theory_intervals(case["theory"](), case["theory_labels"])
        run.write_case(
            case["name"],
            detected=detect_windows(curve, level=LEVEL, min_jump=case["min_jump"]),
            paper=paper_rule_windows(curve, threshold=0.2, level=LEVEL),
            theory=theory,
            eps=EPS,
            meta={
                "title": case["title"],
                "description": case["description"],
                "sampler": f"{type(case['sampler']).__name__}"
                + (f" ({case['sampler'].method})" if hasattr(case["sampler"], "method") else ""),
                "feature": case["feature_name"],
                "sample": case["sample"],
                "n": case["n"],
                "min_jump": case["min_jump"],
            },
        )
    if reasoning:
        from critwin.experiments.reasoning import run_reasoning_demo

        if log:
            log("reasoning scan of the bundled model …")
        result = run_reasoning_demo(run.path / "reasoning", seed=seed, progress=progress, log=log)
        result.pop("seconds", None)  # wall time would make same-seed runs differ
        result["out"] = "reasoning"
        set_json_key(run.path / "summary.json", "reasoning", result)
    if log:
        log("drawing the report …")
    return write_report(run, LEVEL)


def set_json_key(path: Path, key: str, value: Any) -> None:
    """Set one top-level key of a JSON file (created if missing or damaged); write_report keeps such
    keys."""
    from critwin.rundir import write_json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    data[key] = value
    write_json(path, jsonable(data))
