"""Benchmark: draws needed to localise critical windows, adaptive search against dense baselines.

Methods, each with a ladder of settings (the cheapest setting that reaches the quality target counts):
- dense: n draws at every unit of t (a fixed grid at token resolution, or every 0.1 OU time);
- every-prefix: Critical Tokens' rollouts, n draws at every unit (same grid, their n = 64 included);
- bisect: PTS bisection from both ends, n draws per point, split where |Δp̂| >= 0.2;
- adaptive: critwin's `Adaptive` (coarse grid, sequential allocation, bisection of window edges).

Quality target: over R seeded runs, recall >= 95% of the theory's windows (a theory window is found when a
detected window overlaps it and lies within it up to the tolerance: 1 token, or 0.1 OU time) and at most 5%
of runs with a false window (one sticking out of every theory window by more than the tolerance). Windows
are found by the same rule for every method (`detect_windows`, level 0.99; adaptive and bisect curves with
`resolution`, so that their irregular grids are tested like the dense grid with points left out).

Testbeds (exact truth):
- gaussian: the demo's 1-D two-level Gaussian hierarchy (groups 600 apart, components 6 apart), exact
  posterior sampler, x0 = the centre of A1, Bayes class of the component; theory windows from `staircase`.
- language: a hierarchical toy language of 36 tokens (topic at token 6, field given topic at token 21,
  fillers between), feature = the field; windows at the deciding tokens (closed form of truncation).
The bundled reasoning model is not part of this version (see the issue note).

Last stdout line: one JSON object with per-testbed draws, draw_ratio_vs_dense, draw_ratio_vs_bisect (and
per-testbed ratios; null where a method never reaches the target on its ladder).
Usage: python benchmarks/adaptive_bench.py [--runs R] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

import critwin as cw
from critwin.experiments.demo import demo_mixture
from critwin.features.base import ChoiceFeature, MixtureClass
from critwin.samplers.gaussian import GaussianMixtureSampler
from critwin.samplers.toy_lm import Choice, Filler, ToyLanguage, ToyLMSampler
from critwin.strategies import Adaptive, Bisect, EveryPrefix, Fixed
from critwin.theory import staircase
from critwin.windows import WindowRule


def long_language(gap: int = 14) -> ToyLanguage:
    f = ("um", "so", "well")
    return ToyLanguage((
        Filler(6, f), Choice("topic", (("science",), ("art",)), (0.5, 0.5)), Filler(gap, f),
        Choice("field", (("physics",), ("biology",), ("music",), ("painting",)),
               {"science": (0.5, 0.5, 0, 0), "art": (0, 0, 0.5, 0.5)}, given="topic"),
        Filler(gap, f),
    ))


def testbeds() -> list[dict]:
    mix = demo_mixture()
    chain = [["A1"], ["A1", "A2"], ["A1", "A2", "B1", "B2"]]
    gauss = dict(
        name="gaussian", sampler=GaussianMixtureSampler(mix, method="posterior", t_max=10.0),
        x=mix.means[0].copy(), feature=MixtureClass(mix), tol=0.1, res=0.1, min_jump=0.2,
        theory=[(w.lo.t, w.hi.t) for w in staircase(mix, 0.1, chain)],
        grid=[round(0.1 * i, 10) for i in range(101)], coarse=[float(i) for i in range(11)],
    )
    lang = long_language()
    big_l = lang.length
    sampler = ToyLMSampler(lang)
    text = sampler.sample(1, np.random.default_rng(1))[0]
    language = dict(
        name="language", sampler=sampler, x=text, feature=ChoiceFeature(lang, ["field"]), tol=1.0, res=1.0,
        # Truncation closed form: a choice first expressed at token j is decided between t = L-j-1 and L-j.
        min_jump=0.1, theory=sorted((big_l - j - 1.0, big_l - j * 1.0)
                                    for j in (lang.decision_position(c) for c in ("topic", "field"))),
        grid=[float(i) for i in range(big_l + 1)], coarse=[float(round(i * big_l / 8)) for i in range(9)],
    )
    return [gauss, language]


def score(theory, detected, tol) -> tuple[list[bool], bool]:
    """(found per theory window, whether a false window was reported)."""
    def outside(a, b, lo, hi):
        return max(0.0, lo - a, b - hi)

    found = [any(a <= hi + tol and b >= lo - tol and outside(a, b, lo, hi) <= tol for a, b in detected)
             for lo, hi in theory]
    false = any(min(outside(a, b, lo, hi) for lo, hi in theory) > tol for a, b in detected)
    return found, false


def evaluate(tb: dict, make, runs: int, irregular: bool) -> dict:
    rule = WindowRule(level=0.99, min_jump=tb["min_jump"])
    found, false, draws = [], 0, 0
    for seed in range(runs):
        curve = cw.scan(tb["sampler"], tb["x"], feature=tb["feature"], strategy=make(tb), seed=seed)
        det = [(w.t_lo, w.t_hi) for w in rule.find(curve, tb["res"] if irregular else None)]
        f, bad = score(tb["theory"], det, tb["tol"])
        found += f
        false += bad
        draws += int(curve.n_total.sum())
    return {"recall": float(np.mean(found)), "false_rate": false / runs, "draws": draws / runs}


LADDERS = {
    "dense": ([8, 16, 24, 32, 48, 64, 96, 128], lambda n: lambda tb: Fixed(tb["grid"], n), False),
    "every-prefix": ([64], lambda n: lambda tb: EveryPrefix(n=n, resolution=tb["res"]), False),
    "bisect": ([10, 20, 40, 80, 160], lambda n: lambda tb: Bisect(n=n, resolution=tb["res"]), True),
    "adaptive": ([(8, 32), (8, 64), (8, 128), (16, 128), (16, 256)],
                 lambda s: lambda tb: Adaptive(tb["coarse"], n_min=s[0], n_max=s[1], resolution=tb["res"],
                                               min_jump=tb["min_jump"]), True),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--smoke", action="store_true", help="5 runs, first two rungs of each ladder")
    args = ap.parse_args()
    runs = 5 if args.smoke else args.runs
    out: dict = {"runs": runs, "target": {"recall": 0.95, "false_rate": 0.05}, "testbeds": {}}
    for tb in testbeds():
        rows = {}
        for name, (ladder, make, irregular) in LADDERS.items():
            tried = []
            for setting in ladder[:2] if args.smoke else ladder:
                t0 = time.perf_counter()
                r = evaluate(tb, make(setting), runs, irregular)
                r["setting"] = setting
                tried.append(r)
                took = time.perf_counter() - t0
                print(f"{tb['name']} {name} {setting}: {r} ({took:.1f} s)", file=sys.stderr)
                if r["recall"] >= 0.95 and r["false_rate"] <= 0.05:
                    break
            ok = [r for r in tried if r["recall"] >= 0.95 and r["false_rate"] <= 0.05]
            rows[name] = {"reached": bool(ok), "draws": ok[0]["draws"] if ok else None, "tried": tried}
        ad = rows["adaptive"]["draws"]
        for base in ("dense", "bisect", "every-prefix"):
            d = rows[base]["draws"]
            rows[f"ratio_vs_{base}"] = None if (d is None or ad is None) else d / ad
        out["testbeds"][tb["name"]] = rows

    def pooled(base: str) -> float | None:
        vals = [r[f"ratio_vs_{base}"] for r in out["testbeds"].values()]
        if any(v is None for v in vals):
            return None
        return float(math.exp(np.mean(np.log(vals))))  # geometric mean over testbeds

    out["draw_ratio_vs_dense"] = pooled("dense")
    out["draw_ratio_vs_bisect"] = pooled("bisect")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
