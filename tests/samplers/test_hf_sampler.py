"""HFSampler behaviour: stop rules, budgets, seeds, out-of-memory retries, the protocol, cut positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critwin.errors import CritwinError
from critwin.samplers.base import Sampler
from critwin.samplers.hf import HFSampler
from critwin.samplers.hf_tiny import CHAT_TEMPLATE, char_tokenizer, tiny_causal_lm
from critwin.samplers.lm import Response
from critwin.schedules import PAPER_FRACTIONS, cut_positions, fraction_kept, ts_from_fractions
from critwin.types import Failure

TOK = char_tokenizer(chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm(len(TOK), seed=5)


@pytest.fixture(scope="module")
def x(model):
    return HFSampler(model, TOK).response_from_text("what is 6*7?", "6*7 = 42; check: 42/7 = 6. answer 42")


def greedy(model, **kw):
    return HFSampler(model, TOK, temperature=0.0, **kw)


# -- stop rules ------------------------------------------------------------------------------------------


def test_eos_stops_and_is_not_part_of_the_output(model, x):
    free = greedy(model, max_new_tokens=80, eos_token_ids=[]).resample(x, [10], 1, rng=0)[0][0]
    assert free.stop_reason == "length" and len(free.token_ids) == 80 - (x.length - 10)
    eos = free.token_ids[4]
    first = free.token_ids.index(eos)  # the first occurrence ends the continuation
    got = greedy(model, max_new_tokens=80, eos_token_ids=[eos]).resample(x, [10], 3, rng=0)[0]
    for c in got:
        assert c.token_ids == free.token_ids[:first] and c.stop_reason == "eos"


def test_stop_string_stops_right_after_it(model, x):
    free = greedy(model, max_new_tokens=80, eos_token_ids=[]).resample(x, [10], 1, rng=0)[0][0]
    text = TOK.decode(list(free.token_ids))
    stop = text[6:9]
    end = text.index(stop) + len(stop)  # char tokenizer: one token per character
    sampler = greedy(model, max_new_tokens=80, eos_token_ids=[], stop_strings=[stop])
    c = sampler.resample(x, [10], 1, rng=0)[0][0]
    assert c.stop_reason == "stop_string"
    assert TOK.decode(list(c.token_ids)) == text[:end]
    r = sampler.forward_reverse(x, [10], 1, rng=0)[0][0]
    # Stop strings match the raw text, special tokens included (as `generate` does).
    assert TOK.decode(list(r.response_ids)).endswith(stop) and r.stop_reason == "stop_string"


def test_stop_string_may_span_the_cut_but_old_text_never_triggers(model, x):
    free = greedy(model, max_new_tokens=80, eos_token_ids=[]).resample(x, [10], 1, rng=0)[0][0]
    kept_text = TOK.decode(list(x.response_ids[: x.length - 10]))
    first_new = TOK.decode([free.token_ids[0]])
    spanning = kept_text[-2:] + first_new
    c = greedy(model, max_new_tokens=80, eos_token_ids=[], stop_strings=[spanning]).resample(x, [10], 1, 0)
    if spanning in kept_text:  # pragma: no cover - depends on the fixture text; keep the test honest
        pytest.skip("stop string already in the kept text")
    assert c[0][0].token_ids == free.token_ids[:1] and c[0][0].stop_reason == "stop_string"
    # A stop string present only in the kept response (and prompt) does not stop anything.
    old = kept_text[:5]
    assert old not in TOK.decode(list(free.token_ids))
    c = greedy(model, max_new_tokens=80, eos_token_ids=[], stop_strings=[old]).resample(x, [10], 1, 0)
    assert c[0][0].token_ids == free.token_ids


def test_budget_caps_the_whole_response_or_each_continuation(model, x):
    s = HFSampler(model, TOK, max_new_tokens=x.length + 7, eos_token_ids=[])
    for t, per_t in zip([0, 5, x.length], s.forward_reverse(x, [0, 5, x.length], 4, rng=1), strict=True):
        for r in per_t:
            assert r.length == x.length + 7 and r.stop_reason == "length" and r.n_kept == x.length - t
            assert r.response_ids[: r.n_kept] == x.response_ids[: r.n_kept]
    s = HFSampler(model, TOK, max_new_tokens=6, eos_token_ids=[], budget="continuation")
    for per_t in s.resample(x, [0, 5], 3, rng=1):
        assert all(len(c.token_ids) == 6 for c in per_t)


# -- seeds, protocol, batching ---------------------------------------------------------------------------


def test_same_seed_same_samples_and_other_seed_other_samples(model, x):
    s = HFSampler(model, TOK, max_new_tokens=60)
    a = s.resample(x, [3, 20], 6, rng=np.random.default_rng(7))
    b = s.resample(x, [3, 20], 6, rng=np.random.default_rng(7))
    c = s.resample(x, [3, 20], 6, rng=np.random.default_rng(8))
    assert a == b and a != c
    # draws within one cut are not copies of each other
    assert len({cont.token_ids for cont in a[1]}) > 1


def test_sampler_protocol_and_forward_reverse_shape(model, x):
    s = HFSampler(model, TOK, max_new_tokens=60)
    assert isinstance(s, Sampler) and s.time_unit == "tokens"
    ts = ts_from_fractions(x.length)
    out = s.forward_reverse(x, ts, 3, np.random.default_rng(0))
    assert len(out) == len(ts) and all(len(per_t) == 3 for per_t in out)
    for t, per_t in zip(ts, out, strict=True):
        for r in per_t:
            assert isinstance(r, Response) and r.prompt_ids == x.prompt_ids
            assert r.response_ids[: x.length - t] == x.response_ids[: x.length - t]
            assert r.response_text == TOK.decode(list(r.response_ids), skip_special_tokens=True)
    xs = s.with_prompt("hi").sample(3, np.random.default_rng(0))
    assert len(xs) == 3 and all(r.prompt_text.endswith("assistant: ") for r in xs)


def test_results_do_not_depend_on_batch_size_under_greedy(model, x):
    ts = ts_from_fractions(x.length)
    big = greedy(model, max_new_tokens=50, batch_size=256).resample(x, ts, 2, rng=0)
    small = greedy(model, max_new_tokens=50, batch_size=3).resample(x, ts, 2, rng=0)
    assert big == small


def test_resample_many_equals_separate_calls_under_greedy(model, x):
    s = greedy(model, max_new_tokens=40)
    y = s.response_from_text("hello there", "general kenobi, you are a bold one")
    both = s.resample_many([x, y], [[1, 9], [0, 4, y.length]], 2, rng=0)
    assert both[0] == s.resample(x, [1, 9], 2, rng=0)
    assert both[1] == s.resample(y, [0, 4, y.length], 2, rng=0)


def test_out_of_memory_retries_with_smaller_batches_and_keeps_finished_work(model, x):
    ts = ts_from_fractions(x.length)
    ref = greedy(model, max_new_tokens=40).resample(x, ts, 4, rng=0)
    s = greedy(model, max_new_tokens=40, batch_size=16)
    calls = []

    def hook(batch_rows):
        calls.append(batch_rows)
        if batch_rows > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    s.fault_hook = hook
    assert s.resample(x, ts, 4, rng=0) == ref
    assert calls[0] == 16 and max(calls[calls.index(4) :]) <= 5  # halved 16 → 8 → 4, then stayed small

    def always(batch_rows):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")

    s.fault_hook = always
    out = s.forward_reverse(x, ts[:2], 2, rng=0)
    assert all(isinstance(r, Failure) and "out of memory" in r.reason for per_t in out for r in per_t)


def test_other_errors_are_not_swallowed(model, x):
    s = HFSampler(model, TOK, max_new_tokens=60)

    def hook(batch_rows):
        raise KeyError("boom")

    s.fault_hook = hook
    with pytest.raises(KeyError):
        s.resample(x, [1], 2, rng=0)


# -- cut positions ---------------------------------------------------------------------------------------


def test_cut_positions_paper_fractions_and_dense():
    assert PAPER_FRACTIONS == (0.05, 0.1, 0.3, 0.5, 0.7, 0.9)
    assert cut_positions(200) == [10, 20, 60, 100, 140, 180]
    assert cut_positions(7) == [0, 0, 2, 3, 4, 6]  # floor, not merged
    assert ts_from_fractions(200) == [190, 180, 140, 100, 60, 20]
    assert cut_positions(10, dense=True, step=4) == [0, 4, 8, 10]
    assert cut_positions(3, dense=True) == [0, 1, 2, 3]
    assert fraction_kept(200, 190) == pytest.approx(0.05)
    with pytest.raises(CritwinError, match="fraction"):
        cut_positions(10, [1.2])


# -- thread count ------------------------------------------------------------------------------------------


@pytest.fixture
def two_threads():
    """torch with two intra-op threads for one test (the suite's default is one)."""
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(1)


def test_auto_threads_take_one_thread_for_tiny_models(model, x, two_threads):
    s = HFSampler(model, TOK)  # cpu_threads="auto" is the default
    assert s.cpu_threads == 1
    seen = []
    s.fault_hook = lambda rows: seen.append(torch.get_num_threads())
    s.resample(x, [3.0], 2, np.random.default_rng(0))
    assert seen and set(seen) == {1} and torch.get_num_threads() == 2  # set while computing, then restored
    assert HFSampler(model, TOK, cpu_threads=None).cpu_threads is None
    assert HFSampler(model, TOK, cpu_threads=2).cpu_threads == 2


def test_auto_threads_measure_larger_models_and_leave_torch_as_it_was(two_threads):
    from critwin.samplers.hf import TINY_MODEL_PARAMS, choose_cpu_threads

    big = tiny_causal_lm(len(TOK), hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
    assert sum(p.numel() for p in big.parameters()) >= TINY_MODEL_PARAMS
    assert choose_cpu_threads(big) in (1, 2)  # whichever measured faster; results never depend on it
    assert torch.get_num_threads() == 2 and torch.is_grad_enabled()


def test_bad_thread_counts_are_one_line_errors(model):
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(CritwinError, match="cpu_threads"):
            HFSampler(model, TOK, cpu_threads=bad)
