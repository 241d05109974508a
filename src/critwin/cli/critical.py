"""`critwin critical-tokens`: Critical Tokens (Lin et al., 2024) on critwin's reasoning scan.

It is `critwin scan --outcome correct --strategy every-prefix -k 64`: every prefix of every original is
resampled 64 times and scored by P(correct), and each incorrect original gets its critical token (the
first token after which P(correct) is shown to be at most --eps; `critwin.methods.critical`). Every option
of `critwin scan` applies (`--strategy adaptive` is the cheap option), with these defaults.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any

from critwin.cli.app import app
from critwin.cli.scan import scan_cmd

DEFAULTS = {"outcome": "correct", "strategy": "every-prefix", "k": 64}


def with_defaults(command: Callable[..., Any], doc: str, **defaults: Any) -> Callable[..., Any]:
    """`command` with other defaults for some of its typer options (the options themselves unchanged)."""
    sig = inspect.signature(command)
    params = []
    for p in sig.parameters.values():
        if p.name in defaults:
            option = copy.copy(p.default)
            option.default = defaults[p.name]
            p = p.replace(default=option)
        params.append(p)

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        return command(**kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__doc__ = doc
    return wrapper


critical_tokens_cmd = app.command(
    "critical-tokens", short_help="Critical tokens: where a wrong chain of thought can no longer succeed."
)(
    with_defaults(
        scan_cmd,
        """Critical tokens (Lin et al., 2024) in chain-of-thought reasoning.

        The reasoning scan with --outcome correct --strategy every-prefix -k 64: every prefix of each
        original is resampled and scored by P(correct); each wrong original gets its critical token, the
        first token after which P(correct) is shown to be at most --eps (a one-sided 95% Clopper-Pearson
        bound) instead of "0 of 64 rollouts". Every option of `critwin scan` applies; --strategy adaptive
        spends far fewer draws.
        """,
        **DEFAULTS,
    )
)
