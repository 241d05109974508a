"""The OpenAI-compatible backend against a real vLLM server agrees with the offline vLLM backend, and a scan
whose server is killed mid-run records Failure rows, then resumes to the summary of an uninterrupted run.

Same law: two-sample χ² on the first tokens and lengths of n = 2000 continuations at one cut (accepted at
p > 1e-3, as in test_vllm_engine, whose power check shows the test tells temperature 0.6 from 1.0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _engine_stats import high_entropy_cut, two_sample_p

from critwin.types import Failure

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.xdist_group("vllm_server")]

N = 2000
ALPHA = 1e-3


def test_openai_backend_draws_what_the_vllm_backend_draws(vllm_server):
    from critwin.experiments.reasoning import BUNDLED_PROBLEMS, load_reasoning_problems
    from critwin.samplers import load_sampler
    from critwin.samplers.vllm_engine import shutdown_engines

    problem = load_reasoning_problems(BUNDLED_PROBLEMS, "arith").problems[4]
    with vllm_server.in_use() as server:
        api = load_sampler("openai", server.base_url, model=vllm_server.model_dir, max_new_tokens=300)
        (x,) = api.generate_responses([problem.prompt()], seed=11)
        engine = load_sampler("vllm", vllm_server.model_dir, max_new_tokens=300)
        hf = load_sampler("hf", vllm_server.model_dir, max_new_tokens=300, cpu_threads=1)
        try:
            t = high_entropy_cut(hf, x)
            (a,) = api.resample(x, [t], N, np.random.default_rng(1))
            (b,) = engine.resample(x, [t], N, np.random.default_rng(2))
        finally:
            shutdown_engines()
    assert not any(isinstance(c, Failure) for c in a + b)
    first_a, first_b = ([c.token_ids[:1] for c in cs] for cs in (a, b))
    len_a, len_b = ([min(len(c.token_ids), 60) // 5 for c in cs] for cs in (a, b))
    assert len(set(first_a)) >= 2
    assert two_sample_p(first_a, first_b) > ALPHA
    assert two_sample_p(len_a, len_b) > ALPHA


def _scan(base_url: str, model: Path, out: Path) -> subprocess.Popen:
    critwin = Path(sys.executable).parent / "critwin"
    return subprocess.Popen(
        [str(critwin), "scan", "--engine", "openai", "--base-url", base_url, "--model", str(model),
         "--limit", "3", "-k", "4", "--fractions", "0.3,0.7", "--out", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _datasets(stdout: str) -> dict:
    (d,) = json.loads(stdout)["datasets"].values()
    return d


def test_a_server_killed_mid_scan_gives_failures_and_the_resumed_run_matches(vllm_server, tmp_path):
    model = vllm_server.model_dir
    with vllm_server.in_use() as server:
        ref = _scan(server.base_url, model, tmp_path / "uninterrupted")
        out, err = ref.communicate(timeout=600)
        assert ref.returncode == 0, err
        want = _datasets(out)
    assert want["n_failed"] == 0
    run = tmp_path / "killed"
    with vllm_server.exclusive() as server:
        scan = _scan(server.base_url, model, run)
        deadline = time.monotonic() + 300
        while not list((run / "cases").glob("*.json")) and time.monotonic() < deadline:
            assert scan.poll() is None, scan.stderr.read()
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)  # a crash, not a clean stop
        out, err = scan.communicate(timeout=600)
    assert "Traceback" not in err
    problems = [json.loads(s) for s in (run / "problems.jsonl").read_text().splitlines()]
    failed = [p for p in problems if p.get("status") == "failed"]
    assert failed, "cases drawn after the kill must be recorded as failed"
    assert all("error" in p for p in failed)
    with vllm_server.in_use() as server:  # a fresh server, on another port
        again = _scan(server.base_url, model, run)
        out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    got = _datasets(out)
    assert json.loads(out)["n_resumed"] >= 1
    assert got == want
    cache = run / "api_cache"
    assert cache.is_dir() and any(cache.rglob("*.json"))
    phases = [json.loads(s)["phase"] for s in (run / "engines.jsonl").read_text().splitlines()]
    assert phases.count("start") == 2
