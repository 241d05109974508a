"""Benchmark: window edges of a 10-component isotropic Gaussian mixture in d = 1000 (all TVs by Monte Carlo,
standard error ≤ 0.005 each): critwin's engine vs a straightforward scipy.stats evaluation of the same
densities.

critwin draws in the r ≤ K − 1 dimensional span of the means plus one χ²_{d−r} norm per draw and keeps the
draws fixed across t, so each TV evaluation costs O(n K). The baseline replays every TV evaluation the edge
search made, on the same draws rebuilt as full d-dimensional points, with scipy.stats.multivariate_normal
(diagonal `Covariance`, the cheap scipy form) and scipy.special.logsumexp. Both must give the same numbers.

Last stdout line: one JSON object with critwin_s, scipy_s, ratio, max_se and the agreement.
Usage: python benchmarks/theory_bench.py [--quick]   (--quick: baseline on every 8th evaluation, scaled up)
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
from scipy import special
from scipy.stats import Covariance, multivariate_normal

from critwin.theory import GaussianMixture, staircase
from critwin.theory import windows as windows_mod
from critwin.theory.forward import ou_variance
from critwin.theory.montecarlo import GaussianMC
from critwin.theory.tv import ScaledCurve

D, K, EPS, SE = 1000, 10, 0.1, 0.005


def build_mixture(seed: int = 0) -> GaussianMixture:
    """Hierarchy in d = 1000: 2 far groups (A: 4 comps, B: 6) of pairs each of 2 close comps."""
    rng = np.random.default_rng(seed)

    def direction() -> np.ndarray:
        v = rng.standard_normal(D)
        return v / np.linalg.norm(v)

    groups = [direction() * 0.0, direction() * 150.0]
    means = []
    for g, n_pairs in zip(groups, (2, 3), strict=True):
        for _ in range(n_pairs):
            centre = g + 25.0 * direction()
            for _ in range(2):
                means.append(centre + 4.0 * direction())
    variances = rng.uniform(0.7, 1.5, size=K)
    weights = rng.dirichlet(np.full(K, 5.0))
    return GaussianMixture(np.array(means), variances, weights)


class LoggedCurve:
    """Records every TV evaluation the edge search makes (curve, time, draws used, estimate)."""

    def __init__(self, curve, log: list) -> None:
        self.curve, self.log = curve, log
        self.exact, self.integer_t, self.t_max = curve.exact, curve.integer_t, curve.t_max

    def __call__(self, t: float, se_target: float | None = None):
        est = self.curve(t, se_target)
        mc, c = (self.curve.inner, self.curve.c) if isinstance(self.curve, ScaledCurve) else (self.curve, 1.0)
        self.log.append((mc, c, t, est.n, est.value, est.se))
        return est


def run_critwin(mix: GaussianMixture, chain) -> tuple[float, list, list]:
    log: list = []
    original = windows_mod._mc_edge

    def logged_edge(curve, thr, se_target, want_below, **kw):
        return original(LoggedCurve(curve, log), thr, se_target, want_below, **kw)

    windows_mod._mc_edge = logged_edge
    try:
        t0 = time.perf_counter()
        wins = staircase(mix, EPS, chain, seed=0, se_target=SE)
        elapsed = time.perf_counter() - t0
    finally:
        windows_mod._mc_edge = original
    return elapsed, wins, log


def full_draws(mix: GaussianMixture, mc: GaussianMC, rng: np.random.Generator) -> np.ndarray:
    """The estimator's draws as full d-dimensional standard normals z = B u + z_⊥ with ‖z_⊥‖² = χ² draw."""
    basis = mc.geom.basis
    g = rng.standard_normal((mc.n, D))
    g -= (g @ basis) @ basis.T
    g *= (np.sqrt(mc.chi2) / np.linalg.norm(g, axis=1))[:, None]
    return mc.u @ basis.T + g


def baseline_estimate(mix: GaussianMixture, mc: GaussianMC, z: np.ndarray, t: float, n: int) -> float:
    """The same stratified estimate, with densities from scipy.stats.multivariate_normal in full dimension."""
    s, var = math.exp(-t), ou_variance(mix.variances, t)
    k = mc.component[:n]
    x = s * mix.means[k] + np.sqrt(var[k])[:, None] * z[:n]
    logs = np.column_stack(
        [
            multivariate_normal(s * mix.means[j], Covariance.from_diagonal(np.full(D, var[j]))).logpdf(x)
            for j in mc.cols
        ]
    )
    with np.errstate(divide="ignore"):
        lp = special.logsumexp(logs + np.log(mc.pw_cols), axis=1)
        lq = special.logsumexp(logs + np.log(mc.qw_cols), axis=1)
    f = np.maximum(0.0, -np.expm1(np.minimum(lq - lp, 0.0)))
    strat = mc.stratum[:n]
    means = np.bincount(strat, weights=f, minlength=mc.strata.size) / np.bincount(
        strat, minlength=mc.strata.size
    )
    return float(np.dot(mc.pi, means))


def main() -> None:
    mix = build_mixture()
    chain = [[0, 1], [0, 1, 2, 3], list(range(K))]
    run_critwin(mix, chain)  # warm-up (imports, caches of numpy/scipy); timings come from the second run
    critwin_s, wins, log = run_critwin(mix, chain)
    max_se = max(rec[5] for rec in log)
    print(
        f"critwin: {len(log)} Monte Carlo TV evaluations, {critwin_s:.3f} s, max se {max_se:.4f}",
        file=sys.stderr,
    )
    for w in wins:
        print(
            f"  window of {list(w.targ)} in {list(w.init)}: "
            f"T_after {w.lo.t:.4f} [{w.lo.lo:.4f}, {w.lo.hi:.4f}]"
            f"  T_before {w.hi.t:.4f} [{w.hi.lo:.4f}, {w.hi.hi:.4f}]",
            file=sys.stderr,
        )

    # --quick replays every 8th evaluation only and scales the time up (reported as baseline_fraction).
    stride = 8 if "--quick" in sys.argv[1:] else 1
    replay = log[::stride]
    rng = np.random.default_rng(123)
    t0 = time.perf_counter()
    cache: dict[int, np.ndarray] = {}
    max_diff = 0.0
    for mc, c, t, n, value, _ in replay:
        if id(mc) not in cache:  # a straightforward implementation also draws its points once per curve
            cache[id(mc)] = full_draws(mix, mc, rng)
        est = c * baseline_estimate(mix, mc, cache[id(mc)], t, n)
        max_diff = max(max_diff, abs(est - value))
    scipy_s = (time.perf_counter() - t0) * len(log) / len(replay)
    ratio = scipy_s / critwin_s
    print(
        f"scipy.stats baseline: {scipy_s:.2f} s for the same {len(log)} evaluations on the same draws"
        f"{' (extrapolated from every 8th)' if stride > 1 else ''}; ratio {ratio:.1f}x; "
        f"max |difference| {max_diff:.2e}",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "critwin_s": round(critwin_s, 4),
                "scipy_s": round(scipy_s, 3),
                "ratio": round(ratio, 1),
                "max_se": round(max_se, 5),
                "n_evaluations": len(log),
                "max_abs_diff": max_diff,
                "baseline_fraction": round(len(replay) / len(log), 3),
                "d": D,
                "K": K,
                "edges": 2 * len(wins),
            }
        )
    )


if __name__ == "__main__":
    main()
