"""The diffusers backend on ground truth: a pipeline whose "UNet" is the exact denoiser of a Gaussian mixture
must reproduce the exact forward–reverse curve (quadrature, `critwin.samplers.gaussian.exact_curve`) within
99% intervals, with DDPM and DDIM; its time mapping, saved-config handling, seeding, chunking and errors;
and a Stable-Diffusion-layout latent pipeline from tiny random components end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import critwin as cw
from critwin.conformance import check_sampler
from critwin.errors import CritwinError
from critwin.samplers.diffusers_pipeline import DiffusersSampler, from_pipeline, load_pipeline
from critwin.samplers.diffusers_tiny import exact_mixture_pipeline, save_tiny_latent_pipeline
from critwin.samplers.gaussian import exact_curve
from critwin.stats import wilson_interval
from critwin.theory.classes import check_partition, classify

# Four classes on a line: two close pairs far apart (a hierarchy), so P(same class | t) falls in two steps.
MIX = cw.GaussianMixture(means=[[-4.0], [-2.0], [2.0], [4.0]], variances=0.5, weights=[0.25] * 4)
PART = check_partition(MIX, None)
X0 = np.array([[[-2.0]]], dtype=np.float32)


def _same(a: list[list[np.ndarray]], b: list[list[np.ndarray]], atol: float = 0.0) -> bool:
    return len(a) == len(b) and all(
        len(ra) == len(rb) and all(np.allclose(x, y, atol=atol, rtol=0) for x, y in zip(ra, rb, strict=True))
        for ra, rb in zip(a, b, strict=True))


def _kept(rows: list[list[np.ndarray]]) -> np.ndarray:
    ref = classify(MIX, X0.reshape(1, -1), PART)[0]
    return np.array([(classify(MIX, np.stack([r.reshape(-1) for r in row]).astype(float), PART) == ref).sum()
                     for row in rows])


@pytest.mark.parametrize(("scheduler", "steps"), [("ddpm", 200), ("ddim", 100)])
def test_the_backend_on_the_exact_score_reproduces_the_exact_curve(scheduler, steps):
    s = from_pipeline(exact_mixture_pipeline(MIX, scheduler=scheduler), steps=steps)
    ts = list(np.linspace(0.05, 3.0, 20))
    start = s.start_steps(ts)
    # The time mapping, recomputed from the scheduler's own ᾱ: t_actual = −½ ln ᾱ at the start timestep,
    # the grid timestep of nearest OU time.
    ac = s.scheduler.alphas_cumprod.double().numpy()
    grid = -0.5 * np.log(ac[s.timesteps.numpy()])
    for t, st in zip(ts, start, strict=True):
        assert st.t_actual == pytest.approx(-0.5 * math.log(ac[st.timestep]), abs=1e-12)
        assert abs(st.t_actual - t) <= np.abs(grid - t).min() + 1e-12
    n = 200
    k = _kept(s.forward_reverse(X0, ts, n, np.random.default_rng(0)))
    exact = exact_curve(MIX, X0.reshape(-1), [st.t_actual for st in start], PART).p
    lo, hi = wilson_interval(k, n, 0.99)
    inside = (lo <= exact) & (exact <= hi)
    assert inside.mean() >= 0.95, list(zip(k / n, exact, strict=True))
    assert exact[0] > 0.95 and exact[-1] < 0.3  # the curve really moves over the scanned range


def test_every_prediction_type_gives_the_same_draws():
    # ε, x₀ and v of the exact model are one prediction in three parameterisations: a backend that honours
    # the scheduler's prediction_type draws the same samples from the same seed whichever is saved.
    draws = []
    for pred in ("epsilon", "sample", "v_prediction"):
        s = from_pipeline(exact_mixture_pipeline(MIX, scheduler="ddim", prediction_type=pred), steps=40)
        draws.append(np.stack(s.forward_reverse(X0, [0.4, 1.5], 30, np.random.default_rng(5))[1]))
    assert np.allclose(draws[0], draws[1], atol=1e-9) and np.allclose(draws[0], draws[2], atol=1e-9)
    wrong = exact_mixture_pipeline(MIX, scheduler="ddim", prediction_type="epsilon")
    wrong.scheduler.register_to_config(prediction_type="v_prediction")  # a config that lies about the model
    s = from_pipeline(wrong, steps=40)
    assert not np.allclose(np.stack(s.forward_reverse(X0, [0.4, 1.5], 30, np.random.default_rng(5))[1]),
                           draws[0], atol=1e-3)


def test_a_saved_pipeline_loads_with_its_own_scheduler_config(tmp_path):
    pipe = exact_mixture_pipeline(MIX, scheduler="ddim")
    pipe.scheduler.register_to_config(timestep_spacing="trailing")
    pipe.save_pretrained(tmp_path / "p")
    s = cw.load_sampler("diffusers", tmp_path / "p", steps=25)
    assert type(s.scheduler).__name__ == "DDIMScheduler"
    assert s.scheduler.config.clip_sample is False  # a default-built scheduler would clip to [−1, 1]
    assert s.scheduler.config.timestep_spacing == "trailing" and int(s.timesteps[0]) == 999
    assert s.t_max == pytest.approx(-0.5 * math.log(float(s.scheduler.alphas_cumprod[999])))
    mem = from_pipeline(pipe, steps=25)
    a = mem.forward_reverse(X0, [0.3, 2.0], 8, np.random.default_rng(1))
    b = s.forward_reverse(X0, [0.3, 2.0], 8, np.random.default_rng(1))
    assert np.allclose(np.stack(a[1]), np.stack(b[1]))
    swapped = cw.load_sampler("diffusers", tmp_path / "p", scheduler="ddpm", steps=25)
    assert type(swapped.scheduler).__name__ == "DDPMScheduler"
    assert swapped.scheduler.config.clip_sample is False


def test_draws_are_seeded_per_row_and_do_not_depend_on_the_chunk_size_or_on_oom_retries():
    s = from_pipeline(exact_mixture_pipeline(MIX, scheduler="ddpm"), steps=50, batch_size=512)
    a = s.forward_reverse(X0, [0.0, 0.2, 1.0, s.t_max], 12, np.random.default_rng(3))
    assert all(np.array_equal(d, X0) for d in a[0])  # t = 0 degrades nothing
    b = from_pipeline(exact_mixture_pipeline(MIX, scheduler="ddpm"), steps=50, batch_size=7).forward_reverse(
        X0, [0.0, 0.2, 1.0, s.t_max], 12, np.random.default_rng(3))
    assert _same(a, b, 1e-12)
    c = s.forward_reverse(X0, [0.0, 0.2, 1.0, s.t_max], 12, np.random.default_rng(4))
    assert not np.allclose(np.stack(a[2]), np.stack(c[2]))

    inner = from_pipeline(exact_mixture_pipeline(MIX, scheduler="ddpm"), steps=50, batch_size=64)
    calls = []

    def small_memory(x, tau):
        calls.append(len(x))
        if len(x) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated: more than 8 rows)")
        return inner.denoiser(x, tau)

    oom = DiffusersSampler(small_memory, inner.scheduler, inner.sample_shape, steps=50, batch_size=64,
                           dtype=inner.dtype)
    d = oom.forward_reverse(X0, [0.0, 0.2, 1.0, s.t_max], 12, np.random.default_rng(3))
    assert oom.batch_size == 8 and max(calls[-5:]) <= 8
    assert _same(a, d, 1e-12)


def test_a_non_finite_draw_is_a_failure_in_its_slot():
    inner = from_pipeline(exact_mixture_pipeline(MIX), steps=20)

    def broken_first_row(x, tau):
        out = inner.denoiser(x, tau).clone()
        out[0] = float("nan")
        return out

    s = DiffusersSampler(broken_first_row, inner.scheduler, inner.sample_shape, steps=20, dtype=inner.dtype)
    rows = s.forward_reverse(X0, [1.0], 5, np.random.default_rng(0))
    assert isinstance(rows[0][0], cw.Failure) and "not finite" in rows[0][0].reason
    assert all(isinstance(d, np.ndarray) for d in rows[0][1:])


def test_the_exact_pipeline_passes_the_conformance_checks():
    notes = check_sampler(from_pipeline(exact_mixture_pipeline(MIX, scheduler="ddim"), steps=30), n=200)
    assert all(v == "ok" for v in notes.values()), notes


def test_a_multistep_scheduler_runs_one_copy_per_cut_from_its_start_step():
    s = from_pipeline(exact_mixture_pipeline(MIX, scheduler="euler_ancestral"), steps=100)
    assert not s.stateless
    ts = [0.3, 1.0, 2.5]
    start = s.start_steps(ts)
    # Euler schedules live in σ: the OU time of a grid point is −½ ln(1 / (1 + σ²)).
    sig = s.scheduler.sigmas.double().numpy()
    assert [st.t_actual for st in start] == pytest.approx(
        [0.5 * math.log1p(sig[st.index] ** 2) for st in start], abs=1e-12)
    n = 400
    k = _kept(s.forward_reverse(X0, ts, n, np.random.default_rng(2)))
    exact = exact_curve(MIX, X0.reshape(-1), [st.t_actual for st in start], PART).p
    lo, hi = wilson_interval(k, n, 0.999)
    assert np.all((lo <= exact) & (exact <= hi)), (k / n, exact)


def test_bad_input_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(CritwinError, match="is not a diffusers pipeline directory"):
            load_pipeline(bad)
    from diffusers import HeunDiscreteScheduler, ScoreSdeVeScheduler

    pipe = exact_mixture_pipeline(MIX)
    with pytest.raises(CritwinError, match="scheduler HeunDiscreteScheduler cannot resume from a timestep"):
        DiffusersSampler(pipe.unet, HeunDiscreteScheduler(), (1, 1, 1))
    with pytest.raises(CritwinError, match="scheduler ScoreSdeVeScheduler cannot resume from a timestep"):
        DiffusersSampler(pipe.unet, ScoreSdeVeScheduler(), (1, 1, 1))
    with pytest.raises(CritwinError, match="scheduler 'warp' is unknown"):
        from_pipeline(pipe, scheduler="warp")
    s = from_pipeline(pipe, steps=20)
    msg = rf"t=6\.0: OU times must be numbers in \[0, t_max={s.t_max:.4g}\] \(the noisiest"
    with pytest.raises(CritwinError, match=msg):
        s.forward_reverse(X0, [0.5, 6.0], 2, np.random.default_rng(0))
    with pytest.raises(CritwinError, match=r"x has shape \(2,\)"):
        s.forward_reverse(np.zeros(2), [0.5], 2, np.random.default_rng(0))
    with pytest.raises(CritwinError, match="pixel pipeline takes no prompt"):
        from_pipeline(pipe, prompt="a cat")
    with pytest.raises(CritwinError, match="unknown setting 'temperature'"):
        cw.load_sampler("diffusers", tmp_path / "empty", temperature=1.0)


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory):
    return save_tiny_latent_pipeline(tmp_path_factory.mktemp("latent") / "pipe", seed=0)


def test_a_latent_text_to_image_pipeline_runs_end_to_end(latent_dir):
    s = cw.load_sampler("diffusers", latent_dir, steps=10, prompt="a red circle", guidance_scale=3.0)
    assert s.sample_shape == (4, 8, 8) and s.vae is not None
    z = s.sample(1, np.random.default_rng(0))[0]
    rows = s.forward_reverse(z, [0.0, 0.4, s.t_max], 3, np.random.default_rng(1))
    again = s.forward_reverse(z, [0.0, 0.4, s.t_max], 3, np.random.default_rng(1))
    assert _same(rows, again)
    images = s.decode(rows[1])
    assert images.shape == (3, 16, 16, 3) and images.min() >= 0 and images.max() <= 1
    other = s.for_prompt("a blue square").forward_reverse(z, [0.4], 3, np.random.default_rng(1))
    assert not np.allclose(np.stack(other[0]), np.stack(rows[1]))  # the prompt conditions the draws
    unguided = s.for_prompt("a red circle", guidance_scale=1.0).forward_reverse(z, [0.4], 3,
                                                                               np.random.default_rng(1))
    assert not np.allclose(np.stack(unguided[0]), np.stack(rows[1]))


def test_a_latent_pipeline_without_a_prompt_says_so_before_any_work(latent_dir):
    s = cw.load_sampler("diffusers", latent_dir, steps=10)
    with pytest.raises(CritwinError, match="latent text-to-image pipeline: give a prompt"):
        s.forward_reverse(np.zeros((4, 8, 8), np.float32), [0.5], 2, np.random.default_rng(0))
