"""The benchmark scripts run end to end (tiny --smoke shapes) and their three methods agree under greedy
decoding, so the speed numbers they print compare the same work."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_scan_bench_smoke(capsys, one_thread):
    result = _load("scan_bench").main(["--smoke", "--threads", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["greedy_identical_cuts"] == "6/6"
    assert result["M"] == 6 and {"ratio_vs_per_cut", "ratio_vs_batched"} <= result.keys()


@pytest.mark.slow
def test_gpu_bench_smoke_on_cpu(capsys, one_thread):
    result = _load("gpu_scan_bench").main(["--smoke"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert set(result["greedy_identical_cuts"].values()) == {"6/6"}
    assert result["max_abs_logit_diff_cached_vs_uncached"] <= 1e-5  # float32: cache and plain forward agree
    # every ending runs to the length cap in this setup, so all methods generate the same number of tokens
    assert len(set(result["generated_tokens"].values())) == 1
