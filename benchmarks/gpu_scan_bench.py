"""GPU benchmark: shared-prefix resampling on a random-weight model with Qwen2.5-0.5B's shape (no download).

Self-contained: builds the model from a config on the GPU (bf16, sdpa), makes a random prompt and response,
and times the forward–reverse work of the reasoning scan — M = 6 cuts at the paper's fractions kept, K = 32
continuations each, temperature 0.6, top-p 0.9 — three ways, side by side in one run:

- critwin: `HFSampler.resample` (one prefill, every cut's cache gathered from it, all M·K rows in one
  batch that drops finished rows);
- per_cut: one `generate` per cut with num_return_sequences=K (re-prefills the prefix K times);
- batched: all M·K rows left-padded into one `generate` (each row truncated at its budget afterwards).

A random model practically never samples eos, so every ending runs to the length cap: the whole response
is capped at its original length, i.e. an ending after a cut keeping k tokens adds len - k tokens — the
cost profile of a model that stops near the original length. The final norm is scaled so next-token laws
are peaked as in a trained model (logit std 3) rather than flat over 152k tokens.
Checks in the same run: greedy continuations (first 32 tokens per cut) of the three methods (in bf16,
rounding differences between kernels and batch shapes flip near-tied argmaxes, so the baselines' agreement
with each other is reported as the yardstick), the largest gap between critwin's cached next-token logits
and a plain forward of each kept prefix, and a χ² homogeneity test of the first sampled tokens (critwin
vs each baseline).

Prints one JSON object last (tokens/s per method, wall times, ratios). Must finish in < 4 min on an H100.
Usage: python benchmarks/gpu_scan_bench.py [--smoke] [--response-tokens 512] [--k 32] [--dtype float32]
(--smoke: tiny shape, runs on CPU in seconds; checks the script, not speed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, no install
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared _baselines module

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _baselines import (  # noqa: E402
    first_token_pvalue,
    generate_batched,
    generate_kwargs,
    generate_per_cut,
    log,
    n_tokens,
)

from critwin.samplers import _kv  # noqa: E402
from critwin.samplers.hf import HFSampler  # noqa: E402
from critwin.samplers.lm import Response  # noqa: E402
from critwin.schedules import PAPER_FRACTIONS, cut_positions  # noqa: E402

QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY = dict(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)
TEMPERATURE, TOP_P, EOS, PAD = 0.6, 0.9, 0, 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_model(shape: dict, device: torch.device, dtype: torch.dtype, seed: int):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    config = Qwen2Config(**shape, bos_token_id=PAD, eos_token_id=EOS, pad_token_id=PAD)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    # Scale the final norm so that logits have std 3: peaked next-token laws, as in a trained model.
    with torch.inference_mode():
        probe = torch.randint(2, shape["vocab_size"], (1, 64), device=device)
        std = model(probe).logits.float().std().item()
        model.model.norm.weight.mul_(3.0 / std)
    return model


def _kwargs(temperature: float) -> dict:
    return generate_kwargs(temperature, TOP_P, [EOS], PAD)


def make_sampler(model, n_rows: int, cap: int, temperature: float, budget: str = "response") -> HFSampler:
    return HFSampler(
        model,
        None,
        temperature=temperature,
        top_p=TOP_P,
        max_new_tokens=cap,
        eos_token_ids=[EOS],
        batch_size=max(256, n_rows),
        budget=budget,
        chat=False,
    )


@torch.inference_mode()
def run_critwin(model, x: Response, kept, k, cap, temperature, seed, budget="response"):
    sampler = make_sampler(model, len(kept) * k, cap, temperature, budget)
    sync(model.device)
    t0 = time.perf_counter()
    conts = sampler.resample(x, [x.length - c for c in kept], k, rng=seed)
    sync(model.device)
    return time.perf_counter() - t0, [[c.token_ids for c in per_t] for per_t in conts]


def run_baseline(generate, model, x: Response, kept, k, budgets, temperature, seed):
    """Time one plain-transformers baseline: `generate_per_cut` (a) or `generate_batched` (b)."""
    torch.manual_seed(seed)
    sync(model.device)
    t0 = time.perf_counter()
    outs = generate(model, x, kept, k, budgets, _kwargs(temperature))
    sync(model.device)
    return time.perf_counter() - t0, outs


@torch.inference_mode()
def max_logit_gap(model, x: Response, kept) -> float:
    """Largest |cached - uncached| next-token logit after each cut: critwin's shared-prefix cache against
    a plain forward of the kept prefix alone."""
    sampler = make_sampler(model, len(kept), 1, 0.0, "continuation")
    cached = sampler.next_token_logits(x, [x.length - c for c in kept])
    full, p = list(x.prompt_ids + x.response_ids), len(x.prompt_ids)
    gap = 0.0
    for j, c in enumerate(kept):
        ref = model(torch.tensor([full[: p + c]], device=model.device)).logits[0, -1].float()
        gap = max(gap, (cached[j].to(ref.device) - ref).abs().max().item())
    return gap


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shape on CPU: checks the script, not speed")
    ap.add_argument("--response-tokens", type=int, default=None)
    ap.add_argument("--prompt-tokens", type=int, default=None)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default=None, help="GPU default bfloat16")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    if args.smoke:
        device, dtype, shape = torch.device("cpu"), getattr(torch, args.dtype or "float32"), TINY
        r_len, p_len, k = args.response_tokens or 24, args.prompt_tokens or 16, args.k or 2
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --smoke on CPU")
        device, shape = torch.device("cuda"), QWEN25_05B
        dtype = getattr(torch, args.dtype or "bfloat16")
        r_len, p_len, k = args.response_tokens or 512, args.prompt_tokens or 128, args.k or 32
    model = build_model(shape, device, dtype, args.seed)
    gen = np.random.default_rng(args.seed)
    prompt = tuple(int(v) for v in gen.integers(2, shape["vocab_size"], p_len))
    response = tuple(int(v) for v in gen.integers(2, shape["vocab_size"], r_len))
    x = Response(prompt, response, "", "")
    kept = cut_positions(r_len, PAPER_FRACTIONS)
    budgets = [r_len - c for c in kept]
    log(
        f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, prompt {p_len} + response {r_len}, "
        f"cuts keep {kept}, K={k}; setup {time.perf_counter() - t_start:.1f}s"
    )

    # Warm-up (CUDA kernels, allocator) on a small problem, not timed.
    run_critwin(model, x, kept[-1:], 2, r_len, TEMPERATURE, args.seed)
    run_baseline(generate_batched, model, x, kept[-1:], 2, budgets[-1:], TEMPERATURE, args.seed)

    # Greedy agreement on the first 32 tokens after each cut.
    g_len = min(32, min(budgets))
    g_c = run_critwin(model, x, kept, 1, g_len, 0.0, args.seed, budget="continuation")[1]
    g_a = run_baseline(generate_per_cut, model, x, kept, 1, [g_len] * len(kept), 0.0, args.seed)[1]
    g_b = run_baseline(generate_batched, model, x, kept, 1, [g_len] * len(kept), 0.0, args.seed)[1]
    same_a = sum(g_c[j] == g_a[j] for j in range(len(kept)))
    same_b = sum(g_c[j] == g_b[j] for j in range(len(kept)))
    same_ab = sum(g_a[j] == g_b[j] for j in range(len(kept)))
    gap = max_logit_gap(model, x, kept)
    log(
        f"greedy identical: vs per-cut {same_a}/{len(kept)}, vs batched {same_b}/{len(kept)}, "
        f"per-cut vs batched {same_ab}/{len(kept)}; max |cached - uncached| logit {gap:.2e}"
    )

    before = dict(_kv.STATS)
    t_c, o_c = run_critwin(model, x, kept, k, r_len, TEMPERATURE, args.seed)
    work = {key: _kv.STATS[key] - before[key] for key in before}
    log(f"critwin {t_c:.2f}s ({n_tokens(o_c) / t_c:.0f} tok/s)")
    t_b, o_b = run_baseline(generate_batched, model, x, kept, k, budgets, TEMPERATURE, args.seed)
    log(f"batched generate {t_b:.2f}s ({n_tokens(o_b) / t_b:.0f} tok/s)")
    t_a, o_a = run_baseline(generate_per_cut, model, x, kept, k, budgets, TEMPERATURE, args.seed)
    log(f"per-cut generate {t_a:.2f}s ({n_tokens(o_a) / t_a:.0f} tok/s)")

    result = {
        "bench": "gpu_scan",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)",
        "model": "random-weight Qwen2.5-0.5B shape" if not args.smoke else "random-weight tiny (smoke)",
        "dtype": str(dtype).replace("torch.", ""),
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "prompt_tokens": p_len,
        "response_tokens": r_len,
        "M": len(kept),
        "K": k,
        "cuts_kept_tokens": kept,
        "critwin_work": work,  # row_steps < draw_steps: draws that still agreed shared a batch row
        "generated_tokens": {"critwin": n_tokens(o_c), "per_cut": n_tokens(o_a), "batched": n_tokens(o_b)},
        "critwin_s": round(t_c, 3),
        "per_cut_s": round(t_a, 3),
        "batched_s": round(t_b, 3),
        "tokens_per_s": {
            "critwin": round(n_tokens(o_c) / t_c, 1),
            "per_cut": round(n_tokens(o_a) / t_a, 1),
            "batched": round(n_tokens(o_b) / t_b, 1),
        },
        "ratio_vs_per_cut": round(t_a / t_c, 2),
        "ratio_vs_batched": round(t_b / t_c, 2),
        "greedy_identical_cuts": {
            "vs_per_cut": f"{same_a}/{len(kept)}",
            "vs_batched": f"{same_b}/{len(kept)}",
            "per_cut_vs_batched": f"{same_ab}/{len(kept)}",  # how far the baselines' own numerics agree
        },
        "max_abs_logit_diff_cached_vs_uncached": float(f"{gap:.3g}"),
        "first_token_chi2_p": {
            "vs_per_cut": round(first_token_pvalue(o_c, o_a), 4),
            "vs_batched": round(first_token_pvalue(o_c, o_b), 4),
        },
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
