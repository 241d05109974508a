"""The diffusers backend: the forward–reverse experiment FR_t and trajectory branching on a real diffusers
pipeline (`load_sampler("diffusers", PIPELINE_DIR, ...)`).

Layouts: pixel pipelines (a `UNet2DModel` and a scheduler, e.g. a saved `DDPMPipeline`) and latent
text-to-image pipelines in the Stable-Diffusion layout (`UNet2DConditionModel`, `AutoencoderKL`, a CLIP text
encoder and tokenizer), with classifier-free guidance and one prompt per case (`for_prompt`). Samples are
float32 arrays of shape (C, H, W) in the model's own space: pixels in [−1, 1] for pixel pipelines, scaled
latents for latent ones; `decode` turns them into images in [0, 1].

Time: t is OU time and grows with noise. A scheduler timestep τ with cumulative ᾱ_τ sits at t = −½ ln ᾱ_τ
(`critwin.theory.forward.ou_time_from_alpha_bar`; for sigma-parameterised schedulers ᾱ = 1/(1 + σ²)). The
sampler denoises on the scheduler's own inference grid τ_0 > τ_1 > … > τ_{S−1} (`steps` = S, honouring
the saved `timestep_spacing`); a requested t starts at the grid timestep whose OU time is nearest
(`start_steps(ts)` records it), t = 0 returns the sample itself, and t_max is the OU time of τ_0.

FR_t(x): noise x to τ_j with `scheduler.add_noise` (fresh noise per draw), then denoise with the scheduler
over τ_j, …, τ_{S−1}. The scheduler comes from the pipeline's saved config (`clip_sample`, `prediction_type`,
`timestep_spacing`, betas); `scheduler="ddim"` etc. swaps the class but keeps that config. DDIM runs with
η = 1 by default: with η = 0 its reverse map is a deterministic ODE, which carries p_t to p_0 but does not
sample p(· | Y_t = y), so it would not measure FR_t.

Batching: every draw of every t shares the same inference grid, so at grid step j all draws that started at
or before j sit at the same timestep τ_j: DDPM and DDIM (which keep no state between steps) run one batched
model call per grid step for all cuts at once, draws joining the batch at their start step. Multistep
schedulers (DPM-Solver, UniPC, Euler…) keep state, so they run one deep-copied scheduler per cut
(`set_begin_index`). Each draw has its own `torch.Generator` seeded from the caller's numpy rng, so draws
are reproducible and do not depend on the batch they ran in; model calls are chunked to `batch_size` rows
and an out-of-memory error halves the chunk and retries it.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critwin.errors import CritwinError, first_line
from critwin.theory.forward import ou_time_from_alpha_bar
from critwin.types import Failure

# Schedulers whose `step` is a pure function of (model output, timestep, sample, noise): the joined batch.
_STATELESS = ("DDPMScheduler", "DDIMScheduler")
_SCHEDULERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "dpm_sde": "DPMSolverSDEScheduler",
    "unipc": "UniPCMultistepScheduler",
}


@dataclass(frozen=True)
class StartStep:
    """Where FR_t starts for a requested OU time `t`: grid index `index` (into the inference timesteps, 0 =
    noisiest), scheduler `timestep`, and that timestep's own OU time `t_actual` (0 / None at t = 0)."""

    t: float
    index: int | None
    timestep: int | None
    t_actual: float


@dataclass(frozen=True)
class Branches:
    """Trajectory branching from one trajectory: its final sample `original`, and per requested t the
    `start` step and n branch samples restarted there with fresh noise (`rows[i][j]`)."""

    original: np.ndarray
    start: list[StartStep]
    rows: list[list[Any]]


def scheduler_class(name: str) -> Any:
    """The diffusers scheduler class for a short name (ddpm, ddim, euler, …) or a class name."""
    import diffusers

    cls_name = _SCHEDULERS.get(str(name).strip().lower(), str(name).strip())
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not cls_name.endswith("Scheduler"):
        raise CritwinError(
            f"scheduler {name!r} is unknown; use one of {', '.join(_SCHEDULERS)} or a diffusers "
            "scheduler class name"
        )
    return cls


def check_scheduler(scheduler: Any) -> None:
    """A one-line CritwinError naming `scheduler` unless critwin can resume it from a timestep: a
    variance-preserving scheduler (`alphas_cumprod`) with `add_noise`, either stateless (DDPM, DDIM) or a
    first-order-per-timestep one with `set_begin_index`."""
    name = type(scheduler).__name__
    if not hasattr(scheduler, "alphas_cumprod") or not hasattr(scheduler, "add_noise"):
        raise CritwinError(
            f"scheduler {name} cannot resume from a timestep here: it has no variance-preserving "
            "schedule (alphas_cumprod) or no add_noise; use ddpm, ddim, euler, dpm or unipc"
        )
    if name in _STATELESS:
        return
    if not hasattr(scheduler, "set_begin_index") or getattr(scheduler, "order", 1) != 1:
        raise CritwinError(
            f"scheduler {name} cannot resume from a timestep here (it needs set_begin_index and "
            "one model call per timestep); use ddpm, ddim, euler, dpm or unipc"
        )


def _is_oom(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class DiffusersSampler:
    """`Sampler` on a diffusers denoiser and scheduler (see the module docstring).

    denoiser(x, timestep) returns the model output for a batch x at one scalar timestep (what the scheduler's
    `prediction_type` says: ε, x₀ or v). Build it with `from_pipeline` / `load_sampler("diffusers", DIR)`;
    `steps` is the number of inference steps S, `eta` DDIM's η, `batch_size` the rows per model call.
    """

    time_unit = "ou"

    def __init__(
        self,
        denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        scheduler: Any,
        sample_shape: Sequence[int],
        *,
        steps: int | None = None,
        eta: float = 1.0,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        vae: Any = None,
        pipeline: Any = None,
        prompt: str | None = None,
        name: str = "diffusers",
    ):
        check_scheduler(scheduler)
        n_train = int(scheduler.config.num_train_timesteps)
        if steps is None:
            steps = n_train if type(scheduler).__name__ == "DDPMScheduler" else 50
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= n_train:
            raise CritwinError(f"steps={steps!r}: inference steps must be a whole number in 1..{n_train}")
        if not (isinstance(eta, int | float) and 0 <= eta <= 1):
            raise CritwinError(f"eta={eta!r}: DDIM's eta must be a number in [0, 1] (1 samples p(x | y))")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CritwinError(f"batch_size={batch_size!r} must be a whole number >= 1")
        self.denoiser = denoiser
        self.scheduler = scheduler
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.steps = steps
        self.eta = float(eta)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.dtype = dtype
        self.vae = vae
        self.pipeline = pipeline
        self.prompt = prompt
        self.model_name = name
        scheduler.set_timesteps(steps, device=self.device)
        self.timesteps = scheduler.timesteps.clone()
        self.stateless = type(scheduler).__name__ in _STATELESS
        self.grid_t = self._grid_ou_times()
        self.t_max = float(self.grid_t[0])

    # ------------------------------------------------------------------------------------------ time
    def _grid_ou_times(self) -> np.ndarray:
        """OU time of every inference timestep (decreasing along the grid)."""
        sch = self.scheduler
        sigmas = getattr(sch, "sigmas", None)
        if not self.stateless and sigmas is not None and len(sigmas) >= len(self.timesteps):
            s = np.asarray(sigmas[: len(self.timesteps)].double().cpu())
            alpha_bar = 1.0 / (1.0 + s**2)
        else:
            ac = np.asarray(sch.alphas_cumprod.double().cpu())
            alpha_bar = ac[np.asarray(self.timesteps.cpu()).round().astype(int)]
        return np.asarray(ou_time_from_alpha_bar(alpha_bar))

    def start_steps(self, ts: Sequence[float]) -> list[StartStep]:
        """Where FR_t starts for each OU time t in ts: the grid timestep of nearest OU time (t = 0: none).
        A t outside [0, t_max] is a CritwinError."""
        out = []
        for t in ts:
            if not (isinstance(t, int | float | np.integer | np.floating) and 0 <= t <= self.t_max):
                raise CritwinError(
                    f"t={t!r}: OU times must be numbers in [0, t_max={self.t_max:.4g}] (the "
                    f"noisiest of the scheduler's {self.steps} inference timesteps); drop it "
                    "from the schedule"
                )
            if t == 0:
                out.append(StartStep(float(t), None, None, 0.0))
                continue
            j = int(np.argmin(np.abs(self.grid_t - float(t))))
            out.append(StartStep(float(t), j, int(round(float(self.timesteps[j]))), float(self.grid_t[j])))
        return out

    # ------------------------------------------------------------------------------------------ noise
    def _generators(self, rng: np.random.Generator, k: int) -> list[torch.Generator]:
        seeds = rng.integers(0, 2**63 - 1, size=k)
        return [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    def _randn(self, gens: Sequence[torch.Generator]) -> torch.Tensor:
        return torch.stack(
            [torch.randn(self.sample_shape, generator=g, device=self.device, dtype=self.dtype) for g in gens]
        )

    # ------------------------------------------------------------------------------------------ model
    def _model(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The denoiser on x in chunks of `batch_size` rows; out-of-memory halves the chunk and retries."""
        outs, i = [], 0
        while i < len(x):
            chunk = x[i : i + self.batch_size]
            try:
                with torch.inference_mode():
                    outs.append(self.denoiser(chunk, timestep))
            except Exception as err:
                if not _is_oom(err) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            i += len(chunk)
        return torch.cat(outs)

    def _step(
        self, sch: Any, out: torch.Tensor, tau: torch.Tensor, x: torch.Tensor, gens: list
    ) -> torch.Tensor:
        kw: dict[str, Any] = {"generator": gens}
        if type(sch).__name__ == "DDIMScheduler":
            kw = {"eta": self.eta, "variance_noise": self._randn(gens) if self.eta > 0 else None}
        return sch.step(out, tau, x, return_dict=False, **kw)[0]

    def _denoise(
        self,
        starts: Sequence[int],
        init: Callable[[np.ndarray, int, Any], torch.Tensor],
        gens: list[torch.Generator],
    ) -> torch.Tensor:
        """Denoise R rows, row r entering at grid step starts[r] with state init(rows, j, scheduler);
        returns the final samples (R, …)."""
        starts = np.asarray(starts, dtype=int)
        x = torch.empty((len(starts), *self.sample_shape), device=self.device, dtype=self.dtype)
        if self.stateless:
            groups = [(np.arange(len(starts)), None)]
        else:
            groups = [(np.flatnonzero(starts == j), j) for j in np.unique(starts)]
        for rows, begin in groups:
            sch = self.scheduler
            if begin is not None:
                sch = copy.deepcopy(self.scheduler)
                sch.set_timesteps(self.steps, device=self.device)
                sch.set_begin_index(int(begin))
            order = rows[np.argsort(starts[rows], kind="stable")]
            first = int(starts[order].min())
            for j in range(first, len(self.timesteps)):
                tau = self.timesteps[j]
                joining = order[starts[order] == j]
                if len(joining):
                    x[joining] = init(joining, j, sch).to(self.dtype)
                live = order[starts[order] <= j]
                xs = x[live]
                inp = sch.scale_model_input(xs, tau)
                out = self._model(inp, tau).to(self.dtype)
                x[live] = self._step(sch, out, tau, xs, [gens[r] for r in live]).to(self.dtype)
        return x

    def _as_arrays(self, x: torch.Tensor) -> list[Any]:
        arr = x.detach().float().cpu().numpy()
        return [
            a.copy() if np.isfinite(a).all() else Failure("the denoised sample is not finite (NaN/inf)")
            for a in arr
        ]

    def _check_ready(self) -> None:
        """A latent pipeline without a prompt fails here, before any noise is drawn."""
        if self.vae is not None and self.prompt is None:
            raise CritwinError(NO_PROMPT)

    def _tensor(self, x: Any) -> torch.Tensor:
        a = np.asarray(x, dtype=np.float32)
        if a.shape != self.sample_shape:
            raise CritwinError(
                f"x has shape {a.shape}; this pipeline's samples have shape {self.sample_shape}"
            )
        return torch.as_tensor(a, device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------------------------------ protocol
    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """n samples from the full model: pure noise (× init_noise_sigma) denoised over the whole grid."""
        self._check_ready()
        gens = self._generators(rng, n)
        sigma0 = float(getattr(self.scheduler, "init_noise_sigma", 1.0))
        return self._as_arrays(
            self._denoise([0] * n, lambda rows, j, sch: self._randn([gens[r] for r in rows]) * sigma0, gens)
        )

    def forward_reverse(
        self, x: Any, ts: Sequence[float], n: int, rng: np.random.Generator
    ) -> list[list[Any]]:
        """For each OU time t in ts: n draws of x noised to t's start step with fresh noise and denoised."""
        self._check_ready()
        x0 = self._tensor(x)
        start = self.start_steps(ts)
        gens = self._generators(rng, len(ts) * n)
        rows = [i for i, s in enumerate(start) if s.index is not None for _ in range(n)]
        draw_ids = [i * n + k for i, s in enumerate(start) if s.index is not None for k in range(n)]
        g = [gens[d] for d in draw_ids]
        starts = [start[i].index for i in rows]

        def init(rs: np.ndarray, j: int, sch: Any) -> torch.Tensor:
            noise = self._randn([g[r] for r in rs])
            return sch.add_noise(
                x0.expand(len(rs), *self.sample_shape), noise, self.timesteps[j].expand(len(rs))
            )

        done = self._as_arrays(self._denoise(starts, init, g)) if starts else []
        out: list[list[Any]] = [[] for _ in ts]
        for i, s in enumerate(start):
            if s.index is None:
                out[i] = [np.asarray(x, dtype=np.float32).copy() for _ in range(n)]
        for i, d in zip(rows, done, strict=True):
            out[i].append(d)
        return out

    def branch(self, ts: Sequence[float], n: int, rng: np.random.Generator) -> Branches:
        """Trajectory branching (clones): one trajectory from pure noise, kept at every grid step, then for
        each OU time t, n restarts from its state at t's start step with fresh noise."""
        self._check_ready()
        if not self.stateless:  # a multistep scheduler's history belongs to the trajectory it came from
            raise CritwinError(
                f"branching needs a stateless scheduler (ddpm or ddim), not "
                f"{type(self.scheduler).__name__}; pass scheduler='ddpm'"
            )
        start = self.start_steps(ts)
        g0 = self._generators(rng, 1)
        sigma0 = float(getattr(self.scheduler, "init_noise_sigma", 1.0))
        kept: dict[int, torch.Tensor] = {}
        wanted = {s.index for s in start if s.index is not None}
        sch = copy.deepcopy(self.scheduler)
        sch.set_timesteps(self.steps, device=self.device)
        x = self._randn(g0) * sigma0
        for j, tau in enumerate(self.timesteps):
            if j in wanted:
                kept[j] = x[0].clone()
            out = self._model(sch.scale_model_input(x, tau), tau).to(self.dtype)
            x = self._step(sch, out, tau, x, g0).to(self.dtype)
        original = self._as_arrays(x)[0]
        gens = self._generators(rng, len(ts) * n)
        rows = [i for i, s in enumerate(start) if s.index is not None for _ in range(n)]
        g = [gens[i * n + k] for i, s in enumerate(start) if s.index is not None for k in range(n)]
        starts = [start[i].index for i in rows]

        def init(rs: np.ndarray, j: int, sch: Any) -> torch.Tensor:
            return kept[j].expand(len(rs), *self.sample_shape)

        done = self._as_arrays(self._denoise(starts, init, g)) if starts else []
        out: list[list[Any]] = [[] for _ in ts]
        for i, s in enumerate(start):
            if s.index is None:
                out[i] = [np.asarray(original).copy() for _ in range(n)]
        for i, d in zip(rows, done, strict=True):
            out[i].append(d)
        return Branches(original, start, out)

    # ------------------------------------------------------------------------------------------ images
    def decode(self, samples: Sequence[Any]) -> np.ndarray:
        """Images (N, H, W, C) in [0, 1] of samples: pixels mapped from [−1, 1], latents through the VAE."""
        x = torch.as_tensor(np.stack([np.asarray(s, dtype=np.float32) for s in samples]), device=self.device)
        if self.vae is not None:
            with torch.inference_mode():
                sf = float(self.vae.config.scaling_factor)
                x = torch.cat(
                    [self.vae.decode(c.to(self.vae.dtype) / sf).sample for c in x.split(self.batch_size)]
                ).float()
        return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()

    def for_prompt(self, prompt: str, *, guidance_scale: float | None = None) -> DiffusersSampler:
        """This latent pipeline conditioned on `prompt` (classifier-free guidance at `guidance_scale`)."""
        if self.pipeline is None or not hasattr(self.pipeline, "encode_prompt"):
            raise CritwinError("for_prompt: this is a pixel pipeline without text conditioning")
        if not isinstance(prompt, str) or not prompt.strip():
            raise CritwinError("for_prompt: give a non-empty prompt string")
        g = self._guidance if guidance_scale is None else float(guidance_scale)
        view = copy.copy(self)
        view.prompt = prompt
        view.denoiser = _guided(self.pipeline, prompt, g, self.device)
        view._guidance = g
        return view

    _guidance = 7.5


def _guided(pipe: Any, prompt: str, guidance: float, device: torch.device) -> Callable:
    """The conditional UNet with classifier-free guidance ε = ε_u + g (ε_c − ε_u) for one prompt."""
    with torch.inference_mode():
        cond, uncond = pipe.encode_prompt(prompt, device, 1, guidance != 1.0)

    def denoise(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        b = len(x)
        if guidance == 1.0:
            return pipe.unet(x, tau, encoder_hidden_states=cond.expand(b, -1, -1)).sample
        emb = torch.cat([uncond.expand(b, -1, -1), cond.expand(b, -1, -1)])
        eu, ec = pipe.unet(torch.cat([x, x]), tau, encoder_hidden_states=emb).sample.chunk(2)
        return eu + guidance * (ec - eu)

    return denoise


NO_PROMPT = "this is a latent text-to-image pipeline: give a prompt (prompt=... or for_prompt)"


def _no_prompt(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    raise CritwinError(NO_PROMPT)


def from_pipeline(
    pipe: Any,
    *,
    scheduler: str | None = None,
    prompt: str | None = None,
    guidance_scale: float = 7.5,
    **settings: Any,
) -> DiffusersSampler:
    """A `DiffusersSampler` on a loaded diffusers pipeline (pixel: `unet` + `scheduler`; latent: also `vae`,
    `text_encoder`, `tokenizer`). `scheduler` swaps the scheduler class, keeping the saved config."""
    unet = getattr(pipe, "unet", None)
    sch = getattr(pipe, "scheduler", None)
    if unet is None or sch is None:
        raise CritwinError(
            f"{type(pipe).__name__} has no unet or scheduler; critwin runs pixel (UNet2DModel) "
            "and Stable-Diffusion-layout latent pipelines"
        )
    sch = copy.deepcopy(sch) if scheduler is None else scheduler_class(scheduler).from_config(sch.config)
    device = settings.pop("device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(unet, "dtype", torch.float32)
    cfg = unet.config
    latent = getattr(pipe, "vae", None) is not None
    shape = (
        cfg.in_channels,
        *((cfg.sample_size,) * 2 if isinstance(cfg.sample_size, int) else cfg.sample_size),
    )
    if latent:
        s = DiffusersSampler(
            _no_prompt,
            sch,
            shape,
            device=device,
            dtype=dtype,
            vae=pipe.vae,
            pipeline=pipe,
            name=settings.pop("name", type(pipe).__name__),
            **settings,
        )
        s._guidance = float(guidance_scale)
        return s.for_prompt(prompt) if prompt is not None else s
    if prompt is not None:
        raise CritwinError("prompt=: this pixel pipeline takes no prompt")

    def denoise(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return unet(x, tau).sample

    return DiffusersSampler(
        denoise,
        sch,
        shape,
        device=device,
        dtype=dtype,
        pipeline=pipe,
        name=settings.pop("name", type(pipe).__name__),
        **settings,
    )


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """diffusers' and transformers' loading bars and advice off while a pipeline loads, restored after."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    saved = [(m, m.get_verbosity(), m.is_progress_bar_enabled()) for m in (dlog, tlog)]
    for m, _, _ in saved:
        m.set_verbosity_error()
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, level, bars in saved:
            m.set_verbosity(level)
            if bars:
                m.enable_progress_bar()


def load_pipeline(path: str | Path, device: str | None = None) -> Any:
    """Load a diffusers pipeline directory offline (a one-line CritwinError if it is not one)."""
    p = Path(path)
    index = p / "model_index.json"
    if not p.is_dir() or not index.is_file():
        raise CritwinError(
            f"{path} is not a diffusers pipeline directory (no model_index.json); save one with "
            "pipeline.save_pretrained(DIR)"
        )
    try:
        json.loads(index.read_text())
    except (OSError, ValueError) as err:
        raise CritwinError(f"{index}: not readable JSON ({first_line(err, with_type=False)})") from None
    import diffusers

    try:
        with _quiet_loading():
            pipe = diffusers.DiffusionPipeline.from_pretrained(str(p), local_files_only=True)
    except Exception as err:
        raise CritwinError(f"{path}: diffusers could not load this pipeline: {first_line(err)}") from None
    if device is not None:
        pipe.to(device)
    return pipe


def from_registry(path_or_url: Any = None, **settings: Any) -> DiffusersSampler:
    """The registry's "diffusers" factory: a pipeline directory (default: critwin's bundled digit model),
    settings scheduler, steps, eta, batch_size, device, prompt, guidance_scale."""
    allowed = ("scheduler", "steps", "eta", "batch_size", "device", "prompt", "guidance_scale")
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise CritwinError(f"sampler 'diffusers': unknown setting {unknown[0]!r}; use {', '.join(allowed)}")
    if path_or_url is None:
        path_or_url = bundled_pipeline_dir()
    pipe = load_pipeline(path_or_url, settings.pop("device", None))
    return from_pipeline(pipe, name=Path(path_or_url).name, **settings)


def bundled_pipeline_dir() -> Path:
    """The digit DDPM critwin ships (trained by scripts/train_digit_model.py)."""
    return Path(__file__).resolve().parent.parent / "assets" / "digit_model"
