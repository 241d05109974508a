"""Shared by the resampling benchmarks: the two plain-transformers baselines and the output checks.

Baselines for resampling the rest of a response from M cuts, K continuations each:
- per cut: one `generate` per cut with num_return_sequences=K (the original pipeline; re-prefills);
- batched: all M·K rows left-padded into one `generate`.
`budgets[j]` caps the new tokens of cut j; generation stops at any id in `eos`.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from scipy import stats


def log(msg: str) -> None:
    """Progress goes to stderr: stdout carries only the final JSON line."""
    print(msg, file=sys.stderr, flush=True)


def trim(new_tokens: list[int], budget: int, eos: set[int]) -> tuple[int, ...]:
    """The first `budget` new tokens, cut before the first eos."""
    out = []
    for tkn in new_tokens[:budget]:
        if tkn in eos:
            break
        out.append(tkn)
    return tuple(out)


def generate_kwargs(temperature: float, top_p: float, eos: list[int], pad: int) -> dict:
    """`generate` settings with critwin's sampling law (plain top-p, no top-k); greedy at temperature 0."""
    kw = dict(eos_token_id=eos, pad_token_id=pad)
    if temperature > 0:
        kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        kw.update(do_sample=False)
    return kw


@torch.inference_mode()
def generate_per_cut(model, x, kept, k, budgets, gen_kwargs: dict) -> list[list[tuple[int, ...]]]:
    """Baseline (a): for each cut keeping c response tokens, one `generate` with num_return_sequences=k."""
    full = list(x.prompt_ids + x.response_ids)
    p = len(x.prompt_ids)
    eos = set(gen_kwargs["eos_token_id"])
    outs = []
    for c, b in zip(kept, budgets, strict=True):
        ids = torch.tensor([full[: p + c]], device=model.device)
        # An explicit mask: without it generate masks every token equal to the pad id, even real ones.
        g = model.generate(
            ids, attention_mask=torch.ones_like(ids), num_return_sequences=k, max_new_tokens=b, **gen_kwargs
        )
        outs.append([trim(row[p + c :].tolist(), b, eos) for row in g])
    return outs


@torch.inference_mode()
def generate_batched(model, x, kept, k, budgets, gen_kwargs: dict) -> list[list[tuple[int, ...]]]:
    """Baseline (b): all len(kept)·k rows left-padded into one `generate`, each trimmed to its budget."""
    full = list(x.prompt_ids + x.response_ids)
    p = len(x.prompt_ids)
    eos = set(gen_kwargs["eos_token_id"])
    prefixes = [full[: p + c] for c in kept for _ in range(k)]
    width = max(map(len, prefixes))
    ids = torch.full((len(prefixes), width), gen_kwargs["pad_token_id"], dtype=torch.long)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for i, pre in enumerate(prefixes):
        ids[i, width - len(pre) :] = torch.tensor(pre)
        mask[i, width - len(pre) :] = 1
    g = model.generate(
        ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max(budgets), **gen_kwargs
    )
    rows = [trim(g[i, width:].tolist(), budgets[i // k], eos) for i in range(len(prefixes))]
    return [rows[j * k : (j + 1) * k] for j in range(len(kept))]


def first_token_pvalue(a, b) -> float:
    """χ² homogeneity of the first continuation token (eos/empty as its own cell), summed over cuts.

    `a`, `b`: per cut, the continuations (token sequences) of two methods."""
    stat, dof = 0.0, 0
    for rows_a, rows_b in zip(a, b, strict=True):
        fa = [r[0] if r else -1 for r in rows_a]
        fb = [r[0] if r else -1 for r in rows_b]
        cats = sorted(set(fa) | set(fb))
        table = np.array([[fa.count(c) for c in cats], [fb.count(c) for c in cats]])
        if table.shape[1] < 2:
            continue
        res = stats.chi2_contingency(table, correction=False)
        stat, dof = stat + res.statistic, dof + res.dof
    return float(stats.chi2.sf(stat, dof)) if dof else 1.0


def n_tokens(outs) -> int:
    """Generated tokens over all cuts and draws."""
    return int(sum(len(r) for per_cut in outs for r in per_cut))
