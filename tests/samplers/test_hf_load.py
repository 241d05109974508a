"""Loading local model directories and the one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from critwin.errors import CritwinError
from critwin.samplers.hf import HFSampler, load_causal_lm
from critwin.samplers.hf_tiny import CHAT_TEMPLATE, char_tokenizer, save_tiny_model, tiny_causal_lm
from critwin.samplers.lm import Response

TOK = char_tokenizer(chat_template=CHAT_TEMPLATE)


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), seed=2)


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm(len(TOK), seed=2)


def test_load_round_trip_gives_the_same_model_and_tokenizer(model_dir):
    model, tok = load_causal_lm(model_dir, dtype="float32", device="cpu")
    assert not model.training and model.dtype == torch.float32
    ref = tiny_causal_lm(len(TOK), seed=2)
    ids = torch.tensor([TOK("<bos>abc 123").input_ids])
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    assert tok.decode(tok("hello 42").input_ids) == "hello 42"
    s = HFSampler.from_pretrained(model_dir, dtype="auto", device="cpu", max_new_tokens=5)
    assert s.chat and s.encode_prompt("hi")[1] == "<bos>user: hi\n<bos>assistant: "
    assert s.settings.eos_token_ids == (2,)
    bf16, _ = load_causal_lm(model_dir, dtype="bfloat16", device="cpu")
    assert bf16.dtype == torch.bfloat16


def test_missing_directory(tmp_path):
    with pytest.raises(CritwinError) as e:
        load_causal_lm(tmp_path / "nope")
    assert "does not exist" in one_line(e)
    with pytest.raises(CritwinError) as e:
        load_causal_lm(tmp_path)
    assert "config.json" in one_line(e)


def test_non_causal_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert", "vocab_size": 50}))
    with pytest.raises(CritwinError) as e:
        load_causal_lm(tmp_path, device="cpu")
    assert "not a causal LM" in one_line(e)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "t5", "vocab_size": 50, "is_encoder_decoder": True})
    )
    with pytest.raises(CritwinError) as e:
        load_causal_lm(tmp_path, device="cpu")
    assert "encoder-decoder" in one_line(e)


def test_missing_tokenizer_and_bad_dtype(tmp_path, model):
    model.save_pretrained(tmp_path)
    with pytest.raises(CritwinError) as e:
        load_causal_lm(tmp_path, device="cpu")
    assert "tokenizer" in one_line(e)
    with pytest.raises(CritwinError) as e:
        load_causal_lm(tmp_path, dtype="float8", device="cpu")
    assert "dtype" in one_line(e)


def test_chat_template_required_or_absent(model):
    plain = char_tokenizer()
    with pytest.raises(CritwinError) as e:
        HFSampler(model, plain, chat=True)
    assert "chat template" in one_line(e)
    s = HFSampler(model, plain)  # auto: no template → plain prompt
    assert not s.chat and s.encode_prompt("abc") == (tuple(plain("abc").input_ids), "abc")
    with pytest.raises(CritwinError) as e:
        s.encode_prompt([{"role": "user", "content": "abc"}])
    assert "chat template" in one_line(e)
    s = HFSampler(model, TOK, chat=False)
    assert s.encode_prompt("abc")[1] == "abc"
    s = HFSampler(model, TOK, system_prompt="be brief")
    assert s.encode_prompt("abc")[1].startswith("<bos>system: be brief\n<bos>user: abc")
    with pytest.raises(CritwinError) as e:
        s.encode_prompt([{"content": "no role"}])
    assert "role" in one_line(e)


def test_bad_responses_and_cuts(model):
    s = HFSampler(model, TOK, max_new_tokens=30)
    x = s.response_from_text("q", "an answer")
    empty = Response(x.prompt_ids, (), x.prompt_text, "")
    cases = [
        (lambda: s.forward_reverse(empty, [0], 2, 0), "response is empty"),
        (lambda: s.forward_reverse(x, [-1], 2, 0), "t=-1"),
        (lambda: s.forward_reverse(x, [x.length + 1], 2, 0), "t="),
        (lambda: s.forward_reverse(x, [2.5], 2, 0), "whole numbers"),
        (lambda: s.forward_reverse(x, [1], 0, 0), "n=0"),
        (lambda: s.forward_reverse("text", [1], 2, 0), "expected a Response"),
        (
            lambda: s.forward_reverse(Response((), x.response_ids, "", x.response_text), [1], 2, 0),
            "empty prompt",
        ),
        (lambda: s.forward_reverse(Response(x.prompt_ids, (9999,), "", "?"), [1], 2, 0), "vocabulary"),
        (lambda: HFSampler(model, TOK, max_new_tokens=3).forward_reverse(x, [1], 2, 0), "max_new_tokens=3"),
        (lambda: s.resample_many([x], [[1], [2]], 2, 0), "schedules"),
        (lambda: s.generate_responses("abc"), "list of prompts"),
        (lambda: HFSampler(model, char_tokenizer()).generate_responses([""]), "empty after tokenization"),
        (lambda: HFSampler(model, TOK, top_p=0.0), "top_p"),
        (lambda: HFSampler(model, TOK, temperature=-1), "temperature"),
        (lambda: HFSampler(model, TOK, stop_strings=[""]), "stop_strings"),
        (lambda: HFSampler(model, TOK, batch_size=0), "batch_size"),
        (lambda: HFSampler(model, TOK, budget="tokens"), "budget"),
        (lambda: HFSampler(model, TOK).sample(2, 0), "with_prompt"),
    ]
    for fn, needle in cases:
        with pytest.raises(CritwinError) as e:
            fn()
            pytest.fail(f"no error for case {needle!r}")
        assert needle in one_line(e), needle
