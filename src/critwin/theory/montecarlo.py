"""Monte Carlo TV and BC between isotropic Gaussian sub-mixtures under the OU process, with standard errors.

Why it is fast: every density the estimator needs depends on a draw x = e^{-t} μ_k + σ_{k,t} z only through
the projection of z on the affine span of the means (dimension r ≤ K − 1) and ‖z_⊥‖², which is χ²_{d−r}.
So we draw (u, ‖z_⊥‖²) ∈ R^r × R once, keep them fixed across t (common random numbers, which makes the
estimate a smooth function of t for bisection), and evaluate log-densities at any t in O(n·K), whatever d is.
The law of the estimator is exactly that of the textbook one with full-dimensional draws.

Draws are stratified by component (proportional allocation): the estimate is Σ_k π_k mean_k with variance
Σ_k π_k² var_k / n_k.
"""

from __future__ import annotations

import math

import numpy as np

from critwin.theory.forward import ou_variance
from critwin.theory.tv import TVEstimate

DEFAULT_SE_TARGET = 0.005
_MIN_PER_STRATUM = 16


class GaussianGeometry:
    """Means of K isotropic Gaussians in d dimensions, reduced to coordinates on their affine span."""

    def __init__(self, means: np.ndarray, var0: np.ndarray) -> None:
        means = np.asarray(means, dtype=float)
        self.K, self.d = means.shape
        self.var0 = np.asarray(var0, dtype=float)
        self.center = means.mean(axis=0)
        centred = means - self.center
        if self.K > 1 and np.any(centred):
            u, s, vt = np.linalg.svd(centred, full_matrices=False)
            r = int(np.sum(s > s[0] * 1e-12))
        else:
            u, s, vt, r = np.zeros((self.K, 0)), np.zeros(0), np.zeros((0, self.d)), 0
        self.r = r
        self.coords = u[:, :r] * s[:r]  # (K, r): means in an orthonormal basis of their span
        self.basis = vt[:r].T  # (d, r)
        diff = self.coords[:, None, :] - self.coords[None, :, :]
        self.sqdist = np.einsum("ijk,ijk->ij", diff, diff)  # ‖μ_i − μ_j‖², (K, K)


class GaussianMC:
    """Stratified Monte Carlo estimate of TV(P, Q) (kind "tv", draws from P: E_P[(1 − q/p)_+]) or of
    BC(P, Q) (kind "bc", draws from M = (P + Q)/2: E_M[sqrt(pq)/m], bounded in [0, 1]) for sub-mixtures
    P, Q of one Gaussian mixture pushed to OU time t. Callable as a `TVCurve`.
    """

    exact = False
    integer_t = False
    t_max = math.inf

    def __init__(
        self,
        geom: GaussianGeometry,
        p_weights: np.ndarray,
        q_weights: np.ndarray,
        *,
        kind: str = "tv",
        seed: int | np.random.Generator = 0,
        se_target: float = DEFAULT_SE_TARGET,
        n_init: int = 4096,
        n_max: int = 1 << 20,
    ) -> None:
        self.geom = geom
        self.kind = kind
        self.se_target = se_target
        self.n_max = n_max
        pw = np.asarray(p_weights, dtype=float)
        qw = np.asarray(q_weights, dtype=float)
        sw = pw if kind == "tv" else 0.5 * (pw + qw)
        self.cols = np.flatnonzero((pw + qw) > 0)  # components whose densities are needed
        self.strata = np.flatnonzero(sw > 0)
        self.pi = sw[self.strata] / sw[self.strata].sum()
        self.pw_cols, self.qw_cols = pw[self.cols], qw[self.cols]
        self.sw_cols = sw[self.cols] / sw.sum()
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._coords_cols = geom.coords[self.cols]  # (J, r)
        self._sq_rows = geom.sqdist[self.strata][:, self.cols]  # (S, J)
        self.stratum = np.zeros(0, dtype=np.int64)  # stratum index per draw
        self.u = np.zeros((0, geom.r))
        self.chi2 = np.zeros(0)
        self._g = np.zeros((0, self.cols.size))  # u · coords_j
        self._g_own = np.zeros(0)  # u · coords_{k_i}
        self._norm2 = np.zeros(0)  # ‖z‖² = ‖u‖² + ‖z_⊥‖²
        self._extend(n_init)

    @property
    def n(self) -> int:
        """Number of draws so far."""
        return int(self.stratum.size)

    @property
    def component(self) -> np.ndarray:
        """Component index k_i of every draw."""
        return self.strata[self.stratum]

    def _extend(self, n_new: int) -> None:
        counts = np.maximum(_MIN_PER_STRATUM, np.floor(n_new * self.pi)).astype(np.int64)
        stratum = np.repeat(np.arange(self.strata.size), counts)
        m = stratum.size
        u = self.rng.standard_normal((m, self.geom.r))
        dof = self.geom.d - self.geom.r
        chi2 = self.rng.chisquare(dof, m) if dof > 0 else np.zeros(m)
        g = u @ self._coords_cols.T
        g_own = np.einsum("ij,ij->i", u, self.geom.coords[self.strata[stratum]])
        self.stratum = np.concatenate([self.stratum, stratum])
        self.u = np.concatenate([self.u, u])
        self.chi2 = np.concatenate([self.chi2, chi2])
        self._g = np.concatenate([self._g, g])
        self._g_own = np.concatenate([self._g_own, g_own])
        self._norm2 = np.concatenate([self._norm2, np.einsum("ij,ij->i", u, u) + chi2])

    def log_densities(self, t: float) -> np.ndarray:
        """(n, J) log N(x_i(t); e^{-t} μ_j, σ_{j,t}² I) for the needed components j = self.cols."""
        s = math.exp(-t)
        var_t = ou_variance(self.geom.var0, t)
        var_cols = var_t[self.cols]
        var_own = var_t[self.strata][self.stratum]
        dist2 = (s * s) * self._sq_rows[self.stratum]
        dist2 += (2.0 * s) * np.sqrt(var_own)[:, None] * (self._g_own[:, None] - self._g)
        dist2 += (var_own * self._norm2)[:, None]
        np.maximum(dist2, 0.0, out=dist2)
        return -0.5 * self.geom.d * np.log(2.0 * math.pi * var_cols) - dist2 / (2.0 * var_cols)

    def values(self, t: float) -> np.ndarray:
        """Per-draw summands at time t: (1 − q/p)_+ for "tv", sqrt(pq)/m for "bc"."""
        logs = self.log_densities(t)
        # One shared shift and one exp pass for p, q and m (a hand-rolled logsumexp: scipy's is ~2x slower
        # here). Underflow can only hit a density more than ~700 nats below the largest one, where the
        # summand is saturated at 0 or 1 anyway, because the largest column belongs to P or Q.
        shift = logs.max(axis=1)
        e = np.exp(logs - shift[:, None])
        with np.errstate(divide="ignore"):
            lp = np.log(e @ self.pw_cols)
            lq = np.log(e @ self.qw_cols)
            if self.kind == "tv":
                return np.maximum(0.0, -np.expm1(np.minimum(lq - lp, 0.0)))
            lm = np.log(e @ self.sw_cols)
        return np.exp(0.5 * (lp + lq) - lm)

    def _estimate(self, t: float) -> tuple[float, float]:
        f = self.values(t)
        ns = np.bincount(self.stratum, minlength=self.strata.size).astype(float)
        s1 = np.bincount(self.stratum, weights=f, minlength=self.strata.size)
        s2 = np.bincount(self.stratum, weights=f * f, minlength=self.strata.size)
        mean = s1 / ns
        var = np.maximum(0.0, (s2 - ns * mean * mean) / (ns - 1.0))
        value = float(np.dot(self.pi, mean))
        se = float(math.sqrt(np.sum(self.pi**2 * var / ns)))
        return value, se

    def __call__(self, t: float, se_target: float | None = None) -> TVEstimate:
        """Estimate at OU time t, adding draws until the standard error is ≤ se_target (or n_max is hit)."""
        target = self.se_target if se_target is None else se_target
        value, se = self._estimate(t)
        while se > target and self.n < self.n_max:
            # se ∝ 1/sqrt(n): ask for what should suffice, plus 20 %.
            need = int(self.n * ((se / target) ** 2 * 1.2 - 1.0)) + 1
            self._extend(min(max(need, self.n // 4), self.n_max - self.n))
            value, se = self._estimate(t)
        return TVEstimate(value, se, self.n)
