"""Benchmark: the same reasoning scan of the bundled model on the local runner and on 1 and 2 Ray workers.

A 2-CPU Ray head node is started once (`ray start --head --block`, 127.0.0.1) and every Ray run joins it,
so the cluster's start-up (reported apart, `cluster_start_s`) is not charged to a run. A run is timed
without its report (written afterwards, untimed, to compare summaries), in two parts: start-up (the local
runner building its sampler; Ray starting its actors, each importing torch and loading the model) and the
cases. An untimed local run of one problem first pays this process's imports. Every sampler uses one torch
thread. Runs are interleaved (local, 1 worker, 2 workers) --repeats times; medians are reported. All runs
must give the same summary.json (checked; `summaries_identical`).

Reported: throughput (cases/s) per runner over the cases part and over the whole run; Ray's overhead (1
worker against local) per case in the cases part and as a fraction of the whole run; the scaling from 1 to
2 workers (speedup and efficiency = speedup / 2) over the cases part. Targets on these 2 cores: speedup >=
1.6 and overhead <= 5%.
Last stdout line: one JSON object.
Usage: python benchmarks/ray_bench.py [--problems P] [-k K] [--repeats R] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_head(tmp: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = Path(tmp) / "head.log"
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address",
         "127.0.0.1", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir",
         tmp, "--disable-usage-stats"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.time() + 180
    while "will now block" not in log.read_text():
        if head.poll() is not None or time.time() > deadline:
            raise SystemExit(f"ray start failed:\n{log.read_text()}")
        time.sleep(0.1)
    return head, f"127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("-k", type=int, default=8, help="endings per cut")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="4 problems, k = 2: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.problems, args.k, args.repeats = 4, 2, 1

    from critwin.driver import run
    from critwin.experiments import reasoning as R
    from critwin.report import writer_for
    from critwin.rundir import RunDir
    from critwin.runners import Ray

    cfg = R.ReasoningConfig.from_flat(task="arith", k=args.k, fractions=(0.2, 0.5, 0.8), max_new_tokens=300)
    problems = R.load_reasoning_problems(R.BUNDLED_PROBLEMS, "arith", limit=args.problems)
    exp = R.ReasoningExperiment([problems], cfg, str(R.BUNDLED_MODEL.resolve()))
    build = R.lm_factory("hf", R.BUNDLED_MODEL, exp, cpu_threads=1)
    n = len(problems)
    ready: list[float] = []  # when the run's sampler (local) or actors (Ray) were ready

    def factory():
        sampler = build()
        ready.append(time.perf_counter())
        return sampler

    def on_log(line: str) -> None:
        if line.startswith("ray worker") and not ready:
            ready.append(time.perf_counter())

    tmp = tempfile.mkdtemp(prefix="crw-raybench-")
    t0 = time.perf_counter()
    head, address = _start_head(tmp)
    cluster_start = time.perf_counter() - t0
    runners = {"local": lambda: None, "ray_1": lambda: Ray(address=address, workers=1, log=on_log),
               "ray_2": lambda: Ray(address=address, workers=2, log=on_log)}
    times: dict[str, list[float]] = {k: [] for k in runners}
    starts: dict[str, list[float]] = {k: [] for k in runners}
    summaries: dict[str, dict] = {}
    try:
        warm = R.ReasoningExperiment([R.load_reasoning_problems(R.BUNDLED_PROBLEMS, "arith", limit=1)], cfg,
                                     str(R.BUNDLED_MODEL.resolve()))
        run(warm, factory=R.lm_factory("hf", R.BUNDLED_MODEL, warm, cpu_threads=1), out=Path(tmp) / "warm")
        for rep in range(args.repeats):
            for name, make in runners.items():
                out = Path(tmp) / f"{name}-{rep}"
                ready.clear()
                t0 = time.perf_counter()
                res = run(exp, factory=factory, out=out, runner=make(), report=False)
                times[name].append(time.perf_counter() - t0)
                starts[name].append(ready[0] - t0)
                summaries[name] = writer_for(exp.name, None)(RunDir.open(out))
                assert res.n_failed == 0 and res.n_computed == n, res.failures
                print(f"{name}: {times[name][-1]:.1f} s ({starts[name][-1]:.1f} s start-up)", file=sys.stderr)
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    start = {k: statistics.median(v) for k, v in starts.items()}
    cases = {k: statistics.median(t - s for t, s in zip(times[k], starts[k], strict=True)) for k in times}
    speedup = cases["ray_1"] / cases["ray_2"]
    print(json.dumps({
        "benchmark": "ray_bench",
        "cases": n,
        "k": args.k,
        "seconds": med,
        "start_up_s": start,
        "cases_s": cases,
        "cases_per_s": {k: n / v for k, v in cases.items()},
        "cases_per_s_whole_run": {k: n / v for k, v in med.items()},
        "ray_overhead_per_case_s": (cases["ray_1"] - cases["local"]) / n,
        "ray_overhead_fraction_cases": cases["ray_1"] / cases["local"] - 1,
        "ray_overhead_fraction_whole_run": med["ray_1"] / med["local"] - 1,
        "speedup_1_to_2_workers": speedup,
        "scaling_efficiency": speedup / 2,
        "cluster_start_s": cluster_start,
        "summaries_identical": summaries["ray_1"] == summaries["local"] == summaries["ray_2"],
        "threads_per_worker": 1,
        "smoke": args.smoke,
    }))


if __name__ == "__main__":
    main()
