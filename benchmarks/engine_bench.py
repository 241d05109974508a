"""Benchmark: the reasoning scan workload on three engines, side by side in one run.

The work, per problem: one response of >= 200 tokens, cut at the paper's M = 6 fractions kept
(0.05 … 0.9), K = 32 continuations per cut, temperature 0.6, top-p 0.9; the whole response is capped at
`cap` tokens, so an ending after a cut keeping k tokens may add cap - k (the same budget for every method).

- critwin_hf: `HFSampler.forward_reverse` (prompt + response prefilled once, all M·K rows decoded together);
- critwin_vllm: `VLLMSampler.forward_reverse` (one `generate` call with one n=K request per cut, automatic
  prefix caching on, so the shared prefix is computed once);
- original_vllm: the original pipeline's use of vLLM: one `generate` call per cut with n=K and prefix
  caching off.

Models: the bundled reasoning model answering long sums (18-20 terms: responses of 200+ tokens), and a
random-weight Llama of ~100M parameters (hidden 768, 12 layers, head size 64, the bundled tokenizer) whose
response is a cap-token sample with eos suppressed (its endings also run to the cap). The vLLM engines run
one at a time (an idle engine still polls a CPU core) with float32 weights, like HF on CPU.

Reported per model: wall seconds, generated tokens, decode tok/s (generated tokens / wall time), prefill
tokens computed and avoided (critwin_vllm: the prefix-cache hits; critwin_hf: the shared prefill; the
original pipeline avoids none), and the ratios. Last stdout line: one JSON object with
ratio_vs_original_vllm and ratio_hf_vs_vllm (for the ~100M model; per model under "models"), the tok/s of
each method and which engine was fastest per model.

Usage: python benchmarks/engine_bench.py [--problems 3] [--k 32] [--cap 256] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRACTIONS = (0.05, 0.25, 0.45, 0.65, 0.8, 0.9)
TEMPERATURE, TOP_P = 0.6, 0.9


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_llama(out: Path, tokenizer_dir: Path, hidden: int, layers: int) -> Path:
    """A random-weight Llama with the bundled tokenizer (head size 64), saved to `out`."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok_cfg = json.loads((tokenizer_dir / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=tok_cfg["vocab_size"],
        hidden_size=hidden,
        intermediate_size=int(hidden * 8 / 3) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=1024,
        eos_token_id=tok_cfg["eos_token_id"],
        pad_token_id=tok_cfg["pad_token_id"],
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy(tokenizer_dir / f, out / f)
    return out


def workload(model_dir: Path, random: bool, n_problems: int, cap: int):
    """(responses, ts per response, settings): the originals are drawn once, by HF, and shared by all."""
    from critwin.experiments.arith import generate_problems
    from critwin.samplers import load_sampler
    from critwin.samplers.lm import Response

    settings = dict(temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=cap)
    if random:
        settings["eos_token_ids"] = []  # random weights: eos would end responses at random lengths
    hf = load_sampler("hf", model_dir, **settings)
    problems = generate_problems(n_problems, 7, n_terms=(18, 20))
    xs: list[Response] = []
    seed = 0
    while len(xs) < n_problems:
        p = problems[len(xs)]
        (r,) = hf.generate_responses([p.question], seed=seed)
        seed += 1
        if getattr(r, "length", 0) >= 200:
            xs.append(r)
        elif seed > 50 * n_problems:
            raise SystemExit(f"{model_dir}: no responses of 200+ tokens")
    ts = [[x.length - int(round(f * x.length)) for f in FRACTIONS] for x in xs]
    return hf, xs, ts, settings


def run_critwin(sampler, xs, ts, k: int) -> dict:
    start = time.perf_counter()
    tokens = 0
    for i, (x, tt) in enumerate(zip(xs, ts, strict=True)):
        rows = sampler.resample(x, tt, k, np.random.default_rng(i))
        tokens += sum(len(c.token_ids) for row in rows for c in row)
    return {"seconds": time.perf_counter() - start, "generated_tokens": tokens}


def run_original_vllm(model_dir: Path, xs, ts, k: int, cap: int, random: bool) -> dict:
    """One generate per cut with n=K, prefix caching off (the original pipeline)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from critwin.samplers.vllm_engine import build_engine

    llm = build_engine(model_dir, enable_prefix_caching=False)
    assert isinstance(llm, LLM)
    start = time.perf_counter()
    tokens = prefill = 0
    for i, (x, tt) in enumerate(zip(xs, ts, strict=True)):
        for j, t in enumerate(tt):
            kept = x.length - t
            prefix = list(x.prompt_ids + x.response_ids[:kept])
            params = SamplingParams(
                n=k,
                seed=1000 * i + 100 * j,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                max_tokens=cap - kept,
                ignore_eos=random,
                detokenize=False,
            )
            (out,) = llm.generate([TokensPrompt(prompt_token_ids=prefix)], params, use_tqdm=False)
            tokens += sum(len(c.token_ids) for c in out.outputs)
            prefill += k * len(prefix)
    return {
        "seconds": time.perf_counter() - start,
        "generated_tokens": tokens,
        "prefill_tokens": prefill,
        "prefill_tokens_avoided": 0,
    }


def naive_prefill(xs, ts, k: int) -> int:
    return sum(k * (len(x.prompt_ids) + x.length - t) for x, tt in zip(xs, ts, strict=True) for t in tt)


def bench_model(name: str, model_dir: Path, random: bool, args) -> dict:
    from critwin.samplers import load_sampler
    from critwin.samplers.vllm_engine import shutdown_engines

    log(f"[{name}] drawing {args.problems} originals with HF")
    hf, xs, ts, settings = workload(model_dir, random, args.problems, args.cap)
    naive = naive_prefill(xs, ts, args.k)
    res: dict = {
        "model": str(model_dir),
        "random_weights": random,
        "parameters": sum(p.numel() for p in hf.model.parameters()),
        "response_lengths": [x.length for x in xs],
        "k": args.k,
        "cuts": len(FRACTIONS),
        "cap": args.cap,
    }
    run_critwin(hf, xs[:1], [ts[0][:1]], 2)  # warm-up: first-call costs (kernels, pages) paid once
    log(f"[{name}] critwin on HF")
    res["critwin_hf"] = run_critwin(hf, xs, ts, args.k)
    shared = sum(len(x.prompt_ids) + x.length for x in xs)
    res["critwin_hf"].update(prefill_tokens=shared, prefill_tokens_avoided=naive - shared)
    del hf
    log(f"[{name}] critwin on vLLM")
    vl = load_sampler("vllm", model_dir, **settings)
    run_critwin(vl, xs[:1], [ts[0][:1]], 2)
    before = dict(vl.prefix_cache)
    res["critwin_vllm"] = run_critwin(vl, xs, ts, args.k)
    hits = vl.prefix_cache["hits"] - before["hits"]
    res["critwin_vllm"].update(
        prefill_tokens=naive - hits,
        prefill_tokens_avoided=hits,
        prefix_cache_hit_rate=vl.engine_info()["prefix_cache_hit_rate"],
    )
    del vl
    shutdown_engines()
    log(f"[{name}] the original pipeline on vLLM")
    res["original_vllm"] = run_original_vllm(model_dir, xs, ts, args.k, args.cap, random)
    shutdown_engines()
    methods = ("critwin_hf", "critwin_vllm", "original_vllm")
    for m in methods:
        res[m]["tok_s"] = res[m]["generated_tokens"] / res[m]["seconds"]
    tps = {m: res[m]["tok_s"] for m in methods}
    res["ratio_vs_original_vllm"] = tps["critwin_vllm"] / tps["original_vllm"]
    res["ratio_hf_vs_vllm"] = tps["critwin_hf"] / tps["critwin_vllm"]
    res["fastest"] = max(tps, key=tps.get)
    log(f"[{name}] tok/s " + ", ".join(f"{m} {v:.0f}" for m, v in tps.items()))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--cap", type=int, default=256)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    args = ap.parse_args()
    if args.smoke:
        args.problems, args.k = 1, 4
    import torch

    import critwin
    from critwin.samplers.hf import BUNDLED_MODEL

    torch.set_num_threads(1 if args.smoke else 2)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        hidden, layers = (128, 2) if args.smoke else (768, 12)
        big = random_llama(Path(tmp) / "random_llama", BUNDLED_MODEL, hidden, layers)
        models["bundled"] = bench_model("bundled", BUNDLED_MODEL, False, args)
        models["random_100m"] = bench_model("random_100m", big, True, args)
    main_model = models["random_100m"]
    import vllm

    out = {
        "benchmark": "engine_bench",
        "critwin": getattr(critwin, "__version__", None),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "ratio_vs_original_vllm": main_model["ratio_vs_original_vllm"],
        "ratio_hf_vs_vllm": main_model["ratio_hf_vs_vllm"],
        "tok_s": {m: main_model[m]["tok_s"] for m in ("critwin_hf", "critwin_vllm", "original_vllm")},
        "fastest": {name: m["fastest"] for name, m in models.items()},
        "models": models,
        "smoke": args.smoke,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
