"""Naive reference implementations for the discrete theory tests (explicit loops over sequences and masks).

Written without the engine's visible-set decomposition, so that agreement is independent evidence.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

MASKED = -1


def mixture_law(comps, weights, sel):
    """{sequence: p^S(sequence)} by direct summation."""
    total = sum(weights[k] for k in sel)
    law = defaultdict(float)
    for k in sel:
        for x, px in comps[k].items():
            law[tuple(x)] += weights[k] / total * px
    return dict(law)


def kernel(x, process, t):
    """{y: P(Y_t = y | X = x)} for one sequence x."""
    big_l = len(x)
    if process == "truncation":
        return {tuple(x[: big_l - int(t)]): 1.0}
    s = math.exp(-t)
    out = defaultdict(float)
    for mask in itertools.product([0, 1], repeat=big_l):
        prob = 1.0
        for m in mask:
            prob *= (1 - s) if m else s
        y = tuple(MASKED if m else xi for m, xi in zip(mask, x, strict=True))
        out[y] += prob
    return dict(out)


def degraded_law(comps, weights, sel, process, t):
    """{y: p^S_t(y)} by pushing every sequence through the kernel."""
    out = defaultdict(float)
    for x, px in mixture_law(comps, weights, sel).items():
        for y, k in kernel(x, process, t).items():
            out[y] += px * k
    return dict(out)


def forward_reverse(comps, weights, sel, process, t):
    """{x': FR_t(S)(x')}: X ~ p^S, Y ~ K(·|X), X' ~ p(·|Y) ∝ p(x') K(Y|x') under the FULL mixture."""
    full = mixture_law(comps, weights, range(len(weights)))
    kern = {x: kernel(x, process, t) for x in full}
    p_y = defaultdict(float)
    for x, px in full.items():
        for y, k in kern[x].items():
            p_y[y] += px * k
    out = defaultdict(float)
    for x, px in mixture_law(comps, weights, sel).items():
        for y, k in kern[x].items():
            for x2, p2 in full.items():
                k2 = kern[x2].get(y, 0.0)
                if k2:
                    out[x2] += px * k * p2 * k2 / p_y[y]
    return dict(out)


def tv(p, q):
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def bc(p, q):
    return sum(math.sqrt(p.get(k, 0.0) * q.get(k, 0.0)) for k in set(p) | set(q))


def test_reference_laws_are_probability_laws():
    comps = [{(0, 1): 0.4, (1, 1): 0.6}, {(1, 0): 1.0}]
    w = [0.3, 0.7]
    for process, t in [("truncation", 1), ("masking", 0.4)]:
        assert math.isclose(sum(degraded_law(comps, w, [0, 1], process, t).values()), 1.0)
        assert math.isclose(sum(forward_reverse(comps, w, [0], process, t).values()), 1.0)
    # FR at t = 0 returns the sub-population itself; fully degraded it returns the full model.
    assert tv(forward_reverse(comps, w, [0], "masking", 0.0), mixture_law(comps, w, [0])) < 1e-12
    assert tv(forward_reverse(comps, w, [0], "truncation", 2), mixture_law(comps, w, [0, 1])) < 1e-12
