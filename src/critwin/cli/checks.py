"""Checks the commands run before any expensive work: flag values, output paths, input files, and what a
model directory can hold (its context, the characters its tokenizer knows, the memory a run needs).

Also the search-strategy flags the scanning commands share (`STRATEGY`, `BUDGET`, `N_MIN`, `N_MAX`: typer
options reused as defaults, so their help is written once) and their check, `search` (the flags as a
`critwin.strategies.StrategySettings`), with `first_round` for the budget of a known number of cuts.

Each raises a one-line CritwinError that names the flag, the problem and the fix. They read only small
files (config.json, tokenizer files, safetensors headers), never weights, so that a bad command fails in
about a second and leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer

from critwin import params
from critwin.errors import CritwinError
from critwin.files import check_file, check_run_folder, check_writable_parent

STRATEGIES = ("fixed", "adaptive", "bisect", "every-prefix", "critical")
"""The names of --strategy (`critwin.strategies.STRATEGY_NAMES`, spelled out: --help imports nothing)."""

STRATEGY = typer.Option(
    "fixed",
    "--strategy",
    help="Where and how often to draw: fixed (K draws at every cut), adaptive (more draws where a drop is "
    "undecided, bisection down to one unit; intervals become confidence sequences), bisect (PTS: K "
    "draws per point, split where P changes by 0.2), every-prefix (K draws at every unit) or critical "
    "(bisection to where P(correct) is shown to be at most --eps: critwin critical-tokens' cheap option).",
)
BUDGET = typer.Option(
    None, "--budget", help="Most draws per scanned case, all cuts together (default: no limit)."
)
N_MIN = typer.Option(
    None, "--n-min", help="First draws per point of --strategy adaptive or critical (default: 8)."
)
N_MAX = typer.Option(
    None, "--n-max", help="Most draws per point of --strategy adaptive (default: 128)."
)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16", "half")
CHAT_MODES = ("auto", "on", "off")

BYTES_PER_TOKEN = 48
"""Host memory one generated token costs while a run holds it (its id in a tuple, the int object, its
decoded text and its row in the draws table): a rough lower bound, so that only settings that cannot fit
are refused."""


# ---- flag values -------------------------------------------------------------------------------------------
def choice(value: str, flag: str, choices: Sequence[str]) -> str:
    """`value` when it is one of `choices`."""
    if value not in choices:
        raise CritwinError(f"{flag} {value!r}: use one of {', '.join(choices)}")
    return value


def whole(value: int, flag: str, low: int = 1) -> int:
    """`value` when it is a whole number >= `low` (the constraint of `critwin.params.whole_number`)."""
    return params.whole_number(low).check(value, flag, flag)


def probability(value: float, flag: str, *, open_low: bool = True, open_high: bool = False) -> float:
    """`value` when it lies in the unit interval, ends open or closed as given (`params.unit_interval`)."""
    return params.unit_interval(open_low=open_low, open_high=open_high).check(value, flag, flag)


def sampling(temperature: float, top_p: float) -> None:
    """Sampling settings every generating command shares."""
    params.check("temperature", temperature, "--temperature")
    params.check("top_p", top_p, "--top-p")


def device_and_dtype(device: str, dtype: str) -> None:
    """--device and --dtype values, and that a requested GPU exists, before anything loads."""
    choice(dtype, "--dtype", DTYPES)
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise CritwinError(f"--device {device!r}: use auto, cpu or cuda (or cuda:N)")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CritwinError(f"--device {device}: CUDA is not available here; use --device cpu or auto")


def search(strategy: str, budget: int | None, n_min: int | None, n_max: int | None) -> Any:
    """--strategy, --budget, --n-min and --n-max as a `critwin.strategies.StrategySettings` (one-line errors:
    an unknown strategy, a count below 1, --n-min > --n-max, --n-min/--n-max without --strategy adaptive)."""
    choice(strategy, "--strategy", STRATEGIES)
    from critwin.strategies import StrategySettings

    return StrategySettings(strategy=strategy, budget=budget, n_min=n_min, n_max=n_max)


def first_round(settings: Any, n_cuts: int | None, n: int) -> None:
    """Refuse a --budget below one draw per point of the strategy's first round, when the number of cuts
    per case is known (`n_cuts`, the most any case has; None: it depends on each case, which is then
    checked when the case runs). bisect starts at the two ends; every-prefix at every unit, which is at
    least the cuts of the grid."""
    if settings.budget is None:
        return
    if settings.strategy == "bisect":
        settings.check_first_round(2 if n_cuts is None else min(2, n_cuts), n)
    elif n_cuts is not None:
        settings.check_first_round(n_cuts, n)


# ---- paths -------------------------------------------------------------------------------------------------
def out_dir(out: Path, experiment: str, kind: str | None = None, flag: str = "--out") -> None:
    """A run folder a command may write: new (in a writable folder), empty, or a critwin run of the same
    `experiment` (and config `kind`), which the run itself then resumes or refuses by its settings."""
    check_run_folder(out, experiment, kind, flag)


def out_file(out: Path, flag: str, suffixes: Sequence[str], example: str) -> None:
    """A file a command may (over)write: a name with one of `suffixes`, not a folder, in a writable folder."""
    if out.is_dir():
        raise CritwinError(f"{flag} {out} is a folder; give a file name such as {example}")
    if out.exists() and not out.is_file():
        return  # a device such as /dev/null: written to as given
    if out.suffix.lower() not in suffixes:
        got = f"{out.suffix!r}" if out.suffix else "no extension"
        raise CritwinError(f"{flag} {out}: unsupported file type ({got}); use {', '.join(suffixes)}")
    if out.exists():
        if not os.access(out, os.W_OK):
            raise CritwinError(f"{flag} {out} is not writable; choose another file")
        return
    check_writable_parent(out, flag)


def input_files(paths: Iterable[Path], flag: str, kind: str) -> None:
    """Every path is a readable file (a folder or a missing path is named as such)."""
    for p in paths:
        check_file(p, flag, kind)


# ---- what a model can hold ---------------------------------------------------------------------------------
def model(path: Path, flag: str = "--model", *, weights: bool = True) -> Any:
    """The `ModelInfo` of a model directory (config, weight headers, tokenizer checked; no weights read).

    `weights=False` (a model behind a server, whose directory here is its local tokenizer): the folder needs
    only the tokenizer files; a config.json there, when it has one, gives the context length."""
    if weights:
        from critwin.samplers.tokenized import inspect_model

        return inspect_model(path, flag)
    import json

    from critwin.samplers.tokenized import ModelInfo, _checked_tokenizer, context_length

    path = Path(path)
    if not path.exists():
        raise CritwinError(f"{flag} {path} does not exist; pass the served model's local folder (its "
                           "tokenizer files)")
    if not path.is_dir():
        raise CritwinError(f"{flag} {path} is a file; pass the served model's folder (its tokenizer files)")
    config: dict[str, Any] = {}
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise CritwinError(f"{flag} {path}/config.json is not readable JSON; fix or remove it") from None
        if not isinstance(config, dict):
            raise CritwinError(f"{flag} {path}/config.json is not a JSON object; fix or remove it")
    return ModelInfo(path, config, context_length(config), _checked_tokenizer(path, flag))


def chat_mode(info: Any, chat: str, flag: str = "--chat", needs: str | None = None) -> bool:
    """Whether prompts go through the chat template: --chat auto uses it when the tokenizer has one, on
    requires it, off never uses it. `needs` says what requires a template (then auto requires it too)."""
    has = info.has_chat_template
    if chat == "on" and not has:
        raise CritwinError(
            f"{flag} on: the tokenizer of {info.path} has no chat template; add one to the model "
            f"directory or use {flag} off"
        )
    if needs is not None and not has and chat == "auto":
        raise CritwinError(
            f"{needs} needs a chat template, and the tokenizer of {info.path} has none; add one to the model "
            f"directory, or pass {flag} off to continue the plain text instead"
        )
    return has if chat == "auto" else chat == "on"


def encodable(info: Any, text: str, where: str) -> None:
    """Refuse text with characters the model's tokenizer cannot encode (they would silently become its
    unknown token, so the model would see something else than the user wrote)."""
    from critwin.samplers.tokenized import describe_chars, unknown_chars

    bad = unknown_chars(info.tokenizer, text)
    if bad:
        raise CritwinError(
            f"{where}: the tokenizer of {info.path} cannot encode {describe_chars(bad)} (they would become "
            "its unknown token); replace or remove those characters"
        )


def context(info: Any, need: int, what: str, fix: str) -> None:
    """Refuse a sequence of `need` tokens that the model's context cannot hold."""
    if info.context is not None and need > info.context:
        raise CritwinError(
            f"{what} needs {need} tokens, but the context of {info.path} holds {info.context} "
            f"(max_position_embeddings in its config.json); {fix}"
        )


def available_memory() -> int | None:
    """Bytes of memory this machine can still hand out (MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PB"


def memory(n_sequences: int, max_tokens: int, what: str, flag: str, per_unit: int) -> None:
    """Refuse a run whose `n_sequences` generated sequences of up to `max_tokens` tokens cannot be held in
    memory at once; `flag` is the setting to lower and `per_unit` the sequences one unit of it adds."""
    avail = available_memory()
    if avail is None:
        return
    need = float(n_sequences) * max_tokens * BYTES_PER_TOKEN
    if need > avail:
        most = int(avail // (max(per_unit, 1) * max_tokens * BYTES_PER_TOKEN))
        raise CritwinError(
            f"{what}: {n_sequences:.3g} sequences of up to {max_tokens} tokens need at least {_size(need)} "
            f"of memory, and {_size(avail)} is available; use {flag} {max(most, 1)} or less"
        )


def shard(spec: str | None) -> tuple[int, int] | None:
    """`--shard I/M` as (I, M) with 0 <= I < M (None when not given)."""
    if spec is None:
        return None
    head, _, tail = spec.partition("/")
    try:
        i, m = int(head), int(tail)
    except ValueError:
        i, m = -1, 0
    if m < 1 or not 0 <= i < m:
        raise CritwinError(f"--shard {spec!r}: use I/M with 0 <= I < M, e.g. 0/3 for the first of three")
    return i, m
