"""The field's other methods as commands on critwin's reasoning scan (`critwin.methods`).

`critwin anchors` is `critwin scan --sentences --outcome correct -k 32` (Thought Anchors' resampling
importance); `critwin forks` is `critwin scan --forks` (Forking Paths); `critwin critical-tokens` is `critwin
scan --outcome correct --strategy every-prefix -k 64` (Critical Tokens, Lin et al., 2024); `critwin pivotal`
is `critwin scan --outcome correct --strategy bisect -k 16` (Pivotal Token Search) with `--export-dpo FILE`
and `--export-activations FILE` (hidden states at the pivotal tokens and steering vectors); `critwin
revise` is `critwin scan --revise` (re-prompt right after the window, against a control position).
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
        bound) instead of "0 of 64 rollouts". Every option of `critwin scan` applies; --strategy critical
        spends far fewer draws (bisection to the critical token, certifying failure at every measured longer
        prefix).
        """,
        outcome="correct", strategy="every-prefix", k=64,
    )
)


def _export_file(path: Path, flag: str, force: bool) -> None:
    """An export destination may be written: not an existing file unless --force, not a folder, and in a
    folder we may write in."""
    if path.exists() and not force:
        raise CritwinError(f"{flag} {path} exists; pass --force to replace it or choose another file")
    if path.is_dir():
        raise CritwinError(f"{flag} {path} is a folder; give a file name")
    check_writable_parent(path, flag)


def _parse_layers(spec: str) -> list[int]:
    try:
        return [int(part) for part in spec.split(",")]
    except ValueError:
        raise CritwinError(f"--layers {spec!r}: give comma-separated whole numbers such as 0,3,-1") from None


def _pivotal_run(command: Callable[..., Any], kwargs: dict[str, Any], *, export_dpo: Path | None,
                 export_activations: Path | None, layers_spec: str | None, force: bool) -> Any:
    if export_dpo is not None:
        _export_file(export_dpo, "--export-dpo", force)
    if layers_spec is not None and export_activations is None:
        raise CritwinError("--layers picks the layers of --export-activations; add --export-activations "
                           "FILE or drop --layers")
    layers = None if layers_spec is None else _parse_layers(layers_spec)
    if export_activations is not None:
        _export_file(export_activations, "--export-activations", force)
        if export_dpo is not None and export_dpo.absolute() == export_activations.absolute():
            raise CritwinError("--export-dpo and --export-activations name the same file; give two files")
    if kwargs.get("outcome") != "correct":
        raise CritwinError("critwin pivotal scores endings by correctness; drop --outcome or use "
                           "--outcome correct")
    if export_activations is not None:
        # The export runs the model itself: its weights must be here, and --layers must fit its depth,
        # before the scan spends anything.
        from critwin.experiments.activations import model_shape, resolve_layers
        from critwin.experiments.reasoning import BUNDLED_MODEL
        from critwin.samplers.tokenized import inspect_model

        model_dir = Path(kwargs.get("model") or BUNDLED_MODEL)
        inspect_model(model_dir, "--model")
        layers = resolve_layers(layers, model_shape(model_dir)[0], "--layers")

    def after(run: Path) -> dict[str, Any]:
        done: dict[str, Any] = {}
        if export_dpo is not None:
            from critwin.experiments.dpo import export_dpo as write

            done["dpo"] = write(run, export_dpo)
            log(f"{done['dpo']['n_pairs']} DPO pairs at {done['dpo']['n_pivotal']} pivotal tokens written "
                f"to {export_dpo}")
        if export_activations is not None:
            from critwin.experiments.activations import export_activations as write_acts
            from critwin.samplers.hf import resolve_device

            acts = write_acts(run, export_activations, layers=layers,
                              device=str(resolve_device(kwargs.get("device") or "auto")))
            steer = "with" if acts["has_steering"] else "without (no pivotal token on one side)"
            log(f"activations at {acts['n_pivotal']} pivotal tokens ({acts['n_layers']} layers x "
                f"{acts['hidden_size']}), {steer} steering vectors, written to {export_activations}")
            done["activations"] = acts
        return done

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
        the outcome distributions; its counterfactual importance counts only the rewrites that differ in
        meaning (embedding similarity below --similarity-threshold; --no-counterfactual skips it). --stump
        adds the forced-answer importance. Every option of `critwin scan` applies (--outcome same
        measures P(same answer) instead).
        """,
        sentences=True, outcome="correct", k=32, counterfactual=True,
    )
)

revise_cmd = app.command("revise", short_help="Revise at the window: re-prompt there and measure accuracy.")(
    with_defaults(
        scan_cmd,
        """Revise at the window (the paper's intervention) in chain-of-thought reasoning.

        The reasoning scan with --revise: after the windows are found, each response with a window is cut
        right after its main window and K endings are drawn with and without --revise-prompt ("Wait, let
        me re-check this step.") appended, and the same at a random control position away from the window.
        Per problem the re-prompt's effect on P(correct) at both positions (Newcombe intervals); per
        dataset the mean effects and their paired difference, with Student t intervals across problems.
        Every option of `critwin scan` applies.
        """,
        revise=True,
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
    against a token the model drew there instead. --export-activations FILE writes the model's hidden
    states at each pivotal token and the steering vector per layer (safetensors). Every option of
    `critwin scan` applies.
    """,
    extra={
        "export_dpo": (Path, typer.Option(None, "--export-dpo", metavar="FILE",
                                          help="Write DPO preference pairs at the pivotal tokens (JSONL).")),
        "export_activations": (Path, typer.Option(
            None, "--export-activations", metavar="FILE",
            help="Write the hidden states at the pivotal tokens and per-layer steering vectors (mean over "
            "tokens that raise P(correct) minus those that lower it) as safetensors.")),
        "layers_spec": (str, typer.Option(
            None, "--layers", metavar="LIST",
            help="Hidden states for --export-activations, e.g. 0,3,-1 (0: embeddings, -1: last layer; "
            "default: all).")),
        "force": (bool, typer.Option(False, "--force",
                                     help="Replace an existing --export-dpo / --export-activations file.")),
    },
    run=_pivotal_run, outcome="correct", strategy="bisect", k=16,
)
pivotal_cmd = app.command(
    "pivotal", short_help="Pivotal tokens (PTS), DPO pairs and activations at them."
)(_pivotal)
