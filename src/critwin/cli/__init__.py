"""The `critwin` command. Each sub-module registers its commands on `app`."""

import sys

import typer
from typer._click import exceptions as click_exceptions  # typer 0.29 vendors its own click

from critwin.cli.app import app
from critwin.errors import CritwinError, RunInterrupted

# Command modules, imported for their side effect of registering commands on `app`.
from critwin.cli import commands  # noqa: F401  isort: skip


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and exit code 2, never a traceback."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="critwin", standalone_mode=False)
    except CritwinError as err:
        print(f"critwin: error: {err}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.ClickException as err:
        hint = ""
        ctx = getattr(err, "ctx", None)
        if ctx is not None:
            hint = f"; see '{ctx.command_path} --help'"
        print(f"critwin: error: {err.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as err:
        print(f"critwin: {err}", file=sys.stderr)
        sys.exit(130)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    if code == 130:  # typer's exit code for a Ctrl-C that no run turned into RunInterrupted
        print("critwin: interrupted; rerun the same command to start again", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
