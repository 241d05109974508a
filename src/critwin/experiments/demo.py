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

Every case scans n resamples per t (one batched sampler call) and detects windows at level 0.99;
`critwin.demo.run_demo` runs the cases into a run directory and writes the report (index.html,
summary.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from critwin.curves import scan
from critwin.experiments.base import Case, CaseResult
from critwin.features.base import ChoiceFeature, MixtureClass
from critwin.params import PARAMS, check
from critwin.rundir import theory_intervals
from critwin.samplers.gaussian import GaussianMixtureSampler, exact_curve
from critwin.samplers.toy_lm import ToyLMSampler, demo_language
from critwin.schedules import ou_grid, token_grid
from critwin.serialize import jsonable
from critwin.theory import GaussianMixture, staircase
from critwin.windows import WindowRule

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


def _gaussian_cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    mix = demo_mixture()
    x0 = mix.means[0].copy()  # the centre of component A1: a typical sample (per-sample curves vary with x0)
    ts = ou_grid(8.0, 0.1)
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
    ts = token_grid(lang.length)
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


@dataclass
class DemoExperiment:
    """The exact-testbed demo as an experiment: one case per testbed curve, each with its own exact
    sampler (no shared sampler). n: resamples per t for the Gaussian cases; n_language: for the language
    cases (cheap, and the later steps of the all-choices staircase are small, ~0.1, so they need more
    draws). The cases' samples are drawn from `seed`; each scan from the case's own generator."""

    seed: int = 0
    n: int = 200
    n_language: int = 2000

    name = "demo"
    resume_keys = ("seed", "n", "n_language", "eps", "level")

    def __post_init__(self) -> None:
        check("n", self.n)
        PARAMS["n"].check(self.n_language, "n_language")
        check("seed", self.seed)

    def config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "n": self.n,
            "n_language": self.n_language,
            "eps": EPS,
            "level": LEVEL,
            "title": "critwin demo — critical windows on exact testbeds",
            "subtitle": "Measured forward–reverse curves against exact truth and the theory's windows",
            "description": "Each case noises (or truncates) one sample to level t, resamples n times with "
            "the full model and counts how often a feature survives. Measured points carry 99% Wilson "
            "intervals; the black line is the exact curve; shaded bands are the theory's windows "
            f"[T_after, T_before] at ε = {EPS}; red marks are windows detected from the measurements alone.",
        }

    def cases(self) -> list[Case]:
        root = np.random.default_rng(self.seed)
        rng_g, rng_l = (np.random.default_rng(s) for s in root.bit_generator.seed_seq.spawn(2))
        specs = [dict(c, n=self.n) for c in _gaussian_cases(rng_g)] + [
            dict(c, n=self.n_language) for c in _language_cases(rng_l)
        ]
        return [Case(c["name"], (i,), c) for i, c in enumerate(specs)]

    def check(self, sampler: Any) -> None:
        """Every case brings its own exact sampler; nothing to check."""

    def run_case(self, sampler: Any, case: Case, rng: np.random.Generator) -> CaseResult:
        c = case.data
        draws: list[Any] = []
        curve = scan(c["sampler"], c["x"], c["ts"], c["n"], c["feature"], seed=rng, on_draws=draws.append)
        rule = WindowRule(level=LEVEL, min_jump=c["min_jump"], paper_threshold=0.2)
        meta = {
            "title": c["title"],
            "description": c["description"],
            "sampler": f"{type(c['sampler']).__name__}"
            + (f" ({c['sampler'].method})" if hasattr(c["sampler"], "method") else ""),
            "feature": c["feature_name"],
            "sample": c["sample"],
            "n": c["n"],
            "min_jump": c["min_jump"],
        }
        return CaseResult(
            case.id,
            {"status": "ok", "title": c["title"]},
            tuple(draws),
            curve,
            rule.find(curve),
            rule.paper(curve),
            meta,
            exact=tuple(c["exact"]()),
            theory=tuple(theory_intervals(c["theory"](), c["theory_labels"])),
            eps=EPS,
        )


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
