"""The bundled digit diffusion model (src/critwin/assets/digit_model, made by scripts/train_digit_model.py):
it loads offline with diffusers, its classifier reloads with skops and scores what the report says, the
report's numbers can be rebuilt from scikit-learn's digits, and (slow) fresh samples look like digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import critwin

MODEL = Path(critwin.__file__).resolve().parent / "assets" / "digit_model"
MAX_BYTES = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads((MODEL / "training_report.json").read_text())


@pytest.fixture(scope="module")
def digits():
    """All digits as model pixels x = pixels / 8 - 1, flattened to 64 features, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.reshape(len(d.images), -1).astype(np.float32) / 8.0 - 1.0, d.target


@pytest.fixture(scope="module")
def classifier():
    import skops.io

    path = MODEL / "digit_classifier.skops"
    return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_pipeline_folder_is_complete_and_small():
    for rel in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                "scheduler/scheduler_config.json", "digit_classifier.skops", "training_report.json",
                "samples.png"):
        assert (MODEL / rel).is_file(), rel
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) <= MAX_BYTES
    assert (MODEL / "samples.png").stat().st_size < 200_000


def test_it_loads_offline_with_diffusers(offline, report):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    pipe = DDPMPipeline.from_pretrained(MODEL)
    assert isinstance(pipe.unet, UNet2DModel) and isinstance(pipe.scheduler, DDPMScheduler)
    unet = UNet2DModel.from_pretrained(MODEL, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(MODEL, subfolder="scheduler")
    assert (unet.config.sample_size, unet.config.in_channels, unet.config.out_channels) == (8, 1, 1)
    assert sum(p.numel() for p in unet.parameters()) == report["unet"]["parameters"]
    assert all(p.dtype == torch.float32 for p in unet.parameters())
    with torch.no_grad():
        eps = unet(torch.zeros(3, 1, 8, 8), torch.tensor([0, 500, 999])).sample
    assert eps.shape == (3, 1, 8, 8) and torch.isfinite(eps).all()
    cfg = scheduler.config
    assert cfg.clip_sample is True and cfg.prediction_type == "epsilon"
    assert cfg.clip_sample_range == 1.0 and cfg.num_train_timesteps == 1000 and cfg.beta_schedule == "linear"


def test_the_recorded_split_is_the_seeded_stratified_split(report, digits):
    from sklearn.model_selection import train_test_split

    _, y = digits
    split = report["split"]
    seed = split["random_state"]
    _, held = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
    assert sorted(held.tolist()) == split["held_out_indices"]
    assert (split["n_train"], split["n_held_out"]) == (len(y) - len(held), len(held)) == (1437, 360)


def test_the_classifier_reloads_and_scores_what_the_report_says(report, digits, classifier):
    x, y = digits
    held = np.asarray(report["split"]["held_out_indices"])
    proba = classifier.predict_proba(x[held])
    accuracy = float((proba.argmax(1) == y[held]).mean())  # the report reads classes as argmax predict_proba
    assert accuracy >= 0.9
    assert abs(accuracy - report["classifier"]["held_out_accuracy"]) <= 1e-9
    assert abs(proba.max(1).mean() - report["sample_quality"]["mean_confidence_real_heldout"]) <= 1e-9


def test_the_reported_data_histogram_is_load_digits(report, digits):
    _, y = digits
    counts = np.bincount(y, minlength=10)
    for quality in [report["sample_quality"], *report["sample_quality_by_inference_steps"].values()]:
        hist = quality["class_histogram_data"]
        assert hist["counts"] == counts.tolist()
        np.testing.assert_allclose(hist["fractions"], counts / counts.sum(), rtol=0, atol=1e-12)
        gen = np.asarray(quality["class_histogram_generated"]["counts"])
        assert gen.sum() == quality["n_samples"]
        tv = 0.5 * np.abs(gen / gen.sum() - counts / counts.sum()).sum()
        assert abs(tv - quality["tv_histograms"]) <= 1e-12


def test_the_report_records_its_settings(report):
    for key in ("seed", "wall_seconds", "threads", "dir_size_bytes", "versions"):
        assert key in report, key
    assert report["dir_size_bytes"] <= MAX_BYTES
    assert {"torch", "diffusers", "sklearn"} <= set(report["versions"])
    training = report["training"]
    for key in ("steps", "batch_size", "lr", "final_loss", "mean_loss_last_500"):
        assert key in training, key
    quality = report["sample_quality"]
    for key in ("n_samples", "inference_steps", "class_histogram_generated", "class_histogram_data",
                "tv_histograms", "mean_confidence_generated", "mean_confidence_real_heldout",
                "fraction_confident"):
        assert key in quality, key


@pytest.mark.slow
def test_fresh_samples_are_digits_in_the_data_proportions(offline, report, digits, classifier):
    """200 new samples (100 DDPM steps, a seed the report did not use) through the shipped pipeline.

    Confidence bound, from the report's 1,000 samples at the same 100 steps (mean 0.947, sd 0.095 when this
    was written): the mean of n = 200 independent confidences has standard error sd / sqrt(200); the
    report's own mean has sd / sqrt(1000). Their difference has SE sd * sqrt(1/200 + 1/1000) ~ 0.0074, and we
    allow 4 of those (one-sided false alarm ~3e-5 by the CLT), so the bound is ~0.918 — still well above
    what blurry or blended non-digits score (mean max-probability ~0.23 on noise, ~0.57 on 50/50 blends).
    Histogram: the report's 1,000-sample histograms pass a chi-square test against the data (p = 0.23 at
    1,000 steps, 0.93 at 100), so under "the model draws classes in the data proportions" a fresh 200-sample
    histogram fails p > 0.001 with probability 0.001.
    """
    from diffusers import DDPMPipeline
    from scipy import stats

    q = report["sample_quality_by_inference_steps"]["100"]
    n = 200
    se = q["std_confidence_generated"] * math.sqrt(1 / n + 1 / q["n_samples"])
    bound = q["mean_confidence_generated"] - 4 * se
    assert bound >= 0.85  # the shipped model is a good one (guards against a weak retrained model)

    pipe = DDPMPipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=n, generator=torch.Generator().manual_seed(20250), num_inference_steps=100,
                  output_type="np").images  # (n, 8, 8, 1) in [0, 1]
    x = np.clip(images.reshape(n, 64) * 2.0 - 1.0, -1.0, 1.0)
    proba = classifier.predict_proba(x)
    assert proba.max(1).mean() >= bound

    _, y = digits
    counts = np.bincount(proba.argmax(1), minlength=10)
    expected = n * np.bincount(y, minlength=10) / len(y)
    assert stats.chisquare(counts, f_exp=expected).pvalue > 0.001
