"""The language-model seam: torch-free protocol modules, the sampler registry, `Response.t_max`, and the
protocol methods of `HFSampler` checked against the model and tokenizer they wrap."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from critwin.errors import CritwinError
from critwin.samplers import (
    ForwardReverse,
    LMSampler,
    Response,
    Sampler,
    Unconditional,
    load_sampler,
    register_sampler,
    sampler_kinds,
)
from critwin.samplers.hf_tiny import CHAT_TEMPLATE, char_tokenizer, tiny_causal_lm
from critwin.samplers.registry import unregister_sampler

TOK = char_tokenizer(chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm(len(TOK), arch="llama", seed=7)


@pytest.fixture(scope="module")
def sampler(model):
    from critwin.samplers.hf import HFSampler

    return HFSampler(model, TOK, max_new_tokens=20, temperature=1.0, top_p=1.0)


# ----------------------------------------------------------------------------------------------------------
# No torch behind the protocol modules
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code",
    [
        "import critwin.samplers.lm",
        "import critwin.samplers.base",
        "import critwin.samplers.registry",
        "import critwin.samplers",
        "import critwin.conformance",
        "from critwin.samplers import load_sampler, sampler_kinds; sampler_kinds(); load_sampler('toy_lm')",
    ],
)
def test_protocol_modules_do_not_import_torch(code):
    probe = textwrap.dedent(f"""
        import json, sys
        {code}
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ----------------------------------------------------------------------------------------------------------
# Response and the protocols
# ----------------------------------------------------------------------------------------------------------
def test_response_knows_its_t_max_and_time_unit():
    r = Response((1, 2), (5, 6, 7), "ab", "xyz")
    assert r.t_max == 3.0 and isinstance(r.t_max, float) and r.length == 3
    assert r.time_unit == "tokens" and Response.time_unit == "tokens"
    assert Response((1,), (), "a", "").t_max == 0.0
    # time_unit is not a field: a Response round-trips through its fields alone.
    from dataclasses import fields

    assert "time_unit" not in {f.name for f in fields(Response)}


def test_continuation_is_one_type_for_the_engine_and_the_protocol():
    from critwin.samplers import _kv
    from critwin.samplers.lm import Continuation

    assert _kv.Continuation is Continuation


def test_backends_satisfy_the_protocols_they_claim(sampler):
    toy, gauss = load_sampler("toy_lm"), load_sampler("gaussian")
    for s in (toy, gauss, sampler):
        assert isinstance(s, ForwardReverse) and isinstance(s, Unconditional) and isinstance(s, Sampler)
    assert isinstance(sampler, LMSampler)
    assert not isinstance(toy, LMSampler) and not isinstance(gauss, LMSampler)


# ----------------------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------------------
def test_registered_kinds_and_their_defaults():
    assert {"hf", "gaussian", "toy_lm"} <= set(sampler_kinds())
    toy = load_sampler("toy_lm")
    assert toy.t_max == toy.language.length == 18
    g = load_sampler("gaussian", method="ddpm", steps=10, t_max=5.0)
    assert (g.method, g.steps, g.t_max, g.dim) == ("ddpm", 10, 5.0, 2)
    assert np.allclose(g.mu, [[-100, -4], [-100, 4], [100, -4], [100, 4]])
    hf = load_sampler("hf", max_new_tokens=8)
    assert hf.model_name.endswith("reasoning_model") and hf.t_max == 8.0 and hf.chat


def test_gaussian_reads_a_theory_spec_file(tmp_path):
    mixture = {"kind": "gaussian", "means": [[-3.0], [3.0]], "variances": [1, 1], "weights": [0.5, 0.5]}
    spec = {"mixture": mixture, "process": "ou", "eps": 0.1, "pairs": [{"targ": [0], "init": [0, 1]}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    g = load_sampler("gaussian", path)
    assert g.dim == 1 and np.allclose(g.mu[:, 0], [-3, 3])


def test_unknown_kinds_and_settings_are_one_line_errors():
    known = "diffusers, gaussian, hf, openai, toy_lm, vllm"
    with pytest.raises(CritwinError, match=f"unknown; use one of {known}") as err:
        load_sampler("nope")
    assert "\n" not in str(err.value)
    with pytest.raises(CritwinError, match="unknown setting 'temprature'"):
        load_sampler("hf", temprature=0.5)
    with pytest.raises(CritwinError, match="unknown setting 'steps_'"):
        load_sampler("gaussian", steps_=3)
    with pytest.raises(CritwinError, match="reads no file"):
        load_sampler("toy_lm", "lang.json")
    with pytest.raises(CritwinError, match="does not exist"):
        load_sampler("hf", "/nonexistent/model")
    with pytest.raises(CritwinError, match="package.module:factory"):
        register_sampler("x", "no_colon_here")


def _temporary(kind, target, extra=None):
    register_sampler(kind, target, extra)
    return kind


def test_a_factory_needing_a_missing_package_names_the_package_and_the_extra(tmp_path, monkeypatch):
    (tmp_path / "critwin_test_backend.py").write_text(
        "import critwin_absent_engine_pkg\n\ndef make(path_or_url=None, **settings):\n    return None\n"
    )
    (tmp_path / "critwin_test_broken.py").write_text("raise RuntimeError('broken at import\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = [
        _temporary("needs_pkg", "critwin_test_backend:make", extra="someengine"),
        _temporary("needs_pkg_no_extra", "critwin_test_backend:make"),
        _temporary("no_module", "critwin_test_nowhere:make"),
        _temporary("no_function", "json:nowhere"),
        _temporary("broken", "critwin_test_broken:make"),
    ]
    try:
        assert set(kinds) <= set(sampler_kinds())
        with pytest.raises(CritwinError) as err:
            load_sampler("needs_pkg")
        assert str(err.value) == ("sampler 'needs_pkg' needs the optional dependency "
                                  "'critwin_absent_engine_pkg': pip install 'critwin[someengine]'")
        with pytest.raises(CritwinError, match="pip install critwin_absent_engine_pkg$"):
            load_sampler("needs_pkg_no_extra")
        with pytest.raises(CritwinError, match="'critwin_test_nowhere' does not exist here; fix the regis"):
            load_sampler("no_module")
        with pytest.raises(CritwinError, match="json has no function 'nowhere'"):
            load_sampler("no_function")
        with pytest.raises(CritwinError, match="raised RuntimeError: broken at import; fix") as err:
            load_sampler("broken")
        assert "\n" not in str(err.value)
    finally:
        for k in kinds:
            unregister_sampler(k)
    assert not set(kinds) & set(sampler_kinds())


# ----------------------------------------------------------------------------------------------------------
# HFSampler's protocol methods against the model and tokenizer
# ----------------------------------------------------------------------------------------------------------
def test_score_is_the_raw_log_softmax_of_one_forward_pass(sampler, model):
    prompts = [[1, 5, 7], [1], [1, 9, 9, 9, 4]]
    completions = [[9, 11, 13, 2], [4, 4], []]
    got = sampler.score(prompts, completions, batch_size=2)
    for p, c, lp in zip(prompts, completions, got, strict=True):
        seq = p + c
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([seq])).logits[0].float()
        rows, cols = torch.arange(len(p) - 1, len(seq) - 1), torch.tensor(c, dtype=torch.long)
        ref = torch.log_softmax(logits, -1)[rows, cols]
        assert lp.dtype == np.float64 and lp.shape == (len(c),)
        np.testing.assert_allclose(lp, ref.numpy(), atol=1e-5)
    # Temperature plays no part: a greedy copy scores the same.
    greedy = sampler.with_settings(temperature=0.0)
    np.testing.assert_array_equal(greedy.score(prompts, completions, batch_size=2)[0], got[0])


def test_score_errors(sampler):
    with pytest.raises(CritwinError, match="prompt 0 is empty"):
        sampler.score([[]], [[5]])
    with pytest.raises(CritwinError, match="2 prompts for 1 completions"):
        sampler.score([[1], [1]], [[5]])
    with pytest.raises(CritwinError, match="outside the model's vocabulary"):
        sampler.score([[1]], [[10_000]])
    with pytest.raises(CritwinError, match="batch_size"):
        sampler.score([[1]], [[5]], batch_size=0)
    assert sampler.score([], []) == []


def test_text_methods_agree_with_the_tokenizer(sampler):
    text = "so the answer is 42."
    ids = sampler.encode_text(text)
    assert list(ids) == TOK(text, add_special_tokens=False)["input_ids"]
    assert sampler.decode(ids) == text
    assert sampler.token_ends(text) == list(range(1, len(text) + 1))  # one character per token
    ids2, spans = sampler.encode_with_offsets(text)
    assert ids2 == ids and spans == tuple((i, i + 1) for i in range(len(text)))
    assert sampler.char_offsets(ids) == list(range(len(text) + 1))
    with_special = (1, *ids[:3], 2)  # <bos>, 3 characters, <eos>: specials decode to nothing
    assert sampler.char_offsets(with_special) == [0, 0, 1, 2, 3, 3]
    chat = [{"role": "user", "content": "hi"}]
    assert sampler.render_chat(chat) == "<bos>user: hi\n"
    assert sampler.render_chat(chat, add_generation_prompt=True) == sampler.encode_prompt("hi")[1]
    r = sampler.response_from_text("hi", text)
    assert r.response_ids == ids and r.prompt_ids == sampler.encode_prompt("hi")[0]
    assert sampler.model_name == "in-memory model" and sampler.context_length == 2048


def test_render_chat_without_a_template_is_an_error(model):
    from critwin.samplers.hf import HFSampler

    plain = char_tokenizer()
    with pytest.raises(CritwinError, match="no chat template"):
        HFSampler(model, plain).render_chat([{"role": "user", "content": "hi"}])


def test_with_settings_is_a_copy(sampler):
    g = sampler.with_settings(temperature=0.0, max_new_tokens=5, budget="continuation")
    assert (g.settings.temperature, g.settings.max_new_tokens, g.budget) == (0.0, 5, "continuation")
    assert g.t_max == 5.0
    assert (sampler.settings.temperature, sampler.settings.max_new_tokens) == (1.0, 20)
    assert sampler.budget == "response"
    with pytest.raises(CritwinError, match="'temp' is not one; use temperature"):
        sampler.with_settings(temp=0.0)
    with pytest.raises(CritwinError, match="budget="):
        sampler.with_settings(budget="all")
    with pytest.raises(CritwinError, match="'temp' is not one"):
        sampler.generate_responses(["hi"], temp=0.0)


def test_cut_times_outside_the_response_are_errors(sampler):
    x = sampler.response_from_text("hi", "abcdef")
    for t in (-1, 7, 0.5, float("nan"), float("inf")):
        with pytest.raises(CritwinError, match="cut positions are whole numbers"):
            sampler.forward_reverse(x, [t], 2, np.random.default_rng(0))
