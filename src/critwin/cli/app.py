"""The typer application and the helpers every command shares (JSON output, error wrapping)."""

import sys
from typing import Any

import typer

from critwin.serialize import dumps

app = typer.Typer(
    name="critwin",
    help="Find, measure and explain critical windows in generative models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help: it wraps long help strings and defaults, where rich's option table cuts them with
    # "…" on an 80-column terminal.
    rich_markup_mode=None,
)


def emit_json(obj: Any) -> None:
    """Print exactly one JSON object on stdout (the --json contract); everything else goes to stderr."""
    sys.stdout.write(dumps(obj) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    """Progress and human-readable notes go to stderr so that stdout stays machine-readable."""
    print(message, file=sys.stderr)
