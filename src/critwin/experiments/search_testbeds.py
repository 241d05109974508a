"""The two exact testbeds on which window-search strategies are graded (tests, benchmarks/adaptive_bench).

- gaussian: the demo's 1-D two-level Gaussian hierarchy (groups 600 apart, components 6 apart) under OU,
  exact posterior sampler, scanned from x0 = the centre of A1, feature the Bayes class of the component;
  theory windows `critwin.theory.staircase` of the chain {A1} ⊂ {A1, A2} ⊂ everything at ε = 0.1;
  resolution and tolerance 0.1 OU time, min_jump 0.2.
- language: a hierarchical toy language of 36 tokens (topic at token 6, field given topic at token 21,
  fillers between), feature the field, under truncation (t = tokens removed from the end). A choice first
  expressed at token j is decided between t = L − j − 1 and L − j (closed form), so the windows are
  [14, 15] (field) and [29, 30] (topic); resolution and tolerance 1 token, min_jump 0.1 (the topic step
  is 0.5 → 0.25).

`grade` says which theory windows a scan found and whether it reported a false one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from critwin.experiments.demo import demo_mixture
from critwin.features.base import ChoiceFeature, MixtureClass
from critwin.samplers.gaussian import GaussianMixtureSampler, exact_curve
from critwin.samplers.toy_lm import Choice, Filler, ToyLanguage, ToyLMSampler
from critwin.theory import staircase


@dataclass(frozen=True)
class SearchTestbed:
    """A scan with a known answer: sampler, scanned sample x, feature, the theory's windows [lo, hi] in
    forward time, the finest step of t (`resolution`), the location tolerance, the rule's min_jump, the
    dense grid (every step of t), a coarse starting grid for adaptive search, and `exact`: the exact
    P(kept | x, t) at given times (quadrature / enumeration, independent of any draws)."""

    name: str
    sampler: Any
    x: Any
    feature: Any
    theory: tuple[tuple[float, float], ...]
    resolution: float
    tol: float
    min_jump: float
    dense: tuple[float, ...]
    coarse: tuple[float, ...]
    exact: Callable[[Sequence[float]], np.ndarray]


def gaussian_hierarchy() -> SearchTestbed:
    mix = demo_mixture()
    chain = [["A1"], ["A1", "A2"], ["A1", "A2", "B1", "B2"]]
    x = mix.means[0].copy()
    return SearchTestbed(
        name="gaussian", sampler=GaussianMixtureSampler(mix, method="posterior", t_max=10.0),
        x=x, feature=MixtureClass(mix),
        theory=tuple((w.lo.t, w.hi.t) for w in staircase(mix, 0.1, chain)),
        resolution=0.1, tol=0.1, min_jump=0.2,
        dense=tuple(round(0.1 * i, 10) for i in range(101)), coarse=tuple(float(i) for i in range(11)),
        exact=lambda ts: exact_curve(mix, x, ts).p,
    )


def long_language(gap: int = 14) -> ToyLanguage:
    """6 fillers, topic (science | art), `gap` fillers, field given topic (2 per topic), `gap` fillers."""
    f = ("um", "so", "well")
    return ToyLanguage((
        Filler(6, f), Choice("topic", (("science",), ("art",)), (0.5, 0.5)), Filler(gap, f),
        Choice("field", (("physics",), ("biology",), ("music",), ("painting",)),
               {"science": (0.5, 0.5, 0, 0), "art": (0, 0, 0.5, 0.5)}, given="topic"),
        Filler(gap, f),
    ))


def language() -> SearchTestbed:
    lang = long_language()
    big_l = lang.length
    sampler = ToyLMSampler(lang)
    decided = (lang.decision_position(c) for c in ("topic", "field"))
    x = sampler.sample(1, np.random.default_rng(1))[0]
    return SearchTestbed(
        name="language", sampler=sampler, x=x,
        feature=ChoiceFeature(lang, ["field"]),
        theory=tuple(sorted((big_l - j - 1.0, big_l - j * 1.0) for j in decided)),
        resolution=1.0, tol=1.0, min_jump=0.1,
        dense=tuple(float(i) for i in range(big_l + 1)),
        coarse=tuple(float(round(i * big_l / 8)) for i in range(9)),
        exact=lambda ts: lang.exact_curve(x, ts, ["field"]),
    )


def search_testbeds() -> list[SearchTestbed]:
    return [gaussian_hierarchy(), language()]


def grade(theory: Sequence[Sequence[float]], detected: Sequence[Sequence[float]], tol: float
          ) -> tuple[list[bool], bool]:
    """(found per theory window, whether a false window was reported). A theory window [lo, hi] is found
    when a detected window overlaps it and lies within it up to `tol` on either side; a detected window
    is false when it sticks out of every theory window by more than `tol`."""
    def outside(a: float, b: float, lo: float, hi: float) -> float:
        return max(0.0, lo - a, b - hi)

    found = [any(a <= hi + tol and b >= lo - tol and outside(a, b, lo, hi) <= tol for a, b in detected)
             for lo, hi in theory]
    false = any(min(outside(a, b, lo, hi) for lo, hi in theory) > tol for a, b in detected)
    return found, false
