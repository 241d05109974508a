"""The field's other methods as commands on critwin's reasoning scan (`critwin.methods`).

`critwin anchors` is `critwin scan --sentences --outcome correct -k 32` (Thought Anchors' resampling
importance); `critwin forks` is `critwin scan --forks` (Forking Paths); `critwin critical-tokens` is `critwin
scan --outcome correct --strategy every-prefix -k 64` (Critical Tokens, Lin et al., 2024); `critwin pivotal`
is `critwin scan --outcome correct --strategy bisect -k 16` (Pivotal Token Search) with `--export-dpo FILE`.
Every option of `critwin scan` applies, with these defaults.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from critwin.cli.app import app, log
from critwin.cli.scan import AFTER_RUN, scan_cmd
from critwin.errors import CritwinError
from critwin.files import check_writable_parent


def with_defaults(command: Callable[..., Any], doc: str, *, extra: dict[str, Any] | None = None,
                  run: Callable[..., Any] | None = None, **defaults: Any) -> Callable[..., Any]:
    """`command` with other defaults for some of its typer options (the options themselves unchanged),
    plus `extra` options (name -> (type, typer.Option)): then `run(command, kwargs, **extra values)` runs
    it."""
    sig = inspect.signature(command)
    params = []
    for p in sig.parameters.values():
        if p.name in defaults:
            option = copy.copy(p.default)
            option.default = defaults[p.name]
            p = p.replace(default=option)
        params.append(p)
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
             for name, (ann, opt) in (extra or {}).items()]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        own = {name: kwargs.pop(name) for name in extra or {}}
        return command(**kwargs) if run is None else run(command, kwargs, **own)

    wrapper.__signature__ = sig.replace(parameters=[*params, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**command.__annotations__, **{n: a for n, (a, _) in (extra or {}).items()}}
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
        outcome="correct", strategy="every-prefix", k=64,
    )
)


def _pivotal_run(command: Callable[..., Any], kwargs: dict[str, Any], *, export_dpo: Path | None,
                 force: bool) -> Any:
    if export_dpo is not None:
        if export_dpo.exists() and not force:
            raise CritwinError(f"--export-dpo {export_dpo} exists; pass --force to replace it or choose "
                               "another file")
        if export_dpo.is_dir():
            raise CritwinError(f"--export-dpo {export_dpo} is a folder; give a file name")
        check_writable_parent(export_dpo, "--export-dpo")
    if kwargs.get("outcome") != "correct":
        raise CritwinError("critwin pivotal scores endings by correctness; drop --outcome or use "
                           "--outcome correct")

    def after(run: Path) -> dict[str, Any]:
        if export_dpo is None:
            return {}
        from critwin.experiments.dpo import export_dpo as write

        done = write(run, export_dpo)
        log(f"{done['n_pairs']} DPO pairs at {done['n_pivotal']} pivotal tokens written to {export_dpo}")
        return {"dpo": done}

    token = AFTER_RUN.set(after)
    try:
        return command(**kwargs)
    finally:
        AFTER_RUN.reset(token)


anchors_cmd = app.command("anchors", short_help="Sentence anchors: how much each sentence matters.")(
    with_defaults(
        scan_cmd,
        """Sentence anchors (Thought Anchors, Bogdan et al., 2025) in chain-of-thought reasoning.

        The reasoning scan with --sentences --outcome correct -k 32: each original is cut before and after
        every sentence, 32 endings are resampled per cut, and each sentence's resampling importance is
        P(correct) with it kept minus with it rewritten (Newcombe interval), with the KL divergence of
        the outcome distributions. --stump adds the forced-answer importance. Every option of `critwin
        scan` applies (--outcome same measures P(same answer) instead).
        """,
        sentences=True, outcome="correct", k=32,
    )
)

forks_cmd = app.command("forks", short_help="Forking tokens: where forcing a token changes the answer.")(
    with_defaults(
        scan_cmd,
        """Forking tokens (Forking Paths, Bigelow et al., 2024) in chain-of-thought reasoning.

        The reasoning scan with --forks: at every position of each original, every token the model gives at
        least --fork-threshold probability (default 0.05) is forced and K endings are resampled from it;
        per position the outcome distribution, P(same answer) and the fork probability, then the change
        points of that series (PELT) and the survival of the original answer. Needs --engine hf (the
        model's next-token distribution). Every option of `critwin scan` applies.
        """,
        forks=True,
    )
)

_pivotal = with_defaults(
    scan_cmd,
    """Pivotal tokens (Pivotal Token Search, Abdin et al., 2024) in chain-of-thought reasoning.

    The reasoning scan with --outcome correct --strategy bisect -k 16: P(correct) is estimated from 16
    endings per cut, and every span where it moves by --min-jump (PTS: 0.2) or more is halved down to one
    token; those tokens are pivotal. --export-dpo FILE writes a DPO preference pair per pivotal token
    (prompt / chosen / rejected, the format TRL's DPOTrainer reads, with the token ids), the trace's token
    against a token the model drew there instead. Every option of `critwin scan` applies.
    """,
    extra={
        "export_dpo": (Path, typer.Option(None, "--export-dpo", metavar="FILE",
                                          help="Write DPO preference pairs at the pivotal tokens (JSONL).")),
        "force": (bool, typer.Option(False, "--force", help="Replace an existing --export-dpo file.")),
    },
    run=_pivotal_run, outcome="correct", strategy="bisect", k=16,
)
pivotal_cmd = app.command("pivotal", short_help="Pivotal tokens (PTS) and DPO pairs at them.")(_pivotal)
