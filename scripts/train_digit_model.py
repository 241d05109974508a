"""Train critwin's bundled image diffusion model: a small DDPM on scikit-learn's 8x8 handwritten digits.

    .venv/bin/python scripts/train_digit_model.py            # writes src/critwin/assets/digit_model/

Everything is offline: the data is `sklearn.datasets.load_digits()` (1,797 images, 8x8, pixels 0..16), scaled
to x = pixels / 8 - 1 in [-1, 1], shape (1, 8, 8). A seeded stratified split keeps 20% of the images out of
training (`sklearn.model_selection.train_test_split(np.arange(1797), test_size=0.2, stratify=target,
random_state=seed)`); the held-out indices are written into the report.

The output folder is a diffusers pipeline folder (`DDPMPipeline.save_pretrained`):

    model_index.json  unet/{config.json, diffusion_pytorch_model.safetensors}  scheduler/scheduler_config.json

plus `digit_classifier.skops` (a classifier of the same [-1, 1] pixels, flattened to 64 features, trained on
the same training split; reload with `skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))`),
`samples.png` (100 generated digits) and `training_report.json` (settings, timings, versions, held-out
accuracy, and an honest sample-quality check: the classifier's verdict on 1,000 generated digits).

The UNet is a `diffusers.UNet2DModel` trained with the epsilon MSE loss under `DDPMScheduler(
num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", clip_sample=True)`;
the weights shipped are an exponential moving average of the trained weights (decay 0.999), the usual
choice for DDPMs. Reproducible: initialisation, batching, noise and sampling are drawn from `--seed`; CPU
with `--threads` threads.

The classifier is an RBF support-vector machine with libsvm's pairwise-coupling probabilities
(`SVC(probability=True)`): among the classifiers tried it had the best held-out accuracy and, unlike
logistic regression, MLPs or one-vs-rest calibrated SVMs (max-probability 0.88 to 0.98 on pure noise), it
is *not* confident on non-digits (mean max-probability about 0.23 on clipped Gaussian noise, 0.57 on 50/50
blends of two different digits), so its confidence is a meaningful quality score for generated digits.
Classes are always read as the argmax of `predict_proba` (which can differ from `SVC.predict` on a few
ambiguous images), both for the held-out accuracy and for the generated samples.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import sklearn  # noqa: E402
import skops  # noqa: E402
import skops.io  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "src" / "critwin" / "assets"
N_CLASSES = 10

SCHEDULER_KWARGS = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    prediction_type="epsilon",
    clip_sample=True,
    clip_sample_range=1.0,
)

UNET_KWARGS = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),  # 8x8 -> 4x4 (the last block does not downsample)
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    norm_num_groups=8,
    attention_head_dim=16,
)


def digit_data() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as model pixels x = pixels / 8 - 1, shape (n, 1, 8, 8) float32, and their labels."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[:, None, :, :]
    return x, digits.target.astype(np.int64)


def split_indices(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified 80/20 split of the indices (train, held out), each sorted."""
    train, held = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
    return np.sort(train), np.sort(held)


def histogram(labels: np.ndarray) -> dict:
    counts = np.bincount(labels, minlength=N_CLASSES)
    return {"counts": counts.tolist(), "fractions": (counts / counts.sum()).tolist()}


def train_classifier(x_train: np.ndarray, y_train: np.ndarray, seed: int) -> SVC:
    clf = SVC(C=10.0, kernel="rbf", gamma="scale", probability=True, random_state=seed)
    with warnings.catch_warnings():
        # scikit-learn 1.9 deprecates `probability=True` (removal planned for 1.11) in favour of a one-vs-rest
        # CalibratedClassifierCV, which is confident on noise; pairwise coupling is what we want here.
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(x_train.reshape(len(x_train), -1), y_train)
    return clf


def sample(unet, scheduler, n: int, inference_steps: int, seed: int, batch_size: int = 1000) -> np.ndarray:
    """`n` digits drawn by the DDPM chain from pure noise, `inference_steps` steps, clipped to [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    scheduler = DDPMScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(inference_steps)
    out = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            x = torch.randn((m, 1, 8, 8), generator=generator)
            for t in scheduler.timesteps:
                eps = unet(x, t).sample
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
            out.append(x.clamp(-1.0, 1.0).numpy())
    return np.concatenate(out)


def sample_quality(clf, samples, y_data, conf_real, n_sim_seed, inference_steps) -> dict:
    proba = clf.predict_proba(samples.reshape(len(samples), -1))
    pred, conf = proba.argmax(1), proba.max(1)
    gen, data = histogram(pred), histogram(y_data)
    p_gen, p_data = np.asarray(gen["fractions"]), np.asarray(data["fractions"])
    n = len(samples)
    chi2 = stats.chisquare(np.asarray(gen["counts"]), f_exp=n * p_data)
    # Reference: the TV that n samples from the *data* histogram show by sampling noise alone.
    rng = np.random.default_rng(n_sim_seed)
    sim = rng.multinomial(n, p_data, size=2000) / n
    tv_sim = 0.5 * np.abs(sim - p_data).sum(1)
    return {
        "n_samples": n,
        "inference_steps": inference_steps,
        "sampler": f"DDPMScheduler ancestral chain from N(0, I), {inference_steps} of 1000 timesteps "
        "(set_timesteps, default spacing), clip_sample on, final clip to [-1, 1]",
        "class_histogram_generated": gen,
        "class_histogram_data": data,
        "tv_histograms": float(0.5 * np.abs(p_gen - p_data).sum()),
        "tv_sampling_noise_reference": {
            "mean": float(tv_sim.mean()),
            "q95": float(np.quantile(tv_sim, 0.95)),
            "note": f"TV of {n} multinomial draws from the data histogram to it (2,000 simulations)",
        },
        "chi2_vs_data": {
            "statistic": float(chi2.statistic),
            "p_value": float(chi2.pvalue),
            "dof": N_CLASSES - 1,
        },
        "mean_confidence_generated": float(conf.mean()),
        "std_confidence_generated": float(conf.std(ddof=1)),
        "mean_confidence_real_heldout": float(conf_real.mean()),
        "fraction_confident": float((conf >= 0.5).mean()),
        "fraction_confident_real_heldout": float((conf_real >= 0.5).mean()),
        "confidence_quantiles_generated": {
            q: float(np.quantile(conf, float(q))) for q in ("0.1", "0.5", "0.9")
        },
    }


def save_grid(samples: np.ndarray, path: Path, rows: int = 10, scale: int = 4, gap: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = 8 * scale + gap
    grid = np.full((rows * cell + gap, rows * cell + gap), -1.0, dtype=np.float32)
    for i, img in enumerate(samples[: rows * rows]):
        r, c = divmod(i, rows)
        big = np.kron(img.reshape(8, 8), np.ones((scale, scale), dtype=np.float32))
        grid[gap + r * cell : gap + r * cell + 8 * scale, gap + c * cell : gap + c * cell + 8 * scale] = big
    plt.imsave(path, grid, cmap="gray_r", vmin=-1.0, vmax=1.0)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not ((out / "model_index.json").exists() or (out / "training_report.json").exists()):
            raise SystemExit(f"--out {out} is a non-empty folder that is not a digit model; choose another")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ASSETS / "digit_model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3500)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--inference-steps", type=int, nargs="+", default=[1000, 100],
                    help="sampling chains to score; the first is the report's sample_quality")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)

    x_all, y_all = digit_data()
    train_idx, held_idx = split_indices(y_all, args.seed)
    x_train = torch.from_numpy(x_all[train_idx])

    # ---- classifier ----
    t0 = time.time()
    clf = train_classifier(x_all[train_idx], y_all[train_idx], args.seed)
    proba_held = clf.predict_proba(x_all[held_idx].reshape(len(held_idx), -1))
    held_acc = float((proba_held.argmax(1) == y_all[held_idx]).mean())
    conf_real = proba_held.max(1)
    clf_seconds = time.time() - t0
    print(f"classifier: held-out accuracy {held_acc:.4f}, mean confidence {conf_real.mean():.4f}", flush=True)

    # ---- diffusion model ----
    unet = UNet2DModel(**UNET_KWARGS)
    ema = UNet2DModel(**UNET_KWARGS)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER_KWARGS)
    n_params = sum(p.numel() for p in unet.parameters())
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * 0.5 * (1.0 + math.cos(math.pi * frac))

    alphas_cumprod = scheduler.alphas_cumprod
    losses: list[float] = []
    loss_log = []
    order = rng.permutation(len(x_train))
    pos = 0
    unet.train()
    t_train = time.time()
    for step in range(args.steps):
        if pos + args.batch_size > len(order):
            order, pos = rng.permutation(len(x_train)), 0
        batch = x_train[torch.from_numpy(order[pos : pos + args.batch_size])]
        pos += args.batch_size
        t = torch.randint(0, SCHEDULER_KWARGS["num_train_timesteps"], (len(batch),), generator=gen)
        noise = torch.randn(batch.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * batch + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(noisy, t).sample, noise)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            decay = min(args.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1.0 - decay)
        losses.append(loss.item())
        if step % 250 == 0 or step == args.steps - 1:
            recent = float(np.mean(losses[-250:]))
            elapsed = time.time() - t_train
            loss_log.append({"step": step, "mean_loss_last_250": recent, "seconds": round(elapsed, 1)})
            print(f"step {step:5d}  loss {recent:.4f}  lr {lr_at(step):.2e}  {elapsed:.0f}s", flush=True)
    train_seconds = time.time() - t_train
    for b_ema, b in zip(ema.buffers(), unet.buffers(), strict=True):
        b_ema.copy_(b)
    ema.eval()

    prepare_out(args.out)
    DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(args.out, safe_serialization=True)
    skops.io.dump(clf, args.out / "digit_classifier.skops")

    # ---- sample quality ----
    quality = {}
    for i, steps in enumerate(args.inference_steps):
        t_s = time.time()
        samples = sample(ema, scheduler, args.n_samples, steps, seed=args.seed + 1000 + i)
        q = sample_quality(clf, samples, y_all, conf_real, args.seed + 2000, steps)
        q["sampling_seed"] = args.seed + 1000 + i
        q["sampling_seconds"] = round(time.time() - t_s, 1)
        quality[steps] = q
        print(f"{steps} steps: TV {q['tv_histograms']:.3f}  conf {q['mean_confidence_generated']:.3f}  "
              f"confident {q['fraction_confident']:.3f}  chi2 p {q['chi2_vs_data']['p_value']:.3g}  "
              f"{q['sampling_seconds']}s", flush=True)
        if i == 0:
            save_grid(samples, args.out / "samples.png")

    unet_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in UNET_KWARGS.items()}
    report = {
        "task": "DDPM on scikit-learn's 8x8 handwritten digits (load_digits), x = pixels / 8 - 1 in [-1, 1]",
        "seed": args.seed,
        "split": {
            "method": "sklearn.model_selection.train_test_split(np.arange(1797), test_size=0.2, "
            "stratify=load_digits().target, random_state=seed); indices sorted",
            "random_state": args.seed,
            "n_train": len(train_idx),
            "n_held_out": len(held_idx),
            "held_out_indices": held_idx.tolist(),
        },
        "unet": {"class": "diffusers.UNet2DModel", "config": unet_cfg, "parameters": n_params,
                 "weights": "EMA of the trained weights", "ema_decay": args.ema_decay, "dtype": "float32"},
        "scheduler": {"class": "diffusers.DDPMScheduler", **SCHEDULER_KWARGS},
        "training": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "lr_schedule": f"linear warm-up {args.warmup} steps, cosine decay to 0",
            "optimizer": "AdamW(weight_decay=0)",
            "loss": "MSE(epsilon prediction, noise), t ~ Uniform{0..999}",
            "augmentation": "none",
            "final_loss": losses[-1],
            "mean_loss_last_500": float(np.mean(losses[-500:])),
            "loss_log": loss_log,
        },
        "wall_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"{args.threads} torch threads",
        "classifier": {
            "type": "sklearn.svm.SVC(C=10, kernel='rbf', gamma='scale', probability=True, random_state=seed)",
            "features": "the 64 model pixels in [-1, 1], flattened row-major",
            "prediction": "argmax of predict_proba",
            "held_out_accuracy": held_acc,
            "held_out_mean_confidence": float(conf_real.mean()),
            "fit_seconds": round(clf_seconds, 1),
            "file": "digit_classifier.skops",
        },
        "sample_quality": quality[args.inference_steps[0]],
        "sample_quality_by_inference_steps": {str(k): v for k, v in quality.items()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "sklearn": sklearn.__version__,
            "skops": skops.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "dir_size_bytes": 0,
    }
    path = args.out / "training_report.json"
    for _ in range(5):  # the size includes the report itself
        path.write_text(json.dumps(report, indent=2) + "\n")
        size = dir_size(args.out)
        if size == report["dir_size_bytes"]:
            break
        report["dir_size_bytes"] = size
    for p in args.out.rglob("*"):  # save_pretrained writes the weights 0600; package data should be readable
        p.chmod(0o755 if p.is_dir() else 0o644)
    print(f"wrote {args.out} ({report['dir_size_bytes'] / 1e6:.2f} MB), training {train_seconds:.0f}s")


if __name__ == "__main__":
    main()
