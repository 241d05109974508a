"""Property tests: the theorem and the pointwise bound on random exact discrete mixtures, monotonicity of TV
in t for every forward process, and bisection edges against brute-force scans."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from critwin.theory import (
    DiscreteMixture,
    GaussianMixture,
    forward_reverse_tv,
    pointwise_bound,
    t_after,
    t_before,
    theorem_bound,
)

TOL = 1e-9
MASK_GRID = [0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.4, 2.0, 3.0, 5.0, 8.0]


@st.composite
def small_problems(draw):
    """A random mixture of 2–4 laws over sequences of length 1–3 (alphabet 2–3), nested targ ⊆ init, ε."""
    k = draw(st.integers(2, 4))
    length = draw(st.integers(1, 3))
    vocab = draw(st.integers(2, 3))
    seqs = list(itertools.product(range(vocab), repeat=length))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    comps = []
    for _ in range(k):
        size = int(rng.integers(1, min(4, len(seqs)) + 1))
        idx = rng.choice(len(seqs), size=size, replace=False)
        p = rng.dirichlet(np.full(size, 0.7))
        comps.append({seqs[i]: float(x) for i, x in zip(idx, p, strict=True) if x > 0} or {seqs[idx[0]]: 1.0})
    comps = [{s: p / sum(c.values()) for s, p in c.items()} for c in comps]
    weights = rng.dirichlet(np.ones(k))
    init = sorted(rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False).tolist())
    targ = sorted(rng.choice(init, size=int(rng.integers(1, len(init) + 1)), replace=False).tolist())
    eps = draw(st.floats(0.02, 0.95))
    return comps, weights, targ, init, eps


def _check_theorem(process, problem):
    comps, weights, targ, init, eps = problem
    mix = DiscreteMixture(comps, weights, process)
    tb = t_before(mix, eps, targ, init)
    ta = t_after(mix, eps, init)
    bound = theorem_bound(eps, mix, init)
    times = list(range(mix.length + 1)) if process == "truncation" else list(MASK_GRID)
    if process == "masking":  # also probe the edges themselves and just inside them
        times += [e.t + d for e in (tb, ta) if e is not None and math.isfinite(e.t) for d in (0.0, 1e-7)]
    worst = 0.0
    for t in times:
        fr = forward_reverse_tv(mix, targ, init, t).value
        pw = pointwise_bound(mix, t, targ, init).value
        assert fr <= pw + TOL, (t, fr, pw)
        if tb is not None and ta is not None and tb.t <= t <= ta.t:
            assert fr <= bound + TOL, (t, fr, bound)
            worst = max(worst, fr / bound)
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("process", ["truncation", "masking"])
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(problem=small_problems())
def test_theorem_and_pointwise_bound_hold(process, problem):
    _check_theorem(process, problem)


@pytest.mark.parametrize("process", ["truncation", "masking"])
@settings(max_examples=150, deadline=None, derandomize=True)
@given(problem=small_problems())
def test_tv_non_increasing_and_bc_non_decreasing_in_t(process, problem):
    comps, weights, targ, init, _ = problem
    mix = DiscreteMixture(comps, weights, process)
    times = list(range(mix.length + 1)) if process == "truncation" else MASK_GRID
    rest = mix.complement(init)
    pairs = [(targ, init)] + ([(init, list(rest))] if rest else [])
    for a, b in pairs:
        tv = [mix.tv(a, b, t).value for t in times]
        bc = [mix.bc(a, b, t).value for t in times]
        assert all(x >= y - TOL for x, y in zip(tv, tv[1:], strict=False))
        assert all(x <= y + TOL for x, y in zip(bc, bc[1:], strict=False))
        assert tv[-1] <= tv[0] + TOL


@pytest.mark.parametrize("process", ["truncation", "masking"])
@settings(max_examples=100, deadline=None, derandomize=True)
@given(problem=small_problems())
def test_bisection_edges_match_brute_force_scan(process, problem):
    comps, weights, targ, init, eps = problem
    mix = DiscreteMixture(comps, weights, process)
    tb, ta = t_before(mix, eps, targ, init), t_after(mix, eps, init)
    rest = mix.complement(init)
    if process == "truncation":
        scan_b = [t for t in range(mix.length + 1) if mix.tv(targ, init, t).value <= eps + 1e-12]
        assert tb.t == min(scan_b)
        if rest:
            scan_a = [t for t in range(mix.length + 1) if mix.tv(init, rest, t).value >= 1 - eps**2 - 1e-12]
            assert (ta is None and not scan_a) or ta.t == max(scan_a)
        return
    step = 0.025
    grid = np.arange(0.0, 12.0 + step / 2, step)
    inner = mix.tv_curve(targ, init)
    below = [t for t in grid if inner(t).value <= eps]
    # inf{t : TV ≤ ε} lies within one grid step before the first grid point that satisfies it.
    assert below and below[0] - step - 1e-9 <= tb.t <= below[0] + 1e-9
    if rest:
        outer = mix.tv_curve(init, rest)
        above = [t for t in grid if outer(t).value >= 1 - eps**2]
        if not above:
            assert ta is None
        else:
            assert above[-1] - 1e-9 <= ta.t <= above[-1] + step + 1e-9


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    delta=st.floats(0.2, 30.0),
    d=st.integers(1, 500),
    v1=st.floats(0.3, 3.0),
    v2=st.floats(0.3, 3.0),
    w=st.floats(0.05, 0.95),
    eps=st.floats(0.02, 0.9),
)
def test_gaussian_exact_tv_monotone_and_edges_match_scan(delta, d, v1, v2, w, eps):
    means = np.zeros((2, d))
    means[1, 0] = delta
    mix = GaussianMixture(means, [v1, v2], [w, 1 - w])
    grid = np.linspace(0.0, 8.0, 81)
    curve = mix.tv_curve([0], [0, 1])
    tv = np.array([curve(t).value for t in grid])
    assert np.all(np.diff(tv) <= 1e-12)
    tb = t_before(mix, eps, [0], [0, 1])
    below = grid[tv <= eps]
    if below.size:
        assert below[0] - 0.1 - 1e-9 <= tb.t <= below[0] + 1e-9
        assert abs(mix.tv([0], [0, 1], tb.t).value - eps) < 1e-9 or tb.t == 0.0
