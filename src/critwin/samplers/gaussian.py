"""Gaussian-mixture diffusion testbed: exact score, a numerical DDPM sampler, exact posterior sampling,
and the exact forward–reverse curve P(kept | x0, t).

Data: an isotropic Gaussian mixture p = Σ_k w_k N(μ_k, σ_k² I) in any dimension d (a
`critwin.theory.GaussianMixture`; only its `means`, `variances`, `weights`, `labels` are read here).
Forward process: OU/VP, Y_t = a X + sqrt(1 − a²) Z with a = e^{-t}; component k becomes N(a μ_k, s_k² I),
s_k² = a² σ_k² + 1 − a². t is OU time (t = −½ ln ᾱ for a DDPM step with cumulative ᾱ) and grows with noise.

Reverse samplers (`GaussianMixtureSampler(method=...)`):

- "posterior" — exact: draw the component from its posterior P(k | y) ∝ w_k N(y; a μ_k, s_k²), then X from
  the conjugate Gaussian posterior N(μ_k + (a σ_k²/s_k²)(y − a μ_k), σ_k² (1 − a²)/s_k² · I).
- "ddpm" — numerical: ancestral DDPM (= DDIM with η = 1) with the exact score. From y at time t it walks a
  grid τ_j = t (j/K)², j = K … 0 (denser near the data, where the posterior sharpens); each step computes
  x̂0 = E[X0 | Y_τ = y] from the exact score by Tweedie's formula, x̂0 = (y + (1 − a²) ∇log p_τ(y)) / a, and
  draws Y_τ' from the OU bridge q(y_τ' | y_τ, x̂0); the last step returns x̂0. Its only error is the
  discretisation (replacing the posterior over x0 by its mean inside each step), which shrinks like 1/K.
  Measured on the demo hierarchy (n = 40,000 draws per t, t = 0.3 … 7): with K = 100 steps
  |P_ddpm(kept) − P_exact(kept)| ≤ 0.008 (largest at t = 7, where the grid's last steps are widest);
  with K = 25 up to 0.023. Both are far below the ±0.09 half-width of a 99% interval at n = 200;
  see tests/test_testbed_gaussian.py. (DDIM with η = 0 would not be valid here: a deterministic ODE from
  y maps p_t to p_0 but does not sample p(· | Y_t = y).)

Features on samples are Bayes classes: a partition of the components into named classes (single
components, or groups of them) and x ↦ argmax_c Σ_{k∈c} w_k N(x; μ_k, σ_k²).

Exact curve (`exact_curve`): P(kept | x0, t) = E_{y ~ N(a x0, (1−a²) I)} [ Σ_k P(k | y) P(class(X') = ref) ],
X' ~ N(m_k(y), v_k I). In d = 1 this is computed by quadrature: a trapezoid rule on 4,001 nodes over
y ∈ a x0 ± 12 sd (error < 1e-9, checked against scipy.integrate.quad in the tests) with the inner class
mass in closed form from normal CDFs over the Bayes regions (found by root-bracketing on a fine grid
and Brent's method). In d > 1 it is Monte Carlo with `n_mc` draws and a reported standard error
(≤ 0.5/sqrt(n_mc), e.g. ≤ 0.0011 at the default 200,000).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from critwin.errors import CritwinError
from critwin.theory.classes import check_partition, class_log_densities, classify
from critwin.theory.classes import mixture_params as _params

METHODS = ("posterior", "ddpm")


def _a(t: np.ndarray) -> np.ndarray:
    return np.exp(-np.asarray(t, dtype=float))


def _log_post(mu: np.ndarray, var: np.ndarray, w: np.ndarray, y: np.ndarray, a: np.ndarray) -> np.ndarray:
    """(R, K) log P(k | Y = y_r) at per-row mean factor a_r (OU time t_r = −ln a_r)."""
    s2 = a[:, None] ** 2 * var[None, :] + 1.0 - a[:, None] ** 2  # (R, K) variances of the pushed components
    diff = y[:, None, :] - a[:, None, None] * mu[None, :, :]
    d2 = np.einsum("rkd,rkd->rk", diff, diff)
    logs = np.log(w)[None, :] - 0.5 * mu.shape[1] * np.log(s2) - d2 / (2.0 * s2)
    return logs - special.logsumexp(logs, axis=1, keepdims=True)


def score(mixture: Any, y: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Exact score ∇_y log p_t(y) of the mixture at OU time t (scalar or one per row); y is (R, d)."""
    mu, var, w = _params(mixture)
    y = np.atleast_2d(np.asarray(y, dtype=float))
    a = np.broadcast_to(_a(t), (len(y),))
    post = np.exp(_log_post(mu, var, w, y, a))
    s2 = a[:, None] ** 2 * var[None, :] + 1.0 - a[:, None] ** 2
    coef = post / s2  # Σ_k P(k|y) (a μ_k − y) / s_k²
    return np.einsum("rk,rkd->rd", coef, a[:, None, None] * mu[None, :, :]) - y * coef.sum(
        axis=1, keepdims=True
    )


def posterior_sample(mixture: Any, y: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact draws X0 ~ p(· | Y_t = y), one per row of y (R, d), each row at its own OU time t_r."""
    mu, var, w = _params(mixture)
    y = np.atleast_2d(np.asarray(y, dtype=float))
    a = np.broadcast_to(_a(t), (len(y),))
    post = np.exp(_log_post(mu, var, w, y, a))
    k = (post.cumsum(axis=1) > rng.random((len(y), 1))).argmax(axis=1)
    s2 = a**2 * var[k] + 1.0 - a**2
    mean = mu[k] + (a * var[k] / s2)[:, None] * (y - a[:, None] * mu[k])
    sd = np.sqrt(var[k] * (1.0 - a**2) / s2)
    return mean + sd[:, None] * rng.standard_normal(y.shape)


def ddpm_sample(
    mixture: Any, y: np.ndarray, t: np.ndarray, rng: np.random.Generator, steps: int = 100
) -> np.ndarray:
    """Numerical reverse diffusion: ancestral DDPM with the exact score from Y_t = y down to t = 0, each
    row at its own OU time t_r, on the grid τ_j = t_r (j/steps)² (see module docstring for its error)."""
    y = np.atleast_2d(np.asarray(y, dtype=float)).copy()
    t = np.broadcast_to(np.asarray(t, dtype=float), (len(y),))
    for j in range(steps, 0, -1):
        s, u = t * (j / steps) ** 2, t * ((j - 1) / steps) ** 2
        live = s > 0
        if not live.any():
            break
        ys, ss, uu = y[live], s[live], u[live]
        a_s = np.exp(-ss)
        x0 = (ys + (-np.expm1(-2.0 * ss))[:, None] * score(mixture, ys, ss)) / a_s[:, None]
        # OU bridge: Y_s = e^{-(s-u)} Y_u + noise, Y_u = e^{-u} x0 + noise  =>  Y_u | Y_s, x0 is Gaussian.
        h_u, h_su, h_s = -np.expm1(-2.0 * uu), -np.expm1(-2.0 * (ss - uu)), -np.expm1(-2.0 * ss)
        mean = (np.exp(-uu) * h_su / h_s)[:, None] * x0 + (np.exp(-(ss - uu)) * h_u / h_s)[:, None] * ys
        sd = np.sqrt(h_u * h_su / h_s)
        y[live] = mean + sd[:, None] * rng.standard_normal(ys.shape)
    return y


# ----------------------------------------------------------------------------------------------------------
# Bayes classes (the testbed's features): critwin.theory.classes
# ----------------------------------------------------------------------------------------------------------
def _regions_1d(mixture: Any, partition: Mapping[str, Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Cut points and the class of each interval between them for a 1-D mixture's Bayes classifier."""
    mu, var, _ = _params(mixture)
    sd = math.sqrt(var.max())
    lo, hi = mu.min() - 12 * sd, mu.max() + 12 * sd
    grid = np.linspace(lo, hi, int(min(400_000, max(4_000, 64 * (hi - lo) / math.sqrt(var.min())))))
    cls = classify(mixture, grid[:, None], partition)
    cuts = [-np.inf]
    for i in np.flatnonzero(cls[:-1] != cls[1:]):
        c1, c2 = cls[i], cls[i + 1]

        def gap(v: float, c1: int = c1, c2: int = c2) -> float:
            d = class_log_densities(mixture, np.array([[v]]), partition)[0]
            return float(d[c1] - d[c2])

        cuts.append(optimize.brentq(gap, grid[i], grid[i + 1], xtol=1e-13))
    cuts.append(np.inf)
    owners = np.concatenate([cls[[0]], cls[1:][cls[:-1] != cls[1:]]])
    return np.asarray(cuts), owners


@dataclass(frozen=True)
class ExactCurve:
    """Exact P(kept | x0, t) at forward times t, with its numerical standard error (0 for quadrature)."""

    t: np.ndarray
    p: np.ndarray
    se: np.ndarray


def exact_curve(
    mixture: Any,
    x0: np.ndarray,
    ts: Sequence[float],
    partition: Mapping[str, Sequence[int]] | None = None,
    *,
    n_mc: int = 200_000,
    seed: int = 0,
) -> ExactCurve:
    """Exact P(Bayes class of X' = Bayes class of x0 | x0, t) for X' ~ FR_t(x0) under the exact reverse
    process, at each OU time t in `ts`: quadrature in d = 1, Monte Carlo (n_mc draws, se reported) else."""
    mu, var, w = _params(mixture)
    part = check_partition(mixture, partition)
    x0 = np.asarray(x0, dtype=float).reshape(1, -1)
    ref = int(classify(mixture, x0, part)[0])
    ts = np.asarray(ts, dtype=float)
    d = mu.shape[1]
    p = np.empty(len(ts))
    se = np.zeros(len(ts))
    if d == 1:
        cuts, owners = _regions_1d(mixture, part)
        inside = owners == ref
        z = np.linspace(-12.0, 12.0, 4001)
        wz = stats.norm.pdf(z) * np.gradient(z)  # trapezoid weights times the N(0, 1) density
        wz[[0, -1]] *= 0.5
        for i, t in enumerate(ts):
            if t == 0:
                p[i] = 1.0
                continue
            a = math.exp(-t)
            y = a * x0[0, 0] + math.sqrt(-math.expm1(-2 * t)) * z
            post = np.exp(_log_post(mu, var, w, y[:, None], np.full(len(y), a)))  # (N, K)
            s2 = a * a * var + 1.0 - a * a
            m = mu[None, :, 0] + (a * var / s2)[None, :] * (y[:, None] - a * mu[None, :, 0])  # (N, K)
            sd = np.sqrt(var * (1.0 - a * a) / s2)
            cdf = stats.norm.cdf((cuts[None, None, :] - m[:, :, None]) / sd[None, :, None])  # (N, K, cuts)
            mass = np.diff(cdf, axis=2)[:, :, inside].sum(axis=2)
            p[i] = float(np.clip(wz @ (post * mass).sum(axis=1), 0.0, 1.0))
        return ExactCurve(ts, p, se)
    rng = np.random.default_rng(seed)
    for i, t in enumerate(ts):
        if t == 0:
            p[i] = 1.0
            continue
        a = math.exp(-t)
        y = a * x0 + math.sqrt(-math.expm1(-2 * t)) * rng.standard_normal((n_mc, d))
        post = np.exp(_log_post(mu, var, w, y, np.full(n_mc, a)))
        s2 = a * a * var + 1.0 - a * a
        hit = np.zeros(n_mc)
        for k in range(len(mu)):  # Rao–Blackwellised over the component: one draw of X' per component
            xk = mu[k] + (a * var[k] / s2[k]) * (y - a * mu[k])
            xk = xk + math.sqrt(var[k] * (1 - a * a) / s2[k]) * rng.standard_normal((n_mc, d))
            hit += post[:, k] * (classify(mixture, xk, part) == ref)
        p[i] = float(hit.mean())
        se[i] = float(hit.std(ddof=1) / math.sqrt(n_mc))
    return ExactCurve(ts, p, se)


# ----------------------------------------------------------------------------------------------------------
# The Sampler
# ----------------------------------------------------------------------------------------------------------
class GaussianMixtureSampler:
    """`Sampler` for a Gaussian mixture under OU noise; samples are float arrays of shape (d,).

    method "posterior" (exact reverse process) or "ddpm" (numerical, `steps` steps, exact score).
    t_max: the largest OU time a schedule may use (default 10: e^{-10} ≈ 5e-5, essentially pure noise).
    """

    time_unit = "ou"

    def __init__(self, mixture: Any, *, method: str = "posterior", steps: int = 100, t_max: float = 10.0):
        if method not in METHODS:
            raise CritwinError(f"method={method!r} is unknown; use one of {list(METHODS)}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise CritwinError(f"steps={steps!r} must be a whole number >= 1")
        if not (t_max > 0 and math.isfinite(t_max)):
            raise CritwinError(f"t_max={t_max!r} must be a finite OU time > 0")
        self.mixture = mixture
        self.mu, self.var, self.w = _params(mixture)
        self.method = method
        self.steps = steps
        self.t_max = float(t_max)

    @property
    def dim(self) -> int:
        """Dimension d of the samples."""
        return int(self.mu.shape[1])

    def sample(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """n exact draws from the mixture."""
        k = rng.choice(len(self.w), size=n, p=self.w / self.w.sum())
        x = self.mu[k] + np.sqrt(self.var[k])[:, None] * rng.standard_normal((n, self.dim))
        return list(x)

    def forward_reverse(
        self, x: Any, ts: Sequence[float], n: int, rng: np.random.Generator
    ) -> list[list[np.ndarray]]:
        """For each OU time t in ts (0 ≤ t ≤ t_max): n independent noisings Y_t of x, each denoised once
        (one batch)."""
        x = np.asarray(x, dtype=float).reshape(-1)
        if x.shape != (self.dim,):
            raise CritwinError(f"x has shape {x.shape}; this mixture's samples have shape ({self.dim},)")
        for tt in ts:
            if not (isinstance(tt, int | float | np.integer | np.floating) and 0 <= tt <= self.t_max):
                raise CritwinError(f"t={tt!r}: OU times must be numbers in [0, t_max={self.t_max:g}]; "
                                   "drop it from the schedule or build the sampler with a larger t_max")
        t = np.repeat(np.asarray(ts, dtype=float), n)
        a = np.exp(-t)[:, None]
        y = a * x[None, :] + np.sqrt(-np.expm1(-2.0 * t))[:, None] * rng.standard_normal((len(t), self.dim))
        if self.method == "posterior":
            out = posterior_sample(self.mixture, y, t, rng)
        else:
            out = ddpm_sample(self.mixture, y, t, rng, self.steps)
        out[t == 0] = x  # t = 0: nothing was noised, nothing to resample
        return [list(out[i * n : (i + 1) * n]) for i in range(len(ts))]


def default_mixture() -> Any:
    """The theory's built-in example (`critwin.theory.demo.DEMO_SPEC`): a hierarchical mixture in d = 2,
    two far-apart groups A, B (means ±100) of two close components each (4 apart), unit variances, equal
    weights."""
    from critwin.theory.demo import DEMO_SPEC
    from critwin.theory.spec import parse_spec

    return parse_spec(DEMO_SPEC).mixture


def from_registry(path_or_url: Any = None, *, mixture: Any = None, **settings: Any) -> GaussianMixtureSampler:
    """The registry's "gaussian" factory: a `GaussianMixtureSampler` of `mixture` (a GaussianMixture), of
    the Gaussian mixture of a theory spec file at `path_or_url` (JSON/YAML, see `critwin theory`), or of
    `default_mixture()`; settings are method, steps and t_max."""
    allowed = ("method", "steps", "t_max")
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise CritwinError(f"sampler 'gaussian': unknown setting {unknown[0]!r}; use mixture, "
                           f"{', '.join(allowed)}")
    if path_or_url is not None and mixture is not None:
        raise CritwinError("sampler 'gaussian': give a spec file or mixture=, not both")
    if path_or_url is not None:
        from critwin.theory.gaussian import GaussianMixture
        from critwin.theory.spec import load_spec

        mixture = load_spec(path_or_url).mixture
        if not isinstance(mixture, GaussianMixture):
            raise CritwinError(f"sampler 'gaussian': {path_or_url} describes a {type(mixture).__name__}; "
                               "give a spec whose mixture has kind 'gaussian'")
    return GaussianMixtureSampler(default_mixture() if mixture is None else mixture, **settings)
