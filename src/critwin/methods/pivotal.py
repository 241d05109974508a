"""Pivotal tokens (Pivotal Token Search; Abdin et al., Phi-4 technical report, 2024) and the DPO pairs at
them.

A token is pivotal when keeping it moves P(success) by at least `threshold` (PTS: 0.2): with cuts keeping
m and m + 1 tokens (PTS's bisection, `critwin.strategies.Bisect`, ends with such one-token gaps wherever
success moves), token m is pivotal when |P(success | m + 1 kept) − P(success | m kept)| >= threshold.
At a pivotal token, a preference pair contrasts the trace's own token with one the model drew instead
at that position (the first token of an ending resampled from the cut keeping m tokens): the trace's
token is "chosen" when it raises P(success) and "rejected" when it lowers it, and the alternative is the
drawn token whose endings did best (resp. worst), if any did better (resp. worse) than the trace's token.

Curves are in forward time t (tokens removed from the end); a cut keeps m = t_max − t tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from critwin.curves import Curve
from critwin.errors import CritwinError

THRESHOLD = 0.2


@dataclass(frozen=True)
class PivotalToken:
    """Token index `token` of the trace: P(success) `p_before` from the cut keeping `token` tokens (the
    token resampled, `n_before` valid draws) and `p_after` with it kept (`n_after` draws)."""

    token: int
    p_before: float
    p_after: float
    n_before: int
    n_after: int

    @property
    def delta(self) -> float:
        """P(success) with the token kept minus without (negative: the token hurts)."""
        return self.p_after - self.p_before

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta": self.delta}


def pivotal_tokens(curve: Curve, threshold: float = THRESHOLD) -> list[PivotalToken]:
    """The pivotal tokens of a P(success | cut) curve (`Curve.n_kept` counts successes): every pair of cuts
    one token apart whose estimates differ by at least `threshold`, in the order of the trace."""
    if not 0 < threshold <= 1:
        raise CritwinError(f"threshold {threshold}: use a value in (0, 1]")
    if curve.t_max is None:
        raise CritwinError("pivotal tokens need a curve that knows its length (t_max)")
    kept = np.rint(float(curve.t_max) - curve.t).astype(int)
    order = np.argsort(kept)
    kept, k, n = kept[order], curve.n_kept[order], curve.n_valid[order]
    out = []
    for i in range(len(kept) - 1):
        if kept[i + 1] == kept[i] + 1 and n[i] > 0 and n[i + 1] > 0:
            p0, p1 = k[i] / n[i], k[i + 1] / n[i + 1]
            if abs(p1 - p0) >= threshold - 1e-12:
                out.append(PivotalToken(int(kept[i]), float(p0), float(p1), int(n[i]), int(n[i + 1])))
    return out


@dataclass(frozen=True)
class Alternative:
    """A token the model drew at the pivotal position instead of the trace's: its id, the share of its
    endings that succeeded and their number."""

    token_id: int
    success: float
    draws: int


def alternatives(draws: Iterable[tuple[int | None, bool | None]], original_id: int) -> list[Alternative]:
    """Per first token (other than `original_id`) of the endings drawn at a cut, the share of its endings
    that succeeded; `draws` are (first token id or None, success or None), and draws without a first token
    or without a verdict are left out."""
    counts: dict[int, list[int]] = {}
    for first, ok in draws:
        if first is None or ok is None or first == original_id:
            continue
        c = counts.setdefault(int(first), [0, 0])
        c[0] += bool(ok)
        c[1] += 1
    return [Alternative(t, s / n, n) for t, (s, n) in sorted(counts.items())]


def preference_pair(pivot: PivotalToken, original_id: int, alts: list[Alternative]) -> dict[str, Any] | None:
    """(chosen id, rejected id, the alternative) at a pivotal token: the trace's token is chosen when it
    raises P(success), else rejected; the alternative is the drawn token that did best (when the trace's
    token is rejected) or worst (when it is chosen), on the other side of the trace's own P(success) with
    it kept, ties broken by more draws. None when no drawn token qualifies."""
    if pivot.delta > 0:
        worse = [a for a in alts if a.success < pivot.p_after]
        if not worse:
            return None
        alt = min(worse, key=lambda a: (a.success, -a.draws, a.token_id))
        return {"chosen_id": original_id, "rejected_id": alt.token_id, "alternative": asdict(alt)}
    better = [a for a in alts if a.success > pivot.p_after]
    if not better:
        return None
    alt = max(better, key=lambda a: (a.success, a.draws, -a.token_id))
    return {"chosen_id": alt.token_id, "rejected_id": original_id, "alternative": asdict(alt)}
