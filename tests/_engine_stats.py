"""Shared statistics of the engine tests: a two-sample χ² test on categories, and the cut whose next
token is most uncertain (so that tests of the law of continuations have power)."""

from __future__ import annotations

import numpy as np


def two_sample_p(a: list, b: list) -> float:
    """p-value of the χ² test that two samples of categories come from one law; categories seen fewer
    than 10 times in both samples together are pooled into one."""
    from scipy import stats

    cats = sorted(set(a) | set(b), key=repr)
    ca = np.array([a.count(c) for c in cats], float)
    cb = np.array([b.count(c) for c in cats], float)
    big = (ca + cb) >= 10
    table = np.array([np.append(ca[big], ca[~big].sum()), np.append(cb[big], cb[~big].sum())])
    table = table[:, table.sum(0) > 0]
    return float(stats.chi2_contingency(table)[1]) if table.shape[1] > 1 else 1.0


def high_entropy_cut(hf, x, temperature: float = 0.6, last: int = 30) -> int:
    """The t (response tokens removed) among the last `last` tokens of x whose next-token law under the HF
    sampler `hf` at `temperature` has the most entropy (short continuations keep the tests cheap)."""
    import torch

    ts = list(range(1, min(last, x.length)))
    logp = torch.log_softmax(hf.next_token_logits(x, ts).double() / temperature, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return ts[int(torch.argmax(entropy))]
