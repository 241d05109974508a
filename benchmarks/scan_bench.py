"""Benchmark: critwin's shared-prefix resampling vs two plain-transformers ways of doing the same work.

The work: one response of >= 200 tokens, cut at the paper's M = 6 fractions kept (0.05 … 0.9), K = 32
continuations per cut, temperature 0.6, top-p 0.9, same stop rules and the same length cap for all methods
(the whole response is capped at `cap` tokens, so an ending after a cut keeping k tokens may add cap - k).

- critwin: `HFSampler.resample` — prompt + response prefilled once, every cut's cache gathered from it,
  all M·K rows decoded in one batch that drops finished rows.
- (a) per_cut: the original pipeline's approach — one `model.generate` per cut with
  num_return_sequences=K, which re-prefills the prefix K times.
- (b) batched: the best plain-transformers baseline — all M·K rows left-padded into one `generate` call
  (its max_new_tokens is the largest budget; each row is truncated at its own budget afterwards).

Consistency checks in the same run: under greedy decoding (K = 1) the three methods must give identical
continuations; under sampling, the first sampled tokens of critwin and each baseline are compared per cut
with a χ² homogeneity test (summed over cuts) and the mean continuation lengths are reported.

The model is the bundled reasoning model (src/critwin/assets/reasoning_model) when it exists, answering a
long synthetic sum; otherwise a random-weight model of similar size (said so in the JSON: its response is
a 240-token sample with eos suppressed, and its continuations stop at its own, random, eos).

Threads: every method runs with the same torch thread count, 1 by default. On this shared 2-core machine
multi-threaded timings of the many small ops of a small model are dominated by contention with other jobs
(in our runs the per-cut baseline took 4.5 s to 195 s with 2 threads, 4.4–7.2 s with 1); `--threads 2`
uses both cores, `--threads 0` leaves torch's default.

Timing: each method first runs once untimed (the first run of a process pays one-time costs, such as the
math library's kernels for each new matrix shape and fresh memory pages, which a scan over many problems
pays once), then `--repeats` times (default 3), interleaved, so that a slow spell of the machine hits all
of them; the JSON reports median times, ratios of the medians and the per-repeat ratios.

Last stdout line: one JSON object with ratio_vs_per_cut, ratio_vs_batched, the wall times, tokens/s and
the consistency checks. Usage: python benchmarks/scan_bench.py [--smoke] [--k 32] [--random-model]
[--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared _baselines module

from _baselines import (  # noqa: E402
    first_token_pvalue,
    generate_batched,
    generate_kwargs,
    generate_per_cut,
    log,
    n_tokens,
)

import critwin  # noqa: E402
from critwin.samplers import _kv  # noqa: E402
from critwin.samplers.hf import HFSampler, load_causal_lm  # noqa: E402
from critwin.samplers.hf_tiny import char_tokenizer, tiny_causal_lm  # noqa: E402
from critwin.samplers.lm import Response  # noqa: E402
from critwin.schedules import PAPER_FRACTIONS, cut_positions  # noqa: E402

ASSET = Path(critwin.__file__).parent / "assets" / "reasoning_model"
TEMPERATURE, TOP_P = 0.6, 0.9


def clock() -> tuple[float, float]:
    """(wall, process CPU) seconds; CPU time is less disturbed by other jobs sharing the cores."""
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = clock()
    return t1[0] - t0[0], t1[1] - t0[1]


# -- model and original response -------------------------------------------------------------------------


def bundled_response(min_len: int, cap: int, seed: int):
    """The bundled model answering long synthetic sums; the first sampled answer of >= min_len tokens."""
    model, tok = load_causal_lm(ASSET, dtype="float32", device="cpu")
    sampler = HFSampler(model, tok, temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=cap)
    try:
        from critwin.experiments.arith import NAMES, generate_problems

        prompts = [p.question for p in generate_problems(24, seed, n_terms=(18, min(20, len(NAMES))))]
    except Exception as exc:  # noqa: BLE001 - the task module may change; any long prompt will do
        log(f"arith problems unavailable ({exc}); using a generic prompt")
        prompts = ["Add up all numbers from 1 to 40, step by step."] * 8
    responses = [r for r in sampler.generate_responses(prompts, seed=seed) if isinstance(r, Response)]
    best = max(responses, key=lambda r: r.length)
    long_enough = [r for r in responses if r.length >= min_len]
    return model, tok, (long_enough[0] if long_enough else best), "bundled reasoning model"


def random_response(length: int, seed: int, smoke: bool):
    """A random-weight model of the bundled model's size; a `length`-token response sampled without eos."""
    tok = char_tokenizer()
    if smoke:
        model = tiny_causal_lm(len(tok), seed=seed)
    else:
        model = tiny_causal_lm(
            len(tok),
            hidden_size=256,
            num_layers=4,
            num_heads=8,
            num_kv_heads=4,
            intermediate_size=688,
            init_std=0.05,
            seed=seed,
        )
    sampler = HFSampler(
        model, tok, temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=length, eos_token_ids=[], chat=False
    )
    x = sampler.generate_responses(["Question: what is 17 + 25? Think step by step.\nAnswer:"], seed=seed)[0]
    kind = "random-weight fallback (bundled model not found)" if not smoke else "random-weight tiny (smoke)"
    return model, tok, x, kind


# -- the three methods -----------------------------------------------------------------------------------


def run_critwin(model, tok, x: Response, kept: list[int], k: int, cap: int, temperature: float, seed: int):
    sampler = HFSampler(
        model,
        tok,
        temperature=temperature,
        top_p=TOP_P,
        max_new_tokens=cap,
        batch_size=max(256, len(kept) * k),
    )
    t0 = clock()
    conts = sampler.resample(x, [x.length - c for c in kept], k, rng=seed)
    return since(t0), [[c.token_ids for c in per_t] for per_t in conts]


@torch.inference_mode()
def run_baseline(
    generate, model, x: Response, kept: list[int], k: int, cap: int, temperature, eos, pad, seed
):
    """Time one plain-transformers baseline: `generate_per_cut` (a) or `generate_batched` (b)."""
    torch.manual_seed(seed)
    t0 = clock()
    settings = generate_kwargs(temperature, TOP_P, eos, pad)
    outs = generate(model, x, kept, k, [cap - c for c in kept], settings)
    return since(t0), outs


def mean_len(outs) -> float:
    return float(np.mean([len(r) for per_cut in outs for r in per_cut]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model and K=2: checks the script, not speed")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--random-model", action="store_true", help="use the random-weight model even if bundled")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, the same for all methods (default 1: see the module docstring; 0 = torch's)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each method (medians reported)")
    args = ap.parse_args(argv)
    # The suite runs this in-process: global torch state (threads, grad mode) must come back unchanged.
    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        with torch.inference_mode():
            return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict:
    k = 2 if args.smoke else args.k
    repeats = 1 if args.smoke else max(1, args.repeats)
    min_len = 20 if args.smoke else 200
    use_bundled = (ASSET / "config.json").is_file() and not args.random_model and not args.smoke
    if use_bundled:
        cap = 380  # prompt (~110 tokens) + cap stays within the bundled model's 512 positions
        model, tok, x, kind = bundled_response(min_len, cap, args.seed)
    else:
        cap = 24 if args.smoke else 240
        model, tok, x, kind = random_response(cap, args.seed, args.smoke)
    eos = sorted(HFSampler(model, tok).settings.eos_token_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    kept = cut_positions(x.length, PAPER_FRACTIONS)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {kind}, {n_params / 1e6:.2f}M params; prompt {len(x.prompt_ids)} + response {x.length} "
        f"tokens; "
        f"cuts keep {kept}; K={k}; cap {cap}; threads {torch.get_num_threads()}"
    )

    # Greedy sanity check first (K = 1): the three methods must agree token for token.
    g_c = run_critwin(model, tok, x, kept, 1, cap, 0.0, args.seed)[1]
    g_a = run_baseline(generate_per_cut, model, x, kept, 1, cap, 0.0, eos, pad, args.seed)[1]
    g_b = run_baseline(generate_batched, model, x, kept, 1, cap, 0.0, eos, pad, args.seed)[1]
    greedy_same = sum(g_c[j] == g_a[j] == g_b[j] for j in range(len(kept)))

    # Timed runs (see the module docstring: interleaved repeats, medians).
    methods = {
        "critwin": lambda: run_critwin(model, tok, x, kept, k, cap, TEMPERATURE, args.seed),
        "batched": lambda: run_baseline(
            generate_batched, model, x, kept, k, cap, TEMPERATURE, eos, pad, args.seed
        ),
        "per_cut": lambda: run_baseline(
            generate_per_cut, model, x, kept, k, cap, TEMPERATURE, eos, pad, args.seed
        ),
    }
    wall: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    outs = {}
    for name, run in methods.items():
        log(f"warm-up {name} …")
        run()
    for rep in range(repeats):
        for name, run in methods.items():
            before = dict(_kv.STATS)
            (t, c), outs[name] = run()
            if name == "critwin":
                work = {key: _kv.STATS[key] - before[key] for key in before}
            wall[name].append(t)
            cpu[name].append(c)
            log(f"run {rep + 1}/{repeats} {name}: {t:.2f}s wall, {c:.2f}s cpu, {n_tokens(outs[name])} tokens")
    (t_c, t_a, t_b), (cpu_c, cpu_a, cpu_b) = (
        [float(np.median(d[m])) for m in ("critwin", "per_cut", "batched")] for d in (wall, cpu)
    )
    o_c, o_a, o_b = outs["critwin"], outs["per_cut"], outs["batched"]

    result = {
        "bench": "scan",
        "model": kind,
        "model_params": n_params,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "prompt_tokens": len(x.prompt_ids),
        "response_tokens": x.length,
        "M": len(kept),
        "K": k,
        "cuts_kept_tokens": kept,
        "length_cap": cap,
        "critwin_s": round(t_c, 3),
        "per_cut_s": round(t_a, 3),
        "batched_s": round(t_b, 3),
        "ratio_vs_per_cut": round(t_a / t_c, 2),
        "ratio_vs_batched": round(t_b / t_c, 2),
        "warmup_runs": 1,
        "repeats": repeats,
        "ratio_vs_per_cut_runs": [
            round(a / c, 2) for a, c in zip(wall["per_cut"], wall["critwin"], strict=True)
        ],
        "ratio_vs_batched_runs": [
            round(b / c, 2) for b, c in zip(wall["batched"], wall["critwin"], strict=True)
        ],
        "cpu_s": {"critwin": round(cpu_c, 3), "per_cut": round(cpu_a, 3), "batched": round(cpu_b, 3)},
        "cpu_ratio_vs_per_cut": round(cpu_a / cpu_c, 2),
        "cpu_ratio_vs_batched": round(cpu_b / cpu_c, 2),
        "tokens_per_s": {
            "critwin": round(n_tokens(o_c) / t_c, 1),
            "per_cut": round(n_tokens(o_a) / t_a, 1),
            "batched": round(n_tokens(o_b) / t_b, 1),
        },
        "mean_continuation_tokens": {
            "critwin": round(mean_len(o_c), 1),
            "per_cut": round(mean_len(o_a), 1),
            "batched": round(mean_len(o_b), 1),
        },
        "greedy_identical_cuts": f"{greedy_same}/{len(kept)}",
        "critwin_work": work,  # row_steps < draw_steps: draws that still agreed shared a batch row
        "first_token_chi2_p": {
            "vs_per_cut": round(first_token_pvalue(o_c, o_a), 4),
            "vs_batched": round(first_token_pvalue(o_c, o_b), 4),
        },
        "targets": {"ratio_vs_per_cut": 5.0, "ratio_vs_batched": 1.5},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
