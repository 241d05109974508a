"""Isotropic Gaussian mixtures under the OU / VP forward process (continuous t ≥ 0).

Component θ = N(μ_θ, σ_θ² I) becomes N(e^{-t} μ_θ, (e^{-2t} σ_θ² + 1 − e^{-2t}) I) at OU time t, so every
p^S_t is again an isotropic Gaussian mixture. TV is exact where a closed form exists (equal-variance pairs,
any-variance pairs via noncentral χ², equal-variance mixtures whose means are collinear via 1-D roots and
normal CDFs) and Monte Carlo with a standard error otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special, stats

from critwin.errors import CritwinError
from critwin.theory.forward import check_time, ou_scale, ou_variance
from critwin.theory.mixtures import Mixture, Selection, check_means
from critwin.theory.montecarlo import DEFAULT_SE_TARGET, GaussianGeometry, GaussianMC
from critwin.theory.tv import (
    ExactCurve,
    ScaledCurve,
    TVCurve,
    TVEstimate,
    gaussian_bc_isotropic,
    gaussian_tv_isotropic,
)

MAX_MEAN_SPREAD = 1e12
"""Largest |mean entry| / min(σ_0, 1) a GaussianMixture accepts (exact edges hold to 1e14 in tests)."""


class GaussianMixture(Mixture):
    """p = Σ_θ w_θ N(μ_θ, σ_θ² I): `means` (K, d), isotropic `variances` (K,) (or one number), `weights` (K,).

    The forward process is OU/VP ("ou"); t is OU time (t = −½ ln ᾱ for a DDPM step with cumulative ᾱ).

    Example:
        Two components in 2-D with means 5 apart and variance ½. Under OU they stay equal-variance, with
        σ_t² = e^{-2t} σ0² + 1 − e^{-2t} and means shrunk by e^{-t}, so their TV is the closed form
        erf(e^{-t} ‖a − b‖ / (2√2 σ_t)) at every t:

        >>> import math
        >>> import critwin as cw
        >>> from critwin.theory import gaussian_tv_equal_variance, ou_variance
        >>> mix = cw.GaussianMixture(means=[[0.0, 0.0], [3.0, 4.0]], variances=0.5, weights=[0.3, 0.7])
        >>> mix.dim, mix.n_components, mix.time_unit
        (2, 2, 'ou')
        >>> round(mix.tv(0, 1, t=1.0).value, 9)
        0.659151157
        >>> round(gaussian_tv_equal_variance(math.exp(-1.0) * 5.0, math.sqrt(ou_variance(0.5, 1.0))), 9)
        0.659151157
    """

    process = "ou"
    time_unit = "ou"

    def __init__(
        self,
        means: Sequence[Sequence[float]] | np.ndarray,
        variances: Sequence[float] | float | np.ndarray,
        weights: Sequence[float] | np.ndarray,
        labels: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weights, labels)
        k = self.n_components
        mu = check_means(means, k)
        try:
            var = np.broadcast_to(np.asarray(variances, dtype=float), (k,)).copy()
        except (TypeError, ValueError):
            raise CritwinError(
                f"variances: need one positive number per component ({k}), or a single number"
            ) from None
        if not np.all(np.isfinite(var)) or np.any(var <= 0):
            raise CritwinError("variances: isotropic variances must be finite and > 0")
        # float64 keeps ~16 significant digits, and under OU the noise scale never drops below
        # min(σ_0, 1): means much more than 1e12 such scales from the origin swamp the noise (every TV is
        # then rounding error) and near 1e154 their squared distances overflow.
        spread = float(np.max(np.abs(mu))) / math.sqrt(min(float(var.min()), 1.0))
        if spread > MAX_MEAN_SPREAD:
            raise CritwinError(
                f"means: entries up to {MAX_MEAN_SPREAD:.0e} times the smallest standard deviation are "
                f"supported, got {float(np.max(np.abs(mu))):.3g}; use smaller means (float64 cannot resolve "
                "the noise next to larger ones)"
            )
        self.means = mu
        self.variances = var
        self.means.setflags(write=False)
        self.variances.setflags(write=False)
        self._geom: GaussianGeometry | None = None

    @property
    def dim(self) -> int:
        """Dimension d of the data."""
        return int(self.means.shape[1])

    @property
    def geometry(self) -> GaussianGeometry:
        """Means reduced to their affine span (built once, shared by all Monte Carlo estimators)."""
        if self._geom is None:
            self._geom = GaussianGeometry(self.means, self.variances)
        return self._geom

    def restrict(self, sel: Selection) -> GaussianMixture:
        """p^S as a mixture of its own: the components in S with weights w_θ / W_S (labels kept)."""
        idx = list(self.select(sel))
        w = self.weights[idx]
        return GaussianMixture(
            self.means[idx], self.variances[idx], w / w.sum(), [self.labels[i] for i in idx]
        )

    # ---- forward process ------------------------------------------------------------------------
    def at(self, t: float) -> GaussianMixture:
        """The mixture p_t: every component pushed to OU time t (closed form)."""
        t = check_time(t)
        return GaussianMixture(
            ou_scale(t) * self.means, ou_variance(self.variances, t), self.weights, self.labels
        )

    def component_log_densities(self, x: np.ndarray, t: float = 0.0) -> np.ndarray:
        """(n, K) log N(x; e^{-t} μ_θ, σ_{θ,t}² I) at OU time t; `x` is (n, d)."""
        x = self._check_points(x)
        s, var = ou_scale(t), ou_variance(self.variances, t)
        m = s * self.means
        d2 = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * x @ m.T + np.einsum("ij,ij->i", m, m)[None, :]
        np.maximum(d2, 0.0, out=d2)
        return -0.5 * self.dim * np.log(2.0 * math.pi * var)[None, :] - d2 / (2.0 * var[None, :])

    def log_density(self, x: np.ndarray, t: float = 0.0, sel: Selection | None = None) -> np.ndarray:
        """(n,) log p^S_t(x) (S = all components when `sel` is None)."""
        w = self.weights if sel is None else self.sub_weights(sel)
        with np.errstate(divide="ignore"):
            return special.logsumexp(self.component_log_densities(x, t) + np.log(w)[None, :], axis=1)

    def posterior_weights(self, x: np.ndarray, t: float = 0.0) -> np.ndarray:
        """(n, K) P(θ | Y_t = x) under the full mixture."""
        logs = self.component_log_densities(x, t) + np.log(self.weights)[None, :]
        return np.exp(logs - special.logsumexp(logs, axis=1, keepdims=True))

    def score(self, x: np.ndarray, t: float = 0.0) -> np.ndarray:
        """(n, d) exact score ∇_x log p_t(x) of the full mixture at OU time t."""
        x = self._check_points(x)
        r = self.posterior_weights(x, t)
        s, var = ou_scale(t), ou_variance(self.variances, t)
        # Σ_k r_k (s μ_k − x) / σ_k²
        return (r / var[None, :]) @ (s * self.means) - x * (r / var[None, :]).sum(axis=1, keepdims=True)

    def sample(
        self, n: int, rng: np.random.Generator | int, t: float = 0.0, sel: Selection | None = None
    ) -> np.ndarray:
        """(n, d) draws from p^S_t (S = all when `sel` is None), seeded by `rng`."""
        rng = np.random.default_rng(rng)
        w = self.weights if sel is None else self.sub_weights(sel)
        k = rng.choice(self.n_components, size=n, p=w)
        s, sd = ou_scale(t), np.sqrt(ou_variance(self.variances, t))
        return s * self.means[k] + sd[k][:, None] * rng.standard_normal((n, self.dim))

    def sample_posterior(self, y: np.ndarray, t: float, rng: np.random.Generator | int) -> np.ndarray:
        """(n, d) exact draws X_0 ~ p(· | Y_t = y) for the full mixture (one draw per row of `y`).

        Given component θ, X_0 | Y_t = y is N(m, v I) with 1/v = 1/σ_θ² + e^{-2t}/(1 − e^{-2t}) and
        m = v (μ_θ/σ_θ² + e^{-t} y/(1 − e^{-2t})); θ is drawn from its posterior weights.
        """
        rng = np.random.default_rng(rng)
        y = self._check_points(y)
        t = check_time(t)
        if t == 0:
            return y.copy()
        r = self.posterior_weights(y, t)
        k = (r.cumsum(axis=1) > rng.random((y.shape[0], 1))).argmax(axis=1)
        s, h = math.exp(-t), -math.expm1(-2.0 * t)
        v = 1.0 / (1.0 / self.variances + s * s / h)
        mean = v[k][:, None] * (self.means[k] / self.variances[k][:, None] + (s / h) * y)
        return mean + np.sqrt(v[k])[:, None] * rng.standard_normal(y.shape)

    def _check_points(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise CritwinError(f"x: points must have dimension d = {self.dim}, got shape {x.shape}")
        return x

    # ---- distances ------------------------------------------------------------------------------
    def tv_curve(
        self, a: Selection, b: Selection, *, seed: int = 0, se_target: float = DEFAULT_SE_TARGET
    ) -> TVCurve:
        """t ↦ TV(p^a_t, p^b_t): exact where a closed form applies, else Monte Carlo
        with common random numbers.

        Uses the sub-mixture identity: if a ⊂ b, TV(p^a, p^b) = (W_{b∖a}/W_b) · TV(p^a, p^{b∖a}).
        """
        a, b = self.select(a, "a"), self.select(b, "b")
        if a == b:
            return ExactCurve(lambda t: 0.0)
        sa, sb = set(a), set(b)
        if sa < sb or sb < sa:
            small, big = (a, b) if sa < sb else (b, a)
            rest = tuple(sorted(set(big) - set(small)))
            c = self.weights[list(rest)].sum() / self.weights[list(big)].sum()
            return ScaledCurve(self.tv_curve(small, rest, seed=seed, se_target=se_target), float(c))
        exact = self._exact_tv_fn(a, b)
        if exact is not None:
            return ExactCurve(exact)
        return GaussianMC(
            self.geometry, self.sub_weights(a), self.sub_weights(b), kind="tv", seed=seed, se_target=se_target
        )

    def tv(
        self, a: Selection, b: Selection, t: float, *, seed: int = 0, se_target: float = DEFAULT_SE_TARGET
    ) -> TVEstimate:
        """TV(p^a_t, p^b_t) at OU time t (se == 0 when exact; else Monte Carlo with se ≤ se_target)."""
        t = check_time(t)
        return self.tv_curve(a, b, seed=seed, se_target=se_target)(t, se_target)

    def bc(
        self, a: Selection, b: Selection, t: float, *, seed: int = 0, se_target: float = DEFAULT_SE_TARGET
    ) -> TVEstimate:
        """Bhattacharyya coefficient BC(p^a_t, p^b_t) = ∫ sqrt(p^a_t p^b_t): closed form for single
        components, Monte Carlo (draws from the midpoint mixture) otherwise."""
        t = check_time(t)
        a, b = self.select(a, "a"), self.select(b, "b")
        if a == b:
            return TVEstimate(1.0)
        if len(a) == 1 and len(b) == 1:
            i, j = a[0], b[0]
            var = ou_variance(self.variances, t)
            d2 = ou_scale(t) ** 2 * float(self.geometry.sqdist[i, j])
            return TVEstimate(gaussian_bc_isotropic(d2, float(var[i]), float(var[j]), self.dim))
        mc = GaussianMC(
            self.geometry, self.sub_weights(a), self.sub_weights(b), kind="bc", seed=seed, se_target=se_target
        )
        return mc(t, se_target)

    def _exact_tv_fn(self, a: tuple[int, ...], b: tuple[int, ...]):
        """A closed-form t ↦ TV(p^a_t, p^b_t) for disjoint a, b when one exists, else None."""
        geom = self.geometry
        if len(a) == 1 and len(b) == 1:
            i, j = a[0], b[0]
            ci, cj = geom.coords[i], geom.coords[j]

            def pair(t: float) -> float:
                var = ou_variance(self.variances, t)
                s = ou_scale(t)
                # Only distances matter: the r-dimensional span plus the d − r common directions.
                return gaussian_tv_isotropic(
                    np.concatenate([s * ci, np.zeros(self.dim - geom.r)]),
                    float(var[i]),
                    np.concatenate([s * cj, np.zeros(self.dim - geom.r)]),
                    float(var[j]),
                )

            if self.variances[i] == self.variances[j]:
                delta = math.sqrt(float(geom.sqdist[i, j]))
                var0 = float(self.variances[i])
                return lambda t: float(
                    special.erf(ou_scale(t) * delta / (2.0 * math.sqrt(2.0 * ou_variance(var0, t))))
                )
            return pair
        comps = list(a) + list(b)
        if np.all(self.variances[comps] == self.variances[comps[0]]):
            pos = geom.coords[comps]
            centred = pos - pos.mean(axis=0)
            if (
                geom.r == 0
                or np.linalg.matrix_rank(centred, tol=1e-12 * max(1.0, np.abs(centred).max())) <= 1
            ):
                # Collinear means with equal variances: the problem is exactly one-dimensional.
                direction = np.linalg.svd(centred)[2][0] if np.any(centred) else np.zeros(pos.shape[1])
                x1 = geom.coords @ direction if direction.size else np.zeros(self.n_components)
                wa, wb = self.sub_weights(a), self.sub_weights(b)
                var0 = float(self.variances[comps[0]])
                return lambda t: _tv_1d(ou_scale(t) * x1, math.sqrt(ou_variance(var0, t)), wa, wb)
        return None


def _tv_1d(pos: np.ndarray, sd: float, wa: np.ndarray, wb: np.ndarray) -> float:
    """Exact TV of two equal-σ 1-D Gaussian mixtures with component positions `pos` and weights wa, wb.

    TV = Σ over intervals where p > q of (P(I) − Q(I)); crossings of log p − log q are bracketed on a grid
    (spacing σ/64 near components) and refined with Brent's method, interval masses come from normal CDFs.
    """
    keep = (wa + wb) > 0
    pos, wa, wb = pos[keep], wa[keep], wb[keep]
    with np.errstate(divide="ignore"):
        lwa, lwb = np.log(wa), np.log(wb)

    def g(x: np.ndarray | float) -> np.ndarray:
        z = (np.atleast_1d(x)[:, None] - pos[None, :]) / sd
        logs = -0.5 * z * z
        return special.logsumexp(logs + lwa, axis=1) - special.logsumexp(logs + lwb, axis=1)

    lo, hi = pos.min() - 40.0 * sd, pos.max() + 40.0 * sd
    # Fine grids (σ/64) around every component, where nearby crossings can occur, plus a coarse grid across
    # the gaps: with equal variances log p − log q is nearly linear far from all components.
    local = [np.linspace(m - 12.0 * sd, m + 12.0 * sd, 1537) for m in pos]
    grid = np.unique(np.concatenate([np.linspace(lo, hi, 4001), *local]))
    vals = g(grid)
    sign = np.sign(vals)
    roots = [
        optimize.brentq(lambda x: float(g(x)[0]), grid[i], grid[i + 1], xtol=1e-14, rtol=1e-15)
        for i in np.flatnonzero(sign[:-1] * sign[1:] < 0)
    ]
    roots.extend(grid[np.flatnonzero(sign == 0)])
    cuts = np.concatenate([[-np.inf], np.unique(roots), [np.inf]])
    # A point inside each interval (finite stand-ins for the infinite ends) decides the sign of p − q there.
    inner = [
        lo
        if math.isinf(u) and math.isinf(v)
        else (v - 1.0 if math.isinf(u) else (u + 1.0 if math.isinf(v) else 0.5 * (u + v)))
        for u, v in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    mids = np.asarray(inner, dtype=float)
    positive = g(mids) > 0
    cdf = stats.norm.cdf((cuts[:, None] - pos[None, :]) / sd)  # (n_cuts, K)
    mass = np.diff(cdf, axis=0)  # per interval and component
    diff = mass @ (wa - wb)
    return float(np.clip(diff[positive].sum(), 0.0, 1.0))
