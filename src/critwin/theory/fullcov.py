"""Gaussian mixtures with full covariances under the OU / VP forward process (continuous t ≥ 0).

p = Σ_k w_k N(μ_k, Σ_k); at OU time t component k is N(e^{-t} μ_k, C_k(t)) with
C_k(t) = e^{-2t} Σ_k + (1 − e^{-2t}) I, so every p^S_t is again such a mixture. The typical use is a
"one Gaussian per class" model of labelled data (`FullCovGaussianMixture.from_labelled_data`: the class
means, empirical covariances and class frequencies), whose per-class critical windows (`class_windows`)
predict when a diffusion model decides the class. The data must be in the model's own pixel scaling: the OU
noise has unit variance in those coordinates.

Σ_k = V_k diag(λ_k) V_kᵀ is diagonalised once; C_k(t) has the same eigenvectors and eigenvalues
e^{-2t} λ_k + 1 − e^{-2t}, so log-densities at any t cost no factorisation. Singular Σ_k are allowed: C_k(t)
is positive definite for every t > 0. At t = 0 itself a singular component has no density, and every TV /
BC that needs it raises a CritwinError; a small `ridge` (Σ_k + ridge·I, which is what the OU noise adds by
t ≈ ridge/2) makes t = 0 usable, and `from_labelled_data` adds one by default. Window searches evaluate t = 0,
so they need the ridge when a class has a degenerate covariance (e.g. a pixel that is constant in a class).

TV is exact for a pair of components with identical covariances (erf of the Mahalanobis distance) and
Monte Carlo otherwise: TV(P, Q) = E_P[(1 − q/p)_+], BC(P, Q) = E_M[sqrt(pq)/m] with M = (P + Q)/2, draws
stratified by component and kept fixed across t (common random numbers), with standard errors, exactly as
`critwin.theory.montecarlo.GaussianMC` does for isotropic mixtures (whose estimator this one inherits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special
from scipy.linalg import solve_triangular

from critwin.errors import CritwinError
from critwin.theory.forward import check_time
from critwin.theory.mixtures import Mixture, Selection, check_eps, check_means
from critwin.theory.montecarlo import DEFAULT_SE_TARGET, GaussianMC
from critwin.theory.tv import ExactCurve, ScaledCurve, TVCurve, TVEstimate
from critwin.theory.windows import TheoryWindow, critical_window

#: Relative tolerance for symmetry and positive semi-definiteness of a covariance (× max(1, its largest
#: |entry| / eigenvalue)); eigenvalues within it of 0 count as exactly 0 (a singular direction).
COV_TOL = 1e-9
#: Default ridge of `from_labelled_data`, in squared data units (OU noise has variance 1 - e^{-2t} ≈ 2t).
DEFAULT_RIDGE = 1e-6

_N_INIT = 4096
_N_MAX = 1 << 18
_MIN_PER_STRATUM = 16
_CHUNK_VALUES = 1 << 22  # floats per block of projected draws in FullCovMC.log_densities (32 MiB)


class FullCovGaussianMixture(Mixture):
    """p = Σ_k w_k N(μ_k, Σ_k): `means` (K, d), symmetric PSD `covs` (K, d, d) (or one (d, d) matrix shared
    by all components), `weights` (K,), optional `labels`; `ridge` ≥ 0 adds ridge·I to every covariance.

    The forward process is OU/VP; t is OU time (t = −½ ln ᾱ for a DDPM step with cumulative ᾱ). Component k
    at time t is N(e^{-t} μ_k, e^{-2t} Σ_k + (1 − e^{-2t}) I). Provides what the window searches
    (`critwin.theory.t_before`, `t_after`, `critical_window`, `staircase`, `pointwise_bound`) need.

    Example:
        Two components with the same anisotropic covariance diag(4, ¼) and means 2 apart along the second
        axis: their TV is erf(‖C^{-1/2} Δ‖ / (2√2)) at t = 0 (Mahalanobis distance 4), exactly; under OU it
        shrinks as the noise swamps the narrow direction:

        >>> import math
        >>> from critwin.theory.fullcov import FullCovGaussianMixture
        >>> mix = FullCovGaussianMixture(means=[[0.0, 0.0], [0.0, 2.0]], covs=[[4.0, 0.0], [0.0, 0.25]],
        ...                              weights=[0.5, 0.5], labels=["a", "b"])
        >>> mix.dim, mix.n_components, mix.tv("a", "b", t=0.0).exact
        (2, 2, True)
        >>> round(mix.tv("a", "b", t=0.0).value, 12) == round(math.erf(4.0 / (2 * math.sqrt(2))), 12)
        True
        >>> [round(mix.tv("a", "b", t=t).value, 3) for t in (0.0, 0.5, 1.0, 2.0)]
        [0.954, 0.524, 0.302, 0.108]
    """

    process = "ou"
    time_unit = "ou"

    def __init__(
        self,
        means: Sequence[Sequence[float]] | np.ndarray,
        covs: Sequence[Sequence[Sequence[float]]] | np.ndarray,
        weights: Sequence[float] | np.ndarray,
        labels: Sequence[str] | None = None,
        *,
        ridge: float = 0.0,
    ) -> None:
        super().__init__(weights, labels)
        k = self.n_components
        mu = check_means(means, k)
        d = mu.shape[1]
        try:
            cov = np.asarray(covs, dtype=float)
        except (TypeError, ValueError):
            raise CritwinError(f"covs: need one (d, d) covariance matrix per component (d = {d})") from None
        if d == 1 and cov.shape in ((k,), (k, 1)):
            cov = cov.reshape(k, 1, 1)  # K variances of a 1-D mixture
        if cov.shape == (d, d):
            cov = np.broadcast_to(cov, (k, d, d))
        if cov.shape != (k, d, d):
            raise CritwinError(
                f"covs: need shape ({k}, {d}, {d}) (one (d, d) matrix per component, or one shared (d, d)); "
                f"got {cov.shape}"
            )
        if not np.all(np.isfinite(cov)):
            raise CritwinError("covs: must be finite numbers; replace NaN/inf entries")
        try:
            r = float(ridge)
        except (TypeError, ValueError):
            raise CritwinError(f"ridge: must be a number >= 0, got {ridge!r}") from None
        if not (math.isfinite(r) and r >= 0):
            raise CritwinError(f"ridge: must be a finite number >= 0 (e.g. 1e-6), got {ridge!r}")
        evals = np.empty((k, d))
        evecs = np.empty((k, d, d))
        for i in range(k):
            c = cov[i]
            size = max(1.0, float(np.abs(c).max()))
            asym = float(np.abs(c - c.T).max())
            if asym > COV_TOL * size:
                raise CritwinError(
                    f"covs[{i}]: is not symmetric (max |Σ − Σᵀ| = {asym:.3g}); pass (Σ + Σᵀ)/2"
                )
            lam, vec = np.linalg.eigh(0.5 * (c + c.T))
            floor = COV_TOL * max(1.0, float(lam[-1]))
            if lam[0] < -floor:
                raise CritwinError(
                    f"covs[{i}]: has a negative eigenvalue {lam[0]:.3g}; a covariance must be positive "
                    "semi-definite (e.g. an empirical covariance of samples)"
                )
            lam = np.where(lam <= floor, 0.0, lam)
            evals[i], evecs[i] = lam + r, vec
        self.means = mu
        self.covs = 0.5 * (cov + np.swapaxes(cov, 1, 2)) + r * np.eye(d)[None, :, :]
        self.ridge = r
        #: Eigen-decompositions Σ_k = V_k diag(λ_k) V_kᵀ (λ_k ascending, ≥ 0, ridge included).
        self.eigenvalues = evals
        self.eigenvectors = evecs
        for arr in (self.means, self.covs, self.eigenvalues, self.eigenvectors):
            arr.setflags(write=False)

    @classmethod
    def from_labelled_data(
        cls,
        X: object,
        y: object,
        *,
        ridge: float = DEFAULT_RIDGE,
        scale: float = 1.0,
        shift: float = 0.0,
    ) -> FullCovGaussianMixture:
        """One Gaussian per class: class means, empirical covariances (denominator n_k − 1) plus ridge·I, and
        the classes' frequencies as weights; samples `X` (n, ...) are flattened and mapped x ↦ scale·x + shift
        (into the model's pixel scaling) first. Classes are the sorted distinct values of `y` (n,); their
        labels are str(value). Every class needs at least 2 samples.

        Example:
            Three points of class "a" and two of class "b" in 1-D:

            >>> from critwin.theory.fullcov import FullCovGaussianMixture
            >>> mix = FullCovGaussianMixture.from_labelled_data([[0.0], [1.0], [2.0], [10.0], [12.0]],
            ...                                                 ["a", "a", "a", "b", "b"], ridge=0.0)
            >>> mix.labels, mix.weights.tolist(), mix.means.ravel().tolist(), mix.covs.ravel().tolist()
            (('a', 'b'), [0.6, 0.4], [1.0, 11.0], [1.0, 2.0])
        """
        try:
            x = np.asarray(X, dtype=float)
        except (TypeError, ValueError):
            raise CritwinError(
                "X: must be an array of numbers of shape (n, ...), one sample per row"
            ) from None
        if x.ndim == 0 or x.size == 0:
            raise CritwinError(f"X: need a non-empty array of samples of shape (n, ...), got shape {x.shape}")
        n = int(x.shape[0])
        x = x.reshape(n, -1)
        if not np.all(np.isfinite(x)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(x), axis=1))[0])
            raise CritwinError(f"X: sample {bad} holds NaN or inf values; drop or repair such samples")
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise CritwinError(f"y: need one label per sample ({n}), got shape {labels.shape}")
        for field, v in (("scale", scale), ("shift", shift)):
            if not isinstance(v, (int, float, np.number)) or not math.isfinite(float(v)):
                raise CritwinError(f"{field}: must be a finite number, got {v!r}")
        if float(scale) == 0.0:
            raise CritwinError("scale: must be non-zero (it maps data to the model's pixel scaling), got 0")
        x = x * float(scale) + float(shift)
        try:
            classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        except TypeError:
            raise CritwinError("y: labels must be all numbers or all strings (sortable)") from None
        if np.any(counts < 2):
            few = classes[int(np.flatnonzero(counts < 2)[0])].item()
            raise CritwinError(
                f"y: class {few!r} has fewer than 2 samples, too few for a covariance; drop it or add samples"
            )
        means = np.stack([x[inverse == c].mean(axis=0) for c in range(classes.size)])
        covs = np.stack(
            [np.atleast_2d(np.cov(x[inverse == c], rowvar=False, ddof=1)) for c in range(classes.size)]
        )
        return cls(means, covs, counts / n, [str(c) for c in classes], ridge=ridge)

    @property
    def dim(self) -> int:
        """Dimension d of the data."""
        return int(self.means.shape[1])

    def covariance(self) -> np.ndarray:
        """(d, d) covariance of the whole mixture p (t = 0): Σ_k w_k (Σ_k + μ_k μ_kᵀ) − μ̄ μ̄ᵀ.

        Its largest eigenvalue Λ gives the speciation time ½ ln Λ (`critwin.theory.speciation`).
        """
        w = self.weights
        mbar = w @ self.means
        second = np.einsum("k,kij->ij", w, self.covs) + np.einsum("k,ki,kj->ij", w, self.means, self.means)
        return second - np.outer(mbar, mbar)

    def restrict(self, sel: Selection) -> FullCovGaussianMixture:
        """p^S as a mixture of its own: the components in S with weights w_k / W_S (labels kept)."""
        idx = list(self.select(sel))
        w = self.weights[idx]
        return FullCovGaussianMixture(
            self.means[idx], self.covs[idx], w / w.sum(), [self.labels[i] for i in idx]
        )

    # ---- forward process ------------------------------------------------------------------------
    def at(self, t: float) -> FullCovGaussianMixture:
        """The mixture p_t: every component pushed to OU time t (closed form)."""
        t = check_time(t)
        return FullCovGaussianMixture(math.exp(-t) * self.means, self._cov_at(t), self.weights, self.labels)

    def _variances_at(self, t: float) -> np.ndarray:
        """(K, d) eigenvalues e^{-2t} λ_k + 1 − e^{-2t} of C_k(t) (eigenvectors V_k)."""
        return math.exp(-2.0 * t) * self.eigenvalues + (-math.expm1(-2.0 * t))

    def _cov_at(self, t: float) -> np.ndarray:
        v = self._variances_at(t)
        return np.einsum("kij,kj,klj->kil", self.eigenvectors, v, self.eigenvectors)

    def _check_density(self, var: np.ndarray, comps: Sequence[int] | np.ndarray, t: float) -> None:
        """Raise when a needed component has a singular covariance at time t (only possible at t = 0)."""
        for k in comps:
            if var[k, 0] <= 0.0:
                raise CritwinError(
                    f"t = {t:g}: component {self.labels[k]!r} has a singular covariance, so it has no "
                    "density; add a ridge (FullCovGaussianMixture(..., ridge=1e-6) or "
                    "from_labelled_data(ridge=...)) or use t > 0"
                )

    def component_log_densities(self, x: np.ndarray, t: float = 0.0) -> np.ndarray:
        """(n, K) log N(x; e^{-t} μ_k, C_k(t)) at OU time t; `x` is (n, d)."""
        x = self._check_points(x)
        t = check_time(t)
        var = self._variances_at(t)
        self._check_density(var, range(self.n_components), t)
        s = math.exp(-t)
        out = np.empty((x.shape[0], self.n_components))
        for k in range(self.n_components):
            u = (x - s * self.means[k]) @ self.eigenvectors[k]
            out[:, k] = -0.5 * (
                self.dim * math.log(2 * math.pi) + np.log(var[k]).sum() + (u * u) @ (1 / var[k])
            )
        return out

    def log_density(self, x: np.ndarray, t: float = 0.0, sel: Selection | None = None) -> np.ndarray:
        """(n,) log p^S_t(x) (S = all components when `sel` is None)."""
        w = self.weights if sel is None else self.sub_weights(sel)
        with np.errstate(divide="ignore"):
            return special.logsumexp(self.component_log_densities(x, t) + np.log(w)[None, :], axis=1)

    def sample(
        self, n: int, rng: np.random.Generator | int, t: float = 0.0, sel: Selection | None = None
    ) -> np.ndarray:
        """(n, d) draws from p^S_t (S = all when `sel` is None), seeded by `rng`; singular Σ_k are fine."""
        rng = np.random.default_rng(rng)
        t = check_time(t)
        w = self.weights if sel is None else self.sub_weights(sel)
        k = rng.choice(self.n_components, size=n, p=w)
        sd = np.sqrt(self._variances_at(t))
        z = rng.standard_normal((n, self.dim)) * sd[k]
        return math.exp(-t) * self.means[k] + np.einsum("nij,nj->ni", self.eigenvectors[k], z)

    def _check_points(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise CritwinError(f"x: points must have dimension d = {self.dim}, got shape {x.shape}")
        return x

    # ---- distances ------------------------------------------------------------------------------
    def tv_curve(
        self,
        a: Selection,
        b: Selection,
        *,
        seed: int | np.random.Generator = 0,
        se_target: float = DEFAULT_SE_TARGET,
        n_init: int = _N_INIT,
    ) -> TVCurve:
        """t ↦ TV(p^a_t, p^b_t): exact for two components with identical covariances, else Monte Carlo
        with common random numbers (`n_init` first draws, more as a call's se_target demands).

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
            inner = self.tv_curve(small, rest, seed=seed, se_target=se_target, n_init=n_init)
            return ScaledCurve(inner, float(c))
        if len(a) == 1 and len(b) == 1 and np.array_equal(self.covs[a[0]], self.covs[b[0]]):
            return ExactCurve(lambda t: self._tv_equal_cov(a[0], b[0], t))
        return FullCovMC(
            self,
            self.sub_weights(a),
            self.sub_weights(b),
            kind="tv",
            seed=seed,
            se_target=se_target,
            n_init=n_init,
        )

    def tv(
        self,
        a: Selection,
        b: Selection,
        t: float,
        *,
        seed: int | np.random.Generator = 0,
        se_target: float = DEFAULT_SE_TARGET,
        n: int | None = None,
    ) -> TVEstimate:
        """TV(p^a_t, p^b_t) at OU time t: se == 0 when exact; else Monte Carlo with se ≤ se_target, or with
        exactly about `n` draws (stratified, at least 16 per component) when `n` is given."""
        t = check_time(t)
        if n is None:
            return self.tv_curve(a, b, seed=seed, se_target=se_target)(t, se_target)
        return self.tv_curve(a, b, seed=seed, n_init=_check_n(n))(t, math.inf)

    def bc(
        self,
        a: Selection,
        b: Selection,
        t: float,
        *,
        seed: int | np.random.Generator = 0,
        se_target: float = DEFAULT_SE_TARGET,
        n: int | None = None,
    ) -> TVEstimate:
        """Bhattacharyya coefficient BC(p^a_t, p^b_t) = ∫ sqrt(p^a_t p^b_t): closed form for single
        components (exp of minus the Bhattacharyya distance), Monte Carlo (draws from the midpoint mixture,
        se ≤ se_target, or about `n` draws) otherwise."""
        t = check_time(t)
        a, b = self.select(a, "a"), self.select(b, "b")
        if a == b:
            return TVEstimate(1.0)
        if len(a) == 1 and len(b) == 1:
            return TVEstimate(self._bc_pair(a[0], b[0], t))
        n_init = _N_INIT if n is None else _check_n(n)
        mc = FullCovMC(
            self,
            self.sub_weights(a),
            self.sub_weights(b),
            kind="bc",
            seed=seed,
            se_target=se_target,
            n_init=n_init,
        )
        return mc(t, se_target if n is None else math.inf)

    def _tv_equal_cov(self, i: int, j: int, t: float) -> float:
        """TV(N(a, C), N(b, C)) = erf(‖C^{-1/2}(a − b)‖ / (2√2)) for components i, j with C_i(t) = C_j(t)."""
        var = self._variances_at(t)
        self._check_density(var, (i, j), t)
        u = math.exp(-t) * ((self.means[i] - self.means[j]) @ self.eigenvectors[i])
        return float(special.erf(math.sqrt(float((u * u) @ (1.0 / var[i]))) / (2.0 * math.sqrt(2.0))))

    def _bc_pair(self, i: int, j: int, t: float) -> float:
        """exp(−D_B), D_B = ⅛ Δᵀ C̄⁻¹ Δ + ½ ln(det C̄ / sqrt(det C_i det C_j)), C̄ = (C_i + C_j)/2."""
        var = self._variances_at(t)
        self._check_density(var, (i, j), t)
        cov = self._cov_at(t)
        chol = np.linalg.cholesky(0.5 * (cov[i] + cov[j]))
        y = solve_triangular(chol, math.exp(-t) * (self.means[i] - self.means[j]), lower=True)
        logdet_bar = 2.0 * float(np.log(np.diag(chol)).sum())
        db = 0.125 * float(y @ y) + 0.5 * (logdet_bar - 0.5 * (np.log(var[i]).sum() + np.log(var[j]).sum()))
        return math.exp(-db)


class FullCovMC(GaussianMC):
    """Stratified Monte Carlo TV (kind "tv", draws from P) or BC (kind "bc", draws from M = (P + Q)/2)
    between sub-mixtures P, Q of a FullCovGaussianMixture at OU time t. Callable as a `TVCurve`.

    A draw from component k is x = e^{-t} μ_k + V_k diag(sqrt(e^{-2t} λ_k + 1 − e^{-2t})) z with z ~ N(0, I_d)
    fixed across t (common random numbers); its log-density under component j needs
    V_jᵀ(x − e^{-t} μ_j) = e^{-t} V_jᵀ(μ_k − μ_j) + (V_jᵀ V_k) diag(·) z. Per stratum k that is one
    (n_k, d) × (d, J·d) product against all V_jᵀ V_k side by side (precomputed): O(n·J·d²) per call in a few
    BLAS calls. The estimator itself (summands, stratified mean and standard error, adaptive growth of n) is
    `GaussianMC`'s.
    """

    def __init__(
        self,
        mix: FullCovGaussianMixture,
        p_weights: np.ndarray,
        q_weights: np.ndarray,
        *,
        kind: str = "tv",
        seed: int | np.random.Generator = 0,
        se_target: float = DEFAULT_SE_TARGET,
        n_init: int = _N_INIT,
        n_max: int = _N_MAX,
    ) -> None:
        # GaussianMC.__init__ builds isotropic geometry; set up the same estimator state for full covariances.
        self.mix = mix
        self.kind = kind
        self.se_target = se_target
        self.n_max = max(n_max, n_init)
        pw = np.asarray(p_weights, dtype=float)
        qw = np.asarray(q_weights, dtype=float)
        sw = pw if kind == "tv" else 0.5 * (pw + qw)
        self.cols = np.flatnonzero((pw + qw) > 0)
        self.strata = np.flatnonzero(sw > 0)
        self.pi = sw[self.strata] / sw[self.strata].sum()
        self.pw_cols, self.qw_cols = pw[self.cols], qw[self.cols]
        self.sw_cols = sw[self.cols] / sw.sum()
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        vecs, mu = mix.eigenvectors, mix.means
        # Per stratum k, over the other needed columns j ≠ k side by side: [V_kᵀ V_j] (d, J'·d) (so that
        # w @ it holds (V_jᵀ V_k w)ᵀ for row vectors w) and [(μ_k − μ_j) V_j] (J'·d,). The own column j = k
        # needs no product: its Mahalanobis norm is ‖z‖².
        self._others = [np.flatnonzero(self.cols != k) for k in self.strata]
        self._own = [np.flatnonzero(self.cols == k) for k in self.strata]
        self._rot = [
            np.concatenate([vecs[k].T @ vecs[j] for j in self.cols[o]], axis=1) if o.size else None
            for k, o in zip(self.strata, self._others, strict=True)
        ]
        self._shift = [
            np.concatenate([(mu[k] - mu[j]) @ vecs[j] for j in self.cols[o]]) if o.size else None
            for k, o in zip(self.strata, self._others, strict=True)
        ]
        self._blocks = [np.zeros((0, mix.dim)) for _ in self.strata]
        self._z2 = [np.zeros(0) for _ in self.strata]
        self.stratum = np.zeros(0, dtype=np.int64)
        self._extend(n_init)

    def _extend(self, n_new: int) -> None:
        counts = np.maximum(_MIN_PER_STRATUM, np.floor(n_new * self.pi)).astype(np.int64)
        for s, m in enumerate(counts):
            z = self.rng.standard_normal((int(m), self.mix.dim))
            self._blocks[s] = np.concatenate([self._blocks[s], z])
            self._z2[s] = np.concatenate([self._z2[s], np.einsum("ij,ij->i", z, z)])
        # Rows are kept grouped by stratum (the estimator only needs each row's stratum).
        self.stratum = np.repeat(np.arange(self.strata.size), [b.shape[0] for b in self._blocks])

    def log_densities(self, t: float) -> np.ndarray:
        """(n, J) log N(x_i(t); e^{-t} μ_j, C_j(t)) for the needed components j = self.cols."""
        mix = self.mix
        var = mix._variances_at(t)
        mix._check_density(var, self.cols, t)
        s = math.exp(-t)
        var_cols = var[self.cols]
        inv = 1.0 / var_cols
        const = -0.5 * (mix.dim * math.log(2.0 * math.pi) + np.log(var_cols).sum(axis=1))
        out = np.empty((self.n, self.cols.size))
        d = mix.dim
        chunk = max(256, _CHUNK_VALUES // max(1, (self.cols.size - 1) * d))
        row = 0
        for si, k in enumerate(self.strata):
            z = self._blocks[si]
            m = z.shape[0]
            own, others = self._own[si], self._others[si]
            out[row : row + m, own[0]] = const[own[0]] - 0.5 * self._z2[si]  # strata ⊆ cols
            if others.size:
                sd = np.sqrt(var[k])
                inv_o, shift = inv[others], s * self._shift[si]
                for lo in range(0, m, chunk):  # bounded memory: (chunk, J'·d) at a time
                    u = (z[lo : lo + chunk] * sd) @ self._rot[si]
                    u += shift
                    u *= u
                    maha = np.einsum("mjd,jd->mj", u.reshape(u.shape[0], others.size, d), inv_o)
                    out[row + lo : row + lo + u.shape[0], others] = const[others] - 0.5 * maha
            row += m
        return out


def class_windows(
    mix: Mixture,
    *,
    eps: float = 0.1,
    seed: int = 0,
    se_target: float = DEFAULT_SE_TARGET,
    classes: Sequence[str] | None = None,
) -> dict[str, TheoryWindow]:
    """Per-class critical windows {label: [T_after({k}), T_before({k}, Θ)]} of a mixture whose components are
    classes (e.g. `FullCovGaussianMixture.from_labelled_data`); any mixture the window searches accept works.
    `classes` (labels) limits the search to those classes; each class's window is searched on its own (with
    the same seed), so it does not depend on which other classes are asked for.

    Window k is `critical_window(mix, eps, targ=[k], init=everything)`: below lo = T_after({k}) (where
    TV(p^{k}_t, p^{Θ∖k}_t) ≥ 1 − ε²) noising and denoising a class-k sample keeps class k; above
    hi = T_before({k}, Θ) (where TV(p^{k}_t, p_t) ≤ ε) the output looks like the whole data distribution.
    Times are OU times (t grows with noise); Monte Carlo edges carry uncertainty intervals [lo, hi].

    Example:
        Two unit-variance classes 10 apart with equal weights have closed-form edges (DESIGN §1):
        T_after = ln(Δ / (2√2 erf⁻¹(1 − ε²))) and T_before = ln(Δ / (2√2 erf⁻¹(ε / w'))) with w' = ½:

        >>> from critwin.theory.fullcov import FullCovGaussianMixture, class_windows
        >>> mix = FullCovGaussianMixture([[-5.0, 0.0], [5.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5],
        ...                              labels=["cat", "dog"])
        >>> {k: (round(w.lo.t, 4), round(w.hi.t, 4)) for k, w in class_windows(mix, eps=0.1).items()}
        {'cat': (0.6633, 2.9824), 'dog': (0.6633, 2.9824)}
    """
    eps = check_eps(eps)
    if mix.n_components < 2:
        raise CritwinError("mix: class windows need at least two classes (components)")
    everything = tuple(range(mix.n_components))
    wanted = list(mix.labels) if classes is None else [str(c) for c in classes]
    unknown = sorted(set(wanted) - set(mix.labels))
    if unknown:
        raise CritwinError(f"classes: {unknown} are not classes of the mixture (it has {list(mix.labels)})")
    return {
        mix.labels[k]: critical_window(mix, eps, [k], everything, seed=seed, se_target=se_target)
        for k in range(mix.n_components)
        if mix.labels[k] in wanted
    }


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise CritwinError(f"n: number of Monte Carlo draws must be an integer >= 2, got {n!r}")
    return int(n)
