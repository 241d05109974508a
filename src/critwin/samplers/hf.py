"""Hugging Face transformers backend: the forward–reverse experiment on a local causal LM.

A sample x is a `Response` (prompt and response token ids plus their texts). The forward process deletes
the last t response tokens (time_unit "tokens", t = 0 keeps the whole response, t = len(response) keeps
only the prompt); the reverse process samples a new ending with the same model and sampling settings.
All cuts × n draws of one call share one prefill of prompt + response and are decoded together in large
batches (see `critwin.samplers._kv`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critwin.errors import CritwinError, first_line
from critwin.samplers import _kv
from critwin.samplers._kv import PrefixBank, StopStrings
from critwin.samplers.lm import Continuation, Prompt, Response, SamplingSettings
from critwin.samplers.tokenized import (  # noqa: F401  (the tokenizer-side helpers, also reached from here)
    ModelInfo,
    Row,
    TokenizedLM,
    _check_causal,
    _check_model_dir,
    _checked_tokenizer,
    check_weight_files,
    context_length,
    describe_chars,
    encode_prompt,
    encode_text,
    encode_with_offsets,
    eos_ids_of,
    inspect_model,
    render_chat,
    unknown_chars,
)
from critwin.types import Failure

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


# ---------------------------------------------------------------------------------------------------------
# Loading


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" → cuda when available, else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CritwinError(f"device={device}: CUDA is not available here; use device='cpu' or 'auto'")
    return dev


def load_causal_lm(path: str | Path, dtype: str | torch.dtype = "auto", device: str | torch.device = "auto"):
    """Load a local causal LM directory (config, weights, tokenizer) offline; returns (model, tokenizer).

    dtype "auto" means float32 on CPU and the checkpoint's dtype on CUDA. The model is in eval mode.
    Missing, truncated or corrupt weight files are a CritwinError naming the file (checked from the
    safetensors headers before any tensor is read).
    """
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    _check_model_dir(path, "model:")
    dev = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, dev)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        why = first_line(exc, with_type=False)
        raise CritwinError(
            f"model: cannot read {path}/config.json ({why}); fix or re-save it"
        ) from None
    _check_causal(config.to_dict(), path, "model:")
    check_weight_files(path, "model:")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise CritwinError(
                f"model: {path} is a {config.model_type} model, not a causal LM; pass a "
                "decoder-only language model directory"
            ) from None
        why = first_line(exc, with_type=False)
        raise CritwinError(f"model: cannot load {path} ({why})") from None
    except (OSError, SafetensorError) as exc:
        # A damaged file the header check cannot see (e.g. a corrupt sharded index entry) lands here.
        why = first_line(exc, with_type=False)
        raise CritwinError(
            f"model: cannot load weights from {path} ({why}); re-save or re-copy the model"
        ) from None
    tokenizer = _checked_tokenizer(path, "model:")
    model.to(dev)
    model.eval()
    return model, tokenizer



def _resolve_dtype(dtype: str | torch.dtype, device: torch.device):
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        # bf16/fp16 matmuls are slow and inexact on CPU; on GPU use what the checkpoint was saved in.
        return torch.float32 if device.type == "cpu" else "auto"
    if dtype not in _DTYPES:
        raise CritwinError(f"dtype={dtype!r}: use one of auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]




def token_logprobs(
    model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int = 16
) -> list[np.ndarray]:
    """Raw log-softmax (temperature 1) of every token given the tokens before it:
    out[i][j] = log p(x_j | x_<j) for j >= 1, and NaN for j = 0 (nothing conditions the first token).
    Batched with right padding, longest sequences first.
    """
    device = next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    with torch.inference_mode():
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            width = max(len(sequences[i]) for i in idx)
            ids = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : len(sequences[i])] = torch.tensor(list(sequences[i]), dtype=torch.long)
                mask[r, : len(sequences[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
            tok = torch.gather(logp, 2, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu().numpy()
            for r, i in enumerate(idx):
                n = len(sequences[i])
                out[i] = np.concatenate([[np.nan], tok[r, : n - 1].astype(np.float64)])
    return [o if o is not None else np.zeros(0) for o in out]


# The sampler


class HFSampler(TokenizedLM):
    """`LMSampler` over a local Hugging Face causal LM; x is a `Response`, t = response tokens removed.

    Settings, budget and chat are those of `TokenizedLM`.
    `batch_size`: rows decoded together (halved automatically on out-of-memory).
    `prefix_attention`: "auto" lets the draws of one response read its prefix KV in place (one product per
    layer for all cuts, see `critwin.samplers._kv`) when the model is a plain full-attention decoder, and
    copies the prefix per row ("gather") otherwise; both are exact.
    `cpu_threads`: torch intra-op threads while this sampler computes: a number, None (leave torch's
    setting) or "auto" (the default: `choose_cpu_threads` measures, on first use, whether one thread or
    torch's default is faster for this model; small models on a busy CPU run several times faster on one
    thread, since each tiny op would otherwise wait for the others). Results never depend on it.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        temperature: float = 0.6,
        top_p: float = 0.9,
        top_k: int = 0,
        max_new_tokens: int = 2048,
        stop_strings: Sequence[str] = (),
        eos_token_ids: Sequence[int] | None = None,
        chat: bool | None = None,
        system_prompt: str | None = None,
        batch_size: int = 256,
        budget: str = "response",
        prefix_attention: str = "auto",
        cpu_threads: int | str | None = "auto",
        prompt: Prompt | None = None,
    ):
        self.model = model
        if eos_token_ids is None:
            eos_token_ids = eos_ids_of(tokenizer, getattr(model, "generation_config", None), model.config)
        super().__init__(
            tokenizer,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            stop_strings=stop_strings,
            eos_token_ids=eos_token_ids,
            chat=chat,
            system_prompt=system_prompt,
            budget=budget,
            prompt=prompt,
        )
        if batch_size < 1:
            raise CritwinError(f"batch_size={batch_size}: use a positive integer")
        self.batch_size = int(batch_size)
        if prefix_attention not in ("auto", "cascade", "gather"):
            raise CritwinError(f"prefix_attention={prefix_attention!r}: use 'auto', 'cascade' or 'gather'")
        if prefix_attention == "cascade" and not _kv.cascade_supported(model):
            raise CritwinError(
                f"prefix_attention='cascade': not supported for {model.config.model_type} models; "
                "use 'auto' or 'gather'"
            )
        self.prefix_attention = prefix_attention
        if cpu_threads not in (None, "auto") and (
            isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int) or cpu_threads < 1
        ):
            raise CritwinError(f"cpu_threads={cpu_threads!r}: use a positive integer, 'auto' or None "
                               "(--threads N on the command line)")
        self._cpu_threads = cpu_threads
        self._stop_cache: dict[tuple[str, ...], StopStrings] = {}
        self._bank_memo: tuple[tuple, PrefixBank] | None = None
        self.fault_hook = None  # tests inject out-of-memory errors through this

    @property
    def cpu_threads(self) -> int | None:
        """The torch intra-op thread count used while computing (None: torch's setting), chosen by
        measurement on first use when the sampler was built with cpu_threads="auto"."""
        if self._cpu_threads == "auto":
            self._cpu_threads = choose_cpu_threads(self.model)
        return self._cpu_threads

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: str = "auto", device: str = "auto", **kwargs
    ) -> HFSampler:
        """Load a local model directory (see `load_causal_lm`) and wrap it."""
        model, tokenizer = load_causal_lm(path, dtype=dtype, device=device)
        return cls(model, tokenizer, **kwargs)

    engine_name = "hf"

    def _engine_extra(self) -> dict[str, Any]:
        import transformers

        return {
            "version": transformers.__version__,
            "torch": torch.__version__,
            "device": str(next(self.model.parameters()).device),
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
            "prefix_attention": self.prefix_attention,
        }

    @property
    def vocab_size(self) -> int:
        """Rows of the model's output embedding (the ids it scores)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def model_name(self) -> str:
        """The model's directory or hub id as transformers recorded it ("in-memory model" when none)."""
        return str(getattr(getattr(self.model, "config", None), "_name_or_path", "") or "in-memory model")

    @property
    def context_length(self) -> int | None:
        """The most tokens one sequence may hold, from the model's config (None when it names none)."""
        config = getattr(self.model, "config", None)
        return None if config is None else context_length(config.to_dict())

    def score(
        self,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        *,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """out[i][j] = log p(completions[i][j] | prompts[i] + completions[i][:j]): the raw log-softmax at
        temperature 1 of one forward pass over prompt + completion (right-padded batches of `batch_size`
        sequences, default the sampler's, longest first; see `token_logprobs`)."""
        size = self.batch_size if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise CritwinError(f"batch_size={batch_size!r}: use a positive integer")
        seqs, starts = self._score_inputs(prompts, completions)
        if not seqs:
            return []
        with _torch_threads(self.cpu_threads):
            lps = token_logprobs(self.model, seqs, batch_size=size)
        return [lp[a:] for lp, a in zip(lps, starts, strict=True)]

    def next_token_logits(self, x: Response, ts: Sequence[float]) -> torch.Tensor:
        """Raw next-token logits (float32, (len(ts), vocab)) after each cut, through the shared cache."""
        self._check_response(x)
        p = len(x.prompt_ids)
        rows = [Row(seq=0, n_keep=p + x.length - self._check_t(x, t), max_new=1) for t in ts]
        bank = self._bank([x.prompt_ids + x.response_ids])
        return _kv.next_token_logits(self.model, bank, rows, mode=self.prefix_attention)

    # -- internals ----------------------------------------------------------------------------------------

    def _continue(
        self, seqs: list[tuple[int, ...]], rows: list[Row], settings: SamplingSettings, seed: int
    ) -> list[Continuation | Failure]:
        """All rows decoded in shared batches after one prefill of `seqs` (see `critwin.samplers._kv`)."""
        bank = self._bank(seqs)
        with _torch_threads(self.cpu_threads):
            res = _kv.decode_rows(
                self.model,
                bank,
                rows,
                settings,
                seed=seed,
                batch_size=self.batch_size,
                stop=self._stop(settings),
                fault_hook=self.fault_hook,
                mode=self.prefix_attention,
            )
        return [Failure(r.reason) if isinstance(r, _kv.DecodeFailure) else r for r in res]

    def _bank(self, seqs: list[tuple[int, ...]]) -> PrefixBank:
        key = tuple(seqs)
        if self._bank_memo is not None and self._bank_memo[0] == key:
            return self._bank_memo[1]
        with _torch_threads(self.cpu_threads):
            bank = PrefixBank.build(self.model, seqs)
        self._bank_memo = (key, bank)  # adaptive searches call again on the same response: reuse the prefill
        return bank

    def _stop(self, settings: SamplingSettings) -> StopStrings | None:
        if not settings.stop_strings:
            return None
        if settings.stop_strings not in self._stop_cache:
            self._stop_cache[settings.stop_strings] = StopStrings(
                settings.stop_strings,
                lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False),
                self.vocab_size,
            )
        return self._stop_cache[settings.stop_strings]



BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "reasoning_model"
"""The small model shipped with critwin (a character-level arithmetic reasoner), so that
`load_sampler("hf")` works offline."""


def from_registry(path_or_url: str | Path | None = None, **settings: Any) -> HFSampler:
    """The registry's "hf" factory: `HFSampler.from_pretrained(path, **settings)` for a local model
    directory (default `BUNDLED_MODEL`); settings are dtype, device and `HFSampler`'s keyword arguments."""
    import inspect

    allowed = {"dtype", "device"} | {
        name for name, p in inspect.signature(HFSampler.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise CritwinError(f"sampler 'hf': unknown setting {unknown[0]!r}; use {', '.join(sorted(allowed))}")
    path = BUNDLED_MODEL if path_or_url is None else Path(path_or_url)
    return HFSampler.from_pretrained(path, **settings)


TINY_MODEL_PARAMS = 2_000_000
"""Below this many parameters one thread is used without measuring: every op is too small to split."""


def choose_cpu_threads(model: Any, repeats: int = 3) -> int | None:
    """One thread or torch's default for `model` on the CPU, whichever runs a decode-shaped forward (16 rows
    of one new token) faster, best of `repeats`; None (torch's setting) off the CPU or when torch already
    uses one thread. Measured on these 2-core machines under load: the bundled 220k-parameter model's scan
    took 33-84 s with torch's default threads and ~10 s with one, so models below `TINY_MODEL_PARAMS` take
    one thread without measuring."""
    import time

    if getattr(model, "device", torch.device("cpu")).type != "cpu":
        return None
    default = torch.get_num_threads()
    if default <= 1:
        return None
    if sum(p.numel() for p in model.parameters()) < TINY_MODEL_PARAMS:
        return 1
    ids = torch.zeros((16, 1), dtype=torch.long)
    best: dict[int, float] = {}
    with torch.inference_mode():
        for n in (1, default):
            with _torch_threads(n):
                model(input_ids=ids)  # warm-up
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model(input_ids=ids)
                    times.append(time.perf_counter() - start)
            best[n] = min(times)
    return 1 if best[1] <= best[default] else default


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the block with `n` torch intra-op threads (None: unchanged), restoring the setting after."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
