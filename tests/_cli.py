"""`critwin` run in-process for tests: its exit code (the CLI always ends with SystemExit)."""

from __future__ import annotations

import pytest

from critwin.cli import main


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return int(done.value.code or 0)
