"""The exact law of the forward–reverse experiment FR_t(S) for enumerable discrete mixtures.

FR_t(S): draw X ~ p^S, degrade it to Y_t, then draw X' ~ p(· | Y_t) with the FULL model. With visible
position sets O (see `critwin.theory.discrete`), Y_t reveals X_O, and
p(x' | X_O = y_O) = p(x') 1[x'_O = y_O] / p(y_O), so
    FR_t(S)(x') = p(x') · Σ_O P(O) · p^S|_O(x'_O) / p|_O(x'_O).
"""

from __future__ import annotations

import numpy as np

from critwin.theory.discrete import DiscreteMixture, encode
from critwin.theory.mixtures import Selection, check_nested
from critwin.theory.tv import TVEstimate, tv_arrays


def _fr_probs(mix: DiscreteMixture, sel: Selection, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    digits, probs = mix.full_support()
    p = mix.weights @ probs
    ps = mix.sub_weights(mix.select(sel, "set")) @ probs
    out = np.zeros_like(p)
    for o, p_o in mix.observed_sets(t):
        _, inv = np.unique(encode(digits[:, list(o)], mix.vocab_size), return_inverse=True)
        marg_p = np.bincount(inv, weights=p)
        marg_s = np.bincount(inv, weights=ps)
        out += p_o * p * marg_s[inv] / marg_p[inv]
    return digits, out, probs


def forward_reverse_law(mix: DiscreteMixture, sel: Selection, t: float) -> dict[tuple[int, ...], float]:
    """Exact law of FR_t(S) as {full-length sequence: probability} (t in the mixture's process units).

    Example:
        Start from component 0, the sequence (0, 0). Truncated at t = 1 only its first token 0 is kept,
        and the full model resamples the last one from p(· | first token 0): half (0, 0), half (0, 1),
        i.e. exactly p^{0,1}. At t = 2 nothing is kept and FR_2 is the whole mixture p:

        >>> import critwin as cw
        >>> mix = cw.DiscreteMixture([{(0, 0): 1.0}, {(0, 1): 1.0}, {(1, 0): 0.5, (1, 1): 0.5}],
        ...                          weights=[0.25, 0.25, 0.5], process="truncation")
        >>> cw.forward_reverse_law(mix, [0], t=1)
        {(0, 0): 0.5, (0, 1): 0.5}
        >>> cw.forward_reverse_law(mix, [0], t=2) == mix.law()
        True
    """
    digits, out, _ = _fr_probs(mix, sel, t)
    return {tuple(int(x) for x in row): float(p) for row, p in zip(digits, out, strict=True) if p > 0}


def forward_reverse_tv(mix: DiscreteMixture, targ: Selection, init: Selection, t: float) -> TVEstimate:
    """Exact TV(FR_t(S_targ), p^{S_init}): what the theorem and the pointwise bound control."""
    a, b = check_nested(mix, targ, init)
    _, out, probs = _fr_probs(mix, a, t)
    return TVEstimate(tv_arrays(out, mix.sub_weights(b) @ probs))
