"""Critical tokens (Lin et al., "Critical Tokens Matter", 2024): in an incorrect trace, the token after
which no rollout succeeds any more.

Their rule is "0 of 64 rollouts succeed from every longer prefix". Here it is a test: a cut keeping m tokens
is *shown to fail* when the one-sided Clopper–Pearson upper bound (at `level`) of its P(success) is at most
`eps`, and *can succeed* when it has a success (its lower bound is above 0). The critical token is the
first token of the gap between the longest cut that can succeed and the shortest cut from which every
longer cut is shown to fail; with a cut at every token (every-prefix) it is one token. With 64 draws and no
success the bound at 95% is 0.046, so eps = 0.05 reproduces their rule where it is decided and says
"undecided" where fewer draws cannot tell.

Curves are in forward time t (tokens removed from the end); a cut keeps m = t_max − t tokens, and keeping
m tokens keeps token indices 0 … m − 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from critwin.curves import Curve
from critwin.errors import CritwinError

EPS = 0.05
LEVEL = 0.95


@dataclass(frozen=True)
class CriticalToken:
    """Where success became impossible: tokens kept [kept_lo, kept_hi) hold the critical token (kept_lo is
    the longest cut that can succeed, kept_hi the shortest from which every longer cut is shown to fail);
    `token` is kept_lo, the first token index in that gap (exact when kept_hi = kept_lo + 1)."""

    kept_lo: int
    kept_hi: int
    token: int
    p_before: float  # measured P(success) at the cut keeping kept_lo tokens
    upper_after: float  # the largest upper bound over the cuts keeping >= kept_hi tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CriticalSearch:
    """What `critical_token` found: the token (None when there is none), why there is none ("reason"), and
    per cut (ascending tokens kept) the counts and the upper bound it was judged on."""

    critical: CriticalToken | None
    reason: str
    kept: tuple[int, ...]
    n_success: tuple[int, ...]
    n_valid: tuple[int, ...]
    upper: tuple[float, ...]
    eps: float
    level: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["critical"] = None if self.critical is None else self.critical.to_dict()
        return d


def upper_bound(k: Any, n: Any, level: float = LEVEL) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound of a binomial proportion from k successes of n (1 where n = 0):
    the p with P(Bin(n, p) <= k) = 1 − level."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    some_failed = n > k
    ub = stats.beta.ppf(level, k + 1, np.where(some_failed, n - k, 1.0))
    return np.where(some_failed, ub, 1.0)


def critical_token(curve: Curve, *, eps: float = EPS, level: float = LEVEL) -> CriticalSearch:
    """The critical token of a curve of P(success | cut) (`Curve.n_kept` counts the successes): see the
    module docstring. No token when the full trace is not shown to fail (it may still succeed, or too few
    draws to tell) or when no cut can succeed (it fails from the start)."""
    if not 0 < eps < 1:
        raise CritwinError(f"--eps {eps}: use a probability in (0, 1)")
    if not 0 < level < 1:
        raise CritwinError(f"--level {level}: use a value in (0, 1)")
    if curve.t_max is None:
        raise CritwinError("critical tokens need a curve that knows its length (t_max)")
    kept = np.rint(float(curve.t_max) - curve.t).astype(int)
    order = np.argsort(kept)
    kept, k, n = kept[order], curve.n_kept[order], curve.n_valid[order]
    ub = upper_bound(k, n, level)
    fails = ub <= eps
    search = dict(kept=tuple(int(v) for v in kept), n_success=tuple(int(v) for v in k),
                  n_valid=tuple(int(v) for v in n), upper=tuple(float(v) for v in ub), eps=eps, level=level)
    if not len(kept) or not fails[-1]:
        why = "the full trace is not shown to fail (it succeeds, or the draws are too few to tell)"
        return CriticalSearch(None, why, **search)
    j = len(kept) - 1
    while j > 0 and fails[j - 1]:
        j -= 1
    can = np.flatnonzero(k[:j] > 0)
    if not len(can):
        return CriticalSearch(None, "no cut before the failing ones has a success: the trace fails from the "
                              "start, or the cuts in between are undecided", **search)
    lo = int(can[-1])  # cuts between lo and j are undecided: the gap [kept_lo, kept_hi) spans them
    token = CriticalToken(int(kept[lo]), int(kept[j]), int(kept[lo]), float(k[lo] / n[lo]),
                          float(ub[j:].max()))
    return CriticalSearch(token, "", **search)
