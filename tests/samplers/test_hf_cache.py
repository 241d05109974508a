"""The shared-prefix KV cache gives the same numbers as running the model from scratch on each cut."""

from __future__ import annotations

import copy

import pytest
import torch

from critwin.samplers import _kv
from critwin.samplers.hf import HFSampler
from critwin.samplers.hf_tiny import CHAT_TEMPLATE, char_tokenizer, tiny_causal_lm
from critwin.samplers.lm import Response
from critwin.schedules import cut_positions

TOK = char_tokenizer(chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    # init_std 0.15: peaked next-token laws, activations small enough that float32 rounding of the
    # uncached reference itself stays well below the 1e-5 tolerance
    return tiny_causal_lm(len(TOK), arch=request.param, seed=3, init_std=0.15)


def _response(sampler: HFSampler, prompt: str, text: str) -> Response:
    return sampler.response_from_text(prompt, text)


def _uncached_next_logits(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([list(ids)])).logits[0, -1].float()


# The three ways a decode step can see the kept prefix: per-row copies ("gather"), shared-prefix attention
# through the transformers forward ("cascade", lean off) and through the direct Llama-family step (lean on).
PATHS = [("gather", True), ("cascade", False), ("cascade", True)]


@pytest.fixture(params=PATHS, ids=["gather", "cascade-hf", "cascade-lean"])
def path(request, monkeypatch):
    mode, lean = request.param
    monkeypatch.setattr(_kv, "LEAN", lean)
    return mode


def test_cached_logits_match_uncached_at_every_cut(model, path):
    sampler = HFSampler(model, TOK, max_new_tokens=200, prefix_attention=path)
    x = _response(sampler, "what is 12+7?", "12+7: add units 2+7=9, tens 1 -> 19. answer 19")
    ts = list(range(x.length + 1))  # every cut, from "keep all" (t = 0) to "keep only the prompt"
    cached = sampler.next_token_logits(x, ts)
    full = x.prompt_ids + x.response_ids
    for i, t in enumerate(ts):
        ref = _uncached_next_logits(model, full[: len(full) - t])
        assert torch.max(torch.abs(cached[i] - ref)).item() <= 1e-5, f"t={t}"


def test_cached_logits_match_across_several_sequences_in_one_bank(model, path):
    # Sequences of different lengths share one prefilled bank and one batch; offsets must not mix them up.
    seqs = [
        tuple(TOK("<bos>abc def ghi").input_ids),
        tuple(TOK("x").input_ids),
        tuple(TOK("<bos>the quick brown fox, 42").input_ids),
    ]
    bank = _kv.PrefixBank.build(model, seqs, max_tokens=20)  # small budget: several prefill groups
    rows = [_kv.Row(seq=i, n_keep=k, max_new=1) for i, s in enumerate(seqs) for k in range(1, len(s) + 1)]
    got = _kv.next_token_logits(model, bank, rows, mode=path)
    for j, r in enumerate(rows):
        ref = _uncached_next_logits(model, seqs[r.seq][: r.n_keep])
        assert torch.max(torch.abs(got[j] - ref)).item() <= 1e-5, r


def test_cached_logits_are_exact_in_float64(model, path):
    # In float64 rounding is negligible, so any error of the cache layout, masks, positions or the merged
    # softmax would show far above the 1e-10 tolerance.
    m64 = copy.deepcopy(model).double()
    seqs = [
        tuple(TOK("<bos>user: 12+7=?\n<bos>assistant: 19, because 12+7=19").input_ids),
        tuple(TOK("q").input_ids),
    ]
    bank = _kv.PrefixBank.build(m64, seqs)
    rows = [_kv.Row(seq=i, n_keep=k, max_new=1) for i, s in enumerate(seqs) for k in range(1, len(s) + 1)]
    got = _kv.next_token_logits(m64, bank, rows, mode=path)
    assert got.dtype == torch.float64
    for j, r in enumerate(rows):
        with torch.inference_mode():
            ref = m64(torch.tensor([list(seqs[r.seq][: r.n_keep])])).logits[0, -1]
        assert torch.max(torch.abs(got[j] - ref)).item() <= 1e-10, r


def _hf_greedy(model, ids, max_new, eos):
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([list(ids)]),
            do_sample=False,
            max_new_tokens=max_new,
            eos_token_id=eos,
            pad_token_id=0,
        )
    new = out[0, len(ids) :].tolist()
    return tuple(new[: new.index(eos)] if eos in new else new)


def test_greedy_continuations_equal_generate_for_every_paper_cut(model, path):
    sampler = HFSampler(model, TOK, temperature=0.0, max_new_tokens=60, prefix_attention=path)
    x = _response(sampler, "solve: 3*4+5", "3*4=12, then 12+5=17, so the answer is 17.")
    kept = cut_positions(x.length) + [0, x.length]
    ts = [x.length - k for k in kept]
    conts = sampler.resample(x, ts, 2, rng=0)
    for t, k, per_t in zip(ts, kept, conts, strict=True):
        ref = _hf_greedy(model, x.prompt_ids + x.response_ids[:k], 60 - k, TOK.eos_token_id)
        for c in per_t:
            assert c.token_ids == ref, f"t={t}"
            assert c.stop_reason == ("eos" if len(ref) < 60 - k else "length")


def test_greedy_original_responses_equal_generate(model):
    sampler = HFSampler(model, TOK, temperature=0.0, max_new_tokens=25)
    prompts = ["a", "what is 2+2?", "tell me a long story about numbers"]
    got = sampler.generate_responses(prompts)
    for p, r in zip(prompts, got, strict=True):
        ids, text = sampler.encode_prompt(p)
        assert r.prompt_ids == ids and r.prompt_text == text
        assert r.response_ids == _hf_greedy(model, ids, 25, TOK.eos_token_id)
        assert r.response_text == TOK.decode(list(r.response_ids), skip_special_tokens=True)


def test_prompt_and_response_are_prefilled_once(model):
    sampler = HFSampler(model, TOK, max_new_tokens=40)
    x = _response(sampler, "hello", "world, this is a response of some length")
    widths = []
    handle = model.register_forward_pre_hook(
        lambda mod, args, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        sampler.resample(x, [x.length - k for k in cut_positions(x.length)], 8, rng=1)
        sampler.resample(x, [1, 2], 4, rng=2)  # a second call on the same response reuses the prefill
    finally:
        handle.remove()
    assert sum(w > 1 for w in widths) == 1
    assert widths[0] == len(x.prompt_ids) + x.length - 1


def test_cache_buffer_compaction_and_growth_match_plain_indexing():
    # The decode cache compacts in place and grows when forks outrun its row room; a reference list of
    # per-row (H, slots, D) tensors, edited with plain indexing, must see the same contents throughout.
    gen = torch.Generator().manual_seed(0)
    rows, h, d = 5, 2, 3

    def rand(n_rows, slots):
        return torch.randn((n_rows, h, slots, d), generator=gen)

    k0, v0 = rand(rows, 4), rand(rows, 4)
    buf_k, buf_v = torch.empty((rows, h, 10, d)), torch.empty((rows, h, 10, d))
    buf_k[:, :, :4], buf_v[:, :, :4] = k0, v0
    layer = _kv._GrowingLayer(buf_k, buf_v, 4, rows)
    cache = _kv._GrowingCache([layer])  # selects without dropped slots only move the rows that change place
    ref_k, ref_v = list(k0), list(v0)

    def check():
        assert layer.keys.shape == (len(ref_k), h, ref_k[0].shape[1], d)
        assert torch.equal(layer.keys, torch.stack(ref_k)) and torch.equal(layer.values, torch.stack(ref_v))

    # keeps: finished rows' places filled from the end; an arbitrary reorder (rows are both sources and
    # destinations); and one that also drops the first slot (in-place compaction)
    steps = [
        ([0, 4, 2], [], 0),
        ([], [1, 1, 0, 2], 0),
        ([5, 2, 1, 6], [], 1),
        ([], [0, 0, 0, 1, 2, 3], 0),
        ([3, 0, 9, 1], [], 0),
    ]
    for keep, parents, drop in steps:
        nk, nv = rand(len(ref_k), 1), rand(len(ref_k), 1)
        layer.update(nk, nv)
        ref_k = [torch.cat([r, n], dim=1) for r, n in zip(ref_k, nk, strict=True)]
        ref_v = [torch.cat([r, n], dim=1) for r, n in zip(ref_v, nv, strict=True)]
        check()
        if keep:
            cache.select(torch.tensor(keep), drop)
            ref_k, ref_v = [ref_k[i][:, drop:] for i in keep], [ref_v[i][:, drop:] for i in keep]
        if parents:
            layer.append(torch.tensor(parents))  # both appends outrun the row room: the buffer grows
            ref_k, ref_v = ref_k + [ref_k[i] for i in parents], ref_v + [ref_v[i] for i in parents]
        check()
    assert layer.buf_k.shape[0] > rows


def test_lean_step_follows_the_rotary_module_for_dynamic_rope(monkeypatch):
    # Dynamic RoPE rescales its frequencies with the longest position in the batch, so the lean step calls
    # the rotary module instead of its position table: it must agree with the transformers forward
    # through the same shared-prefix attention (lean off), logits and greedy continuations alike.
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(TOK),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,  # prompts and responses run past it, so the rescaling is in play
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
        initializer_range=0.15,
        bos_token_id=1,
        eos_token_id=TOK.eos_token_id,
        pad_token_id=0,
    )
    torch.manual_seed(5)
    dyn = AutoModelForCausalLM.from_config(config).eval()
    assert _kv._LeanDecoder.supported(dyn) and _kv._LeanDecoder(dyn, max_position=64).rope_table is None
    got = {}
    for lean in (True, False):
        # the rotary module keeps state (its frequencies follow the longest position seen): a fresh copy
        # and sampler per path, so that both start alike
        m = copy.deepcopy(dyn)
        sampler = HFSampler(m, TOK, temperature=0.0, max_new_tokens=60, prefix_attention="cascade")
        x = _response(sampler, "solve: 3*4+5", "3*4=12, then 12+5=17, so the answer is 17.")
        ts = [x.length - k for k in cut_positions(x.length)]
        monkeypatch.setattr(_kv, "LEAN", lean)
        got[lean] = (sampler.next_token_logits(x, ts), sampler.resample(x, ts, 1, rng=0))
    assert torch.max(torch.abs(got[True][0] - got[False][0])).item() <= 1e-5
    assert got[True][1] == got[False][1]
