"""Forward (degradation) processes. t grows with degradation everywhere.

- "ou": Ornstein–Uhlenbeck / variance-preserving diffusion, Y_t = e^{-t} X + sqrt(1 − e^{-2t}) Z, t ≥ 0.
  A DDPM step with cumulative ᾱ corresponds to t = −½ ln ᾱ ("vp" and "ddpm" are accepted as aliases).
- "masking": absorbing discrete diffusion, each token masked independently with probability 1 − e^{-t}, t ≥ 0.
- "truncation": autoregressive; t = number of tokens deleted from the end (integer 0..L).
"""

from __future__ import annotations

import math

import numpy as np

from critwin.errors import CritwinError

GAUSSIAN_PROCESSES = ("ou",)
DISCRETE_PROCESSES = ("truncation", "masking")
_ALIASES = {
    "ou": "ou",
    "vp": "ou",
    "ddpm": "ou",
    "truncation": "truncation",
    "autoregressive": "truncation",
    "masking": "masking",
    "masked": "masking",
    "absorbing": "masking",
}


def check_process(name: object, allowed: tuple[str, ...], field: str = "process") -> str:
    """Canonical process name among `allowed`, or a CritwinError listing the choices."""
    canon = _ALIASES.get(str(name).strip().lower()) if isinstance(name, str) else None
    if canon not in allowed:
        raise CritwinError(
            f"{field}: unknown forward process {name!r} for this mixture; use one of {list(allowed)}"
        )
    return canon


def check_time(t: object, field: str = "t") -> float:
    """Validate a forward time t ≥ 0 (inf allowed = fully degraded)."""
    try:
        x = float(t)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CritwinError(f"{field}: must be a number >= 0, got {t!r}") from None
    if math.isnan(x) or x < 0:
        raise CritwinError(f"{field}: must be >= 0 (t grows with degradation), got {t!r}")
    return x


def ou_time_from_alpha_bar(alpha_bar: float | np.ndarray) -> float | np.ndarray:
    """OU time t = −½ ln ᾱ of a DDPM/VP step with cumulative ᾱ ∈ (0, 1]."""
    a = np.asarray(alpha_bar, dtype=float)
    if np.any(~(a > 0)) or np.any(a > 1):
        raise CritwinError("alpha_bar: must lie in (0, 1]; ᾱ is the cumulative product of (1 − β)")
    out = -0.5 * np.log(a)
    return float(out) if out.ndim == 0 else out


def alpha_bar_from_ou_time(t: float | np.ndarray) -> float | np.ndarray:
    """Cumulative ᾱ = e^{-2t} of OU time t ≥ 0 (inverse of `ou_time_from_alpha_bar`)."""
    x = np.asarray(t, dtype=float)
    if np.any(~(x >= 0)):
        raise CritwinError("t: OU time must be >= 0")
    out = np.exp(-2.0 * x)
    return float(out) if out.ndim == 0 else out


def ou_scale(t: float) -> float:
    """Mean factor e^{-t} of the OU process at time t."""
    return math.exp(-t)


def ou_variance(var0: float | np.ndarray, t: float) -> float | np.ndarray:
    """Variance σ_t² = e^{-2t} σ0² + 1 − e^{-2t} of an isotropic component N(μ, σ0² I) pushed to OU time t."""
    e2 = math.exp(-2.0 * t)
    return e2 * np.asarray(var0, dtype=float) + (-math.expm1(-2.0 * t))


def keep_probability(t: float) -> float:
    """Masking: probability e^{-t} that a token is still visible at time t."""
    return math.exp(-t)


def masking_size_weights(length: int, t: float) -> np.ndarray:
    """Masking: P(a given set O of `k` visible positions) = s^k (1 − s)^{L − k}, s = e^{-t}, for k = 0..L."""
    s = math.exp(-t)
    k = np.arange(length + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.power(s, k) * np.power(-math.expm1(-t), length - k)
    # 0^0 = 1 (t = 0 keeps everything; t = inf masks everything).
    return np.nan_to_num(out, nan=1.0)


def check_truncation_time(t: object, length: int, field: str = "t") -> int:
    """Validate an integer truncation time t ∈ {0, …, L} (tokens removed from the end)."""
    x = check_time(t, field)
    if x != int(x) or x > length:
        raise CritwinError(
            f"{field}: truncation time must be an integer number of removed tokens in 0..{length}"
        )
    return int(x)
