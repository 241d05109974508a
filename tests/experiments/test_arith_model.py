"""The bundled reasoning model: loads offline; right often but not always, with errors at carry steps."""

from __future__ import annotations

import json
import math

import pytest

from critwin.experiments import arith
from critwin.experiments.reasoning import ASSETS, BUNDLED_MODEL, BUNDLED_PROBLEMS
from critwin.samplers.hf import HFSampler, load_causal_lm

HELDOUT = ASSETS / "reasoning_problems_heldout.jsonl"


@pytest.fixture(scope="module")
def sampler():
    return HFSampler.from_pretrained(BUNDLED_MODEL, device="cpu", max_new_tokens=300)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bundled_model_is_small_and_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    size = sum(f.stat().st_size for f in BUNDLED_MODEL.iterdir())
    assert size <= 10 * 2**20
    assert (BUNDLED_MODEL / "model.safetensors").is_file()
    model, tok = load_causal_lm(BUNDLED_MODEL, device="cpu")
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert tok.chat_template
    # The saved tokenizer is the one the task module builds: same ids for the same text.
    text = "Add up a=7, b=5?\nb: 07+5=12"
    assert tok(text, add_special_tokens=False)["input_ids"] == arith.build_tokenizer()(
        text, add_special_tokens=False
    )["input_ids"]


def test_bundled_problems_schema():
    rows = _rows(BUNDLED_PROBLEMS)
    assert 15 <= len(rows) <= 30
    held = _rows(HELDOUT)
    assert len({r["id"] for r in rows + held}) == len(rows) + len(held)
    for r in rows + held:
        assert set(r) == {"id", "question", "answer"}
        assert r["answer"] == str(sum(arith.parse_question(r["question"])))


def test_greedy_chains_are_almost_always_right(sampler):
    probs = _rows(HELDOUT)[:30]
    out = sampler.generate_responses([p["question"] for p in probs], seed=0, temperature=0.0)
    right = sum(arith.extract_answer(r.response_text) == p["answer"] for r, p in zip(out, probs, strict=True))
    assert right >= 26  # the training report measured 0.985 on 400 held-out problems


def test_sampled_accuracy_is_in_range_and_errors_sit_at_carry_steps(sampler):
    """At the paper's settings (T = 0.6, top-p 0.9) the model is right often but not always (training
    report: 0.665 on 400 held-out problems; ±4 standard errors on 80 problems is about ±0.21), and its
    first wrong step is a step whose units digits carry (the slip it was trained to make)."""
    probs = _rows(HELDOUT)[:80]
    out = sampler.generate_responses([p["question"] for p in probs], seed=1)
    right, at_carry, wrong = 0, 0, 0
    for r, p in zip(out, probs, strict=True):
        right += arith.extract_answer(r.response_text) == p["answer"]
        ops = arith.parse_question(p["question"])
        err = arith.first_wrong_step(ops, r.response_text)
        if err is not None and err.step < len(ops) - 1:
            wrong += 1
            at_carry += sum(ops[: err.step + 1]) % 10 + ops[err.step + 1] >= 10
    acc = right / len(probs)
    assert 0.45 <= acc <= 0.88
    assert wrong >= 5 and at_carry / wrong >= 0.8


def test_training_report_records_the_measured_accuracy():
    rep = json.loads((BUNDLED_MODEL / "training_report.json").read_text())
    s = rep["heldout_sampled_t0.6_top_p0.9"]
    assert s["n"] >= 200 and 0.5 <= s["accuracy"] <= 0.9
    assert math.isclose(s["accuracy_se"], math.sqrt(s["accuracy"] * (1 - s["accuracy"]) / s["n"]))
    assert rep["heldout_greedy"]["accuracy"] > s["accuracy"]
    assert rep["config"]["device"] == "cpu" and rep["config"]["threads"] == 2
