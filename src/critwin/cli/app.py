"""The typer application and the helpers every command shares (JSON output, error wrapping)."""

import json
import math
import sys
from typing import Any

import numpy as np
import typer

app = typer.Typer(
    name="critwin",
    help="Find, measure and explain critical windows in generative models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and non-finite floats into strict JSON (NaN/inf -> null)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def emit_json(obj: Any) -> None:
    """Print exactly one JSON object on stdout (the --json contract); everything else goes to stderr."""
    sys.stdout.write(json.dumps(to_jsonable(obj), allow_nan=False) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    """Progress and human-readable notes go to stderr so that stdout stays machine-readable."""
    print(message, file=sys.stderr)
