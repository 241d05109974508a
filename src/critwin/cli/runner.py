"""The `--runner local|ray` options of the commands that run cases, and the runner they ask for."""

from __future__ import annotations

from typing import Any

import typer

from critwin.errors import CritwinError

RUNNER = typer.Option(
    "local",
    "--runner",
    help="Where cases run: local (this process) or ray (Ray actors, one sampler each, on a cluster).",
)
RAY_ADDRESS = typer.Option(
    None,
    "--ray-address",
    help="A running Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: start a local one.",
    show_default=False,
)
WORKERS = typer.Option(None, "--workers", help="Ray actors (default 2).", show_default=False)
GPUS_PER_WORKER = typer.Option(
    None, "--gpus-per-worker", help="GPUs per Ray actor (default 0).", show_default=False
)


def choose(runner: str, address: str | None, workers: int | None, gpus: float | None, log: Any = None) -> Any:
    """The Runner the flags ask for: None for local (the driver's default), a `critwin.runners.ray.Ray`
    for ray; one-line CritwinError for an unknown runner, Ray flags without --runner ray, bad numbers or
    Ray not installed. Nothing connects yet: the driver starts the runner once the run folder checks out."""
    if runner not in ("local", "ray"):
        raise CritwinError(f"--runner {runner!r}: use local or ray")
    if runner == "local":
        given = [
            f
            for f, v in (("--ray-address", address), ("--workers", workers), ("--gpus-per-worker", gpus))
            if v is not None
        ]
        if given:
            raise CritwinError(f"{given[0]} is for --runner ray; add --runner ray or drop it")
        return None
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise CritwinError("--runner ray needs Ray on this machine: pip install 'critwin[ray]'")
    from critwin.runners.ray import Ray

    return Ray(
        address=address,
        workers=2 if workers is None else workers,
        gpus_per_worker=0.0 if gpus is None else gpus,
        log=log,
    )
