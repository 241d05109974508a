"""Shared-prefix decoding engine for Hugging Face causal LMs (token ids only; no tokenizer here).

The forward–reverse experiment on an LLM keeps a prefix of a sequence and samples continuations. Every
prefix of a sequence is a prefix of that sequence's KV cache, so we prefill each sequence once into a
`PrefixBank` and build the cache of any cut by gathering rows of the bank. No `generate` call is involved,
which sidesteps the transformers 5.x pitfall (a cache that already holds the whole prompt makes `generate`
re-process it and return wrong logits): for a cut keeping c tokens we gather the KV of positions 0..c-2
and *feed* token c-1.

Rows of different cut lengths share one decode batch: each row's prefix is right-aligned in the cache
(left padding, masked out) and carries its own position ids, so slot distance equals position distance and
RoPE / sliding windows see the true positions. Rows that finish are dropped from the batch (the cache is
compacted), so short continuations do not cost steps of the long ones. The cache is preallocated for the
whole decode, so a step writes one slot instead of re-concatenating the cache.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from critwin.errors import CritwinError
from critwin.samplers.lm import Continuation, SamplingSettings
from critwin.samplers.tokenized import Row

# Top-p by rejection: each round accepts a row with probability = its nucleus mass (>= top_p), so after 16
# rounds a row is left with probability <= (1 - top_p)^16; those few rows are drawn from the sorted nucleus.
_REJECTION_ROUNDS = 16


@dataclass(frozen=True)
class DecodeFailure:
    """A row the engine could not decode (e.g. out of memory at batch size 1)."""

    reason: str


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` is an out-of-memory error from CUDA or the CPU allocator."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------
# Prefix bank


class PrefixBank:
    """Key/value states of whole sequences, prefilled once; any prefix of a sequence can be gathered from it.

    For sequence i the bank stores positions 0..len_i-2 (all but the last token): a cut keeping c tokens
    needs the KV of positions 0..c-2 and feeds token c-1. Per layer the states are stored as (T, H, D) with
    the sequences concatenated along T.
    """

    def __init__(
        self,
        seqs: list[tuple[int, ...]],
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        offsets: list[int],
        failed: dict[int, str],
    ):
        self.seqs = seqs
        self.keys = keys
        self.values = values
        self.offsets = offsets
        self.failed = failed

    @classmethod
    @torch.inference_mode()
    def build(cls, model, seqs: Sequence[Sequence[int]], *, max_tokens: int = 32768) -> PrefixBank:
        """Prefill `seqs` (each of length >= 1) in right-padded batches of about `max_tokens` tokens.

        Right padding needs no attention mask: a causal model never lets a real token attend to the padding
        after it. A sequence that does not fit in memory on its own is recorded in `failed`.
        """
        seqs = [tuple(int(t) for t in s) for s in seqs]
        device = model.device
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        per_seq: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        failed: dict[int, str] = {}
        budget = max(1, max_tokens)
        start = 0
        while start < len(order):
            width = max(len(seqs[order[start]]) - 1, 1)
            n = max(1, min(len(order) - start, budget // width))
            group = order[start : start + n]
            try:
                states = _prefill_group(model, [seqs[i] for i in group], device)
            except Exception as exc:  # noqa: BLE001 - only OOM is retried, everything else re-raised
                if not is_oom(exc):
                    raise
                _free_memory(device)
                if n > 1:
                    budget = max(1, (n // 2) * width)
                    continue
                failed[group[0]] = "out of memory while prefilling the sequence"
                start += 1
                continue
            for i, st in zip(group, states, strict=True):
                per_seq[i] = st
            start += n
        keys, values, offsets = [], [], []
        n_layers = len(next(iter(per_seq.values()))) if per_seq else 0
        total = 0
        for i in range(len(seqs)):
            offsets.append(total)
            total += len(seqs[i]) - 1 if i in per_seq else 0
        for layer in range(n_layers):
            ks = [per_seq[i][layer][0] for i in range(len(seqs)) if i in per_seq]
            vs = [per_seq[i][layer][1] for i in range(len(seqs)) if i in per_seq]
            keys.append(torch.cat(ks, dim=0))
            values.append(torch.cat(vs, dim=0))
        return cls(seqs, keys, values, offsets, failed)

    @property
    def num_layers(self) -> int:
        return len(self.keys)


_CACHE_KWARG: dict[type, str] = {}


def _cache_kwarg(model) -> str:
    """Name of `model.forward`'s cache argument: "cache" in recent transformers, "past_key_values" before."""
    name = _CACHE_KWARG.get(type(model))
    if name is None:
        params = inspect.signature(model.forward).parameters
        name = _CACHE_KWARG[type(model)] = "cache" if "cache" in params else "past_key_values"
    return name


def _prefill_group(
    model, seqs: list[tuple[int, ...]], device
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """KV states (T_i, H, D) per layer of positions 0..len_i-2 of each sequence, one right-padded forward."""
    lens = [len(s) - 1 for s in seqs]
    width = max(lens)
    out: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in seqs]
    if width == 0:
        return [_empty_states(model, device) for _ in seqs]
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : lens[b]] = torch.tensor(s[:-1], dtype=torch.long)
    cache = DynamicCache()  # plain full layers, also for sliding-window models (we need every position)
    model(input_ids=ids.to(device), use_cache=True, logits_to_keep=1, **{_cache_kwarg(model): cache})
    if not cache.layers:
        raise CritwinError(
            f"model {type(model).__name__} did not fill the KV cache it was given; "
            "shared-prefix resampling needs a standard transformers decoder"
        )
    for layer in cache.layers:
        if (
            not isinstance(layer, DynamicLayer)
            or layer.keys is None
            or layer.keys.dim() != 4
            or layer.keys.shape[-2] != width
        ):
            raise CritwinError(
                f"model {type(model).__name__} does not use a plain per-layer KV cache; shared-prefix "
                "resampling supports standard decoder-only attention models"
            )
        k = layer.keys.transpose(1, 2)  # (B, T, H, D)
        v = layer.values.transpose(1, 2)
        for b in range(len(seqs)):
            out[b].append((k[b, : lens[b]].contiguous(), v[b, : lens[b]].contiguous()))
    return out


def _empty_states(model, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # A length-1 sequence has no positions to cache; run one token to learn the per-layer shapes.
    cache = DynamicCache()
    model(
        input_ids=torch.zeros((1, 1), dtype=torch.long, device=device),
        use_cache=True,
        logits_to_keep=1,
        **{_cache_kwarg(model): cache},
    )
    return [
        (layer.keys.transpose(1, 2)[0, :0].contiguous(), layer.values.transpose(1, 2)[0, :0].contiguous())
        for layer in cache.layers
    ]


# ---------------------------------------------------------------------------------------------------------
# Preallocated decode cache


class _GrowingLayer(DynamicLayer):
    """A cache layer over a buffer preallocated for the whole decode: a step writes one slot (no concat).

    The buffer is (R, H, capacity, D) with room for R batch rows, of which the first `rows` are in use;
    the filled part is exposed as (rows, H, n, D) views, whose last two dimensions are contiguous per head,
    as batched matrix products want.
    """

    def __init__(self, buf_k: torch.Tensor, buf_v: torch.Tensor, filled: int, rows: int):
        super().__init__()
        self.buf_k, self.buf_v, self.n, self.rows = buf_k, buf_v, filled, rows
        self.device = buf_k.device
        self.is_initialized = True
        self._views()

    def _views(self) -> None:
        self.keys = self.buf_k[: self.rows, :, : self.n]
        self.values = self.buf_v[: self.rows, :, : self.n]

    def update(self, key_states, value_states, *args, **kwargs):
        q = key_states.shape[-2]
        self.buf_k[: self.rows, :, self.n : self.n + q] = key_states
        self.buf_v[: self.rows, :, self.n : self.n + q] = value_states
        self.n += q
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n

    def select(self, indices: torch.Tensor, drop_front: int) -> None:
        """Keep batch rows `indices` and drop the first `drop_front` slots (padding of every kept row).

        In place: the kept rows' filled slots move to the front of the buffer through one compact
        temporary (a fresh buffer would cost page faults on every compaction).
        """
        k, filled = len(indices), self.n - drop_front
        for buf in (self.buf_k, self.buf_v):
            buf[:k, :, :filled] = buf[:, :, drop_front : self.n].index_select(0, indices)
        self.n, self.rows = filled, k
        self._views()

    def move(self, dst: torch.Tensor, src: torch.Tensor, rows: int) -> None:
        """Copy rows `src` into rows `dst` (filled slots only), then keep the first `rows` rows: dropping
        rows by filling their places from the end copies only the rows that move."""
        if len(dst):
            for buf in (self.buf_k, self.buf_v):
                buf[dst, :, : self.n] = buf[src, :, : self.n]  # the gather copies before it writes
        self.rows = rows
        self._views()

    def append(self, parents: torch.Tensor) -> None:
        """Add copies of rows `parents` after the rows in use (only their filled slots are copied)."""
        end = self.rows + len(parents)
        if end > self.buf_k.shape[0]:  # out of row room: grow the buffers by at least half
            extra = max(end, int(1.5 * self.buf_k.shape[0])) - self.buf_k.shape[0]
            self.buf_k = torch.cat([self.buf_k, self.buf_k.new_empty((extra, *self.buf_k.shape[1:]))])
            self.buf_v = torch.cat([self.buf_v, self.buf_v.new_empty((extra, *self.buf_v.shape[1:]))])
        self.buf_k[self.rows : end, :, : self.n] = self.buf_k[parents, :, : self.n]
        self.buf_v[self.rows : end, :, : self.n] = self.buf_v[parents, :, : self.n]
        self.rows = end
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.select(indices, 0)


class _GrowingCache(DynamicCache):
    def __init__(self, layers: list[_GrowingLayer]):
        super().__init__()
        self.layers = layers
        self.layer_class_to_replicate = None

    def select(self, indices: torch.Tensor, drop_front: int) -> None:
        if drop_front == 0:  # copy only the rows whose place changes
            dst = (indices != torch.arange(len(indices), device=indices.device)).nonzero().squeeze(1)
            src = indices[dst]
            for layer in self.layers:
                layer.move(dst, src, len(indices))
            return
        for layer in self.layers:
            layer.select(indices, drop_front)

    def append(self, parents: torch.Tensor) -> None:
        for layer in self.layers:
            layer.append(parents)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.select(indices, 0)


# ---------------------------------------------------------------------------------------------------------
# Sampling


def sample_tokens(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None):
    """Draw one token per row from `logits` (B, V) with temperature, then top-k, then top-p (as `generate`).

    Top-p keeps the most likely tokens down to the first one at which the mass of the more likely
    tokens reaches `top_p` (token i is kept when the mass of tokens with larger probability is < top_p),
    renormalised.
    It is sampled without sorting the vocabulary (sorting dominates the step time of small models on CPU):
    draw from the temperature law by inverse CDF and accept the draw if it lies in the nucleus, else draw
    again (rejection sampling is exact; the acceptance rate is the nucleus mass, >= top_p). Rows still
    rejected after `_REJECTION_ROUNDS` rounds are drawn from the sorted nucleus. The same generator state
    gives the same tokens.
    """
    if settings.temperature == 0.0:
        return logits.argmax(dim=-1)
    scores = logits.float() / settings.temperature
    vocab = scores.shape[-1]
    if 0 < settings.top_k < vocab:
        kth = torch.topk(scores, settings.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    cdf = probs.cumsum(dim=-1)
    rows = probs.shape[0]
    out = torch.empty(rows, dtype=torch.long, device=probs.device)
    pending = torch.arange(rows, device=probs.device)
    for round_ in range(_REJECTION_ROUNDS if settings.top_p < 1.0 else 1):
        u = torch.rand((len(pending), 1), generator=generator, device=probs.device, dtype=torch.float32)
        c = cdf if round_ == 0 else cdf[pending]
        tok = torch.searchsorted(c, u * c[:, -1:], right=True).clamp_max(vocab - 1)
        if settings.top_p >= 1.0:
            return tok.squeeze(1)
        p = probs if round_ == 0 else probs[pending]
        p_tok = p.gather(1, tok)
        above = torch.where(p > p_tok, p, 0.0).sum(dim=-1)  # mass of the strictly more likely tokens
        ok = above < settings.top_p
        out[pending[ok]] = tok.squeeze(1)[ok]
        pending = pending[~ok]
        if len(pending) == 0:
            return out
    v_full, i_full = torch.sort(probs[pending], dim=-1, descending=True)
    u = torch.rand((len(pending), 1), generator=generator, device=probs.device, dtype=torch.float32)
    out[pending] = _nucleus_pick(v_full, i_full, u, settings.top_p)
    return out


def _nucleus_pick(vals: torch.Tensor, idx: torch.Tensor, u: torch.Tensor, top_p: float) -> torch.Tensor:
    csum = vals.cumsum(dim=-1)
    weights = vals * ((csum - vals) < top_p)
    cdf = weights.cumsum(dim=-1)
    j = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(vals.shape[-1] - 1)
    return idx.gather(1, j).squeeze(1)


# ---------------------------------------------------------------------------------------------------------
# Stop strings


class StopStrings:
    """Detects when a row's text has just come to contain one of the stop strings.

    Only rows whose new token can end a stop string are decoded (a per-vocabulary flag computed once), and
    only a short window of tail tokens, so the check costs little per step.
    """

    def __init__(self, stop_strings: Sequence[str], decode: Callable[[list[int]], str], vocab_size: int):
        self.stop_strings = tuple(stop_strings)
        self.decode = decode
        longest = max(len(s) for s in self.stop_strings)
        # A stop string of L characters spans at most 4L byte-level tokens (UTF-8 uses <= 4 bytes a char).
        self.window = 4 * longest + 1
        last_chars = {s[-1] for s in self.stop_strings}
        flags = []
        for i in range(vocab_size):
            text = decode([i])
            flags.append(text == "" or "\ufffd" in text or any(c in text for c in last_chars))
        self.candidate = torch.tensor(flags, dtype=torch.bool)

    def hit(self, tokens: list[int], n_context: int) -> bool:
        """Whether the last token of `tokens` completes a stop string (the first n_context are old text)."""
        tail = tokens[-self.window - 1 :]
        if len(tail) - 1 <= 0 or len(tokens) <= n_context:
            return False
        now = self.decode(tail)
        before = self.decode(tail[:-1])
        return any(s in now and s not in before for s in self.stop_strings)


# ---------------------------------------------------------------------------------------------------------
# Decoding


def decode_rows(
    model,
    bank: PrefixBank,
    rows: Sequence[Row],
    settings: SamplingSettings,
    *,
    seed: int,
    batch_size: int = 256,
    stop: StopStrings | None = None,
    fault_hook: Callable[[int], None] | None = None,
    mode: str = "auto",
) -> list[Continuation | DecodeFailure]:
    """Sample the continuation of every row; all rows share batches of up to `batch_size`.

    Rows are decoded longest-prefix first in chunks; on out-of-memory the chunk is retried with half the
    batch size (finished chunks are kept); a row that fails alone becomes a `DecodeFailure`. The random
    stream of chunk j is seeded from (seed, j), so the same seed and batch size give the same tokens.
    `fault_hook(batch_rows)` is called before each chunk (tests inject failures through it).
    """
    results: list[Continuation | DecodeFailure | None] = [None] * len(rows)
    pending = []
    for i, row in enumerate(rows):
        if row.seq in bank.failed:
            results[i] = DecodeFailure(bank.failed[row.seq])
        elif not 1 <= row.n_keep <= len(bank.seqs[row.seq]):
            raise CritwinError(
                f"cut keeps {row.n_keep} tokens of a {len(bank.seqs[row.seq])}-token sequence: "
                "keep between 1 and all of its tokens"
            )
        elif row.max_new <= 0:
            results[i] = Continuation((), "length")
        else:
            pending.append(i)
    pending.sort(key=lambda i: -rows[i].n_keep)
    bs = max(1, int(batch_size))
    chunk_no = 0
    pos = 0
    while pos < len(pending):
        chunk = pending[pos : pos + bs]
        gen = torch.Generator(device=model.device)
        gen.manual_seed(
            int(np.random.SeedSequence([seed, chunk_no]).generate_state(1, dtype=np.uint64)[0] >> 1)
        )
        try:
            if fault_hook is not None:
                fault_hook(len(chunk))
            conts = _decode_chunk(model, bank, [rows[i] for i in chunk], settings, gen, stop, mode)
        except Exception as exc:  # noqa: BLE001 - only OOM is retried
            if not is_oom(exc):
                raise
            _free_memory(model.device)
            if len(chunk) > 1:
                bs = max(1, len(chunk) // 2)
                continue
            results[chunk[0]] = DecodeFailure("out of memory while decoding (batch size 1)")
            pos += 1
            chunk_no += 1
            continue
        for i, c in zip(chunk, conts, strict=True):
            results[i] = c
        pos += len(chunk)
        chunk_no += 1
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# Decode states: how a batch of rows sees its prefixes


class _GatherState:
    """Each row gets its own copy of its prefix KV, right-aligned in a preallocated cache (left padding).

    Works for every decoder the prefill accepted; costs one prefix copy per row and reads every row's
    prefix at every step.
    """

    def __init__(self, model, bank: PrefixBank, rows: list[Row], capacity_extra: int, row_room: int):
        device = model.device
        n_rows = len(rows)
        s0 = max(r.n_keep for r in rows) - 1  # cache slots before the first fed token
        capacity = s0 + capacity_extra
        # slot j of row b holds position j - lead_b; slots before lead_b are padding (masked out, but filled
        # with real values so that no NaN can leak through a zero attention weight)
        lead = torch.tensor([s0 - (r.n_keep - 1) for r in rows], dtype=torch.long)
        rel = torch.arange(s0, dtype=torch.long)[None, :] - lead[:, None]
        base = torch.tensor([bank.offsets[r.seq] for r in rows], dtype=torch.long)
        # padding slots read any valid bank entry (a one-token sequence has none of its own)
        total = bank.keys[0].shape[0] if bank.keys else 0
        flat = (base[:, None] + rel.clamp_min(0)).clamp_(0, max(total - 1, 0)).reshape(-1).to(device)
        layers = []
        for k_bank, v_bank in zip(bank.keys, bank.values, strict=True):
            (_, hk, dk), (_, hv, dv) = k_bank.shape, v_bank.shape
            buf_k = k_bank.new_empty((max(n_rows, row_room), hk, capacity, dk))
            buf_v = v_bank.new_empty((max(n_rows, row_room), hv, capacity, dv))
            if s0 > 0:
                buf_k[:n_rows, :, :s0] = k_bank.index_select(0, flat).view(n_rows, s0, hk, dk).transpose(1, 2)
                buf_v[:n_rows, :, :s0] = v_bank.index_select(0, flat).view(n_rows, s0, hv, dv).transpose(1, 2)
            layers.append(_GrowingLayer(buf_k, buf_v, s0, n_rows))
        self.model = model
        self.cache = _GrowingCache(layers)
        self.attn = torch.ones((n_rows, capacity), dtype=torch.bool, device=device)
        self.attn[:, :s0] = (rel >= 0).to(device)
        self.lead = lead.to(device)
        self.filled = s0

    def step(self, tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        logits = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.attn[:, : self.filled + 1],
            position_ids=position[:, None],
            use_cache=True,
            logits_to_keep=1,
            **{_cache_kwarg(self.model): self.cache},
        ).logits[:, -1, :]
        self.filled += 1
        return logits

    def select(self, keep: torch.Tensor) -> None:
        # Drop finished rows, and the leading slots that are padding for every remaining row (rows with long
        # prefixes tend to finish first, leaving short-prefix rows with wide padding).
        drop = int(self.lead[keep].min())
        self.cache.select(keep, drop)
        self.attn = self.attn.index_select(0, keep)[:, drop:]
        self.lead = self.lead[keep] - drop
        self.filled -= drop

    def append(self, parents: torch.Tensor) -> None:
        self.cache.append(parents)
        self.attn = torch.cat([self.attn, self.attn[parents]])
        self.lead = torch.cat([self.lead, self.lead[parents]])


_CASCADE_ATTN = "critwin_cascade"
_ACTIVE: contextvars.ContextVar[_CascadeState | None] = contextvars.ContextVar(
    "critwin_cascade", default=None
)
# Decoders whose attention is plain scaled dot-product over (rotated) keys, routed through transformers'
# AttentionInterface: for them the cascade below is exact. Others use the gather path.
_CASCADE_MODEL_TYPES = {"llama", "qwen2", "qwen3", "mistral", "gemma", "phi3", "granite", "olmo2"}


def cascade_supported(model) -> bool:
    """Whether `model` can use shared-prefix (cascade) attention: a plain full-attention decoder."""
    config = model.config
    if (
        not getattr(model, "_supports_attention_backend", False)
        or config.model_type not in _CASCADE_MODEL_TYPES
    ):
        return False
    if config.get_text_config() is not config or getattr(config, "attn_logit_softcapping", None) is not None:
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return getattr(config, "sliding_window", None) is None or not getattr(config, "use_sliding_window", True)


class _CascadeState:
    """Rows attend to their shared prefixes in place, in the bank, and to their own new tokens in a cache.

    All rows of one response share one bank sequence, so a step reads that sequence's KV once for the
    whole batch (one matrix product per layer, each row masked to its own cut) instead of once per row;
    the per-row cache holds only the new tokens. The two parts are combined in one softmax (exact).
    """

    def __init__(self, model, bank: PrefixBank, rows: list[Row], capacity: int, row_room: int):
        device = model.device
        seqs = sorted({r.seq for r in rows})
        starts, idx, pos = {}, [], 0
        for q in seqs:
            n = len(bank.seqs[q]) - 1
            starts[q] = pos
            idx.append(torch.arange(bank.offsets[q], bank.offsets[q] + n))
            pos += n
        idx_t = torch.cat(idx).to(device) if pos else torch.zeros(0, dtype=torch.long, device=device)
        # bank KV of the chunk's sequences as (H_kv, T, D), ready for one batched product per layer
        self.bank_k = [k.index_select(0, idx_t).permute(1, 0, 2).contiguous() for k in bank.keys]
        self.bank_v = [v.index_select(0, idx_t).permute(1, 0, 2).contiguous() for v in bank.values]
        lo = torch.tensor([starts[r.seq] for r in rows], dtype=torch.long)
        hi = lo + torch.tensor([r.n_keep - 1 for r in rows], dtype=torch.long)
        col = torch.arange(pos, dtype=torch.long)[None, :]
        self.prefix_mask = ((col >= lo[:, None]) & (col < hi[:, None])).to(device)
        self._bias: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        layers = []
        for k_bank, v_bank in zip(bank.keys, bank.values, strict=True):
            (_, hk, dk), (_, hv, dv) = k_bank.shape, v_bank.shape
            buf_k = k_bank.new_empty((max(len(rows), row_room), hk, capacity, dk))
            buf_v = v_bank.new_empty((max(len(rows), row_room), hv, capacity, dv))
            layers.append(_GrowingLayer(buf_k, buf_v, 0, len(rows)))
        self.model = model
        self.cache = _GrowingCache(layers)
        self.calls = 0
        self.lean = None
        if LEAN and _LeanDecoder.supported(model):
            self.lean = _LeanDecoder(model, max_position=max(r.n_keep for r in rows) - 1 + capacity)

    def step(self, tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        if self.lean is not None:
            return self.lean.step(tokens, position, self._attend)
        config = self.model.config
        previous = config._attn_implementation
        token = _ACTIVE.set(self)
        self.calls = 0
        try:
            config._attn_implementation = _CASCADE_ATTN
            logits = self.model(
                input_ids=tokens[:, None],
                position_ids=position[:, None],
                use_cache=True,
                logits_to_keep=1,
                **{_cache_kwarg(self.model): self.cache},
            ).logits[:, -1, :]
        finally:
            config._attn_implementation = previous
            _ACTIVE.reset(token)
        if self.calls != len(self.bank_k):
            raise RuntimeError(f"cascade attention ran in {self.calls} of {len(self.bank_k)} layers")
        return logits

    def _attend(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        keys, values = self.cache.layers[i].update(k, v)
        return _merged_attention(self, i, q, keys, values).reshape(q.shape[0], -1)

    def bias(self, g: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (1, B·G, T) in `dtype`: 0 at the bank positions each query may attend to, -inf
        elsewhere."""
        key = (g, dtype)
        if key not in self._bias:
            mask = self.prefix_mask.repeat_interleave(g, dim=0) if g > 1 else self.prefix_mask
            zero = torch.zeros((), dtype=dtype, device=mask.device)
            ninf = torch.tensor(float("-inf"), dtype=dtype, device=mask.device)
            self._bias[key] = torch.where(mask, zero, ninf).unsqueeze(0)
        return self._bias[key]

    def append(self, parents: torch.Tensor) -> None:
        self.cache.append(parents)
        self._bias.clear()
        self.prefix_mask = torch.cat([self.prefix_mask, self.prefix_mask[parents]])

    def select(self, keep: torch.Tensor) -> None:
        self.cache.select(keep, 0)
        self._bias.clear()
        self.prefix_mask = self.prefix_mask.index_select(0, keep)
        # Keep only the bank columns some remaining row still attends to (views, no copy).
        used = self.prefix_mask.any(dim=0).nonzero()
        if len(used):
            a, b = int(used[0]), int(used[-1]) + 1
            if b - a < self.prefix_mask.shape[1]:
                self.prefix_mask = self.prefix_mask[:, a:b]
                self.bank_k = [k[:, a:b] for k in self.bank_k]
                self.bank_v = [v[:, a:b] for v in self.bank_v]


def _cascade_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of one new token per row over [its prefix in the bank] + [its own new tokens].

    query (B, H, 1, D); key/value (B, H_kv, s, D) are the rows' new tokens (from the cache). Everything is
    computed in the (H_kv, B·G, ·) layout of the bank product; returns (B, 1, H, D) like transformers'
    attention functions.
    """
    state = _ACTIVE.get()
    if state is None:  # not inside a critwin decode step: behave like sdpa
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    b, h, _, d = query.shape
    g = h // key.shape[1]
    scale = scaling if scaling is not None else d**-0.5
    q = query.reshape(b, -1, g, d) * scale  # head h_kv·g + i reads key/value head h_kv (repeat_kv)
    state.calls += 1
    return _merged_attention(state, module.layer_idx, q, key, value).reshape(b, 1, h, d), None


def _merged_attention(state: _CascadeState, layer: int, q, key, value) -> torch.Tensor:
    """Softmax attention of q (B, H_kv, G, D), already scaled, over the bank prefix of each row and the
    row's new tokens key/value (B, H_kv, s, D), s >= 1, as one softmax; returns (B, H_kv, G, D).

    The bank part is computed in its (H_kv, B·G, ·) layout, the new-token part in (B·H_kv, G, ·) (plain
    `bmm`s, cheaper than 4-d `matmul`s); only per-row maxima, sums and outputs cross between them. exp of
    -inf, or with a subnormal result, takes a slow path on CPUs, so exponents (masked entries included) are
    clamped at -85: e^-85 ~ 1.2e-37 is still a normal float32, and next to the max term, which is exactly
    1, such entries are far below float32 (and float64) resolution.
    """
    bank_k, bank_v = state.bank_k[layer], state.bank_v[layer]
    b, h_kv, g, d = q.shape
    n = key.shape[2]
    bias = state.bias(g, q.dtype)
    # Softmax arithmetic in float32 (float64 for float64 models); casts are skipped where they would be
    # no-ops, since each costs a call per layer and step.
    acc = torch.promote_types(q.dtype, torch.float32)
    up = (lambda t: t.to(acc)) if q.dtype != acc else (lambda t: t)
    down = (lambda t: t.to(q.dtype)) if q.dtype != acc else (lambda t: t)
    qp = q.permute(1, 0, 2, 3).reshape(h_kv, b * g, d)
    # bmm then add_: baddbmm would first copy the broadcast bias into its output, a slower extra pass
    s_pre = up(torch.bmm(qp, bank_k.transpose(1, 2)).add_(bias))  # (H_kv, B·G, T)
    key, value = key.reshape(b * h_kv, n, d), value.reshape(b * h_kv, n, d)  # views of the cache
    s_new = up(torch.bmm(q.reshape(b * h_kv, g, d), key.transpose(1, 2)))  # (B·H_kv, G, s)
    m = torch.maximum(
        s_new.amax(dim=-1, keepdim=True).view(b, h_kv, g, 1), _rows(s_pre.amax(dim=-1, keepdim=True), b, g)
    )  # (B, H_kv, G, 1)
    p_pre = s_pre.sub_(_bank_layout(m, b, g)).clamp_(min=-85.0).exp_()
    p_new = s_new.sub_(m.reshape(b * h_kv, g, 1)).clamp_(min=-85.0).exp_()
    denom = _rows(p_pre.sum(dim=-1, keepdim=True), b, g) + p_new.sum(dim=-1, keepdim=True).view(b, h_kv, g, 1)
    o = _rows(up(torch.bmm(down(p_pre), bank_v)), b, g)  # (B, H_kv, G, D)
    o = o + up(torch.bmm(down(p_new), value)).view(b, h_kv, g, d)
    return down(o / denom)


def _rows(t: torch.Tensor, b: int, g: int) -> torch.Tensor:
    """(H_kv, B·G, x) -> (B, H_kv, G, x) view."""
    return t.view(t.shape[0], b, g, -1).permute(1, 0, 2, 3)


def _bank_layout(t: torch.Tensor, b: int, g: int) -> torch.Tensor:
    """(B, H_kv, G, x) -> (H_kv, B·G, x), a view where possible."""
    return t.permute(1, 0, 2, 3).reshape(t.shape[1], b * g, -1)


def _register_cascade() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_CASCADE_ATTN, _cascade_attention)


_register_cascade()

# Counters of the decode work since import (benchmarks report them): decode steps, batch rows processed
# summed over steps, and tokens drawn (one per draw and step), which the rows would be without sharing.
STATS = {"steps": 0, "row_steps": 0, "draw_steps": 0}

# Switches for the two optimisations below; tests turn them off to cover the plain paths.
LEAN = True  # use the direct decode step for the decoders it supports
SHARE_DRAWS = True  # let draws that agree so far share a batch row (see `_decode_chunk`)
COMPACT_EVERY = 16  # drop finished rows from the batch once they are 1/COMPACT_EVERY of it
_LEAN_MODELS = {
    "LlamaForCausalLM": "LlamaDecoderLayer",
    "Qwen2ForCausalLM": "Qwen2DecoderLayer",
    "MistralForCausalLM": "MistralDecoderLayer",
}


class _LeanLayer(NamedTuple):
    """One decoder layer's tensors as the lean step uses them (references to the model's own parameters,
    except the fused q/k/v projection); norms are (module, weight, eps)."""

    norm_in: tuple
    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    o_weight_t: torch.Tensor  # transposed views, as `addmm` takes them
    o_bias: torch.Tensor | None
    norm_post: tuple
    gate_weight: torch.Tensor
    gate_bias: torch.Tensor | None
    up_weight: torch.Tensor
    up_bias: torch.Tensor | None
    down_weight_t: torch.Tensor
    down_bias: torch.Tensor | None


def _norm(module) -> tuple:
    return module, module.weight, module.variance_epsilon


class _LeanDecoder:
    """One decode step of a Llama-style decoder built from the model's own weights: the same arithmetic as
    the transformers forward, without its per-call machinery (mask building, kwargs plumbing, module calls,
    output objects), which dominates the step time of small models.

    Weights are rearranged once, exactly: per layer one matrix product gives q, k, rotate_half(q),
    rotate_half(k) and v (rotate_half only moves and negates output features, so it can be applied to the
    rows of the projection weights), with the attention scale folded into the q rows; rotary embedding of
    q and k together is then qk·cos + rotate_half(qk)·sin.
    """

    def __init__(self, model, max_position: int):
        base = model.model
        self.embed, self.norm, self.rotary = base.embed_tokens, _norm(base.norm), base.rotary_emb
        self.lm_head = model.lm_head.weight, model.lm_head.bias
        layers = list(base.layers)[: model.config.num_hidden_layers]
        attn = layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = attn.q_proj.weight.shape[0] // self.head_dim
        self.n_kv = attn.k_proj.weight.shape[0] // self.head_dim
        self.layers = [self._fuse(layer) for layer in layers]
        # cos/sin of every position the decode can reach, (N, 2, 1, D), looked up by position: the same
        # values the rotary module computes (elementwise, per position), in one op per step instead of
        # about ten. Dynamic RoPE variants rescale with the batch's longest position, so they keep the call.
        rope_type = getattr(self.rotary, "rope_type", "default")
        self.rope_table = None
        if isinstance(rope_type, str) and "dynamic" not in rope_type and rope_type != "longrope":
            probe = self.embed.weight[:1]
            positions = torch.arange(max_position + 1, device=probe.device)[None, :]
            cos, sin = self.rotary(probe, positions)
            self.rope_table = torch.stack((cos[0], sin[0]), dim=1).unsqueeze(2)

    def _fuse(self, layer) -> _LeanLayer:
        attn, mlp, d = layer.self_attn, layer.mlp, self.head_dim

        def rot(w: torch.Tensor) -> torch.Tensor:  # rotate_half applied to each head's output features
            w = w.reshape(-1, d, *w.shape[1:])
            return torch.cat((-w[:, d // 2 :], w[:, : d // 2]), dim=1).reshape(-1, *w.shape[2:])

        def bias(linear) -> torch.Tensor:
            return linear.bias.detach() if linear.bias is not None else torch.zeros_like(linear.weight[:, 0])

        projs = (attn.q_proj, attn.k_proj, attn.v_proj)
        wq, wk, wv = (p.weight.detach() for p in projs)
        bq, bk, bv = (bias(p) for p in projs)
        wq, bq = wq * attn.scaling, bq * attn.scaling
        qkv_w = torch.cat([wq, wk, rot(wq), rot(wk), wv]).contiguous()
        has_bias = any(p.bias is not None for p in projs)
        qkv_b = torch.cat([bq, bk, rot(bq), rot(bk), bv]) if has_bias else None
        return _LeanLayer(
            _norm(layer.input_layernorm),
            qkv_w,
            qkv_b,
            attn.o_proj.weight.t(),
            attn.o_proj.bias,
            _norm(layer.post_attention_layernorm),
            mlp.gate_proj.weight,
            mlp.gate_proj.bias,
            mlp.up_proj.weight,
            mlp.up_proj.bias,
            mlp.down_proj.weight.t(),
            mlp.down_proj.bias,
        )

    @staticmethod
    def supported(model) -> bool:
        layer_cls = _LEAN_MODELS.get(type(model).__name__)
        base = getattr(model, "model", None)
        layers = getattr(base, "layers", None)
        if layer_cls is None or layers is None or not cascade_supported(model):
            return False
        if getattr(model.config, "pretraining_tp", 1) != 1 or model.config.hidden_act != "silu":
            return False
        return all(type(layer).__name__ == layer_cls for layer in layers) and all(
            hasattr(base, a) for a in ("embed_tokens", "norm", "rotary_emb")
        )

    @staticmethod
    def _rms(norm: tuple, x: torch.Tensor) -> torch.Tensor:
        module, weight, eps = norm
        if x.dtype == torch.float32:  # same arithmetic as the module in float32, one fused op
            return F.rms_norm(x, weight.shape, weight, eps)
        return module(x)

    @staticmethod
    def _add_linear(x: torch.Tensor, h: torch.Tensor, weight_t: torch.Tensor, bias) -> torch.Tensor:
        """x + linear(h): one `addmm` when there is no bias."""
        if bias is None:
            return torch.addmm(x, h, weight_t)
        return x + torch.addmm(bias, h, weight_t)

    def step(self, tokens: torch.Tensor, position: torch.Tensor, attend) -> torch.Tensor:
        """Next-token logits (B, V) after feeding `tokens` (B,) at `position` (B,).

        `attend(layer, q, k, v)` gets q (B, H_kv, G, D), already scaled, and the new token's k, v
        (B, H_kv, 1, D), and returns the attention output (B, H·D).
        """
        b, d, nh, nkv = tokens.shape[0], self.head_dim, self.n_heads, self.n_kv
        x = self.embed(tokens)  # (B, hidden)
        if self.rope_table is not None:
            cos_sin = self.rope_table.index_select(0, position)  # (B, 2, 1, D)
            cos, sin = cos_sin[:, 0], cos_sin[:, 1]  # (B, 1, D), broadcast over heads
        else:
            cos, sin = self.rotary(x[:, None], position[:, None])  # (B, 1, D)
        n_qk = (nh + nkv) * d
        for i, w in enumerate(self.layers):
            qkv = F.linear(self._rms(w.norm_in, x), w.qkv_weight, w.qkv_bias)
            qk = torch.addcmul(
                qkv[:, :n_qk].view(b, nh + nkv, d) * cos, qkv[:, n_qk : 2 * n_qk].view(b, nh + nkv, d), sin
            )
            q = qk[:, :nh].view(b, nkv, nh // nkv, d)
            k = qk[:, nh:].unsqueeze(2)  # (B, H_kv, 1, D)
            v = qkv[:, 2 * n_qk :].view(b, nkv, 1, d)
            x = self._add_linear(x, attend(i, q, k, v), w.o_weight_t, w.o_bias)
            h = self._rms(w.norm_post, x)
            up = F.linear(h, w.up_weight, w.up_bias)
            h = F.silu(F.linear(h, w.gate_weight, w.gate_bias)).mul_(up)
            x = self._add_linear(x, h, w.down_weight_t, w.down_bias)
        return F.linear(self._rms(self.norm, x), *self.lm_head)


def _make_state(model, bank: PrefixBank, rows: list[Row], capacity: int, mode: str, row_room: int = 0):
    """A decode state for `rows`: "cascade" if the model allows it and rows share prefixes, else "gather"."""
    if mode not in ("auto", "cascade", "gather"):
        raise ValueError(f"mode={mode!r}")
    use_cascade = mode == "cascade"
    if mode == "auto" and cascade_supported(model):
        distinct = sum(len(bank.seqs[q]) - 1 for q in {r.seq for r in rows})
        shared = sum(r.n_keep - 1 for r in rows)
        use_cascade = shared >= 2 * max(distinct, 1)  # worth it once each bank token serves >= 2 rows
    if use_cascade:
        return _CascadeState(model, bank, rows, capacity, row_room)
    return _GatherState(model, bank, rows, capacity, row_room)


@torch.inference_mode()
def next_token_logits(model, bank: PrefixBank, rows: Sequence[Row], *, mode: str = "auto") -> torch.Tensor:
    """Next-token logits ((len(rows), V), float32 or float64) after each row's kept prefix, via the cache."""
    rows = list(rows)
    state = _make_state(model, bank, rows, 1, mode)
    device = model.device
    tokens = torch.tensor([bank.seqs[r.seq][r.n_keep - 1] for r in rows], dtype=torch.long, device=device)
    position = torch.tensor([r.n_keep - 1 for r in rows], dtype=torch.long, device=device)
    logits = state.step(tokens, position)
    return logits if logits.dtype == torch.float64 else logits.float()


@torch.inference_mode()
def _decode_chunk(
    model,
    bank: PrefixBank,
    rows: list[Row],
    settings: SamplingSettings,
    gen: torch.Generator,
    stop: StopStrings | None,
    mode: str,
) -> list[Continuation]:
    """Decode the continuations of `rows` (the draws) together.

    Draws that have produced the same tokens from the same cut share one batch row (one cache, one forward)
    until their samples differ: at each step a row with m draws samples m tokens i.i.d. from its next-token
    law, and the draws split into one row per distinct token (copies of the parent's cache). This is exact,
    and where continuations agree (a low-entropy model, or after a feature is decided) it saves most of the
    work. Finished rows are dropped from the batch once enough have accumulated: rows from the end take
    their places, so only the moved rows' caches are copied.
    """
    device = model.device
    max_steps = max(r.max_new for r in rows)
    # initial batch rows: one per distinct cut; draws[i] lists the draws (indices into `rows`) sharing row i
    first: dict[Row, int] = {}
    draws: list[list[int]] = []
    for j, r in enumerate(rows):
        if r not in first or not SHARE_DRAWS:
            first[r] = len(draws)
            draws.append([])
        draws[first[r]].append(j)
    heads = [rows[d[0]] for d in draws]
    state = _make_state(model, bank, heads, max_steps, mode, row_room=len(rows))
    tokens = [bank.seqs[r.seq][r.n_keep - 1] for r in heads]
    position = torch.tensor([r.n_keep - 1 for r in heads], dtype=torch.long, device=device)
    budget = [r.max_new for r in heads]
    eos = set(settings.eos_token_ids)
    out: list[list[int]] = [[] for _ in rows]
    reason = ["length"] * len(rows)
    dead = 0  # batch rows whose draws all finished, kept until enough accumulate to be worth a copy

    def hits_stop(tok: int, members: list[int]) -> bool:
        """Whether the draws `members`, which just got `tok` (appended), now end in a stop string."""
        if stop is None or not bool(stop.candidate[tok]):
            return False
        row = rows[members[0]]
        n_ctx = min(row.stop_context, row.n_keep, stop.window)
        ctx = list(bank.seqs[row.seq][row.n_keep - n_ctx : row.n_keep])
        if not stop.hit(ctx + out[members[0]], len(ctx)):
            return False
        for d in members:
            reason[d] = "stop_string"
        return True

    for step in range(max_steps):
        logits = state.step(torch.tensor(tokens, dtype=torch.long, device=device), position)
        counts = [len(d) for d in draws]
        if all(c == 1 for c in counts):
            per_draw = logits
        else:
            per_draw = logits.repeat_interleave(torch.tensor(counts, device=device), dim=0)
        sampled = sample_tokens(per_draw, settings, gen).tolist()
        STATS["steps"] += 1
        STATS["row_steps"] += len(draws)
        STATS["draw_steps"] += len(sampled)
        parents: list[int] = []  # forks: rows whose draws split, appended as copies of their parent
        k = 0
        for i, ds in enumerate(draws[: len(counts)]):  # forks appended below are not sampled this step
            if not ds:
                continue
            if len(ds) == 1:  # the common case once draws have diverged: no grouping
                tok, k = sampled[k], k + 1
                if tok in eos:
                    reason[ds[0]] = "eos"
                else:
                    out[ds[0]].append(tok)
                    if not (hits_stop(tok, ds) or step + 1 >= budget[i]):
                        tokens[i] = tok
                        continue
                draws[i] = []
                dead += 1
                continue
            groups: dict[int, list[int]] = {}
            for d in ds:
                groups.setdefault(sampled[k], []).append(d)
                k += 1
            going: list[tuple[int, list[int]]] = []
            for tok, members in groups.items():
                if tok in eos:
                    for d in members:
                        reason[d] = "eos"
                    continue
                for d in members:
                    out[d].append(tok)
                if not (hits_stop(tok, members) or step + 1 >= budget[i]):
                    going.append((tok, members))
            if not going:
                draws[i] = []
                dead += 1
                continue
            tokens[i], draws[i] = going[0]
            for tok, members in going[1:]:
                parents.append(i)
                tokens.append(tok)
                draws.append(members)
                budget.append(budget[i])
        if dead == len(draws):
            break
        if parents:
            idx = torch.tensor(parents, dtype=torch.long, device=device)
            state.append(idx)
            position = torch.cat([position, position[idx]])
        position = position + 1
        if dead >= max(1, len(draws) // COMPACT_EVERY):
            n = len(draws) - dead
            keep = list(range(n))
            tail = (i for i in range(n, len(draws)) if draws[i])
            for hole in (i for i in range(n) if not draws[i]):
                keep[hole] = next(tail)
            idx = torch.tensor(keep, dtype=torch.long, device=device)
            state.select(idx)
            position = position[idx]
            tokens = [tokens[i] for i in keep]
            draws = [draws[i] for i in keep]
            budget = [budget[i] for i in keep]
            dead = 0
    return [Continuation(tuple(out[j]), reason[j]) for j in range(len(rows))]
