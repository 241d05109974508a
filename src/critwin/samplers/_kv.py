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

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from critwin.errors import CritwinError

# Large enough that the top-p nucleus of a trained model at temperature <= 1 almost always fits, small
# enough that the per-step partial sort is cheap even for 150k-token vocabularies. Rows whose nucleus is
# larger fall back to a full sort, so the result is exact either way.
_NUCLEUS_PROBE = 64


@dataclass(frozen=True)
class SamplingSettings:
    """How continuations are drawn.

    temperature 0 means greedy decoding. `top_k` 0 disables top-k. `max_new_tokens` bounds the tokens a
    row may add. Stops on any id in `eos_token_ids` (the eos token is not part of the output) or once the
    text ends with one of `stop_strings` (included in the output).
    """

    temperature: float = 0.6
    top_p: float = 0.9
    top_k: int = 0
    max_new_tokens: int = 2048
    eos_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0 and np.isfinite(self.temperature)):
            raise CritwinError(f"temperature={self.temperature}: use a finite value >= 0 (0 = greedy)")
        if not 0.0 < self.top_p <= 1.0:
            raise CritwinError(f"top_p={self.top_p}: use a value in (0, 1] (1 = off)")
        if self.top_k < 0:
            raise CritwinError(f"top_k={self.top_k}: use an integer >= 0 (0 = off)")
        if self.max_new_tokens < 0:
            raise CritwinError(f"max_new_tokens={self.max_new_tokens}: use an integer >= 0")
        if any(not s for s in self.stop_strings):
            raise CritwinError("stop_strings: remove the empty string (it would stop every row at once)")


@dataclass(frozen=True)
class Row:
    """One continuation: keep the first `n_keep` tokens of bank sequence `seq`, add <= `max_new` tokens.

    `stop_context` is how many kept tokens just before the cut stop strings may span (0: only new text).
    """

    seq: int
    n_keep: int
    max_new: int
    stop_context: int = 0


@dataclass(frozen=True)
class Continuation:
    """The tokens sampled after a cut. `stop_reason` is "eos", "stop_string" or "length"."""

    token_ids: tuple[int, ...]
    stop_reason: str


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

    The buffer is (B, capacity, H, D), the layout the attention projections produce, and the layer exposes
    the filled part as (B, H, n, D) views.
    """

    def __init__(self, buf_k: torch.Tensor, buf_v: torch.Tensor, filled: int):
        super().__init__()
        self.buf_k, self.buf_v, self.n = buf_k, buf_v, filled
        self.device = buf_k.device
        self.is_initialized = True
        self._views()

    def _views(self) -> None:
        self.keys = self.buf_k[:, : self.n].transpose(1, 2)
        self.values = self.buf_v[:, : self.n].transpose(1, 2)

    def update(self, key_states, value_states, *args, **kwargs):
        q = key_states.shape[-2]
        self.buf_k[:, self.n : self.n + q] = key_states.transpose(1, 2)
        self.buf_v[:, self.n : self.n + q] = value_states.transpose(1, 2)
        self.n += q
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n

    def select(self, indices: torch.Tensor, drop_front: int) -> None:
        """Keep batch rows `indices` and drop the first `drop_front` slots (padding of every kept row).

        Copies only the filled part into a buffer `drop_front` slots shorter; its tail stays uninitialised
        until written.
        """
        cap = self.buf_k.shape[1] - drop_front
        new_k = self.buf_k.new_empty((len(indices), cap, *self.buf_k.shape[2:]))
        new_v = self.buf_v.new_empty((len(indices), cap, *self.buf_v.shape[2:]))
        filled = self.n - drop_front
        torch.index_select(self.buf_k[:, drop_front : self.n], 0, indices, out=new_k[:, :filled])
        torch.index_select(self.buf_v[:, drop_front : self.n], 0, indices, out=new_v[:, :filled])
        self.buf_k, self.buf_v, self.n = new_k, new_v, filled
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.select(indices, 0)


class _GrowingCache(DynamicCache):
    def __init__(self, layers: list[_GrowingLayer]):
        super().__init__()
        self.layers = layers
        self.layer_class_to_replicate = None

    def select(self, indices: torch.Tensor, drop_front: int) -> None:
        for layer in self.layers:
            layer.select(indices, drop_front)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.select(indices, 0)


# ---------------------------------------------------------------------------------------------------------
# Sampling


def sample_tokens(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None):
    """Draw one token per row from `logits` (B, V) with temperature, then top-k, then top-p (as `generate`).

    Top-p keeps the smallest set of most likely tokens whose mass reaches `top_p` (a token is kept when the
    mass of the tokens ranked above it is < top_p), renormalised. Sampling is by inverse CDF with one uniform
    per row, so the same generator state gives the same tokens.
    """
    if settings.temperature == 0.0:
        return logits.argmax(dim=-1)
    scores = logits.float() / settings.temperature
    vocab = scores.shape[-1]
    if 0 < settings.top_k < vocab:
        kth = torch.topk(scores, settings.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=torch.float32)
    if settings.top_p >= 1.0:
        cdf = probs.cumsum(dim=-1)
        j = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(vocab - 1)
        return j.squeeze(1)
    k0 = min(vocab, _NUCLEUS_PROBE)
    vals, idx = torch.topk(probs, k0, dim=-1)
    out = _nucleus_pick(vals, idx, u, settings.top_p)
    short = vals.sum(dim=-1) < settings.top_p  # nucleus larger than the probe: redo these rows fully sorted
    if k0 < vocab and bool(short.any()):
        rows = short.nonzero().squeeze(1)
        v_full, i_full = torch.sort(probs[rows], dim=-1, descending=True)
        out[rows] = _nucleus_pick(v_full, i_full, u[rows], settings.top_p)
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


@dataclass
class _Batch:
    rows: list[int]  # indices into the caller's row list, in batch order


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
            conts = _decode_chunk(model, bank, [rows[i] for i in chunk], settings, gen, stop)
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


def _build_cache(model, bank: PrefixBank, rows: list[Row], capacity_extra: int):
    """Cache, 2D attention mask, first fed tokens and their positions for a batch of rows.

    Each row's prefix is gathered from the bank right-aligned: slot j of row b holds position
    j - (s0 - (n_keep_b - 1)); slots before that are padding (masked out, filled with real values so that
    no NaN can leak through a zero attention weight).
    """
    device = model.device
    n_rows = len(rows)
    s0 = max(r.n_keep for r in rows) - 1  # cache slots before the first fed token
    capacity = s0 + capacity_extra
    pad = torch.tensor([s0 - (r.n_keep - 1) for r in rows], dtype=torch.long)
    rel = torch.arange(s0, dtype=torch.long)[None, :] - pad[:, None]
    base = torch.tensor([bank.offsets[r.seq] for r in rows], dtype=torch.long)
    flat = (base[:, None] + rel.clamp_min(0)).reshape(-1).to(device)
    layers = []
    for k_bank, v_bank in zip(bank.keys, bank.values, strict=True):
        buf_k = k_bank.new_empty((n_rows, capacity, *k_bank.shape[1:]))
        buf_v = v_bank.new_empty((n_rows, capacity, *v_bank.shape[1:]))
        if s0 > 0:
            buf_k[:, :s0] = k_bank.index_select(0, flat).view(n_rows, s0, *k_bank.shape[1:])
            buf_v[:, :s0] = v_bank.index_select(0, flat).view(n_rows, s0, *v_bank.shape[1:])
        layers.append(_GrowingLayer(buf_k, buf_v, s0))
    attn = torch.ones((n_rows, capacity), dtype=torch.bool, device=device)
    attn[:, :s0] = (rel >= 0).to(device)
    tokens = torch.tensor([bank.seqs[r.seq][r.n_keep - 1] for r in rows], dtype=torch.long, device=device)
    position = torch.tensor([r.n_keep - 1 for r in rows], dtype=torch.long, device=device)
    return _GrowingCache(layers), attn, tokens, position, s0


def _step(model, cache, attn, tokens, position, width):
    return model(
        input_ids=tokens[:, None],
        attention_mask=attn[:, :width],
        position_ids=position[:, None],
        use_cache=True,
        logits_to_keep=1,
        **{_cache_kwarg(model): cache},
    ).logits[:, -1, :]


@torch.inference_mode()
def next_token_logits(model, bank: PrefixBank, rows: Sequence[Row]) -> torch.Tensor:
    """Next-token logits (float32, (len(rows), V)) after each row's kept prefix, through the cached path."""
    rows = list(rows)
    cache, attn, tokens, position, s0 = _build_cache(model, bank, rows, 1)
    return _step(model, cache, attn, tokens, position, s0 + 1).float()


@torch.inference_mode()
def _decode_chunk(
    model,
    bank: PrefixBank,
    rows: list[Row],
    settings: SamplingSettings,
    gen: torch.Generator,
    stop: StopStrings | None,
) -> list[Continuation]:
    device = model.device
    n_rows = len(rows)
    max_steps = max(r.max_new for r in rows)
    cache, attn, tokens, position, s0 = _build_cache(model, bank, rows, max_steps)
    budget = torch.tensor([r.max_new for r in rows], dtype=torch.long, device=device)
    lead = torch.tensor([s0 - (r.n_keep - 1) for r in rows], dtype=torch.long, device=device)  # padding slots
    eos = torch.tensor(sorted(set(settings.eos_token_ids)), dtype=torch.long, device=device)
    out = torch.zeros((n_rows, max_steps), dtype=torch.long, device=device)
    out_len = torch.zeros(n_rows, dtype=torch.long)
    reason = ["length"] * n_rows
    live = torch.arange(n_rows, device=device)  # original row of each batch slot
    done = torch.zeros(n_rows, dtype=torch.bool, device=device)  # per batch slot
    stop_cand = stop.candidate.to(device) if stop is not None else None
    compact_at = max(1, n_rows // 8)

    for step in range(max_steps):
        filled = cache.layers[0].n if cache.layers else s0 + step
        logits = _step(model, cache, attn, tokens, position, filled + 1)
        nxt = sample_tokens(logits, settings, gen)
        hit_eos = torch.isin(nxt, eos) if eos.numel() else torch.zeros_like(done)
        fresh = ~done
        rec = fresh & ~hit_eos  # record the token (never eos) of unfinished rows
        out[live[rec], step] = nxt[rec]
        finished_now = fresh & (hit_eos | (budget <= step + 1))
        if stop is not None:
            for b in (rec & stop_cand[nxt]).nonzero().squeeze(1).tolist():
                r = int(live[b])
                row = rows[r]
                n_ctx = min(row.stop_context, row.n_keep, stop.window)
                ctx = list(bank.seqs[row.seq][row.n_keep - n_ctx : row.n_keep])
                if stop.hit(ctx + out[r, : step + 1].tolist(), len(ctx)):
                    finished_now[b] = True
                    reason[r] = "stop_string"
        if bool(finished_now.any()):
            for b in finished_now.nonzero().squeeze(1).tolist():
                r = int(live[b])
                out_len[r] = step + 1 - int(hit_eos[b])
                if hit_eos[b]:
                    reason[r] = "eos"
            done |= finished_now
        n_done = int(done.sum())
        if n_done == len(live):
            break
        if n_done >= compact_at:
            # Drop finished rows, and the leading slots that are padding for every remaining row (rows with
            # long prefixes tend to finish first, leaving short-prefix rows with wide padding).
            keep = (~done).nonzero().squeeze(1)
            drop = int(lead[keep].min())
            cache.select(keep, drop)
            attn = attn.index_select(0, keep)[:, drop:]
            live, budget, position, lead = live[keep], budget[keep], position[keep], lead[keep] - drop
            nxt = nxt[keep]
            done = torch.zeros(len(keep), dtype=torch.bool, device=device)
            compact_at = max(1, len(keep) // 8)
        tokens = nxt
        position = position + 1
    out = out.cpu()
    return [Continuation(tuple(out[r, : out_len[r]].tolist()), reason[r]) for r in range(n_rows)]
