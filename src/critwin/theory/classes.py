"""Bayes classes of a Gaussian mixture: which class of components a point most likely came from.

A partition names classes of components (default: one class per component); a point's class is the argmax
over classes c of Σ_{k∈c} w_k N(x; μ_k, σ_k² I). These are the features of the Gaussian testbeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special

from critwin.errors import CritwinError


def mixture_params(mixture: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means (K, d), variances (K,), weights (K,)) of a GaussianMixture, checked."""
    try:
        mu = np.asarray(mixture.means, dtype=float)
        var = np.broadcast_to(np.asarray(mixture.variances, dtype=float), (len(mu),)).astype(float)
        w = np.asarray(mixture.weights, dtype=float)
    except (AttributeError, TypeError, ValueError) as err:
        raise CritwinError(
            "mixture: expected a critwin.theory.GaussianMixture (means (K, d), variances (K,), weights (K,))"
        ) from err
    if mu.ndim == 1:
        mu = mu[:, None]
    if mu.ndim != 2 or len(w) != len(mu) or np.any(var <= 0):
        raise CritwinError("mixture: means must be (K, d), variances (K,) > 0 and weights (K,)")
    return mu, var, w


def check_partition(
    mixture: Any, partition: Mapping[str, Sequence[int]] | None
) -> dict[str, tuple[int, ...]]:
    """Validate a partition of the components into named classes (default: one class per component label)."""
    mu, _, _ = mixture_params(mixture)
    k = len(mu)
    if partition is None:
        labels = list(getattr(mixture, "labels", None) or [str(i) for i in range(k)])
        return {str(lab): (i,) for i, lab in enumerate(labels)}
    out = {str(name): tuple(int(i) for i in idx) for name, idx in partition.items()}
    flat = sorted(i for idx in out.values() for i in idx)
    if flat != list(range(k)):
        raise CritwinError(
            f"partition: classes must cover each of the {k} components exactly once; got {dict(out)}"
        )
    return out


def class_log_densities(mixture: Any, x: np.ndarray, partition: Mapping[str, Sequence[int]]) -> np.ndarray:
    """(R, C) log Σ_{k∈c} w_k N(x; μ_k, σ_k² I) for each class c of `partition` (in its order)."""
    mu, var, w = mixture_params(mixture)
    x = np.atleast_2d(np.asarray(x, dtype=float))
    diff = x[:, None, :] - mu[None, :, :]
    logs = np.log(w)[None, :] - 0.5 * mu.shape[1] * np.log(2 * math.pi * var)[None, :]
    logs = logs - np.einsum("rkd,rkd->rk", diff, diff) / (2.0 * var[None, :])
    return np.stack([special.logsumexp(logs[:, list(idx)], axis=1) for idx in partition.values()], axis=1)


def classify(mixture: Any, x: np.ndarray, partition: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Index (into the partition's classes) of the Bayes class of each row of x."""
    return class_log_densities(mixture, x, partition).argmax(axis=1)
