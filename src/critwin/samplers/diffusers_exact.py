"""The exact score of a Gaussian mixture as a diffusers model, so the diffusers backend runs on ground truth.

`ExactMixtureDenoiser` is a `diffusers.ModelMixin` that answers `model(sample, timestep).sample` like a
`UNet2DModel`: for an isotropic mixture p = Σ_k w_k N(μ_k, σ_k² I) (a `critwin.GaussianMixture`, samples
reshaped to `sample_shape`) it returns the exact ε, x₀ or v prediction at the timestep's cumulative ᾱ:

    ∇ log p_t(y) = Σ_k P(k | y) (√ᾱ μ_k − y) / s_k²,  s_k² = ᾱ σ_k² + 1 − ᾱ   (y = √ᾱ x₀ + √(1 − ᾱ) ε)
    ε̂ = −√(1 − ᾱ) ∇ log p_t(y),  x̂₀ = (y + (1 − ᾱ) ∇ log p_t(y)) / √ᾱ,  v̂ = √ᾱ ε̂ − √(1 − ᾱ) x̂₀.

Put into a pipeline with a scheduler of the same betas (`clip_sample=False` unless the mixture lives inside
[−1, 1]), the diffusers backend's FR_t curves must match `critwin.samplers.gaussian.exact_curve`: that is
the check of the backend's time mapping, schedulers and seeding. Fractional timesteps (Karras-sigma
schedulers) interpolate σ = √((1 − ᾱ)/ᾱ) linearly between training steps, as those schedulers do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from critwin.errors import CritwinError

PREDICTIONS = ("epsilon", "sample", "v_prediction")


class ExactMixtureDenoiser(ModelMixin, ConfigMixin):
    """Exact denoiser of an isotropic Gaussian mixture (see the module docstring), in float64 inside."""

    @register_to_config
    def __init__(
        self,
        means: Sequence[Sequence[float]] = ((0.0,),),
        variances: Sequence[float] = (1.0,),
        weights: Sequence[float] = (1.0,),
        alphas_cumprod: Sequence[float] = (1.0,),
        sample_size: int | Sequence[int] = 1,
        in_channels: int = 1,
        prediction_type: str = "epsilon",
    ):
        super().__init__()
        if prediction_type not in PREDICTIONS:
            raise CritwinError(f"prediction_type={prediction_type!r}; use one of {', '.join(PREDICTIONS)}")
        size = (sample_size,) * 2 if isinstance(sample_size, int) else tuple(sample_size)
        self.shape = (in_channels, *size)
        mu = np.asarray(means, dtype=float)
        if mu.ndim != 2 or mu.shape[1] != int(np.prod(self.shape)):
            raise CritwinError(
                f"means: need (K, {int(np.prod(self.shape))}) for samples of shape {self.shape}"
            )
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float64))
        self.register_buffer("var", torch.tensor(np.broadcast_to(variances, len(mu)), dtype=torch.float64))
        self.register_buffer("logw", torch.as_tensor(np.log(np.asarray(weights) / np.sum(weights))))
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("sigma", ((1 - ac) / ac).sqrt())
        self.prediction_type = prediction_type

    @classmethod
    def of(cls, mixture, scheduler, sample_shape: Sequence[int], prediction_type: str | None = None):
        """The exact denoiser of a `GaussianMixture` for `scheduler`'s training betas, on samples of
        shape (C, H, W); prediction_type defaults to the scheduler's."""
        c, h, w = sample_shape
        return cls(
            means=np.asarray(mixture.means, dtype=float).tolist(),
            variances=np.broadcast_to(
                np.asarray(mixture.variances, dtype=float), mixture.n_components
            ).tolist(),
            weights=np.asarray(mixture.weights, dtype=float).tolist(),
            alphas_cumprod=scheduler.alphas_cumprod.double().tolist(),
            sample_size=[h, w],
            in_channels=c,
            prediction_type=prediction_type or scheduler.config.prediction_type,
        )

    def _alpha_bar(self, timestep: torch.Tensor, b: int) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float64, device=self.sigma.device).reshape(-1)
        t = t.expand(b) if t.numel() == 1 else t
        lo = t.floor().long().clamp(0, len(self.sigma) - 1)
        hi = (lo + 1).clamp(max=len(self.sigma) - 1)
        frac = t - lo
        s = self.sigma[lo] * (1 - frac) + self.sigma[hi] * frac
        return 1.0 / (1.0 + s * s)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, return_dict: bool = True):
        """The exact prediction for a batch `sample` (B, C, H, W) at `timestep` (scalar or one per row)."""
        b = len(sample)
        y = sample.reshape(b, -1).double()
        ab = self._alpha_bar(timestep, b)[:, None]
        a = ab.sqrt()
        s2 = ab * self.var[None, :] + 1 - ab  # (B, K)
        d2 = ((y[:, None, :] - a[:, :, None] * self.mu[None]) ** 2).sum(-1)
        logp = self.logw[None] - 0.5 * y.shape[1] * s2.log() - d2 / (2 * s2)
        post = torch.softmax(logp, dim=1)
        coef = post / s2
        score = (coef[:, :, None] * a[:, :, None] * self.mu[None]).sum(1) - y * coef.sum(1, keepdim=True)
        eps = -(1 - ab).sqrt() * score
        x0 = (y + (1 - ab) * score) / a
        out = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - (1 - ab).sqrt() * x0}[
            self.prediction_type
        ]
        out = out.to(sample.dtype).reshape(sample.shape)
        return UNet2DOutput(sample=out) if return_dict else (out,)
