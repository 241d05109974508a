"""Speciation time of Biroli, Bonnaire, de Bortoli & Mézard ("Dynamical regimes of diffusion models",
Nat. Commun. 2024): the OU time at which a diffusion's backward dynamics commits to a "species" (class).

Under the OU / VP forward process Y_t = e^{-t} X + sqrt(1 − e^{-2t}) Z the covariance of Y_t is
e^{-2t} Σ + (1 − e^{-2t}) I. The data's signal along its top principal direction (variance e^{-2t} Λ, Λ the
largest eigenvalue of Σ) drops below the unit noise variance at

    t_S = ½ ln Λ        (equivalently ᾱ_S = e^{-2 t_S} = 1/Λ for a DDPM schedule),

which is the speciation time: for t ≫ t_S noised samples of all classes look alike, for t ≪ t_S the class
is decided. t is OU time and grows with degradation, like everywhere in critwin.

Λ is in the *model's own pixel scaling*: the OU noise has unit variance in the coordinates the model was
trained in, so the data must be mapped there first (x ↦ scale·x + shift). Scaling by c multiplies Λ by c²
and shifts t_S by ln c: images in [−1, 1] have 4× the Λ of the same images in [0, 1], so their t_S is
larger by ½ ln 4 = ln 2. A shift changes nothing.

If Λ ≤ 1 the signal is below the noise in every direction already at t = 0 and there is no speciation
under OU: `Speciation.t_s` is then None (and `speciation_step` returns None), never a non-positive time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import linalg as sparse_linalg

from critwin.errors import CritwinError

#: Largest min(n, d) for which Λ comes from a dense eigen-decomposition of the smaller Gram matrix; above
#: it Lanczos (scipy's eigsh, ~100 products with the data matrix) is much cheaper.
_DENSE_MAX = 512


@dataclass(frozen=True)
class Speciation:
    """Speciation time t_S = ½ ln Λ of a data set (Biroli et al. 2024), in OU time.

    `lambda_max`: Λ, the largest eigenvalue of the empirical covariance (denominator n − 1) of the samples
    after x ↦ scale·x + shift, flattened per sample; `t_s`: ½ ln Λ, or None when Λ ≤ 1 (no speciation under
    OU: the noise already dominates every direction at t = 0); `n`: number of samples; `dim`: values per
    sample; `scale`, `shift`: the map applied first (the pixel scaling Λ refers to).

    Example:
        Two points at (−1, 0) and (1, 0) have sample covariance diag(2, 0), so Λ = 2 and t_S = ½ ln 2;
        mapped to twice the scale (e.g. [0, 1] → [−1, 1] with scale 2, shift −1), Λ is 4× larger and
        t_S grows by ½ ln 4:

        >>> import math
        >>> from critwin.theory.speciation import speciation_time
        >>> sp = speciation_time([[-1.0, 0.0], [1.0, 0.0]])
        >>> sp.lambda_max, round(sp.t_s, 12) == round(0.5 * math.log(2.0), 12), sp.n, sp.dim
        (2.0, True, 2, 2)
        >>> sp2 = speciation_time([[-1.0, 0.0], [1.0, 0.0]], scale=2.0, shift=-1.0)
        >>> sp2.lambda_max, round(sp2.t_s - sp.t_s, 12) == round(0.5 * math.log(4.0), 12)
        (8.0, True)
        >>> speciation_time([[0.0], [0.5]]).t_s is None  # Λ = 0.125 ≤ 1: no speciation under OU
        True
    """

    lambda_max: float
    t_s: float | None
    n: int
    dim: int
    scale: float = 1.0
    shift: float = 0.0

    @property
    def exists(self) -> bool:
        """True when Λ > 1, i.e. there is a speciation time t_S > 0 under OU."""
        return self.t_s is not None

    @property
    def alpha_bar(self) -> float | None:
        """Cumulative ᾱ_S = e^{-2 t_S} = 1/Λ of a DDPM step at the speciation time (None when Λ ≤ 1)."""
        return None if self.t_s is None else 1.0 / self.lambda_max

    def step(self, alphas_cumprod: object) -> int | None:
        """`speciation_step(alphas_cumprod, self.lambda_max)`: first DDPM step past the speciation time."""
        return speciation_step(alphas_cumprod, self.lambda_max)


def speciation_time(data: object, *, scale: float = 1.0, shift: float = 0.0) -> Speciation:
    """Speciation time t_S = ½ ln Λ (OU time) of samples `data` of shape (n, ...), n ≥ 2.

    Every sample is flattened to d values and mapped x ↦ scale·x + shift (use the map into the model's own
    pixel scaling, e.g. scale=2, shift=−1 for [0, 1] data fed to a [−1, 1] model); Λ is the largest
    eigenvalue of the empirical covariance (1/(n − 1) Σ (x_i − x̄)(x_i − x̄)ᵀ). Λ comes from the smaller of
    the two Gram matrices (exact to rounding) when min(n, d) ≤ 512, else from Lanczos iteration (relative
    accuracy ~1e-10); the data are held in float64 (n·d·8 bytes).

    Example:
        Samples of N(0, diag(9, 1, 1)) have Λ ≈ 9, so t_S ≈ ½ ln 9 = ln 3 ≈ 1.1:

        >>> import numpy as np
        >>> from critwin.theory.speciation import speciation_time
        >>> x = np.random.default_rng(0).standard_normal((20000, 3)) * [3.0, 1.0, 1.0]
        >>> sp = speciation_time(x)
        >>> abs(sp.lambda_max - 9.0) < 0.5, round(sp.t_s, 1)
        (True, 1.1)
    """
    c = _finite_number(scale, "scale")
    if c == 0.0:
        raise CritwinError("scale: must be non-zero (it maps data to the model's pixel scaling), got 0")
    b = _finite_number(shift, "shift")
    try:
        x = np.asarray(data, dtype=float)
    except (TypeError, ValueError):
        raise CritwinError(
            "data: must be an array of numbers of shape (n, ...), one sample per row"
        ) from None
    if x.ndim == 0:
        raise CritwinError("data: need an array of samples of shape (n, ...), got a single number")
    n = int(x.shape[0])
    if x.size == 0:
        raise CritwinError(f"data: is empty (shape {x.shape}); pass at least 2 samples with at least 1 value")
    if n < 2:
        raise CritwinError(f"data: need at least 2 samples for a covariance, got {n}")
    x = x.reshape(n, -1)
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(x), axis=1))[0])
        raise CritwinError(f"data: sample {bad} holds NaN or inf values; drop or repair such samples")
    x = x * c + b if (c != 1.0 or b != 0.0) else x
    lam = _top_eigenvalue(x - x.mean(axis=0), n)
    t_s = 0.5 * math.log(lam) if lam > 1.0 else None
    return Speciation(lambda_max=lam, t_s=t_s, n=n, dim=int(x.shape[1]), scale=c, shift=b)


def speciation_step(alphas_cumprod: object, lambda_max: float | Speciation) -> int | None:
    """First DDPM step k (0-based index into `alphas_cumprod`, whose cumulative ᾱ_k decreases with k) with
    ᾱ_k < 1/Λ, i.e. whose OU time t_k = −½ ln ᾱ_k exceeds t_S = ½ ln Λ; None if no step gets there, and
    None when Λ ≤ 1 (no speciation under OU). `lambda_max` is Λ or a `Speciation`.

    Example:
        With Λ = 4 (t_S = ln 2, ᾱ_S = ¼) the first step with ᾱ_k < ¼ is k = 3:

        >>> from critwin.theory.speciation import speciation_step
        >>> speciation_step([1.0, 0.9, 0.5, 0.2, 0.05], 4.0)
        3
        >>> speciation_step([1.0, 0.9, 0.5], 4.0) is None  # the schedule stops short of t_S
        True
    """
    lam = lambda_max.lambda_max if isinstance(lambda_max, Speciation) else lambda_max
    lam = _finite_number(lam, "lambda_max")
    if lam < 0:
        raise CritwinError(f"lambda_max: a covariance eigenvalue must be >= 0, got {lam:g}")
    try:
        a = np.asarray(alphas_cumprod, dtype=float)
    except (TypeError, ValueError, RuntimeError):
        raise CritwinError(
            "alphas_cumprod: must be a flat array of numbers (e.g. scheduler.alphas_cumprod)"
        ) from None
    if a.ndim != 1 or a.size == 0:
        raise CritwinError(
            f"alphas_cumprod: must be a non-empty flat array, one ᾱ_k per step; got shape {a.shape}"
        )
    if not np.all(np.isfinite(a)) or np.any(a <= 0) or np.any(a > 1):
        raise CritwinError("alphas_cumprod: every ᾱ_k must lie in (0, 1]; ᾱ_k is the product of (1 − β_i)")
    if np.any(np.diff(a) > 0):
        k = int(np.flatnonzero(np.diff(a) > 0)[0]) + 1
        raise CritwinError(
            f"alphas_cumprod: must not increase with k (ᾱ_{k} > ᾱ_{k - 1}); pass them in step order, "
            "least noisy first"
        )
    if lam <= 1.0:
        return None
    below = np.flatnonzero(a < 1.0 / lam)
    return int(below[0]) if below.size else None


def _finite_number(value: object, field: str) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CritwinError(f"{field}: must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise CritwinError(f"{field}: must be a finite number, got {v!r}")
    return v


def _top_eigenvalue(xc: np.ndarray, n: int) -> float:
    """Largest eigenvalue of xcᵀ xc / (n − 1) for centred data xc (n, d)."""
    small = min(xc.shape)
    if small <= _DENSE_MAX:
        gram = xc @ xc.T if xc.shape[0] <= xc.shape[1] else xc.T @ xc
        lam = float(np.linalg.eigvalsh(gram)[-1])
    else:
        # Lanczos on the smaller Gram matrix, applied without forming it; a fixed start vector keeps the
        # result deterministic.
        if xc.shape[0] <= xc.shape[1]:
            op = sparse_linalg.LinearOperator((small, small), matvec=lambda v: xc @ (xc.T @ v), dtype=float)
        else:
            op = sparse_linalg.LinearOperator((small, small), matvec=lambda v: xc.T @ (xc @ v), dtype=float)
        v0 = np.random.default_rng(0).standard_normal(small)
        lam = float(sparse_linalg.eigsh(op, k=1, which="LA", v0=v0, tol=1e-12, return_eigenvectors=False)[0])
    return max(lam, 0.0) / (n - 1)
