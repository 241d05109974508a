"""Checks shared by the resampling benchmarks: do critwin and a baseline produce the same law of outputs?"""

from __future__ import annotations

import numpy as np
from scipy import stats


def first_token_pvalue(a, b) -> float:
    """χ² homogeneity of the first continuation token (eos/empty as its own cell), summed over cuts.

    `a`, `b`: per cut, the continuations (token sequences) of two methods."""
    stat, dof = 0.0, 0
    for rows_a, rows_b in zip(a, b, strict=True):
        fa = [r[0] if r else -1 for r in rows_a]
        fb = [r[0] if r else -1 for r in rows_b]
        cats = sorted(set(fa) | set(fb))
        table = np.array([[fa.count(c) for c in cats], [fb.count(c) for c in cats]])
        if table.shape[1] < 2:
            continue
        res = stats.chi2_contingency(table, correction=False)
        stat, dof = stat + res.statistic, dof + res.dof
    return float(stats.chi2.sf(stat, dof)) if dof else 1.0


def n_tokens(outs) -> int:
    """Generated tokens over all cuts and draws."""
    return int(sum(len(r) for per_cut in outs for r in per_cut))
