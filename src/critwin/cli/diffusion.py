"""`critwin diffusion scan|demo`: where a generated image's class is decided, on a diffusers pipeline
(default: the bundled digit DDPM), against the speciation time and a Gaussian-mixture theory of the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from critwin.cli import checks
from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError

diffusion_app = typer.Typer(
    help="Critical windows of diffusion models.",
    no_args_is_help=True,
    rich_markup_mode=None,  # see cli/app.py
)
app.add_typer(diffusion_app, name="diffusion", short_help="Critical windows of diffusion models.")

DEMO_OUT = Path("critwin-diffusion-demo")


def _run(experiment: Any, out: Path, json_out: bool) -> None:
    from critwin.driver import run

    done = run(experiment, factory=experiment.sampler, out=out, log=log, progress=not json_out)
    summary = done.summary.get("diffusion", {})
    result = {
        "run_dir": str(done.out),
        "index": str(done.out / "index.html"),
        "cases": summary.get("cases", []),
        "pooled_clone_agreement": summary.get("pooled_clone_agreement"),
        "failed": done.n_failed,
    }
    if json_out:
        emit_json(result)
        return
    for c in result["cases"]:
        if c.get("status") == "failed":
            print(f"{c['case']}: failed: {c['error']}")
            continue
        crossing = c["clone_agreement_crossing"]
        print(
            f"{c['name']} (class {c['class']}): measured windows {c['measured_windows']} (OU t), "
            f"steps {c['measured_windows_steps']}; t_S {_round(c['t_S'])}; "
            f"theory {c['theory_windows']}; clone crossing "
            f"{_round(crossing)}"
        )
    pooled = result["pooled_clone_agreement"]
    if pooled and pooled["crossing"] is not None:
        print(
            f"clone agreement over {pooled['cases']} cases crosses 0.775 at t = {_round(pooled['crossing'])}"
            f" ({_round(pooled['crossing_over_t_S'])} x t_S)"
        )
    print(f"report: {result['index']}")


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _experiment(**kw: Any) -> Any:
    from critwin.experiments.diffusion import DiffusionExperiment

    return DiffusionExperiment(**kw)


CASES = typer.Option(4, "--cases", help="Generated images to scan (one case each).")
DRAWS = typer.Option(32, "-n", "--draws", help="Re-denoised draws per noise level.")
LEVELS = typer.Option(12, "--levels", help="Noise levels M, evenly spaced in OU time up to --t-max.")
T_MAX = typer.Option(2.5, "--t-max", help="Largest OU time scanned (capped at the schedule's).")
CLONES = typer.Option(
    16, "--clones", help="Clones per level of the trajectory-branching experiment (0: off)."
)
STEPS = typer.Option(100, "--steps", help="Inference steps of the scheduler's grid.")
SEED = typer.Option(0, "--seed", help="Seed of the generated images and of every draw.")
JSON = typer.Option(
    False, "--json", help='Print one JSON object {"run_dir", "index", "cases": [...]} on stdout.'
)


@diffusion_app.command("scan", short_help="Scan a diffusers pipeline's generated images.")
def scan_cmd(
    pipeline: Path = typer.Option(
        None,
        "--pipeline",
        help="A diffusers pipeline directory (default: the bundled digit DDPM).",
        show_default=False,
    ),
    feature: Path = typer.Option(
        None,
        "--feature",
        "--classifier",
        help="Image classifier (.skops, .joblib or "
        ".pt) labelling decoded images in [0, 1] (default: the bundled digit "
        "classifier).",
        show_default=False,
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", help="Classifier confidence below which an image is unreadable."
    ),
    out: Path = typer.Option(..., "--out", help="Run folder (new, empty, or this run to resume)."),
    cases: int = CASES,
    draws: int = DRAWS,
    levels: int = LEVELS,
    t_max: float = T_MAX,
    clones: int = CLONES,
    steps: int = STEPS,
    scheduler: str = typer.Option(
        None,
        "--scheduler",
        help="Swap the scheduler class (ddpm, ddim, euler, dpm, unipc), keeping the saved config.",
        show_default=False,
    ),
    prompt: str = typer.Option(
        None, "--prompt", help="Prompt of a latent text-to-image pipeline.", show_default=False
    ),
    data: Path = typer.Option(
        None,
        "--data",
        help=".npy training images (N, C, H, W) in the model's scaling, for t_S and the theory.",
        show_default=False,
    ),
    labels: Path = typer.Option(
        None, "--labels", help=".npy classes of --data, for the Gaussian-mixture theory.", show_default=False
    ),
    seed: int = SEED,
    json_out: bool = JSON,
) -> None:
    """Scan generated images of a diffusers pipeline: P(same class | t), windows, clone agreement, t_S and the
    Gaussian-mixture theory window; writes a run folder with its report."""
    if pipeline is not None:
        from critwin.samplers.diffusers_pipeline import load_pipeline

        if not (pipeline / "model_index.json").is_file():
            load_pipeline(pipeline)  # the one-line error of a folder that is not a pipeline
    checks.out_dir(out, "diffusion")
    if scheduler is not None:
        from critwin.samplers.diffusers_pipeline import scheduler_class

        scheduler_class(scheduler)
    if pipeline is not None and prompt is None:
        import json

        index = json.loads((pipeline / "model_index.json").read_text())
        if "vae" in index:
            raise CritwinError("--prompt: this is a latent text-to-image pipeline; give a prompt")
    exp = _experiment(
        pipeline=None if pipeline is None else str(pipeline),
        classifier=None if feature is None else str(feature),
        threshold=threshold,
        cases_n=cases,
        n=draws,
        levels=levels,
        t_hi=t_max,
        clones=clones,
        steps=steps,
        scheduler=scheduler,
        prompt=prompt,
        data=None if data is None else str(data),
        labels=None if labels is None else str(labels),
        seed=seed,
    )
    _run(exp, out, json_out)


@diffusion_app.command("demo", short_help="The bundled digit model's windows, theory and image grids.")
def demo_cmd(
    out: Path = typer.Option(DEMO_OUT, "--out", help="Run folder (new, empty, or this run to resume)."),
    cases: int = CASES,
    draws: int = DRAWS,
    levels: int = LEVELS,
    clones: int = CLONES,
    steps: int = STEPS,
    seed: int = SEED,
    json_out: bool = JSON,
) -> None:
    """Scan generated digits of the bundled DDPM and draw the report."""
    checks.out_dir(out, "diffusion")
    exp = _experiment(cases_n=cases, n=draws, levels=levels, clones=clones, steps=steps, seed=seed)
    _run(exp, out, json_out)
