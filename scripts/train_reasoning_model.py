"""Train critwin's bundled reasoning model: a tiny Llama that writes running-sum chains of thought.

    .venv/bin/python scripts/train_reasoning_model.py            # writes src/critwin/assets/reasoning_model/

The task and its chain-of-thought format live in `critwin.experiments.arith`. Training chains drop the carry
at each carrying step with probability `--drop-prob` (the classic human slip, 12+9 -> 11), and every later
line follows the written total, so the model learns to slip at carry steps and to carry the slip through to
its answer. At the paper's sampling settings (temperature 0.6, top-p 0.9) this makes the model right often but
not always, with its errors at identifiable steps. A quarter of the training conversations append the paper's
elicitation turn (a user message asking for the answer, answered "The answer is N."), so both ways of reading
the answer work.

Reproducible: data, initialisation and batching are drawn from `--seed`; CPU with `--threads` threads.
The held-out problems (never trained on) are written next to the bundled problems, and the sampled and
greedy accuracy on them are recorded in `training_report.json` in the model folder.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from critwin.experiments.arith import (
    ELICIT_PROMPTS,
    answer_line,
    build_tokenizer,
    correct_chain,
    extract_answer,
    first_wrong_step,
    generate_problems,
    sample_training_chain,
)

ASSETS = Path(__file__).resolve().parents[1] / "src" / "critwin" / "assets"


def encode_conversation(tok, question: str, chain: str, elicit: str | None) -> tuple[list[int], list[int]]:
    """Token ids of one training conversation and its labels (-100 outside the assistant turns)."""
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, learn: bool) -> None:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if learn else [-100] * len(piece))

    add(f"<|user|>{question}<|end|><|assistant|>", False)
    add(f"{chain}<|end|>", True)
    if elicit is not None:
        add(f"<|user|>{elicit}<|end|><|assistant|>", False)
        add(f"{answer_line(int(extract_answer(chain)))}<|end|>", True)
    return ids, labels


def make_batches(tok, rng, batch_size, n_batches, n_terms, drop_prob, held_out, elicit_prob,
                 long_share=0.0, long_terms=None):
    """`n_batches` right-padded batches of fresh training conversations, grouped by length.

    A share `long_share` of the problems draws its number of terms from `long_terms` instead of `n_terms`
    (a few long chains, so that the model also writes responses of 200+ tokens).

    Conversations are drawn as one pool and sorted by length before batching (less padding, so less CPU
    time per step); the batches come back in random order. Problems in `held_out` are redrawn.
    """
    rows = []
    while len(rows) < batch_size * n_batches:
        terms = long_terms if long_terms and rng.random() < long_share else n_terms
        (prob,) = generate_problems(1, rng, n_terms=terms)
        if prob.operands in held_out:
            continue
        chain = sample_training_chain(prob.operands, rng, drop_prob)
        use_elicit = rng.random() < elicit_prob
        elicit = ELICIT_PROMPTS[int(rng.integers(len(ELICIT_PROMPTS)))] if use_elicit else None
        rows.append(encode_conversation(tok, prob.question, chain, elicit))
    rows.sort(key=lambda r: len(r[0]))
    batches = []
    for b in rng.permutation(n_batches):
        chunk = rows[b * batch_size : (b + 1) * batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((batch_size, width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (ids, lab) in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(ids)] = 1
        batches.append((input_ids, mask, labels))
    return batches


@torch.no_grad()
def evaluate(model, tok, problems, *, do_sample: bool, seed: int, batch_size: int = 100,
             elicit: bool = False) -> dict:
    """Accuracy of chains written by the model (sampled at T=0.6, top-p 0.9, or greedy) and error steps.

    With `elicit`, also the share of chains for which the greedy answer to the elicitation turn
    (ELICIT_PROMPTS[0]) equals the answer the chain states.
    """
    model.eval()
    tok.padding_side = "left"
    torch.manual_seed(seed)
    correct, failed, err_steps, err_is_carry = 0, 0, [], []
    agree = []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        prompts = [
            tok.apply_chat_template([{"role": "user", "content": p.question}], tokenize=False,
                                    add_generation_prompt=True)
            for p in chunk
        ]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        kwargs = {"do_sample": True, "temperature": 0.6, "top_p": 0.9} if do_sample else {"do_sample": False}
        # Enough room for the correct chain plus a margin; a model that rambles on is cut there and graded.
        room = max(len(correct_chain(p.operands)) for p in chunk) + 20
        out = model.generate(**enc, max_new_tokens=room, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, **kwargs)
        texts = [tok.decode(row, skip_special_tokens=True) for row in out[:, enc["input_ids"].shape[1]:]]
        if elicit:
            convs = [
                tok.apply_chat_template(
                    [{"role": "user", "content": p.question}, {"role": "assistant", "content": text},
                     {"role": "user", "content": ELICIT_PROMPTS[0]}],
                    tokenize=False, add_generation_prompt=True)
                for p, text in zip(chunk, texts, strict=True)
            ]
            enc2 = tok(convs, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out2 = model.generate(**enc2, max_new_tokens=24, do_sample=False, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id)
            for text, row in zip(texts, out2[:, enc2["input_ids"].shape[1]:], strict=True):
                stated = extract_answer(text)
                agree.append(stated is not None
                             and extract_answer(tok.decode(row, skip_special_tokens=True)) == stated)
        for p, text in zip(chunk, texts, strict=True):
            ans = extract_answer(text)
            failed += ans is None
            correct += ans == p.answer
            err = first_wrong_step(p.operands, text)
            if err is not None:
                err_steps.append(err.step)
                # A carry step: the running total before the step plus the term carries in the units digit.
                k = err.step
                if k < len(p.operands) - 1:
                    total = sum(p.operands[: k + 1])
                    err_is_carry.append(total % 10 + p.operands[k + 1] >= 10)
    model.train()
    n = len(problems)
    acc = correct / n
    return {
        "n": n,
        "accuracy": acc,
        "accuracy_se": math.sqrt(acc * (1 - acc) / n),
        "n_unparseable": failed,
        "n_chains_with_error": len(err_steps),
        "share_of_first_errors_at_carry_steps": float(np.mean(err_is_carry)) if err_is_carry else None,
        **({"elicited_answer_agrees_with_chain": float(np.mean(agree))} if elicit else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ASSETS / "reasoning_model")
    ap.add_argument("--problems-out", type=Path, default=ASSETS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--drop-prob", type=float, default=0.3)
    ap.add_argument("--elicit-prob", type=float, default=0.25)
    ap.add_argument("--min-terms", type=int, default=3)
    ap.add_argument("--max-terms", type=int, default=10)
    ap.add_argument("--long-share", type=float, default=0.1)
    ap.add_argument("--long-max-terms", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    # 2 heads of 64/2 = 32 dimensions: the smallest head size vLLM's CPU and GPU attention kernels load.
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu (the reproducible default) or cuda (for trials)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-eval", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=0,
                    help="log held-out accuracy every N steps (0: only at end)")
    ap.add_argument("--max-minutes", type=float, default=15.0,
                    help="hard stop on training time (recorded; stopping early breaks reproducibility)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tok = build_tokenizer()

    # Held-out problems (never trained on): the bundled demo set and the accuracy set.
    demo = generate_problems(20, args.seed + 1, n_terms=(5, 8), id_prefix="demo")
    heldout = generate_problems(args.n_eval, args.seed + 2, n_terms=(4, 8), id_prefix="heldout")
    held = {p.operands for p in demo + heldout}

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config._attn_implementation = args.attn
    model = LlamaForCausalLM(config).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, args.steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0 = time.time()
    log = []
    steps_done = 0
    pending: list = []
    eval_seconds = 0.0
    for step in range(args.steps):
        if not pending:
            pending = make_batches(tok, rng, args.batch_size, 16, (args.min_terms, args.max_terms),
                                   args.drop_prob, held, args.elicit_prob, args.long_share,
                                   (args.max_terms + 1, args.long_max_terms))
        ids, mask, labels = pending.pop()
        ids, mask, labels = ids.to(args.device), mask.to(args.device), labels.to(args.device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        steps_done = step + 1
        if step % 50 == 0 or step == args.steps - 1:
            el = time.time() - t0 - eval_seconds
            lr_now = sched.get_last_lr()[0]
            print(f"step {step:5d} loss {loss.item():.4f} lr {lr_now:.2e} {el:6.0f}s", flush=True)
            log.append({"step": step, "loss": round(loss.item(), 5), "seconds": round(el, 1)})
        if args.eval_every and step and step % args.eval_every == 0:
            te = time.time()
            r = evaluate(model, tok, heldout[:100], do_sample=True, seed=args.seed)
            eval_seconds += time.time() - te
            print(f"  eval@{step}: acc {r['accuracy']:.2f} errors-at-carry "
                  f"{r['share_of_first_errors_at_carry_steps']} unparseable {r['n_unparseable']}", flush=True)
        if time.time() - t0 - eval_seconds > args.max_minutes * 60:
            print("time limit reached; stopping early", flush=True)
            break
    train_seconds = time.time() - t0 - eval_seconds

    t1 = time.time()
    sampled = evaluate(model, tok, heldout, do_sample=True, seed=args.seed, elicit=True)
    greedy = evaluate(model, tok, heldout, do_sample=False, seed=args.seed)
    demo_sampled = evaluate(model, tok, demo, do_sample=True, seed=args.seed)
    print(f"sampled: {sampled}\ngreedy: {greedy}\ndemo sampled: {demo_sampled}", flush=True)

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    model.eval()
    model.to("cpu")
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.generation_config.top_p = 0.9
    model.generation_config.max_new_tokens = 300
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    report = {
        "task": "running sums of single-digit terms with a chain of thought (critwin.experiments.arith)",
        "seed": args.seed,
        "parameters": n_params,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "problems_out")},
        "steps_done": steps_done,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.time() - t1, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()} {platform.system()}, {args.threads} CPU threads",
        "heldout_sampled_t0.6_top_p0.9": sampled,
        "heldout_greedy": greedy,
        "demo_problems_sampled_t0.6_top_p0.9": demo_sampled,
        "loss_log": log,
    }
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    args.problems_out.mkdir(parents=True, exist_ok=True)
    for name, probs in (("reasoning_problems.jsonl", demo), ("reasoning_problems_heldout.jsonl", heldout)):
        with open(args.problems_out / name, "w") as f:
            for p in probs:
                f.write(json.dumps(p.to_record()) + "\n")
    print(f"saved to {args.out} ({sum(f.stat().st_size for f in args.out.iterdir()) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
