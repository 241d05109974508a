"""Likelihood-ratio jailbreak detector: an aligned and an unaligned causal LM score (prompt, completion).

For each pair we render the chat [user: prompt, assistant: completion] with each model's chat template,
locate the prompt and the completion EXACTLY in the rendered text (by rendering with sentinels and
checking that the template copies contents verbatim; anything else is an error), and take the raw
per-token log-softmax at temperature 1 of every token given all tokens before it. Statistics per segment
(prompt, completion, both): sums and means of log p under each model, and the log-ratio
log p_unaligned − log p_aligned (sum and per-token mean).

Every score is oriented "higher = jailbreak" a priori (never flipped after looking at labels):
- lr_*: log p_unaligned − log p_aligned (an unaligned model finds jailbreak text relatively likely);
- nll_<model>_*: the negative mean log-likelihood under one model (perplexity-filter baselines: jailbreak
  prompts and harmful completions are surprising).

`Detection` is the experiment (run by `critwin.driver.run` with a `ScorerPair` as its sampler): one case
per chunk of `ROWS_PER_CASE` rows, settings in parts `Scoring` (how pairs are scored) and
`DetectStatistics` (how the scores are evaluated, in the report).

`evaluate` reports AUROC (sklearn `roc_auc_score`) and TPR at 1/5/10% FPR (from sklearn `roc_curve`, the
highest TPR with FPR <= target) per split, with intervals that stay honest at small n (Newcombe's score
interval for the AUROC, a distribution-free interval for TPR at FPR), the ROC's resolution (1/n_neg,
1/n_pos), and "not estimable" for a target FPR below the resolution.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from critwin.errors import CritwinError
from critwin.experiments.base import Case, CaseResult
from critwin.files import read_text
from critwin.samplers.lm import LMSampler, engine_info_of
from critwin.stats import auc_interval, min_negatives, percentile_interval, tpr_at_fpr_interval

SEGMENTS = ("prompt", "completion")
DEFAULT_FPRS = (0.01, 0.05, 0.10)

# name -> (description, function of the per-row raw statistics). Orientation: higher = jailbreak.
STATISTICS: dict[str, tuple[str, Callable[[pd.DataFrame], pd.Series]]] = {
    "lr_completion_mean": (
        "mean over completion tokens of log p_unaligned - log p_aligned",
        lambda d: d["unaligned_completion_mean"] - d["aligned_completion_mean"],
    ),
    "lr_completion_sum": (
        "sum over completion tokens of log p_unaligned - log p_aligned",
        lambda d: d["unaligned_completion_sum"] - d["aligned_completion_sum"],
    ),
    "lr_prompt_mean": (
        "mean over prompt tokens of log p_unaligned - log p_aligned",
        lambda d: d["unaligned_prompt_mean"] - d["aligned_prompt_mean"],
    ),
    "lr_prompt_sum": (
        "sum over prompt tokens of log p_unaligned - log p_aligned",
        lambda d: d["unaligned_prompt_sum"] - d["aligned_prompt_sum"],
    ),
    "lr_total_mean": (
        "mean over prompt and completion tokens of log p_unaligned - log p_aligned",
        # Each model's mean over its own tokens (the two tokenizations may differ).
        lambda d: (d["unaligned_prompt_sum"] + d["unaligned_completion_sum"])
        / (d["unaligned_prompt_n"] + d["unaligned_completion_n"])
        - (d["aligned_prompt_sum"] + d["aligned_completion_sum"])
        / (d["aligned_prompt_n"] + d["aligned_completion_n"]),
    ),
    "lr_total_sum": (
        "sum over prompt and completion tokens of log p_unaligned - log p_aligned",
        lambda d: d["unaligned_prompt_sum"] + d["unaligned_completion_sum"]
        - d["aligned_prompt_sum"] - d["aligned_completion_sum"],
    ),
    "nll_aligned_prompt": ("baseline: -mean log p_aligned of the "
                           "prompt", lambda d: -d["aligned_prompt_mean"]),
    "nll_aligned_completion": (
        "baseline: -mean log p_aligned of the completion",
        lambda d: -d["aligned_completion_mean"],
    ),
    "nll_unaligned_prompt": (
        "baseline: -mean log p_unaligned of the prompt",
        lambda d: -d["unaligned_prompt_mean"],
    ),
    "nll_unaligned_completion": (
        "baseline: -mean log p_unaligned of the completion",
        lambda d: -d["unaligned_completion_mean"],
    ),
}


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One (prompt, completion) pair with its label (1 = jailbreak, 0 = benign) and split name."""

    prompt: str
    completion: str
    label: int
    split: str = "all"


def _label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return int(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise CritwinError(f"{where}: label must be 0 (benign) or 1 (jailbreak), got {value!r}; fix the label")


def load_examples(
    path: str | Path,
    *,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    label_field: str = "label",
    split_field: str = "split",
    what: str = "data",
) -> list[Example]:
    """Read JSONL rows {prompt, completion, label 0/1, split (optional, default "all")}.

    Bad rows (not JSON, missing/non-string prompt or completion, labels other than 0/1) raise a one-line
    error naming the line. Empty completions are kept; `score_examples` counts them as skipped. `what`
    names the flag in error messages.
    """
    text = read_text(path, what, "a UTF-8 JSONL file of prompt/completion/label/split rows")
    path = Path(path)
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CritwinError(f"{where}: not valid JSON ({err.msg}); fix the line") from err
        if not isinstance(row, dict):
            raise CritwinError(f"{where}: expected a JSON object")
        for f in (prompt_field, completion_field, label_field):
            if f not in row:
                raise CritwinError(f"{where}: missing field {f!r}; every row needs prompt, completion and "
                                   "label")
        p, c = row[prompt_field], row[completion_field]
        if not isinstance(p, str) or not isinstance(c, str):
            raise CritwinError(f"{where}: {prompt_field!r} and {completion_field!r} must be strings")
        split = row.get(split_field, "all")
        out.append(Example(p, c, _label(row[label_field], where), str(split)))
    if not out:
        raise CritwinError(f"{what} {path} holds no rows; add one JSON object per line")
    return out


# ----------------------------------------------------------------------------------------------------------
# Locating segments through the chat template
# ----------------------------------------------------------------------------------------------------------
_SENT_P = "\ue000CRITWIN-PROMPT\ue001"
_SENT_C = "\ue002CRITWIN-COMPLETION\ue003"


@dataclass(frozen=True)
class Located:
    """A rendered conversation: token ids and the [start, end) token ranges of prompt and completion."""

    input_ids: tuple[int, ...]
    prompt: tuple[int, int]
    completion: tuple[int, int]
    text: str


def _messages(prompt: str, completion: str, system: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return [*msgs, {"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _text_ops(model: Any) -> tuple[Callable[..., str], Callable[[str], Any]]:
    """(render_chat, encode_with_offsets) of an `LMSampler`, or of a raw Hugging Face tokenizer."""
    if isinstance(model, LMSampler):
        return model.render_chat, model.encode_with_offsets
    from critwin.samplers import hf

    if not getattr(model, "chat_template", None):
        raise CritwinError("tokenizer has no chat template, so prompt and completion cannot be located; set "
                           "one")
    return (lambda msgs: hf.render_chat(model, msgs)), (lambda text: hf.encode_with_offsets(model, text))


def locate_segments(
    tokenizer: Any,
    prompt: str,
    completion: str,
    *,
    system: str | None = None,
    boundary: Literal["strict", "expand"] = "strict",
) -> Located:
    """Render [user: prompt, assistant: completion] with the chat template of `tokenizer` (an `LMSampler`,
    or a Hugging Face tokenizer) and find both segments.

    The template is rendered once with sentinel contents; each sentinel must occur exactly once and the
    real rendering must equal the sentinel rendering with the contents put back (the template copies the
    contents verbatim). Tokens are mapped to segments by their character offsets. With boundary "strict"
    a token that straddles a segment edge is an error; "expand" counts it in the segment.
    """
    render, encode = _text_ops(tokenizer)
    if boundary not in ("strict", "expand"):
        raise CritwinError(f"boundary={boundary!r}: use 'strict' or 'expand'")
    sent = render(_messages(_SENT_P, _SENT_C, system))
    real = render(_messages(prompt, completion, system))
    if sent.count(_SENT_P) != 1 or sent.count(_SENT_C) != 1 or sent.index(_SENT_P) > sent.index(_SENT_C):
        raise CritwinError(
            "chat template cannot locate the segments: it does not copy the user and assistant contents "
            "once each, in order; use a template that renders message contents verbatim"
        )
    p0 = sent.index(_SENT_P)
    expect = sent.replace(_SENT_P, prompt).replace(_SENT_C, completion)
    if expect != real:
        raise CritwinError(
            "chat template cannot locate the segments: it changes the contents (e.g. strips or escapes "
            "them, or depends on them); use a template that renders message contents verbatim"
        )
    c0 = sent.index(_SENT_C) - len(_SENT_P) + len(prompt)
    spans = {"prompt": (p0, p0 + len(prompt)), "completion": (c0, c0 + len(completion))}
    ids, offsets = encode(real)
    ranges: dict[str, tuple[int, int]] = {}
    for name, (a, b) in spans.items():
        inside = []
        for i, (s, e) in enumerate(offsets):
            if e <= s:
                continue  # zero-width (special tokens): never part of a content segment
            overlap = s < b and e > a
            if not overlap:
                continue
            if (s < a or e > b) and boundary == "strict":
                raise CritwinError(
                    f"a token straddles the edge of the {name} segment ({real[s:e]!r}); the template and the "
                    "tokenizer merge content with template text: use boundary='expand' to count it in"
                )
            inside.append(i)
        if inside and inside != list(range(inside[0], inside[-1] + 1)):
            raise CritwinError(f"the {name} segment's tokens are not contiguous; the tokenizer reorders text")
        ranges[name] = (inside[0], inside[-1] + 1) if inside else (0, 0)
    return Located(ids, ranges["prompt"], ranges["completion"], real)


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------
def token_logprobs(
    model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int = 16
) -> list[np.ndarray]:
    """Raw log-softmax (temperature 1) of every token given the tokens before it, for a Hugging Face model:
    out[i][j] = log p(x_j | x_<j) for j >= 1, and NaN for j = 0 (`critwin.samplers.hf.token_logprobs`;
    `score_examples` goes through `LMSampler.score`, which computes the same)."""
    from critwin.samplers.hf import token_logprobs as hf_token_logprobs

    return hf_token_logprobs(model, sequences, batch_size=batch_size)


def as_scorer(model: Any) -> LMSampler:
    """An `LMSampler` as is, or a (model, tokenizer) pair of `critwin.samplers.hf.load_causal_lm` wrapped in
    an `HFSampler` (torch's thread setting left as it is)."""
    if isinstance(model, LMSampler):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        from critwin.samplers.hf import HFSampler

        return HFSampler(model[0], model[1], cpu_threads=None)
    raise CritwinError(
        f"expected a language-model sampler (critwin.samplers.load_sampler('hf', path)) or a (model, "
        f"tokenizer) pair, got {type(model).__name__}"
    )


def _logprobs(scorer: LMSampler, sequences: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """`token_logprobs` through `LMSampler.score`: each sequence scored after its first token."""
    got = scorer.score([s[:1] for s in sequences], [s[1:] for s in sequences], batch_size=batch_size)
    return [np.concatenate([[np.nan], np.asarray(g, dtype=np.float64)]) for g in got]


@dataclass(frozen=True)
class ScoredSet:
    """Per-row statistics (status "ok" or the reason the row was skipped) and per-token log-probs."""

    table: pd.DataFrame
    tokens: pd.DataFrame


def score_examples(
    examples: Sequence[Example],
    aligned: LMSampler | tuple[Any, Any],
    unaligned: LMSampler | tuple[Any, Any],
    *,
    system: str | None = None,
    boundary: Literal["strict", "expand"] = "strict",
    batch_size: int = 16,
) -> ScoredSet:
    """Score every example under both models (`LMSampler`s, or (model, tokenizer) pairs: see `as_scorer`).

    Rows with an empty completion or prompt, or longer than a model's context, are kept in the table with
    status "skipped: <reason>" and no statistics. Template/tokenizer problems raise (they affect all rows).
    Columns: split, label, status, n_prompt_tokens, n_completion_tokens, <model>_<segment>_sum/_mean,
    and the oriented statistics of `STATISTICS`.
    """
    rows: list[dict[str, Any]] = [
        {"index": i, "split": e.split, "label": e.label, "status": "ok"} for i, e in enumerate(examples)
    ]
    for i, e in enumerate(examples):
        if not e.completion.strip():
            rows[i]["status"] = "skipped: empty completion"
        elif not e.prompt.strip():
            rows[i]["status"] = "skipped: empty prompt"
    token_rows: list[dict[str, Any]] = []
    for name, side in (("aligned", aligned), ("unaligned", unaligned)):
        scorer = as_scorer(side)
        live = [i for i, r in enumerate(rows) if r["status"] == "ok"]
        located = {i: locate_segments(scorer, examples[i].prompt, examples[i].completion, system=system,
                                      boundary=boundary) for i in live}
        limit = scorer.context_length
        for i in live:
            loc = located[i]
            if limit is not None and len(loc.input_ids) > limit:
                rows[i]["status"] = (
                    f"skipped: {len(loc.input_ids)} tokens exceed the {name} model's context {limit}"
                )
        live = [i for i in live if rows[i]["status"] == "ok"]
        lps = _logprobs(scorer, [located[i].input_ids for i in live], batch_size)
        for i, lp in zip(live, lps, strict=True):
            loc = located[i]
            for seg in SEGMENTS:
                a, b = getattr(loc, seg)
                vals = lp[a:b]
                vals = vals[np.isfinite(vals)]  # the very first token of a sequence has no log-prob
                rows[i][f"{name}_{seg}_sum"] = float(vals.sum()) if vals.size else np.nan
                rows[i][f"{name}_{seg}_mean"] = float(vals.mean()) if vals.size else np.nan
                rows[i][f"{name}_{seg}_n"] = int(vals.size)
                token_rows.append(
                    {"index": i, "model": name, "segment": seg,
                     "token_ids": list(loc.input_ids[a:b]), "logprobs": [float(v) for v in lp[a:b]]}
                )
    for r in rows:
        if r["status"] == "ok":
            if r["aligned_completion_n"] == 0 or r["unaligned_completion_n"] == 0:
                r["status"] = "skipped: completion has no scored tokens"
            r["n_prompt_tokens"] = r.get("aligned_prompt_n", 0)
            r["n_completion_tokens"] = r.get("aligned_completion_n", 0)
    table = pd.DataFrame(rows)
    models = ("aligned", "unaligned")
    for col in [f"{m}_{s}_{k}" for m in models for s in SEGMENTS for k in ("sum", "mean", "n")]:
        if col not in table:
            table[col] = np.nan
    for col in ("n_prompt_tokens", "n_completion_tokens"):
        if col not in table:
            table[col] = 0
    ok = table["status"] == "ok"
    for stat, (_desc, fn) in STATISTICS.items():
        table[stat] = np.where(ok, fn(table), np.nan)
    return ScoredSet(table, pd.DataFrame(token_rows))


SCORES, TOKENS = "scores", "token_logprobs"  # raw tables of a detect run, one part per case (chunk)
TOKEN_COLUMNS = ("index", "model", "segment", "token_ids", "logprobs")


# ----------------------------------------------------------------------------------------------------------
# The detection experiment
# ----------------------------------------------------------------------------------------------------------
ROWS_PER_CASE = 256  # the unit of resumable work: a chunk of rows scored under both models


@dataclass(frozen=True)
class ScorerPair:
    """The sampler of a detection run: the `aligned` and the `unaligned` model (each an `LMSampler`, e.g.
    `load_sampler("hf", path)`, or a (model, tokenizer) pair: see `as_scorer`), scoring `batch_size`
    sequences per forward pass (how they run, not what they compute: not part of the run's settings)."""

    aligned: Any
    unaligned: Any
    batch_size: int = 16

    def engine_info(self) -> dict[str, Any]:
        """What scores the rows, for the run's engines.jsonl: each model's `engine_info()`."""
        return {"engine": "pair", "aligned": engine_info_of(self.aligned),
                "unaligned": engine_info_of(self.unaligned)}


@dataclass(frozen=True)
class Scoring:
    """How a pair is scored (the scoring part of a detection run): the chat is rendered with the `system`
    prompt (None: none) and tokens straddling a segment edge are an error or counted in (`boundary`)."""

    boundary: Literal["strict", "expand"] = "strict"
    system: str | None = None

    def __post_init__(self) -> None:
        if self.boundary not in ("strict", "expand"):
            raise CritwinError(f"boundary={self.boundary!r}: use 'strict' or 'expand'")


@dataclass(frozen=True)
class DetectStatistics:
    """How the scores are evaluated (`evaluate`): `n_boot` bootstrap resamples (0 = none), intervals at
    `level`, and where a split's benign rows come from (`negatives`); the bootstrap draws from the run's
    seed."""

    n_boot: int = 1000
    level: float = 0.95
    negatives: Literal["auto", "split", "pooled"] = "auto"

    def __post_init__(self) -> None:
        if self.negatives not in ("auto", "split", "pooled"):
            raise CritwinError(f"negatives={self.negatives!r}: use 'auto', 'split' or 'pooled'")
        if not 0 < self.level < 1:
            raise CritwinError(f"level={self.level}: use a confidence level in (0, 1)")


def rows_digest(examples: Sequence[Example]) -> str:
    """SHA-256 of the rows (names rows that come from no file in config.json, so that a resumed run is
    the same data)."""
    import hashlib

    text = "".join(json.dumps([e.prompt, e.completion, e.label, e.split]) + "\n" for e in examples)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Detection:
    """The likelihood-ratio detector as an experiment: `examples` scored under both models of a
    `ScorerPair` (the sampler the driver passes), `ROWS_PER_CASE` rows per case (a case stores its rows'
    statistics as its part of scores.parquet and their per-token log-probs as its part of
    token_logprobs.parquet; scores are deterministic, so a resumed run equals an uninterrupted one).

    The report (`critwin.report.jailbreak.write_detect_report`) evaluates the stored scores with `stats`
    and the run's `seed` (metrics.json, metrics.csv). `aligned`, `unaligned` and `data` only name the run in
    config.json; `data_sha256` (default: `rows_digest(examples)`) ties a resumed run to the same rows.
    """

    examples: Sequence[Example]
    scoring: Scoring = field(default_factory=Scoring)
    stats: DetectStatistics = field(default_factory=DetectStatistics)
    aligned: str = "in-memory model"
    unaligned: str = "in-memory model"
    data: str = "in-memory rows"
    data_sha256: str | None = None
    seed: int = 0

    name = "jailbreak"
    kind = "detect"
    resume_keys = ("kind", "aligned", "unaligned", "data_sha256", "boundary", "system", "n_boot", "level",
                   "negatives", "seed")

    def __post_init__(self) -> None:
        self.examples = tuple(self.examples)
        if not self.examples:
            raise CritwinError("data: no rows; give at least one prompt/completion/label row")
        if self.data_sha256 is None:
            self.data_sha256 = rows_digest(self.examples)

    def config(self) -> dict[str, Any]:
        st, sc = self.stats, self.scoring
        return {"kind": self.kind, "aligned": self.aligned, "unaligned": self.unaligned, "data": self.data,
                "data_sha256": self.data_sha256, "n_boot": st.n_boot, "level": st.level, "seed": self.seed,
                "boundary": sc.boundary, "negatives": st.negatives, "system": sc.system}

    def cases(self) -> list[Case]:
        out = []
        for b, start in enumerate(range(0, len(self.examples), ROWS_PER_CASE)):
            rows = self.examples[start : start + ROWS_PER_CASE]
            out.append(Case(f"rows {start}-{start + len(rows) - 1}", (b,), (start, rows)))
        return out

    def check(self, sampler: Any) -> None:
        if not isinstance(sampler, ScorerPair):
            raise CritwinError(f"a detection run needs a ScorerPair(aligned, unaligned), got "
                               f"{type(sampler).__name__}")
        as_scorer(sampler.aligned), as_scorer(sampler.unaligned)

    def run_case(self, sampler: ScorerPair, case: Case, rng: np.random.Generator) -> CaseResult:
        start, rows = case.data
        scored = score_examples(rows, sampler.aligned, sampler.unaligned, system=self.scoring.system,
                                boundary=self.scoring.boundary, batch_size=sampler.batch_size)
        table = scored.table.assign(index=scored.table["index"] + start)
        toks = scored.tokens if len(scored.tokens) else pd.DataFrame(columns=list(TOKEN_COLUMNS))
        toks = toks.assign(index=toks["index"].astype("int64") + start)
        return CaseResult(case.id, {"status": "ok", "rows": len(rows)}, parts={TOKENS: toks, SCORES: table})


def read_detect_run(run: Any) -> ScoredSet | None:
    """The stored scores of a detection run (rows in data order) and per-token log-probs, or None when no
    chunk is stored."""
    table = run.read_parts(SCORES)
    if table is None:
        return None
    if "index" in table.columns:  # parts are named by case key: put the rows back in data order
        table = table.sort_values("index", kind="stable").reset_index(drop=True)
    tokens = run.read_parts(TOKENS)
    return ScoredSet(table, pd.DataFrame(columns=list(TOKEN_COLUMNS)) if tokens is None else tokens)


def evaluate_run(run: Any, table: pd.DataFrame) -> dict[str, Any]:
    """`evaluate` of a run's score table with the run's statistics settings and seed (every statistic of
    `STATISTICS` the table holds)."""
    cfg = run.config
    stats = [s for s in STATISTICS if s in table.columns]
    return evaluate(table, stats, n_boot=int(cfg.get("n_boot", 1000)), level=float(cfg.get("level", 0.95)),
                    seed=int(cfg.get("seed", 0)), negatives=cfg.get("negatives", "auto"))


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------
def tpr_at_fpr(neg: np.ndarray, pos: np.ndarray, fpr: float) -> float:
    """Highest TPR of the threshold rule "score >= τ" whose FPR is at most `fpr` (no interpolation).

    Equals max(tpr[fpr_curve <= fpr]) of sklearn's roc_curve: the fraction of positives scoring strictly
    above the (m+1)-th highest negative, m = floor(fpr · n_neg).
    """
    m = int(math.floor(fpr * len(neg) + 1e-9))
    if m >= len(neg):
        return 1.0
    thr = np.sort(neg)[::-1][m]
    return float(np.mean(pos > thr))


def _boot(neg: np.ndarray, pos: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap draws of the AUROC (vectorised over resamples, in chunks)."""
    n0, n1 = len(neg), len(pos)
    aucs = []
    chunk = max(1, min(n_boot, 2_000_000 // max(n0 + n1, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        nb = neg[rng.integers(0, n0, size=(b, n0))]
        pb = pos[rng.integers(0, n1, size=(b, n1))]
        ranks = rankdata(np.concatenate([pb, nb], axis=1), axis=1)
        aucs.append((ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0))
        done += b
    return np.concatenate(aucs)


def fpr_key(fpr: float) -> str:
    """JSON key of TPR at a target FPR: 0.01 -> "tpr_at_1pct_fpr"."""
    pct = fpr * 100
    return f"tpr_at_{pct:g}pct_fpr"


#: How `evaluate`'s intervals are computed (stored in the metrics as "ci_methods").
CI_METHODS = {
    "auroc_ci": "Newcombe (2006) score interval, method 5 (modified Hanley-McNeil variance)",
    "tpr_ci": "distribution-free: order-statistic interval for the threshold, one-sided Clopper-Pearson "
    "bounds at its ends, Bonferroni (conservative)",
    "auroc_bootstrap_ci": "stratified percentile bootstrap (comparison only; collapses at small n)",
}


def _split_metrics(
    neg: np.ndarray, pos: np.ndarray, fprs: Sequence[float], level: float, n_boot: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """AUROC and TPR at each target FPR of one split and statistic, with small-sample intervals."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.r_[pos, neg]
    fpr_c, tpr_c, _ = roc_curve(y, s, drop_intermediate=False)
    auc = float(roc_auc_score(y, s))
    entry: dict[str, Any] = {
        "auroc": auc,
        "auroc_ci": list(auc_interval(auc, len(pos), len(neg), level)),
        "n_pos": int(len(pos)),
        "n_neg": int(len(neg)),
        # The ROC curve moves in steps of 1/n_neg along FPR and 1/n_pos along TPR.
        "fpr_resolution": 1.0 / len(neg),
        "tpr_resolution": 1.0 / len(pos),
    }
    if n_boot > 0:
        entry["auroc_bootstrap_ci"] = list(percentile_interval(_boot(neg, pos, n_boot, rng), level) or [])
    for f in fprs:
        key = fpr_key(f)
        need = min_negatives(f)
        if len(neg) < need:
            entry[key] = entry[key + "_ci"] = None
            entry[key + "_reason"] = (
                f"not estimable: {len(neg)} negatives give FPR steps of {1 / len(neg):.1%}; TPR at "
                f"{f:.0%} FPR needs at least {need}"
            )
            continue
        entry[key] = float(np.max(tpr_c[fpr_c <= f + 1e-12]))
        entry[key + "_ci"] = list(tpr_at_fpr_interval(neg, pos, f, level))
    entry["roc"] = {"fpr": fpr_c.tolist(), "tpr": tpr_c.tolist()}
    return entry


def evaluate(
    table: pd.DataFrame,
    statistics: Sequence[str] | None = None,
    *,
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    negatives: Literal["auto", "split", "pooled"] = "auto",
) -> dict[str, Any]:
    """AUROC and TPR at each target FPR per split (+ "all" when there are several splits), with intervals
    at `level` that stay honest at small n.

    auroc_ci: Newcombe's (2006) score interval (`critwin.stats.auc_interval`; never [1, 1] at AUROC 1);
    auroc_bootstrap_ci (when n_boot > 0): the stratified percentile bootstrap, for comparison only.
    tpr_at_<f>pct_fpr: the highest TPR with empirical FPR <= f, with a distribution-free interval that
    includes the threshold's uncertainty (`critwin.stats.tpr_at_fpr_interval`); None, with a
    tpr_at_<f>pct_fpr_reason, when the split has fewer than 1/f negatives (`min_negatives`), since the FPR
    then moves in steps (fpr_resolution = 1/n_neg) larger than f. tpr_resolution = 1/n_pos.

    negatives "auto": a split's own label-0 rows, or all label-0 rows of the table when it has none (attack
    families stored without benign rows); "split"/"pooled" force one or the other. Splits without
    positives or negatives are reported with a "skipped" reason. Only rows with status "ok" are used.
    Returns {"splits": {split: {statistic: {...}}}, "skipped_rows": n, "statistics": {name: description}}.
    """
    stats = list(statistics or STATISTICS)
    unknown = [s for s in stats if s not in table.columns]
    if unknown:
        raise CritwinError(f"statistics {unknown} are not in the score table; choose from {list(STATISTICS)}")
    if not 0 < level < 1:
        raise CritwinError(f"level={level}: use a confidence level in (0, 1)")
    if any(not 0 < f < 1 for f in fprs):
        raise CritwinError("fprs: target false-positive rates must lie in (0, 1)")
    if negatives not in ("auto", "split", "pooled"):
        raise CritwinError(f"negatives={negatives!r}: use 'auto', 'split' or 'pooled'")
    ok = table[table["status"] == "ok"]
    splits = sorted(ok["split"].astype(str).unique())
    groups = [(s, ok[ok["split"].astype(str) == s]) for s in splits]
    if len(splits) > 1:
        groups.append(("all", ok))
    all_neg = ok[ok["label"] == 0]
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {}
    for name, g in groups:
        pos_rows = g[g["label"] == 1]
        neg_rows = g[g["label"] == 0]
        source = "split"
        if negatives == "pooled" or (negatives == "auto" and len(neg_rows) == 0):
            neg_rows, source = all_neg, "pooled"
        if len(pos_rows) == 0 or len(neg_rows) == 0:
            result[name] = {"skipped": f"needs both labels (positives {len(pos_rows)}, negatives "
                                       f"{len(neg_rows)})"}
            continue
        per: dict[str, Any] = {}
        for stat in stats:
            pos_all = pos_rows[stat].to_numpy(float)
            neg_all = neg_rows[stat].to_numpy(float)
            # A row can lack a statistic (e.g. a one-token prompt at the very start has no scored token):
            # it is left out of this statistic only, and counted.
            pos, neg = pos_all[np.isfinite(pos_all)], neg_all[np.isfinite(neg_all)]
            n_out = int(len(pos_all) - len(pos) + len(neg_all) - len(neg))
            if len(pos) == 0 or len(neg) == 0:
                per[stat] = {"skipped": "no finite scores for one of the labels"}
                continue
            per[stat] = _split_metrics(neg, pos, fprs, level, n_boot, rng)
            per[stat].update({"negatives": source, "n_nonfinite": n_out})
        result[name] = per
    skipped = table[table["status"] != "ok"]
    return {
        "splits": result,
        "skipped_rows": int(len(skipped)),
        "skip_reasons": {str(k): int(v) for k, v in skipped["status"].value_counts().items()},
        "statistics": {s: STATISTICS[s][0] if s in STATISTICS else s for s in stats},
        "level": level,
        "n_boot": n_boot,
        "ci_methods": CI_METHODS,
    }


def plain(obj: Any) -> Any:
    """Strict-JSON copy: numpy scalars to Python, tuples to lists, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def strip_roc(metrics: dict[str, Any]) -> dict[str, Any]:
    """A copy of `evaluate`'s result without the ROC point lists (for compact JSON output)."""
    out = plain(metrics)
    for per in out["splits"].values():
        for entry in per.values():
            if isinstance(entry, dict):
                entry.pop("roc", None)
    return out


def metrics_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per (split, statistic): AUROC and TPRs with intervals (the report's table)."""
    rows = []
    for split, per in metrics["splits"].items():
        if "skipped" in per:
            rows.append({"split": split, "statistic": None, "skipped": per["skipped"]})
            continue
        for stat, e in per.items():
            row = {"split": split, "statistic": stat}
            row.update({k: v for k, v in e.items() if k != "roc"})
            rows.append(row)
    return pd.DataFrame(rows)
