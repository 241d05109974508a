"""Tiny offline diffusers pipelines built in code (no downloads), for tests, benchmarks and docs:

- `exact_mixture_pipeline`: a pixel `DDPMPipeline` whose "UNet" is the exact denoiser of a Gaussian mixture
  (`critwin.samplers.diffusers_exact`), the ground truth the diffusers backend is checked against;
- `save_tiny_latent_pipeline`: a Stable-Diffusion-layout latent text-to-image pipeline from small random
  components (UNet2DConditionModel, AutoencoderKL, CLIP text encoder, a CLIP tokenizer with a vocabulary
  written in code), saved as a pipeline directory.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def exact_mixture_pipeline(
    mixture: Any,
    sample_shape: Sequence[int] = (1, 1, 1),
    *,
    scheduler: str = "ddpm",
    prediction_type: str = "epsilon",
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
) -> Any:
    """A `DDPMPipeline` with the exact denoiser of `mixture` (samples reshaped to `sample_shape`) and a
    scheduler of class `scheduler` with clip_sample off (mixture data need not lie in [−1, 1])."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from critwin.samplers.diffusers_exact import ExactMixtureDenoiser
    from critwin.samplers.diffusers_pipeline import scheduler_class

    base = DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        clip_sample=False,
        prediction_type=prediction_type,
    )
    sch = scheduler_class(scheduler).from_config(base.config)
    return DDPMPipeline(unet=ExactMixtureDenoiser.of(mixture, sch, sample_shape), scheduler=sch)


def _clip_tokenizer(path: Path) -> Any:
    """A CLIP BPE tokenizer over lowercase letters, digits and a few marks, with no merges."""
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + ".,!?'")
    vocab = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=16)


def save_tiny_latent_pipeline(path: str | Path, *, seed: int = 0, image_size: int = 16) -> Path:
    """Save a random-weight Stable-Diffusion-layout pipeline (latents 4 × image_size/2 × image_size/2) to
    `path` and return it."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    tok = _clip_tokenizer(path / "_tokenizer_src")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            latent_channels=4,
            norm_num_groups=4,
            sample_size=image_size,
        )
        unet = UNet2DConditionModel(
            sample_size=image_size // 2,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            cross_attention_dim=16,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tok),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=16,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        )
    sch = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", clip_sample=False)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=sch,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path
