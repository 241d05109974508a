"""Resampled continuations follow the model's law: χ² tests against exact probabilities and `generate`.

Sizes: n = 3000 draws per cut. A cell is pooled into "other" when its expected count is < 5, so the χ²
approximation holds; we accept at p > 1e-3 (fixed seeds, so the outcome is deterministic). The power checks
show the same test rejects a sampler that is only slightly wrong (temperature 0.75 instead of 0.6, or a cut
one token off), so passing is informative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from critwin.samplers import _kv
from critwin.samplers._kv import sample_tokens
from critwin.samplers.hf import HFSampler
from critwin.samplers.hf_tiny import CHAT_TEMPLATE, char_tokenizer, tiny_causal_lm
from critwin.samplers.lm import SamplingSettings

TOK = char_tokenizer(chat_template=CHAT_TEMPLATE)


N = 3000
ALPHA = 1e-3
TEMP, TOP_P = 0.6, 0.9


@pytest.fixture(scope="module")
def setup():
    # init_std 0.25: next-token laws with ~10-16 tokens in the top-p nucleus out of 55.
    model = tiny_causal_lm(len(TOK), seed=11, init_std=0.25)
    sampler = HFSampler(
        model, TOK, temperature=TEMP, top_p=TOP_P, max_new_tokens=2, budget="continuation", eos_token_ids=[]
    )
    x = sampler.response_from_text("compute 8*7", "8*7 = 56 because 8*7 is 7+7+7+7+7+7+7+7")
    return model, sampler, x


def nucleus_probs(logits: torch.Tensor, temperature: float = TEMP, top_p: float = TOP_P) -> np.ndarray:
    """Exact law of one draw: softmax(logits / T) on the top-p nucleus (as `generate`), renormalised."""
    p = torch.softmax(logits.double() / temperature, dim=-1)
    vals, idx = torch.sort(p, descending=True)
    keep = (torch.cumsum(vals, 0) - vals) < top_p
    q = torch.zeros_like(p)
    q[idx[keep]] = vals[keep]
    return (q / q.sum()).numpy()


def uncached_logits(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([list(ids)])).logits[0, -1]


def gof_pvalue(samples: np.ndarray, probs: np.ndarray) -> float:
    """χ² goodness of fit of integer samples to `probs`, pooling cells with expected count < 5."""
    n = len(samples)
    counts = np.bincount(samples, minlength=len(probs)).astype(float)
    expected = probs * n
    if counts[expected == 0].sum() > 0:
        return 0.0  # a draw outside the support: certainly wrong
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    return float(stats.chisquare(obs[keep], exp[keep]).pvalue)


def two_sample_pvalue(a: np.ndarray, b: np.ndarray, vocab: int) -> float:
    """χ² test of homogeneity of two samples of tokens (cells with pooled expected count < 5 merged)."""
    ca = np.bincount(a, minlength=vocab)
    cb = np.bincount(b, minlength=vocab)
    tot = ca + cb
    big = tot * min(len(a), len(b)) / (len(a) + len(b)) >= 5
    table = np.array([np.append(ca[big], ca[~big].sum()), np.append(cb[big], cb[~big].sum())])
    table = table[:, table.sum(0) > 0]
    return float(stats.chi2_contingency(table).pvalue)


def _draw(sampler: HFSampler, x, t: int, seed: int):
    conts = sampler.resample(x, [t], N, rng=seed)[0]
    first = np.array([c.token_ids[0] for c in conts])
    second = np.array([c.token_ids[1] for c in conts])
    return first, second


@pytest.mark.parametrize("share", [True, False], ids=["shared-rows", "row-per-draw"])
def test_first_and_second_tokens_follow_the_exact_law(setup, share, monkeypatch):
    # shared rows: all N draws of a cut start in one batch row and fork as their samples differ
    monkeypatch.setattr(_kv, "SHARE_DRAWS", share)
    model, sampler, x = setup
    full = x.prompt_ids + x.response_ids
    for t in (x.length - 3, x.length // 2):
        first, second = _draw(sampler, x, t, seed=t)
        prefix = full[: len(full) - t]
        p1 = nucleus_probs(uncached_logits(model, prefix))
        assert gof_pvalue(first, p1) > ALPHA
        # Second token's marginal: sum over first tokens a of p1(a) · p(b | prefix + a), each with top-p.
        support = np.nonzero(p1)[0]
        with torch.inference_mode():
            logits = model(torch.tensor([list(prefix) + [int(a)] for a in support])).logits[:, -1]
        p2 = sum(p1[a] * nucleus_probs(logits[i]) for i, a in enumerate(support))
        assert gof_pvalue(second, p2) > ALPHA
        # The nucleus really restricts the law here (otherwise top-p would be untested).
        assert 2 <= len(support) < len(p1) // 2


def test_original_responses_follow_the_exact_law(setup):
    # generate_responses on a repeated prompt: the draws share a row (gather path) until they fork
    model, sampler, _ = setup
    prompt_ids, _ = sampler.encode_prompt("compute 8*7")
    responses = sampler.with_prompt("compute 8*7").sample(N, np.random.default_rng(3))
    first = np.array([r.response_ids[0] for r in responses])
    second = np.array([r.response_ids[1] for r in responses])
    p1 = nucleus_probs(uncached_logits(model, prompt_ids))
    assert gof_pvalue(first, p1) > ALPHA
    support = np.nonzero(p1)[0]
    with torch.inference_mode():
        logits = model(torch.tensor([list(prompt_ids) + [int(a)] for a in support])).logits[:, -1]
    p2 = sum(p1[a] * nucleus_probs(logits[i]) for i, a in enumerate(support))
    assert gof_pvalue(second, p2) > ALPHA


def test_the_test_has_power(setup):
    model, sampler, x = setup
    full = x.prompt_ids + x.response_ids
    t = x.length // 2
    first, _ = _draw(sampler, x, t, seed=5)
    prefix = full[: len(full) - t]
    assert gof_pvalue(first, nucleus_probs(uncached_logits(model, prefix), temperature=0.75)) < ALPHA
    assert gof_pvalue(first, nucleus_probs(uncached_logits(model, prefix[:-1]))) < ALPHA  # cut one token off


def test_resampled_first_tokens_match_fresh_generate_calls(setup):
    model, sampler, x = setup
    full = x.prompt_ids + x.response_ids
    t = x.length - 5
    first, second = _draw(sampler, x, t, seed=9)
    torch.manual_seed(123)
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([list(full[: len(full) - t])]),
            do_sample=True,
            temperature=TEMP,
            top_p=TOP_P,
            top_k=0,
            max_new_tokens=2,
            min_new_tokens=2,
            num_return_sequences=N,
            pad_token_id=0,
            eos_token_id=None,
        )
    gen = out[:, len(full) - t :].numpy()
    assert two_sample_pvalue(first, gen[:, 0], len(TOK)) > ALPHA
    assert two_sample_pvalue(second, gen[:, 1], len(TOK)) > ALPHA


@pytest.mark.parametrize("rounds", [16, 0], ids=["rejection", "sorted"])
@pytest.mark.parametrize("top_k, top_p", [(0, 0.97), (5, 0.9), (0, 1.0), (0, 0.5)])
def test_sample_tokens_exact_law(top_k, top_p, rounds, monkeypatch):
    # 300-token vocabulary with flat logits (a nucleus of ~250 tokens at 0.97) and a peaked one (0.5);
    # rounds=0 sends every row to the sorted-nucleus fallback, 16 exercises rejection sampling.
    monkeypatch.setattr(_kv, "_REJECTION_ROUNDS", rounds)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(300, generator=gen) * (0.5 if top_p > 0.5 else 1.5)
    settings = SamplingSettings(temperature=0.8, top_p=top_p, top_k=top_k)
    draws = sample_tokens(logits.expand(20000, -1), settings, torch.Generator().manual_seed(1)).numpy()
    scaled = logits.double() / 0.8
    if top_k:
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = nucleus_probs(scaled, temperature=1.0, top_p=top_p)
    assert gof_pvalue(draws, probs) > ALPHA
    if top_p == 0.97:
        assert np.count_nonzero(probs) > 200
    if top_p == 0.5:
        assert 2 <= np.count_nonzero(probs) <= 20
