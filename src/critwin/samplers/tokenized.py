"""Language-model samplers whose tokenizer is local: model-directory checks, prompts and texts, and the
forward–reverse bookkeeping every engine shares (`TokenizedLM`).

An engine (transformers, vLLM, an OpenAI-compatible server) supplies only `_continue` (draw endings after
given token prefixes), `score` and a few facts about its model; everything that turns responses, cuts and
settings into those prefixes, and endings back into `Response`s, is here, so all engines cut, budget and
join the same way. No torch import: a server backend needs only the tokenizer.

For a response, t counts the response tokens removed from its end (time_unit "tokens"): t = 0 keeps the
whole response, t = its length keeps only the prompt.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from critwin.errors import CritwinError, first_line
from critwin.samplers.lm import Continuation, Prompt, Response, SamplingSettings
from critwin.types import Failure

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
)

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
"""config.json keys that name a model's context length (the most tokens one sequence may hold)."""

_MAX_HEADER = 100 * 2**20  # safetensors caps its JSON header at 100 MB

def _check_model_dir(path: Path, where: str) -> None:
    """`path` is an existing folder with a config.json, or a CritwinError saying what it is instead."""
    if not path.exists():
        raise CritwinError(f"{where} {path} does not exist; pass a local Hugging Face model directory")
    if not path.is_dir():
        raise CritwinError(
            f"{where} {path} is a file; pass the model's folder (config.json, weights, tokenizer files)"
        )
    if not (path / "config.json").is_file():
        raise CritwinError(f"{where} {path} has no config.json; pass a directory written by save_pretrained")


def _check_causal(config: Mapping[str, Any], path: Path, where: str) -> None:
    """Refuse a config that is not a decoder-only causal LM transformers knows, before any weight loads."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = config.get("model_type")
    if config.get("is_encoder_decoder"):
        raise CritwinError(f"{where} {path} is an encoder-decoder ({kind}); pass a decoder-only causal LM")
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CritwinError(
            f"{where} {path} is a {kind} model, not a causal LM transformers can load; pass a decoder-only "
            "language model directory"
        )


def _check_safetensors(file: Path, where: str) -> None:
    """Refuse a safetensors file whose header is unreadable or whose size differs from what the header
    says (a truncated copy or download), without reading any tensor."""
    size = file.stat().st_size
    bad = f"{where} {file} is damaged"
    fix = "re-save or re-copy the model"
    if size < 8:
        raise CritwinError(f"{bad} ({size} bytes, too short to be a safetensors file); {fix}")
    with file.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > min(size - 8, _MAX_HEADER):
            raise CritwinError(f"{bad} (its header length {n} does not fit in its {size} bytes); {fix}")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CritwinError(f"{bad} (its header is not valid JSON); {fix}") from None
    if not isinstance(header, dict):
        raise CritwinError(f"{bad} (its header is not a JSON object); {fix}")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise CritwinError(f"{bad} (a tensor entry of its header has no data_offsets); {fix}") from None
    if 8 + n + end != size:
        raise CritwinError(
            f"{bad}: it holds {size} bytes but its header describes {8 + n + end} (a truncated or "
            f"partial copy); {fix}"
        )


def check_weight_files(path: str | Path, where: str = "model:") -> None:
    """Refuse a model directory without weights, or with a missing shard or a truncated/corrupt
    safetensors file, from the files' headers alone (milliseconds, before any weight is loaded).
    Pickled checkpoints (pytorch_model.bin) are checked by torch when they load."""
    path = Path(path)
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise CritwinError(
                f"{where} {index} is damaged (no readable weight_map); re-save or re-copy the model"
            ) from None
        files = [path / name for name in shards]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CritwinError(
                f"{where} {path} lacks weight shard(s) {missing[:3]} named in {index.name}; copy them there"
            )
    elif any((path / f).is_file() for f in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        return
    else:
        raise CritwinError(
            f"{where} {path} has no weights (model.safetensors or pytorch_model.bin); save the model "
            "there with model.save_pretrained"
        )
    for f in files:
        _check_safetensors(f, where)


def context_length(config: Mapping[str, Any]) -> int | None:
    """The most tokens one sequence may hold, from a config.json dict (or its text_config); None when the
    config names no limit."""
    for cfg in (config, config.get("text_config") or {}):
        if not isinstance(cfg, Mapping):
            continue
        for key in _CONTEXT_KEYS:
            v = cfg.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


@dataclass(frozen=True)
class ModelInfo:
    """What a model directory tells before its weights load: config.json (a dict), the context length
    (None when the config names none), the tokenizer, and where the limit was read."""

    path: Path
    config: Mapping[str, Any]
    context: int | None
    tokenizer: Any

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer can render chats (needed for prefills and follow-up turns)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode_prompt(self, prompt: Prompt, *, chat: bool) -> tuple[tuple[int, ...], str]:
        """Token ids and text the model will see for `prompt` (see `encode_prompt`), before weights load."""
        return encode_prompt(self.tokenizer, prompt, chat=chat)

    def encode_text(self, text: str) -> tuple[int, ...]:
        """Token ids of `text` tokenized alone, without special tokens (as a response or prefill is)."""
        return encode_text(self.tokenizer, text)


def inspect_model(path: str | Path, where: str = "--model") -> ModelInfo:
    """Check a model directory cheaply (config.json, weight file headers, tokenizer) and read its context
    length, so that a bad model or settings it cannot hold fail before the weights load. `where` names
    the CLI flag (or argument) in the messages."""
    path = Path(path)
    _check_model_dir(path, where)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CritwinError(f"{where} {path}/config.json is not UTF-8 text; fix or re-save it") from None
    except (OSError, json.JSONDecodeError) as exc:
        why = first_line(exc, with_type=False)
        raise CritwinError(
            f"{where} {path}/config.json is not readable JSON ({why}); fix or re-save it"
        ) from None
    if not isinstance(config, dict):
        raise CritwinError(f"{where} {path}/config.json is not a JSON object; fix or re-save it")
    _check_causal(config, path, where)
    check_weight_files(path, where)
    return ModelInfo(path, config, context_length(config), _checked_tokenizer(path, where))


def unknown_chars(tokenizer: Any, text: str) -> list[str]:
    """The characters of `text` the tokenizer cannot encode (they become its unknown token), in order of
    first appearance; [] for byte-level tokenizers, which encode everything.

    The unknown token is read from the tokenizer backend's model too, since a tokenizer may map unknown
    characters to an ordinary token (e.g. "?") without declaring `unk_token`.
    """
    unk_ids = _unk_ids(tokenizer)
    if not unk_ids or not text:
        return []
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):
        enc = tokenizer(text, add_special_tokens=False)
        if any(i in unk_ids for i in enc["input_ids"]):
            return ["(characters this slow tokenizer cannot encode)"]
        return []
    found: dict[str, None] = {}
    for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        piece = text[a:b]
        if i in unk_ids and piece and piece != unk_ids[i]:
            for ch in piece:
                found.setdefault(ch)
    return list(found)


def _unk_ids(tokenizer: Any) -> dict[int, str]:
    """{token id: its text} of the tokenizer's unknown token(s), declared or only in the backend model."""
    out: dict[int, str] = {}
    if getattr(tokenizer, "unk_token_id", None) is not None and getattr(tokenizer, "unk_token", None):
        out[int(tokenizer.unk_token_id)] = str(tokenizer.unk_token)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        try:
            model = json.loads(backend.to_str()).get("model", {})
        except (ValueError, AttributeError):
            model = {}
        name = model.get("unk_token")
        if isinstance(name, str) and backend.token_to_id(name) is not None:
            out[int(backend.token_to_id(name))] = name
        elif isinstance(model.get("unk_id"), int) and isinstance(model.get("vocab"), list):
            uid = model["unk_id"]
            out[uid] = str(model["vocab"][uid][0])
    return out


def describe_chars(chars: Sequence[str], limit: int = 5) -> str:
    """'é' (U+00E9), '✓' (U+2713) … for messages."""
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" if len(c) == 1 else c for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


def _checked_tokenizer(path: Path, where: str) -> Any:
    """The directory's tokenizer (`_load_tokenizer`), or a one-line CritwinError when it has none or an
    unusable one; `where` names the flag or argument in the message."""
    from transformers import AutoTokenizer

    fix = "save one there with tokenizer.save_pretrained"
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise CritwinError(f"{where} {path} has no tokenizer files; {fix}")
    try:
        tokenizer = _load_tokenizer(path, AutoTokenizer)
    except (OSError, ValueError, TypeError) as exc:
        why = first_line(exc, with_type=False)
        raise CritwinError(f"{where} {path}: no usable tokenizer ({why}); {fix}") from None
    if tokenizer is None or isinstance(tokenizer, bool) or len(tokenizer) < 2:
        raise CritwinError(f"{where} {path}: no usable tokenizer; {fix}")
    return tokenizer


def _load_tokenizer(path: Path, auto_cls):
    """The directory's tokenizer, exactly as saved.

    transformers 5 replaces a generic tokenizer (tokenizer_class TokenizersBackend / PreTrainedTokenizerFast)
    by the model type's own class for some model types (e.g. qwen2), which changes how text is split; a
    directory that declares a generic tokenizer gets that generic tokenizer from its tokenizer.json.
    """
    import json

    from transformers import PreTrainedTokenizerFast

    config_file = path / "tokenizer_config.json"
    if config_file.is_file() and (path / "tokenizer.json").is_file():
        try:
            declared = json.loads(config_file.read_text()).get("tokenizer_class")
        except (OSError, ValueError):
            declared = None
        if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return auto_cls.from_pretrained(path, local_files_only=True)


def encode_prompt(
    tokenizer: Any, prompt: Prompt, *, chat: bool, system_prompt: str | None = None
) -> tuple[tuple[int, ...], str]:
    """Token ids and text a model sees for `prompt` (its chat template with a generation prompt if `chat`).

    Needs only the tokenizer, so that prompt lengths can be checked against the context before the
    weights load; `HFSampler.encode_prompt` is this with the sampler's settings.
    """
    tok = tokenizer
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
        if not all("role" in m and "content" in m for m in messages):
            raise CritwinError("prompt: each chat message needs 'role' and 'content'")
    if chat:
        if system_prompt is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}, *messages]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        if not isinstance(prompt, str):
            raise CritwinError(
                "prompt: a list of chat messages needs a tokenizer with a chat template; "
                "pass a plain string prompt instead"
            )
        text = prompt if system_prompt is None else f"{system_prompt}\n{prompt}"
        ids = tok(text)["input_ids"]
    if len(ids) == 0:
        raise CritwinError("prompt: empty after tokenization; give a non-empty prompt")
    return tuple(int(i) for i in ids), text


def encode_text(tokenizer: Any, text: str) -> tuple[int, ...]:
    """Token ids of `text` tokenized alone, without special tokens."""
    return tuple(int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_with_offsets(tokenizer: Any, text: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Token ids of `text` (no special tokens) and the [start, end) characters each token covers, from the
    fast tokenizer's offset mapping."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError) as err:
        raise CritwinError(
            "tokenizer: token offsets need a fast tokenizer (offset mapping); save the model with its "
            "tokenizer.json, or cut in characters"
        ) from err
    ids = tuple(int(i) for i in enc["input_ids"])
    return ids, tuple((int(a), int(b)) for a, b in enc["offset_mapping"])


def render_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False
) -> str:
    """The text of a chat under the tokenizer's chat template (a one-line CritwinError when it has none or
    the template fails to render)."""
    if not getattr(tokenizer, "chat_template", None):
        raise CritwinError("tokenizer has no chat template, so chats cannot be rendered; set one "
                           "(tokenizer.chat_template = ...) or use plain prompts")
    try:
        return tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except Exception as err:  # jinja errors of user templates: report on one line
        raise CritwinError(f"chat template failed to render ({type(err).__name__}: {err}); fix the "
                           "template") from err


def _replace_settings(settings: SamplingSettings, overrides: Mapping[str, Any]) -> SamplingSettings:
    """`settings` with some fields replaced; an unknown name is a CritwinError listing the fields."""
    names = [f.name for f in dataclasses.fields(SamplingSettings)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise CritwinError(f"sampling settings: {unknown[0]!r} is not one; use {', '.join(names)}")
    return dataclasses.replace(settings, **overrides)


def _seed_from(rng: np.random.Generator | int | None) -> int:
    if rng is None:
        return 0
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**62))
    return int(rng)


# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One ending to draw: keep the first `n_keep` tokens of sequence `seq` of the call, add <= `max_new`
    tokens.

    `stop_context` is how many kept tokens just before the cut stop strings may span (0: only new text).
    """

    seq: int
    n_keep: int
    max_new: int
    stop_context: int = 0


class TokenizedLM:
    """The engine-independent half of an `LMSampler` with a local tokenizer; x is a `Response`, t = response
    tokens removed from its end.

    Sampling settings (temperature, top_p, top_k, max_new_tokens, stop_strings, eos) apply to original
    responses and to resampled endings alike. `max_new_tokens` caps the whole response: an ending after a
    cut keeping k tokens may add max_new_tokens - k tokens, so resampled responses follow exactly the law
    of the original ones (`budget="continuation"` gives every ending max_new_tokens instead).
    `chat`: None uses the tokenizer's chat template when it has one, True requires it, False never uses it.

    Subclasses implement `_continue`, `score`, `vocab_size`, `model_name` and `context_length`.
    """

    time_unit = "tokens"

    def __init__(
        self,
        tokenizer: Any,
        *,
        temperature: float = 0.6,
        top_p: float = 0.9,
        top_k: int = 0,
        max_new_tokens: int = 2048,
        stop_strings: Sequence[str] = (),
        eos_token_ids: Sequence[int] = (),
        chat: bool | None = None,
        system_prompt: str | None = None,
        budget: str = "response",
        prompt: Prompt | None = None,
    ):
        self.tokenizer = tokenizer
        self.settings = SamplingSettings(
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            max_new_tokens=int(max_new_tokens),
            eos_token_ids=tuple(int(i) for i in eos_token_ids),
            stop_strings=tuple(stop_strings),
        )
        if chat is True and not getattr(tokenizer, "chat_template", None):
            raise CritwinError(
                "chat=True but the tokenizer has no chat template; add one "
                "(tokenizer.chat_template = ...) or use plain prompts (chat=False)"
            )
        self.chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else bool(chat)
        self.system_prompt = system_prompt
        if budget not in ("response", "continuation"):
            raise CritwinError(f"budget={budget!r}: use 'response' or 'continuation'")
        self.budget = budget
        self.prompt = prompt

    # -- what the engine says about its model ------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids the model scores (ids 0 … vocab_size − 1)."""
        raise NotImplementedError

    @property
    def t_max(self) -> float:
        """The longest response the settings allow, in tokens."""
        return float(self.settings.max_new_tokens)

    engine_name = "lm"
    """The registry kind of this engine ("hf", "vllm", "openai")."""

    def engine_info(self) -> dict[str, Any]:
        """What draws the samples, for a run's engines.jsonl: engine, its version, the model, the sampling
        settings, and the engine's own options and counters (`_engine_extra`). JSON-able; no secrets."""
        return {
            "engine": self.engine_name,
            "model": self.model_name,
            "sampling": dataclasses.asdict(self.settings),
            "budget": self.budget,
            "chat": self.chat,
            **self._engine_extra(),
        }

    def _engine_extra(self) -> dict[str, Any]:
        return {}

    # -- derived samplers ---------------------------------------------------------------------------------

    def with_prompt(self, prompt: Prompt) -> TokenizedLM:
        """A copy bound to `prompt`, so that `sample(n, rng)` draws responses to it."""
        other = copy.copy(self)
        other.prompt = prompt
        return other

    def with_settings(self, **overrides: Any) -> TokenizedLM:
        """A copy with sampling settings (fields of `SamplingSettings`) and/or `budget` replaced."""
        other = copy.copy(self)
        budget = overrides.pop("budget", self.budget)
        if budget not in ("response", "continuation"):
            raise CritwinError(f"budget={budget!r}: use 'response' or 'continuation'")
        other.budget = budget
        other.settings = _replace_settings(self.settings, overrides)
        return other

    # -- prompts and texts --------------------------------------------------------------------------------

    def encode_prompt(self, prompt: Prompt) -> tuple[tuple[int, ...], str]:
        """Token ids and text the model sees for `prompt` (chat template with a generation prompt if chat)."""
        return encode_prompt(self.tokenizer, prompt, chat=self.chat, system_prompt=self.system_prompt)

    def encode_text(self, text: str) -> tuple[int, ...]:
        """Token ids of `text` tokenized alone, without special tokens (as a response is)."""
        return encode_text(self.tokenizer, text)

    def encode_with_offsets(self, text: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        """`encode_text(text)` and the [start, end) characters of `text` each token covers."""
        return encode_with_offsets(self.tokenizer, text)

    def token_ends(self, text: str) -> list[int]:
        """Characters of `text` at which its tokens end, one per token."""
        return [b for _, b in self.encode_with_offsets(text)[1]]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def char_offsets(self, ids: Sequence[int]) -> list[int]:
        """offsets[k] = characters of the decoded text of the first k tokens (k = 0 … len(ids))."""
        ids = list(ids)
        return [len(self.decode(ids[:k])) for k in range(len(ids) + 1)]

    def render_chat(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False
    ) -> str:
        """The text of a chat under the tokenizer's chat template."""
        return render_chat(self.tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def response_from_text(self, prompt: Prompt, response_text: str) -> Response:
        """A `Response` for a response given as text (e.g. read from a file), tokenized without specials."""
        prompt_ids, prompt_text = self.encode_prompt(prompt)
        ids = self.encode_text(response_text)
        return Response(prompt_ids, ids, prompt_text, response_text, None)

    # -- scoring ------------------------------------------------------------------------------------------

    def _score_inputs(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]
    ) -> tuple[list[tuple[int, ...]], list[int]]:
        """Check `score`'s arguments; returns the sequences prompt + completion and where each completion
        starts."""
        if isinstance(prompts, str | bytes) or isinstance(completions, str | bytes):
            raise CritwinError("score: pass lists of token-id lists (e.g. [prompt_ids], [completion_ids])")
        if len(prompts) != len(completions):
            raise CritwinError(
                f"score: got {len(prompts)} prompts for {len(completions)} completions; give one each"
            )
        vocab = self.vocab_size
        seqs, starts = [], []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            p, c = tuple(int(v) for v in p), tuple(int(v) for v in c)
            if not p:
                raise CritwinError(
                    f"score: prompt {i} is empty; the first token has no log-probability, so give at least "
                    "one prompt token"
                )
            if min(p + c) < 0 or max(p + c) >= vocab:
                raise CritwinError(
                    f"score: sequence {i} has token ids outside the model's vocabulary (0..{vocab - 1}); "
                    "tokenize it with this model's tokenizer"
                )
            seqs.append(p + c)
            starts.append(len(p))
        return seqs, starts

    # -- original responses -------------------------------------------------------------------------------

    def generate_responses(
        self, prompts: Sequence[Prompt], *, seed: np.random.Generator | int | None = 0, **overrides: Any
    ) -> list[Response | Failure]:
        """One sampled response per prompt (repeat a prompt for several), all drawn together.

        `overrides` replace sampling settings for this call, e.g. temperature=0.0, max_new_tokens=32 for a
        greedy answer-elicitation turn.
        """
        if isinstance(prompts, str):
            raise CritwinError("prompts: pass a list of prompts, e.g. [prompt]")
        settings = _replace_settings(self.settings, overrides) if overrides else self.settings
        encoded = [self.encode_prompt(p) for p in prompts]
        if not encoded:
            return []
        seqs = [ids for ids, _ in encoded]
        rows = [
            Row(seq=i, n_keep=len(ids), max_new=settings.max_new_tokens, stop_context=0)
            for i, ids in enumerate(seqs)
        ]
        conts = self._continue(seqs, rows, settings, _seed_from(seed))
        out: list[Response | Failure] = []
        for (ids, text), c in zip(encoded, conts, strict=True):
            if isinstance(c, Failure):
                out.append(c)
            else:
                out.append(Response(ids, c.token_ids, text, self.decode(c.token_ids), c.stop_reason))
        return out

    def sample(self, n: int, rng: np.random.Generator) -> list[Response | Failure]:
        """n independent responses to the bound prompt (see `with_prompt`)."""
        if self.prompt is None:
            raise CritwinError(
                f"{type(self).__name__}.sample needs a prompt: use sampler.with_prompt(prompt).sample(n, rng)"
            )
        return self.generate_responses([self.prompt] * int(n), seed=rng)

    # -- forward–reverse ----------------------------------------------------------------------------------

    def forward_reverse(
        self, x: Response, ts: Sequence[float], n: int, rng: np.random.Generator | int | None
    ) -> list[list[Response | Failure]]:
        """For each t, n responses keeping the first len(x) - t response tokens of x, the rest resampled."""
        conts = self.resample(x, ts, n, rng)
        return [[self._join(x, int(t), c) for c in per_t] for t, per_t in zip(ts, conts, strict=True)]

    def resample(
        self, x: Response, ts: Sequence[float], n: int, rng: np.random.Generator | int | None
    ) -> list[list[Continuation | Failure]]:
        """For each t, n sampled continuations (token ids without eos, stop reason) after the cut at t."""
        return self.resample_many([x], [ts], n, rng)[0]

    def resample_many(
        self,
        xs: Sequence[Response],
        ts_per_x: Sequence[Sequence[float]],
        n: int,
        rng: np.random.Generator | int | None,
    ) -> list[list[list[Continuation | Failure]]]:
        """`resample` for several responses at once: all their cuts × n draws go to the engine together."""
        if len(xs) != len(ts_per_x):
            raise CritwinError(
                f"ts_per_x: got {len(ts_per_x)} schedules for {len(xs)} responses; give one each"
            )
        if int(n) < 1:
            raise CritwinError(f"n={n}: draw at least one continuation per t")
        n = int(n)
        rows: list[Row] = []
        for i, (x, ts) in enumerate(zip(xs, ts_per_x, strict=True)):
            self._check_response(x)
            for t in ts:
                kept = x.length - self._check_t(x, t)
                row = Row(i, n_keep=len(x.prompt_ids) + kept, max_new=self._budget(kept), stop_context=kept)
                rows.extend([row] * n)
        seqs = [x.prompt_ids + x.response_ids for x in xs]
        conts = self._continue(seqs, rows, self.settings, _seed_from(rng))
        out, pos = [], 0
        for ts in ts_per_x:
            per_x = []
            for _ in ts:
                per_x.append(conts[pos : pos + n])
                pos += n
            out.append(per_x)
        return out

    def _continue(
        self, seqs: list[tuple[int, ...]], rows: list[Row], settings: SamplingSettings, seed: int
    ) -> list[Continuation | Failure]:
        """One ending per row, after the first row.n_keep tokens of seqs[row.seq], at most row.max_new new
        tokens, drawn with `settings`; rows are i.i.d. given their prefixes and the same seed gives the
        same endings. Equal rows come in runs (n draws of one cut). An ending the engine cannot draw is a
        `Failure` in its slot."""
        raise NotImplementedError

    # -- internals ----------------------------------------------------------------------------------------

    def _join(self, x: Response, t: int, c: Continuation | Failure) -> Response | Failure:
        if isinstance(c, Failure):
            return c
        kept = x.length - t
        ids = x.response_ids[:kept] + c.token_ids
        return Response(x.prompt_ids, ids, x.prompt_text, self.decode(ids), c.stop_reason, kept)

    def _budget(self, kept: int) -> int:
        if self.budget == "continuation":
            return self.settings.max_new_tokens
        return self.settings.max_new_tokens - kept

    def _check_response(self, x: Response) -> None:
        if not isinstance(x, Response):
            raise CritwinError(f"x: expected a Response, got {type(x).__name__}")
        if x.length == 0:
            raise CritwinError(
                "response is empty: there is nothing to cut; generate or pass a non-empty response"
            )
        if len(x.prompt_ids) == 0:
            raise CritwinError("response has an empty prompt: a cut needs at least one prompt token")
        if self.budget == "response" and x.length > self.settings.max_new_tokens:
            raise CritwinError(
                f"response has {x.length} tokens but max_new_tokens={self.settings.max_new_tokens}: "
                "raise max_new_tokens or use budget='continuation'"
            )
        vocab = self.vocab_size
        ids = x.prompt_ids + x.response_ids
        if min(ids) < 0 or max(ids) >= vocab:
            raise CritwinError(
                f"response has token ids outside the model's vocabulary (0..{vocab - 1}); "
                "tokenize it with this model's tokenizer"
            )

    @staticmethod
    def _check_t(x: Response, t: float) -> int:
        try:
            tf = float(t)
        except (TypeError, ValueError):
            tf = float("nan")
        ti = int(round(tf)) if np.isfinite(tf) else -1
        if abs(tf - ti) > 1e-9 or not 0 <= ti <= x.length:
            raise CritwinError(
                f"t={t}: cut positions are whole numbers of tokens removed, 0..{x.length} for this response"
            )
        return ti


def eos_ids_of(tokenizer: Any, *configs: Any) -> list[int]:
    """The end-of-sequence token ids the tokenizer and the given configs (objects or dicts with an
    `eos_token_id`, e.g. a model's generation config) declare, sorted."""
    ids: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None), *configs):
        if src is not None and not isinstance(src, int | list | tuple):
            src = src.get("eos_token_id") if isinstance(src, Mapping) else getattr(src, "eos_token_id", None)
        if src is None:
            continue
        ids.update([int(src)] if isinstance(src, int) else [int(i) for i in src])
    return sorted(ids)
