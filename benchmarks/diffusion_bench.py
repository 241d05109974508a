"""Benchmark: a forward–reverse scan of M noise levels × n branches on the bundled digit DDPM, critwin's
batched diffusers backend against the loops a user would write with the pipeline's UNet and scheduler.

- critwin: `DiffusersSampler.forward_reverse(x, ts, n)`: all M·n draws share the inference grid, so each
  grid step is one batched UNet call over every draw that has started (chunks of `batch_size` rows);
- loop per (t, branch): for each level and branch, `scheduler.add_noise` then a denoising loop of batch 1
  (what one writes from the diffusers img2img recipe, one image at a time);
- loop per t: for each level, the n branches as one batch through the same loop.

All three draw the same noise: one `torch.Generator` per draw, seeded alike, consumed in the same order
(the add_noise draw, then one variance draw per step), so the outputs agree (max |Δ| reported; float32
batches round differently in the last bits). Timings are medians of --repeats interleaved runs with one
torch thread (set inside this script only).

Last stdout line: one JSON object with ratio_vs_loop (critwin vs the per-(t, branch) loop),
ratio_vs_batched_loop (vs the per-t loop) and the times.
Usage: python benchmarks/diffusion_bench.py [--levels M] [--branches n] [--steps S] [--repeats R] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

import critwin as cw


def _loop(s, x0: np.ndarray, ts: list[float], n: int, seed: int, per_t: bool) -> list[list[np.ndarray]]:
    """The user's loop: add_noise to the start timestep, then scheduler.step down the grid."""
    sch = s.scheduler
    timesteps = s.timesteps
    seeds = np.random.default_rng(seed).integers(0, 2**63 - 1, size=len(ts) * n)
    x = torch.as_tensor(x0)[None]
    out = []
    for i, st in enumerate(s.start_steps(ts)):
        gens = [torch.Generator().manual_seed(int(v)) for v in seeds[i * n : (i + 1) * n]]
        groups = [gens] if per_t else [[g] for g in gens]
        row = []
        for g in groups:
            noise = torch.stack([torch.randn(x.shape[1:], generator=gi) for gi in g])
            y = sch.add_noise(x.expand(len(g), *x.shape[1:]), noise, timesteps[st.index].expand(len(g)))
            for tau in timesteps[st.index :]:
                with torch.inference_mode():
                    eps = s.pipeline.unet(y, tau).sample
                y = sch.step(eps, tau, y, generator=g if len(g) > 1 else g[0]).prev_sample
            row += list(y.numpy())
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--branches", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100, help="DDPM inference steps of the grid")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="2 levels × 2 branches, 10 steps: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.levels, args.branches, args.steps, args.repeats = 2, 2, 10, 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = cw.load_sampler("diffusers", steps=args.steps, batch_size=512, device="cpu")
        x0 = s.sample(1, np.random.default_rng(args.seed))[0]
        ts = [float(t) for t in np.linspace(0.1, 0.9 * s.t_max, args.levels)]
        times: dict[str, list[float]] = {"critwin": [], "loop_per_branch": [], "loop_per_t": []}
        outs: dict[str, list[list[np.ndarray]]] = {}
        for _ in range(args.repeats):
            for name in times:
                t0 = time.perf_counter()
                if name == "critwin":
                    res = s.forward_reverse(x0, ts, args.branches, np.random.default_rng(args.seed))
                else:
                    res = _loop(s, x0, ts, args.branches, args.seed, per_t=name == "loop_per_t")
                times[name].append(time.perf_counter() - t0)
                outs[name] = res
                print(f"{name}: {times[name][-1]:.2f} s", file=sys.stderr)
    finally:
        torch.set_num_threads(threads)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = np.stack([a for row in outs["critwin"] for a in row])
    diff = {k: float(np.abs(np.stack([a for row in outs[k] for a in row]) - ref).max())
            for k in ("loop_per_branch", "loop_per_t")}
    print(json.dumps({
        "benchmark": "diffusion_bench",
        "levels": args.levels,
        "branches": args.branches,
        "steps": args.steps,
        "model_calls_critwin": int(args.steps - min(st.index for st in s.start_steps(ts))),
        "seconds": med,
        "ratio_vs_loop": med["loop_per_branch"] / med["critwin"],
        "ratio_vs_batched_loop": med["loop_per_t"] / med["critwin"],
        "max_abs_diff_vs_loops": diff,
        "threads": 1,
        "smoke": args.smoke,
    }))


if __name__ == "__main__":
    main()
