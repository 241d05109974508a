"""Critical windows of a real diffusion model: the forward–reverse experiment and trajectory branching on a
diffusers pipeline, with two theories next to the measurement.

One case is one generated image: a trajectory from pure noise (the case's seed) whose final image x is
the scanned sample. Measured on it, at M OU times t (grid of the pipeline's scheduler, t grows with noise):

- P(same class | t): n draws of FR_t(x) (x noised to t, denoised), labelled by an image classifier (images
  below its confidence threshold are unreadable, never outcomes); windows by the run's `WindowRule`;
- clone agreement: the trajectory restarted at t with fresh noise `clones` times; the fraction of clones
  whose class is x's (x is itself one draw given the trajectory at t, so this estimates Biroli et al.'s
  P(two clones share a class)), and where it first falls below 0.775 (their crossing; linear
  interpolation between grid points). Its own grid (`clone_grid`) is geometric, fine at low noise, where
  the crossing lies;
- a grid of re-denoised images per t (stored, so the report is drawn without the model).

Theories (from the data set the model was trained on, in the model's pixel scaling; none without data):
- the speciation time t_S = ½ ln Λ (`critwin.theory.speciation`), Λ the data covariance's top eigenvalue;
- critwin's window of the image's class in a Gaussian-mixture model of the data (one full-covariance
  Gaussian per class, the data's class weights; `critwin.theory.fullcov`): [T_after, T_before] at ε.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from critwin.curves import scan
from critwin.errors import CritwinError
from critwin.experiments.base import Case, CaseJournal, CaseResult, failed
from critwin.features.images import ImageClassifier, load_classifier
from critwin.params import check
from critwin.rundir import theory_intervals
from critwin.strategies.fixed import Fixed
from critwin.windows import WindowRule

CLONE_CROSSING = 0.775
"""P(two clones share a class) at which Biroli et al. read off the measured speciation time."""
GRID_IMAGES = 8
"""Re-denoised images kept per t for the report's image grid."""
BUNDLED_THRESHOLD = 0.5


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits in the bundled model's scaling (pixels / 8 − 1, in [−1, 1]), (N, 1, 8, 8),
    and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 8.0 - 1.0)[:, None].astype(np.float64), d.target.astype(int)


def _crossing(ts: np.ndarray, p: np.ndarray, level: float = CLONE_CROSSING) -> float | None:
    """First OU time at which p falls below `level` (linear interpolation; None if it never does)."""
    prev_t, prev_p = 0.0, 1.0
    for t, v in zip(ts, p, strict=True):
        if not math.isfinite(v):
            continue
        if v < level:
            return float(prev_t + (prev_p - level) / (prev_p - v) * (t - prev_t))
        prev_t, prev_p = float(t), float(v)
    return None


def pooled_crossing(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Biroli et al.'s measurement over trajectories: the clone agreement averaged over the cases that share
    one clone grid, its 0.775 crossing (OU time) and that over t_S. One case's 16 clones give about ±0.1
    per point; the pooled curve is what the speciation time predicts. None without clone data."""
    rows = [r for r in records if r.get("clone_agreement") and r.get("clone_ts")]
    if not rows:
        return None
    ts = rows[0]["clone_ts"]
    rows = [r for r in rows if r["clone_ts"] == ts]
    mean = np.nanmean(np.array([r["clone_agreement"] for r in rows], dtype=float), axis=0)
    crossing = _crossing(np.asarray(ts), mean)
    t_s = rows[0].get("t_S")
    return {
        "cases": len(rows),
        "clone_ts": ts,
        "clone_agreement": [float(v) for v in mean],
        "crossing": crossing,
        "crossing_over_t_S": None if crossing is None or not t_s else crossing / t_s,
    }


@dataclass
class DiffusionExperiment:
    """Scan `cases` generated images of a diffusers pipeline (None: the bundled digit model); see the
    module docstring. classifier: a .skops/.joblib/.pt file (None with the bundled model: its digit
    classifier); data / labels: .npy files of training images in the model's scaling (N, C, H, W) and
    their classes, for t_S and the Gaussian-mixture theory (the bundled model uses its digits)."""

    pipeline: str | None = None
    classifier: str | None = None
    threshold: float = BUNDLED_THRESHOLD
    cases_n: int = 4
    n: int = 32
    levels: int = 12
    t_hi: float = 2.5
    clones: int = 16
    steps: int = 100
    scheduler: str | None = None
    prompt: str | None = None
    data: str | None = None
    labels: str | None = None
    eps: float = 0.1
    seed: int = 0
    level: float = 0.99
    min_jump: float = 0.2
    _theory: dict[str, Any] | None = field(default=None, repr=False)
    _mix: Any = field(default=None, repr=False)  # the data's Gaussian mixture, for windows still to search

    name = "diffusion"
    journaled = True
    resume_keys = (
        "pipeline",
        "classifier",
        "threshold",
        "n",
        "levels",
        "t_hi",
        "clones",
        "steps",
        "scheduler",
        "prompt",
        "seed",
        "level",
        "min_jump",
        "eps",
        "data",
        "labels",
    )

    def __post_init__(self) -> None:
        check("n", self.n, "--draws")
        check("seed", self.seed, "--seed")
        check("level", self.level, "--level")
        check("min_jump", self.min_jump, "--min-jump")
        for flag, v, lo in (
            ("--cases", self.cases_n, 1),
            ("--levels", self.levels, 2),
            ("--clones", self.clones, 0),
            ("--steps", self.steps, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise CritwinError(f"{flag} {v!r}: use a whole number >= {lo}")
        if not (isinstance(self.t_hi, int | float) and 0 < self.t_hi and math.isfinite(self.t_hi)):
            raise CritwinError(f"--t-max {self.t_hi!r}: use an OU time > 0")
        if not 0 <= self.threshold < 1:
            raise CritwinError(f"--threshold {self.threshold!r}: a probability in [0, 1)")
        self.bundled = self.pipeline is None
        if self.classifier is None and not self.bundled:
            raise CritwinError(
                "--classifier: give the image classifier (.skops, .joblib or .pt) that labels "
                "this pipeline's images"
            )
        for flag, p in (("--classifier", self.classifier), ("--data", self.data), ("--labels", self.labels)):
            if p is not None and not Path(p).is_file():
                raise CritwinError(f"{flag} {p}: no such file")
        if self.labels is not None and self.data is None:
            raise CritwinError("--labels needs --data (the images the labels belong to)")

    # -- parts -----------------------------------------------------------------------------------------
    def sampler(self) -> Any:
        from critwin.samplers.registry import load_sampler

        kw: dict[str, Any] = {"steps": self.steps}
        if self.scheduler is not None:
            kw["scheduler"] = self.scheduler
        if self.prompt is not None:
            kw["prompt"] = self.prompt
        return load_sampler("diffusers", self.pipeline, **kw)

    def feature(self, sampler: Any) -> ImageClassifier:
        if self.classifier is None:
            from critwin.samplers.diffusers_pipeline import bundled_pipeline_dir

            clf = load_classifier(bundled_pipeline_dir() / "digit_classifier.skops")
            # The bundled classifier reads pixels in the model's [−1, 1] scaling, flattened.
            return ImageClassifier(
                clf,
                decode=sampler.decode,
                threshold=self.threshold,
                preprocess=lambda im: (2.0 * im - 1.0).reshape(len(im), -1),
            )
        return ImageClassifier(
            load_classifier(self.classifier), decode=sampler.decode, threshold=self.threshold
        )

    def grid(self, sampler: Any) -> list[float]:
        hi = min(float(self.t_hi), sampler.t_max)
        return [float(t) for t in np.linspace(hi / self.levels, hi, self.levels)]

    def clone_grid(self, sampler: Any) -> list[float]:
        """OU times of the clone experiment: 2 × levels points, geometric from t_hi / 64 to t_hi (a 20%
        step), so the 0.775 crossing, which lies at low noise, is bracketed by close points. A restart at
        small t costs few denoising steps, so the finer grid there is cheap."""
        hi = min(float(self.t_hi), sampler.t_max)
        return [float(t) for t in np.geomspace(hi / 64, hi, 2 * self.levels)]

    def theory(self, sampler: Any, label: Any = None) -> dict[str, Any]:
        """t_S (OU time and DDPM step) and the Gaussian-mixture windows of the training data's classes.

        A class's window is searched the first time a scanned image has that class (10 digit classes take
        about 18 s, one about 2), and kept for the experiment's later cases."""
        if self._theory is None:
            self._theory = self._speciation(sampler)
        key, windows = str(label), self._theory["windows"]
        if self._mix is not None and label is not None and key not in windows and key in self._mix.labels:
            from critwin.theory.fullcov import class_windows

            windows.update(class_windows(self._mix, eps=self.eps, seed=self.seed, classes=[key]))
        return self._theory

    def _speciation(self, sampler: Any) -> dict[str, Any]:
        from critwin.theory.fullcov import FullCovGaussianMixture
        from critwin.theory.speciation import speciation_step, speciation_time

        if self.data is not None:
            x = np.load(self.data).astype(np.float64)
            y = None if self.labels is None else np.load(self.labels)
        elif self.bundled:
            x, y = digits_data()
        else:
            return {"t_S": None, "t_S_step": None, "windows": {}, "note": "no --data: no theory"}
        sp = speciation_time(x.reshape(len(x), -1))
        ac = sampler.scheduler.alphas_cumprod.double().numpy()
        step = speciation_step(ac, sp.lambda_max)
        if y is not None:
            self._mix = FullCovGaussianMixture.from_labelled_data(x.reshape(len(x), -1), y)
        return {"t_S": sp.t_s, "lambda_max": sp.lambda_max, "t_S_step": step, "windows": {}}

    # -- Experiment protocol ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "pipeline": "bundled digit DDPM" if self.pipeline is None else str(self.pipeline),
            "classifier": "bundled digit classifier" if self.classifier is None else str(self.classifier),
            "threshold": self.threshold,
            "cases": self.cases_n,
            "n": self.n,
            "levels": self.levels,
            "t_hi": self.t_hi,
            "clones": self.clones,
            "steps": self.steps,
            "scheduler": self.scheduler,
            "prompt": self.prompt,
            "data": self.data,
            "labels": self.labels,
            "eps": self.eps,
            "level": self.level,
            "min_jump": self.min_jump,
            "title": "critwin diffusion",
            "subtitle": "Where a generated image's class is decided, in noise level",
            "description": "Each case is one generated image. Points: P(the re-denoised image has the "
            "original's class | OU time t) with intervals; red: detected windows; shaded: the "
            "Gaussian-mixture theory's window of that class; dashed: the speciation time t_S; grey: clone "
            "agreement.",
        }

    def cases(self) -> list[Case]:
        return [Case(f"image-{i}", (i,), None, {"name": f"image {i}"}) for i in range(self.cases_n)]

    def check(self, sampler: Any) -> None:
        if sampler is not None and not (hasattr(sampler, "start_steps") and hasattr(sampler, "branch")):
            raise CritwinError(
                "diffusion: the sampler must be a diffusers backend (load_sampler('diffusers'))"
            )

    def run_case(
        self, sampler: Any, case: Case, rng: np.random.Generator, journal: CaseJournal | None = None
    ) -> CaseResult:
        feature = self.feature(sampler)
        ts = self.grid(sampler)
        r_clone, r_scan, r_grid = rng.spawn(3)
        clone_ts = self.clone_grid(sampler) if self.clones else []
        if self.clones:
            br = sampler.branch(clone_ts, self.clones, r_clone)
            x = br.original
        else:
            x = sampler.sample(1, r_clone)[0]
        if isinstance(x, Exception) or not isinstance(x, np.ndarray):
            return failed(case, f"the generated image failed: {getattr(x, 'reason', x)}")
        label = feature(x)
        if label is None:
            return failed(
                case, f"the generated image is unreadable (classifier confidence below {self.threshold:g})"
            )
        draws: list[Any] = []
        curve = scan(
            sampler,
            x,
            feature=feature,
            strategy=Fixed(ts, self.n),
            seed=r_scan,
            journal=journal,
            on_draws=draws.append if journal is None else None,
        )
        rule = WindowRule(level=self.level, min_jump=self.min_jump)
        detected = rule.find(curve)
        start = {s.t: s for s in sampler.start_steps(sorted({float(t) for t in curve.t} | set(ts)))}

        def step_of(t: float) -> int | None:
            s = start.get(float(t)) or sampler.start_steps([float(t)])[0]
            return s.timestep

        agreement = None
        if self.clones:
            labels = [feature.batch([d for d in row if isinstance(d, np.ndarray)]) for row in br.rows]
            agreement = [float(np.mean([v == label for v in row])) if row else float("nan") for row in labels]
        crossing = None if agreement is None else _crossing(np.asarray(clone_ts), np.asarray(agreement))
        th = self.theory(sampler, label)
        win = th["windows"].get(str(label))
        theory = (
            theory_intervals([win], [f"class {label} (Gaussian-mixture model of the data)"]) if win else []
        )
        record = {
            "status": "ok",
            "name": case.fields.get("name", case.id),
            "class": label,
            "measured_windows": [[float(w.t_lo), float(w.t_hi)] for w in detected],
            "measured_windows_steps": [[step_of(w.t_lo), step_of(w.t_hi)] for w in detected],
            "t_S": th["t_S"],
            "t_S_step": th["t_S_step"],
            "theory_windows": [
                [None if not math.isfinite(w.lo) else w.lo, None if not math.isfinite(w.hi) else w.hi]
                for w in theory
            ],
            "clone_agreement_crossing": crossing,
            "crossing_over_t_S": None if crossing is None or not th["t_S"] else crossing / th["t_S"],
            "clone_agreement": agreement,
            "clone_ts": clone_ts,
            "ts": ts,
            "start_timesteps": [step_of(t) for t in ts],
            "start_t_actual": [start[float(t)].t_actual for t in ts],
            "draws": int(curve.n_total.sum()),
        }
        grid = sampler.forward_reverse(x, ts, GRID_IMAGES, r_grid)
        rows = []
        for t, row in zip(ts, grid, strict=True):
            ok = [d for d in row if isinstance(d, np.ndarray)]
            imgs = sampler.decode(ok) if ok else []
            for k, (im, lab) in enumerate(zip(imgs, feature.batch(ok), strict=True)):
                u8 = np.round(np.asarray(im) * 255).astype(np.uint8)
                rows.append(
                    {
                        "t": t,
                        "k": k,
                        "label": None if lab is None else str(lab),
                        "h": u8.shape[0],
                        "w": u8.shape[1],
                        "c": u8.shape[2],
                        "pixels": u8.tobytes(),
                    }
                )
        orig = np.round(sampler.decode([x])[0] * 255).astype(np.uint8)
        rows.append(
            {
                "t": 0.0,
                "k": -1,
                "label": str(label),
                "h": orig.shape[0],
                "w": orig.shape[1],
                "c": orig.shape[2],
                "pixels": orig.tobytes(),
            }
        )
        meta = {
            "title": f"{record['name']} · class {label}",
            "description": f"P(class {label} kept | t) at {len(ts)} OU times, {self.n} draws each.",
            "sampler": f"{sampler.model_name} ({type(sampler.scheduler).__name__}, {sampler.steps} steps)",
            "feature": "image classifier label",
            "n": self.n,
            "min_jump": self.min_jump,
        }
        return CaseResult(
            case.id,
            record,
            tuple(draws),
            curve,
            detected,
            (),
            meta,
            parts={"images": pd.DataFrame(rows)},
            theory=tuple(theory),
            eps=self.eps,
        )
