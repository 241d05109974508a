"""Mixtures and sub-populations: weights w_θ, selection of S ⊆ Θ by index or label, W_S, p^S, Θ∖S.

`Mixture` holds what every mixture shares (weights and labels); `GaussianMixture` and `DiscreteMixture`
add components and a forward process. Index sets are always returned as sorted tuples of ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from critwin.errors import CritwinError

#: Tolerance for "weights sum to 1".
WEIGHT_SUM_TOL = 1e-6

Selection = int | str | Iterable[int | str]


def check_weights(weights: Sequence[float] | np.ndarray, field: str = "weights") -> np.ndarray:
    """Validate mixture weights (finite, > 0, summing to 1 within 1e-6); return them renormalised exactly."""
    try:
        w = np.asarray(weights, dtype=float)
    except (TypeError, ValueError):
        raise CritwinError(f"{field}: must be a list of numbers, got {weights!r}") from None
    if w.ndim != 1 or w.size == 0:
        raise CritwinError(f"{field}: must be a non-empty flat list of numbers, one per component")
    if not np.all(np.isfinite(w)):
        raise CritwinError(f"{field}: must be finite numbers; replace NaN/inf entries")
    bad = np.flatnonzero(w <= 0)
    if bad.size:
        i = int(bad[0])
        raise CritwinError(
            f"{field}[{i}] = {w[i]:g} must be > 0; drop that component or give it a positive weight"
        )
    total = float(w.sum())
    if abs(total - 1.0) > WEIGHT_SUM_TOL:
        raise CritwinError(f"{field}: must sum to 1 (they sum to {total:.6g}); divide them by their sum")
    return w / total


def check_means(means: object, k: int) -> np.ndarray:
    """Validated component means as a (K, d) float array (K scalars are a 1-D mixture)."""
    try:
        mu = np.asarray(means, dtype=float)
    except (TypeError, ValueError):
        raise CritwinError("means: every mean must be a list of numbers of the same dimension d") from None
    if mu.ndim == 1 and mu.size == k:
        mu = mu[:, None]  # K scalars: a 1-D mixture
    if mu.ndim != 2 or mu.shape[0] != k or mu.shape[1] == 0:
        raise CritwinError(
            f"means: need one mean (a list of d numbers) per weight; got shape {mu.shape} for {k} weights"
        )
    if not np.all(np.isfinite(mu)):
        raise CritwinError("means: must be finite numbers")
    return mu


class Mixture:
    """A finite mixture p = Σ_θ w_θ p_θ: weights, labels, and index-set algebra over its components Θ."""

    def __init__(self, weights: Sequence[float] | np.ndarray, labels: Sequence[str] | None = None) -> None:
        self.weights = check_weights(weights)
        self.weights.setflags(write=False)
        k = self.weights.size
        if labels is None:
            labels = [str(i) for i in range(k)]
        labels = [str(x) for x in labels]
        if len(labels) != k:
            raise CritwinError(
                f"labels: got {len(labels)} labels for {k} components; give one label per component"
            )
        if len(set(labels)) != k:
            raise CritwinError("labels: labels must be unique; rename the duplicates")
        self.labels: tuple[str, ...] = tuple(labels)

    @property
    def n_components(self) -> int:
        """Number of components |Θ|."""
        return int(self.weights.size)

    def select(self, sel: Selection, field: str = "set") -> tuple[int, ...]:
        """Resolve a selection (index, label, or an iterable of them) into sorted component indices."""
        items = [sel] if isinstance(sel, (int, str, np.integer)) else sel
        try:
            items = list(items)
        except TypeError:
            raise CritwinError(
                f"{field}: must be a list of component indices or labels, got {sel!r}"
            ) from None
        out: list[int] = []
        for item in items:
            if isinstance(item, (bool, np.bool_)):
                raise CritwinError(f"{field}: {item!r} is not a component index or label")
            if isinstance(item, (int, np.integer)):
                i = int(item)
                if not 0 <= i < self.n_components:
                    raise CritwinError(
                        f"{field}: index {i} is out of range; use 0..{self.n_components - 1} (or a label)"
                    )
            elif isinstance(item, str):
                if item not in self.labels:
                    raise CritwinError(
                        f"{field}: unknown label {item!r}; known labels are {list(self.labels)}"
                    )
                i = self.labels.index(item)
            else:
                raise CritwinError(f"{field}: {item!r} is not a component index or label")
            out.append(i)
        if not out:
            raise CritwinError(f"{field}: the set is empty; name at least one component")
        if len(set(out)) != len(out):
            raise CritwinError(f"{field}: lists a component twice; list each component once")
        return tuple(sorted(out))

    def weight(self, sel: Selection) -> float:
        """W_S = Σ_{θ∈S} w_θ."""
        return float(self.weights[list(self.select(sel))].sum())

    def complement(self, sel: Selection) -> tuple[int, ...]:
        """Θ∖S as a sorted tuple (possibly empty)."""
        s = set(self.select(sel))
        return tuple(i for i in range(self.n_components) if i not in s)

    def sub_weights(self, sel: Selection) -> np.ndarray:
        """Weights of p^S over all K components: w_θ / W_S for θ ∈ S, 0 elsewhere."""
        idx = list(self.select(sel))
        w = np.zeros(self.n_components)
        w[idx] = self.weights[idx] / self.weights[idx].sum()
        return w

    def describe(self, sel: Selection) -> str:
        """Human-readable name of a set, e.g. "{a, b}"."""
        return "{" + ", ".join(self.labels[i] for i in self.select(sel)) + "}"


def check_nested(mix: Mixture, targ: Selection, init: Selection) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Resolve S_targ ⊆ S_init (both non-empty) or raise a CritwinError naming the fix."""
    a = mix.select(targ, "targ")
    b = mix.select(init, "init")
    if not set(a) <= set(b):
        extra = sorted(set(a) - set(b))
        raise CritwinError(f"targ: must be a subset of init; components {extra} are in targ but not in init")
    return a, b


def check_chain(mix: Mixture, chain: Sequence[Selection]) -> list[tuple[int, ...]]:
    """Resolve a nested chain S_m ⊂ … ⊂ S_0 (innermost first, strictly nested) or raise a CritwinError."""
    if isinstance(chain, (str, int)) or len(chain) < 2:
        raise CritwinError(
            "chain: give at least two nested sets, innermost first, e.g. [[0], [0, 1], [0, 1, 2, 3]]"
        )
    sets = [mix.select(s, f"chain[{i}]") for i, s in enumerate(chain)]
    for i in range(1, len(sets)):
        if not set(sets[i - 1]) < set(sets[i]):
            raise CritwinError(
                f"chain[{i}]: must strictly contain chain[{i - 1}] "
                "(sets go innermost first, each adding components)"
            )
    return sets


def check_eps(eps: float) -> float:
    """Validate ε ∈ (0, 1)."""
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise CritwinError(f"eps: must be a number in (0, 1), got {eps!r}") from None
    if not 0.0 < e < 1.0:
        raise CritwinError(f"eps: must lie strictly between 0 and 1, got {e:g}; e.g. use 0.1")
    return e
