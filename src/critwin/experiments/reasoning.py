"""The reasoning experiment (DESIGN §2): where in a chain of thought does the final answer get decided?

For every problem the model writes one response with chain of thought (the original). The response is cut
at token positions (fractions of it kept, or every few tokens), K endings are resampled from every cut
with the same sampling settings (`HFSampler`, shared-prefix cache), and the answer of every ending is read
either from the free continuation ("The answer is …", \\boxed{…}, last number) or by the paper's elicitation
turn (a follow-up user message asking for the answer, decoded greedily). The curve is P(same answer as the
original | cut) against the forward time t = tokens removed; windows are where it drops as t grows, found by
`detect_windows` (ours) and by the paper's rule side by side.

Per dataset the run reports the share of problems with a window and the accuracy of the original answers
with and without a window, each with a Wilson interval (Newcombe's for their gap). For the bundled
running-sum task (`--task arith`) the first wrong step of every chain is known exactly, so the run also
reports how often a detected window sits at the first wrong step (`window_at_first_error_rate`).

A run directory (`critwin.rundir`) holds config, raw draws, curves and windows, plus originals.jsonl (the
original responses, generated before any scan) and problems.jsonl (one record per finished or failed
problem, appended as each one finishes). A rerun with the same settings skips finished problems.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from critwin.data import Problem, ProblemSet, RowIssue, load_problems
from critwin.errors import CritwinError, RunInterrupted, first_line
from critwin.experiments import arith
from critwin.features.answers import elicitation_prompt
from critwin.features.grading import ExactMatchGrader, Grader, grader_for
from critwin.rundir import RunDir
from critwin.samplers.base import Failure
from critwin.scan import Draws, scan
from critwin.schedules import DENSE_FRACTIONS, PAPER_FRACTIONS, kept_positions
from critwin.serialize import jsonable
from critwin.stats import newcombe_interval, wilson_interval
from critwin.windows import Window, detect_windows, paper_rule_windows

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_MODEL = ASSETS / "reasoning_model"
BUNDLED_PROBLEMS = ASSETS / "reasoning_problems.jsonl"

TASKS = ("math", "mc", "exact", "arith")
ANSWER_FROM = ("continuation", "elicit")

ORIGINALS = "originals.jsonl"
PROBLEMS = "problems.jsonl"
PROBLEMS_STREAM, ORIGINALS_STREAM = "problems", "originals"  # the record streams behind those two files
DATASETS = "datasets"  # record stream: rows read and skipped per dataset, for re-drawn reports
SUMMARY = "summary.json"
EXPERIMENT = "reasoning"
# Settings that must agree for a rerun to resume an existing run directory.
_RESUME_KEYS = (
    "model",
    "data",
    "task",
    "k",
    "fractions",
    "dense_step",
    "answer_from",
    "seed",
    "temperature",
    "top_p",
    "max_new_tokens",
    "elicit_prompt",
    "elicit_max_tokens",
    "chat",
    "fields",
    "dataset",
    "limit",
)


# --------------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReasoningConfig:
    """Settings of a reasoning scan.

    Cuts: `fractions` of the response kept (paper: 0.05 … 0.9), or every `dense_step` tokens when
    `dense_step` is set. `k` endings are resampled per cut. `answer_from` "continuation" reads the answer of
    each ending from its text; "elicit" asks for it in a follow-up user turn (`elicit_prompt`, default: the
    task's elicitation prompt) decoded greedily. Windows: `detect_windows(level, min_jump)` and the paper's
    rule (`paper_threshold`, `paper_max_drop`). Dataset intervals (Wilson, Newcombe) at `ci_level`.
    `error_tolerance`: tokens of slack when asking whether a window sits at the first wrong step (arith
    only; see `window_at_error`).
    """

    task: str = "arith"
    k: int = 16
    fractions: tuple[float, ...] = PAPER_FRACTIONS
    dense_step: int | None = None
    answer_from: str = "continuation"
    seed: int = 0
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 2048
    chat: bool | None = None
    elicit_prompt: str | None = None
    elicit_max_tokens: int = 32
    level: float = 0.99
    min_jump: float = 0.2
    paper_threshold: float = 0.5
    paper_max_drop: float = 0.3
    ci_level: float = 0.95
    error_tolerance: int = 3
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CritwinError(f"--task {self.task!r} unknown: use one of {', '.join(TASKS)}")
        if self.answer_from not in ANSWER_FROM:
            raise CritwinError(f"--answer-from {self.answer_from!r} unknown: use continuation or elicit")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise CritwinError(f"-k {self.k!r}: resample at least 1 ending per cut")
        if self.dense_step is not None and (not isinstance(self.dense_step, int) or self.dense_step < 1):
            raise CritwinError(f"--dense-step {self.dense_step!r}: use a whole number of tokens >= 1")
        fr = tuple(float(f) for f in self.fractions)
        if self.dense_step is None and not fr:
            raise CritwinError("--fractions is empty: give fractions kept such as 0.1,0.5,0.9")
        for f in fr:
            if not (math.isfinite(f) and 0.0 <= f <= 1.0):
                raise CritwinError(
                    f"--fractions: cut position {f:g} is out of range; fractions kept lie in "
                    "[0, 1] (0 keeps none of the response, 1 all of it)"
                )
        object.__setattr__(self, "fractions", fr)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise CritwinError(f"--seed {self.seed!r}: use a whole number >= 0")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise CritwinError(f"--temperature {self.temperature}: use a finite value >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise CritwinError(f"--top-p {self.top_p}: use a value in (0, 1]")
        if self.max_new_tokens < 1 or self.elicit_max_tokens < 1:
            raise CritwinError("--max-new-tokens must be >= 1")
        for name in ("level", "ci_level"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise CritwinError(f"{name}={getattr(self, name)}: use a value strictly between 0 and 1")
        if not 0.0 <= self.min_jump <= 1.0:
            raise CritwinError(f"--min-jump {self.min_jump}: use a difference of probabilities in [0, 1]")
        if self.error_tolerance < 0:
            raise CritwinError(f"error_tolerance={self.error_tolerance}: use a number of tokens >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (stored in config.json)."""
        d = asdict(self)
        d["fractions"] = list(self.fractions)
        return d

    def kept_positions(self, length: int) -> list[int]:
        """Response tokens KEPT at each cut for a response of `length` tokens, ascending, without repeats."""
        return kept_positions(length, self.fractions, self.dense_step)

    def elicitation(self) -> str:
        """The follow-up user message of the elicitation turn."""
        if self.elicit_prompt is not None:
            return self.elicit_prompt
        if self.task == "arith":
            return arith.ELICIT_PROMPTS[0]
        return elicitation_prompt(self.task)


# --------------------------------------------------------------------------------------------------------
# Problems and graders
# --------------------------------------------------------------------------------------------------------
def load_reasoning_problems(
    path: str | Path,
    task: str,
    *,
    dataset: str | None = None,
    fields: str | Mapping[str, str] | None = None,
    strict: bool = False,
    limit: int | None = None,
) -> ProblemSet:
    """Problems for a reasoning scan: `critwin.data.load_problems`, plus for task "arith" a check that each
    question is a running-sum problem (other rows are counted as issues; `strict` makes them an error)."""
    if task not in TASKS:
        raise CritwinError(f"--task {task!r} unknown: use one of {', '.join(TASKS)}")
    if task != "arith":
        return load_problems(path, dataset=dataset, task=task, fields=fields, strict=strict, limit=limit)
    ps = load_problems(path, dataset=dataset, task="exact", fields=fields, strict=strict, limit=limit)
    good, issues = [], list(ps.issues)
    for i, p in enumerate(ps.problems):
        try:
            ops = arith.parse_question(p.question)
        except CritwinError:
            issues.append(RowIssue(i, p.id, "question is not a running-sum problem"))
            continue
        if p.gold.strip() != str(sum(ops)):
            issues.append(RowIssue(i, p.id, "gold answer is not the sum of the terms"))
            continue
        good.append(p)
    out = ProblemSet(tuple(good), tuple(issues), ps.n_rows, ps.source, ps.name)
    if out.issues and strict:
        raise CritwinError(f"{out.report()}; fix those rows or drop --strict to skip them")
    if not good:
        raise CritwinError(
            f"{ps.source}: no usable running-sum rows ({out.report()}); write questions as "
            "'Add up a=7, b=5, c=9.' with the sum as answer"
        )
    return out


def grader_for_problem(task: str, problem: Problem) -> Grader:
    """The grader of one problem: math-verify, multiple-choice letters of its choices, exact match; arith
    reads only an explicit "The answer is N" (an unfinished chain has no answer, not its last number)."""
    if task == "arith":
        return ExactMatchGrader(methods=("answer_is",))
    if task == "mc":
        return grader_for("mc", letters=problem.letters)
    return grader_for(task)


def _text_of(sample: Any) -> str | None:
    return sample.response_text if hasattr(sample, "response_text") else None


class ContinuationFeature:
    """Scan feature: the label of the answer read from a response's own text (None: no answer)."""

    def __init__(self, grader: Grader):
        self.grader = grader
        self.labeler = grader.labeler()

    def answers(self, samples: Sequence[Any]) -> list[str | None]:
        """Raw answers read from each sample's text."""
        return self.grader.extract_many([_text_of(s) for s in samples])

    def __call__(self, sample: Any) -> str | None:
        return self.batch([sample])[0]

    def batch(self, samples: list[Any]) -> list[str | None]:
        """Labels of many samples (answers with the grader's equivalence share a label)."""
        return self.labeler.label_many(self.answers(samples))


class ElicitFeature(ContinuationFeature):
    """Scan feature: the label of the answer given to the paper's elicitation turn.

    For each sample the conversation [user: question, assistant: response, user: `prompt`] is answered
    greedily (up to `max_tokens` tokens) in one batch per call, and the answer read from the reply.
    """

    def __init__(self, grader: Grader, sampler: Any, question: str, prompt: str, max_tokens: int):
        super().__init__(grader)
        self.sampler = sampler
        self.question = question
        self.prompt = prompt
        self.max_tokens = max_tokens

    def answers(self, samples: Sequence[Any]) -> list[str | None]:
        convs = [
            [
                {"role": "user", "content": self.question},
                {"role": "assistant", "content": _text_of(s) or ""},
                {"role": "user", "content": self.prompt},
            ]
            for s in samples
        ]
        replies = self.sampler.generate_responses(
            convs, seed=0, temperature=0.0, max_new_tokens=self.max_tokens
        )
        return self.grader.extract_many([None if isinstance(r, Failure) else r.response_text
                                         for r in replies])


class _OneResponse:
    """The `Sampler` view of one response: t = tokens removed, t_max = its length (so that curves know the
    fraction kept), forward–reverse through the shared HF sampler."""

    time_unit = "tokens"

    def __init__(self, sampler: Any, length: int):
        self.sampler = sampler
        self.t_max = float(length)

    def forward_reverse(
        self, x: Any, ts: Sequence[float], n: int, rng: np.random.Generator
    ) -> list[list[Any]]:
        return self.sampler.forward_reverse(x, ts, n, rng)


# --------------------------------------------------------------------------------------------------------
# Windows in the text
# --------------------------------------------------------------------------------------------------------
def _char_offsets(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """offsets[k] = characters of the decoded text of the first k tokens (k = 0 … len(ids))."""
    dec = tokenizer.decode
    return [len(dec(list(ids[:k]), skip_special_tokens=True)) for k in range(len(ids) + 1)]


def window_record(w: Window, length: int, offsets: Sequence[int]) -> dict[str, Any]:
    """A window in all coordinates: forward time [t_lo, t_hi], tokens kept [kept_lo, kept_hi) (the tokens
    in which the answer got decided), fractions kept, and the characters [char_lo, char_hi) of those
    tokens."""
    kept_lo, kept_hi = int(round(length - w.t_hi)), int(round(length - w.t_lo))
    return {
        **w.to_dict(),
        "kept_lo": kept_lo,
        "kept_hi": kept_hi,
        "fraction_lo": kept_lo / length if length else 0.0,
        "fraction_hi": kept_hi / length if length else 0.0,
        "char_lo": offsets[kept_lo],
        "char_hi": offsets[kept_hi],
    }


def main_window(windows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The window with the largest jump (ties: the earliest in the text), or None."""
    if not windows:
        return None
    return max(windows, key=lambda w: (w["jump"], w["kept_lo"] * -1))


def window_at_error(window: Mapping[str, Any], error_token: int, tolerance: int) -> bool:
    """Does a window sit at the first wrong step?

    The curve can only jump between the cuts kept_lo and kept_hi when the token that decided the answer is
    one of tokens kept_lo … kept_hi − 1 (a cut keeping k tokens keeps token index p iff k > p). The window
    sits at the first wrong step when the first wrong token p satisfies
    kept_lo − tolerance ≤ p < kept_hi + tolerance; the slack (3 tokens by default, about a quarter of a
    line of the running-sum chain) absorbs cut grids that straddle the decisive token.
    """
    return window["kept_lo"] - tolerance <= error_token < window["kept_hi"] + tolerance


# --------------------------------------------------------------------------------------------------------
# One problem
# --------------------------------------------------------------------------------------------------------

def _verdict(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _slim(draws: Draws) -> Draws:
    """Draws with each resampled response reduced to what the report needs (text, cut, stop reason)."""

    def slim(s: Any) -> Any:
        if isinstance(s, Failure):
            return {"failure": s.reason}
        return {"n_kept": s.n_kept, "text": s.response_text, "stop_reason": s.stop_reason}

    return replace(draws, samples=[[slim(s) for s in row] for row in draws.samples])


def scan_problem(
    sampler: Any,
    problem: Problem,
    response: Any,
    cfg: ReasoningConfig,
    *,
    dataset: str,
    seed: np.random.Generator,
    can_elicit: bool,
    run: RunDir | None = None,
    order: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Scan one original response: its answers (both ways), correctness, curve, windows (ours and the
    paper's) and, for arith, the first wrong step. Writes curve, windows and draws into `run` when given and
    returns the problem's record (status "ok", or "failed" with the reason when the original has no answer).
    """
    case = f"{dataset}/{problem.id}"
    if run is not None:
        run.start_case(case)
    grader = grader_for_problem(cfg.task, problem)
    question = problem.prompt()
    cont = ContinuationFeature(grader)
    elic = (
        ElicitFeature(
            grader_for_problem(cfg.task, problem), sampler, question, cfg.elicitation(), cfg.elicit_max_tokens
        )
        if can_elicit
        else None
    )
    ans_cont = cont.answers([response])[0]
    ans_elic = elic.answers([response])[0] if elic is not None else None
    verdicts = grader.grade_many([(ans_cont, problem.gold), (ans_elic, problem.gold)])
    rec: dict[str, Any] = {
        "dataset": dataset,
        "id": problem.id,
        "case": case,
        "question": question,
        "gold": problem.gold,
        "response": response.response_text,
        "length": response.length,
        "stop_reason": response.stop_reason,
        "answer_continuation": ans_cont,
        "answer_elicit": ans_elic,
        "correct_continuation": _verdict(verdicts[0]),
        "correct_elicit": _verdict(verdicts[1]) if elic is not None else None,
        "answer_from": cfg.answer_from,
    }
    answer = ans_cont if cfg.answer_from == "continuation" else ans_elic
    rec["answer"] = answer
    rec["correct"] = (
        rec["correct_continuation"] if cfg.answer_from == "continuation" else rec["correct_elicit"]
    )
    if cfg.task == "arith":
        slips = [
            {
                **asdict(e),
                "token": arith.char_to_token_index(sampler.tokenizer, response.response_ids, e.char),
            }
            for e in arith.wrong_steps(problem.question, response.response_text)
        ]
        rec["first_error"] = slips[0] if slips else None
        rec["wrong_steps"] = slips
    if response.length == 0:
        return {**rec, "status": "failed", "error": "empty response: nothing to cut"}
    if answer is None:
        return {**rec, "status": "failed", "error": f"no answer in the original response ({cfg.answer_from})"}

    feature = cont if cfg.answer_from == "continuation" else elic
    reference = feature(response)
    kept = cfg.kept_positions(response.length)
    ts = sorted(response.length - k for k in kept)
    on_draws = None if run is None else (lambda d: run.write_draws(case, _slim(d)))
    curve = scan(
        _OneResponse(sampler, response.length),
        response,
        ts,
        cfg.k,
        feature,
        seed=seed,
        reference=reference,
        on_draws=on_draws,
    )
    detected = detect_windows(curve, level=cfg.level, min_jump=cfg.min_jump)
    paper = (
        paper_rule_windows(curve, threshold=cfg.paper_threshold, max_drop=cfg.paper_max_drop, level=cfg.level)
        if len(curve) >= 2
        else []
    )
    offsets = _char_offsets(sampler.tokenizer, response.response_ids)
    lo, hi = curve.wilson(cfg.level)
    rec["curve"] = {
        "t": curve.t.tolist(),
        "kept": [int(response.length - t) for t in curve.t],
        "n_kept": curve.n_kept.tolist(),
        "n_valid": curve.n_valid.tolist(),
        "n_failed": curve.n_failed.tolist(),
        "fraction_kept": [float(1.0 - t / response.length) for t in curve.t],
        "p_same": [None if not np.isfinite(v) else float(v) for v in curve.p_hat],
        "ci_lo": [None if not np.isfinite(v) else float(v) for v in lo],
        "ci_hi": [None if not np.isfinite(v) else float(v) for v in hi],
        "ci_level": cfg.level,
        "reference": reference,
    }
    rec["windows"] = [window_record(w, response.length, offsets) for w in detected]
    rec["paper_windows"] = [window_record(w, response.length, offsets) for w in paper]
    rec["has_window"] = bool(detected)
    rec["has_paper_window"] = bool(paper)
    if cfg.task == "arith":
        rec.update(error_alignment(rec, cfg.error_tolerance))
    rec["status"] = "ok"
    if run is not None:
        run.write_curve(case, curve, order=order)
        run.write_case(
            case,
            detected=detected,
            paper=paper,
            meta={
                "title": f"{dataset} · {problem.id}",
                "sampler": "HFSampler",
                "feature": f"answer ({cfg.answer_from})",
                "n": cfg.k,
            },
        )
    return rec


# --------------------------------------------------------------------------------------------------------
# Dataset summaries
# --------------------------------------------------------------------------------------------------------
def _interval(k: int, n: int, level: float) -> list[float] | None:
    """Wilson interval of k/n as a two-element list; None when n == 0 (no problem in the group)."""
    if n == 0:
        return None
    lo, hi = wilson_interval(k, n, level)
    return [float(lo), float(hi)]


#: How the dataset intervals are computed (stored in each summary as "ci_method").
CI_METHOD = (
    "Wilson score intervals for the share and the accuracies; Newcombe's hybrid score interval "
    "(1998, method 10) for the accuracy gap, given the two group sizes"
)


def window_stats(
    has_window: Sequence[bool],
    correct: Sequence[bool],
    *,
    level: float = 0.95,
) -> dict[str, Any]:
    """Share of problems with a window and accuracy with / without one, with intervals that stay honest
    at small n (a percentile bootstrap gives [1, 1] when all 12 problems are right; Wilson gives
    [0.76, 1]).

    share_with_window = n_with / n and accuracy = n_correct / n: Wilson intervals over the n problems;
    accuracy_with_window / accuracy_without_window: Wilson intervals within each group (None when the
    group is empty); accuracy_gap = accuracy_without_window − accuracy_with_window: Newcombe's hybrid score
    interval, conditional on the group sizes (None unless both groups have problems). All at `level`.
    """
    w = np.asarray(has_window, dtype=bool)
    c = np.asarray(correct, dtype=bool)
    if w.shape != c.shape:
        raise CritwinError(f"window_stats: {len(w)} window flags but {len(c)} verdicts; pass one per problem")
    n, n_w = len(w), int(w.sum())
    n_n = n - n_w
    k_w, k_n = int((w & c).sum()), int((~w & c).sum())
    out: dict[str, Any] = {"n_problems": n, "n_with_window": n_w, "n_without_window": n_n}
    for key, k, m in (
        ("share_with_window", n_w, n),
        ("accuracy_with_window", k_w, n_w),
        ("accuracy_without_window", k_n, n_n),
        ("accuracy", k_w + k_n, n),
    ):
        out[key] = k / m if m else None
        out[f"{key}_ci"] = _interval(k, m, level)
    if n_w and n_n:
        out["accuracy_gap"] = k_n / n_n - k_w / n_w
        out["accuracy_gap_ci"] = list(newcombe_interval(k_n, n_n, k_w, n_w, level))
    else:
        out["accuracy_gap"] = out["accuracy_gap_ci"] = None
    out["ci_level"] = level
    out["ci_method"] = CI_METHOD
    return out


def summarize(
    records: Sequence[Mapping[str, Any]],
    cfg: ReasoningConfig,
    skipped: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per dataset: n_problems (finished problems whose original answer was graded), share with a window,
    accuracy with / without a window (our rule; the paper's rule under "paper_rule"), their intervals
    (`window_stats`: Wilson, Newcombe), failed and skipped counts; for arith also the window-at-first-error
    statistics."""
    out: dict[str, Any] = {}
    names = list(dict.fromkeys([r["dataset"] for r in records] + list(skipped or {})))
    for name in names:
        recs = [r for r in records if r["dataset"] == name]
        ok = [r for r in recs if r.get("status") == "ok" and r.get("correct") is not None]
        correct = [r["correct"] for r in ok]
        entry, paper = (
            window_stats([r[key] for r in ok], correct, level=cfg.ci_level)
            for key in ("has_window", "has_paper_window")
        )
        entry["paper_rule"] = {k: v for k, v in paper.items() if k not in ("ci_level", "ci_method")}
        entry["paper_rule"]["threshold"] = cfg.paper_threshold
        entry["paper_rule"]["max_drop"] = cfg.paper_max_drop
        entry["n_failed"] = sum(r.get("status") == "failed" for r in recs)
        entry["n_ungraded"] = sum(r.get("status") == "ok" and r.get("correct") is None for r in recs)
        entry["failures"] = sorted({r.get("error", "") for r in recs if r.get("status") == "failed"})[:10]
        if skipped and name in skipped:
            entry["rows"] = dict(skipped[name])
        if cfg.task == "arith":
            entry.update(first_error_stats(ok, cfg.error_tolerance))
        out[name] = entry
    return out


def error_alignment(rec: Mapping[str, Any], tolerance: int) -> dict[str, bool | None]:
    """Where a problem's windows sit relative to its chain's errors (arith), for our rule and the paper's.

    window_at_first_error: the main window (largest jump) sits at the first wrong step (`window_at_error`);
    window_at_wrong_step: at any wrong step (`arith.wrong_steps`: later slips decide the answer too, since
    P(same answer) only becomes high once every slip of the original is kept); any_window_at_first_error:
    some window sits at the first wrong step. None when the problem has no window of that rule.
    """
    first = [] if rec.get("first_error") is None else [rec["first_error"]["token"]]
    every = [e["token"] for e in rec.get("wrong_steps", [])]
    out: dict[str, bool | None] = {}
    for prefix, key in (("", "windows"), ("paper_", "paper_windows")):
        ws = rec.get(key, [])
        mw = main_window(ws)
        out[f"{prefix}window_at_first_error"] = (
            None if mw is None else any(window_at_error(mw, t, tolerance) for t in first)
        )
        out[f"{prefix}window_at_wrong_step"] = (
            None if mw is None else any(window_at_error(mw, t, tolerance) for t in every)
        )
        out[f"{prefix}any_window_at_first_error"] = (
            None if not ws else any(window_at_error(w, t, tolerance) for w in ws for t in first)
        )
    return out


def first_error_stats(records: Sequence[Mapping[str, Any]], tolerance: int) -> dict[str, Any]:
    """How detected windows relate to the errors of the original chains (arith).

    window_at_first_error_rate: among problems with a window, the share whose main window (largest jump)
    sits at the first wrong step of the original chain (± `tolerance` tokens; a correct chain has no wrong
    step, so its window counts as not at one); window_at_wrong_step_rate: at any wrong step;
    any_window_at_first_error_rate: some window at the first wrong step; first_error_window_recall: among
    chains with a wrong step, the share with some window at the first one. The same under "paper_rule".
    """
    erring = [r for r in records if r.get("first_error") is not None]
    out: dict[str, Any] = {
        "n_chains_with_wrong_step": len(erring),
        "error_tolerance_tokens": tolerance,
    }
    for prefix, flag in (("", "has_window"), ("paper_", "has_paper_window")):
        with_w = [r for r in records if r.get(flag)]
        wrong_w = [r for r in with_w if r.get("first_error") is not None]

        def rate(rows: Sequence[Mapping[str, Any]], key: str, prefix: str = prefix) -> float | None:
            return sum(bool(r.get(prefix + key)) for r in rows) / len(rows) if rows else None

        stats = {
            "window_at_first_error_rate": rate(with_w, "window_at_first_error"),
            "window_at_wrong_step_rate": rate(with_w, "window_at_wrong_step"),
            "any_window_at_first_error_rate": rate(with_w, "any_window_at_first_error"),
            "n_with_window": len(with_w),
            "n_with_window_and_wrong_step": len(wrong_w),
            "window_at_first_error_rate_wrong_chains": rate(wrong_w, "window_at_first_error"),
            "first_error_window_recall": rate(erring, "any_window_at_first_error"),
        }
        if prefix:
            out["paper_rule_errors"] = stats
        else:
            out.update(stats)
    return out


# --------------------------------------------------------------------------------------------------------
# Run directory: originals, per-problem records, resume
# --------------------------------------------------------------------------------------------------------
def read_records(run_path: str | Path) -> list[dict[str, Any]]:
    """The latest record per (dataset, id) from problems.jsonl, in order of first appearance."""
    from critwin.rundir import read_jsonl

    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in read_jsonl(Path(run_path) / PROBLEMS):
        latest[(row.get("dataset", ""), row.get("id", ""))] = row
    return list(latest.values())


def check_resumable(out: str | Path, config: Mapping[str, Any]) -> RunDir | None:
    """The existing reasoning run in `out` when its settings match `config` (None when `out` is new or
    empty); CritwinError when `out` holds something else."""
    return RunDir.check_resumable(out, EXPERIMENT, config, _RESUME_KEYS)


def _response_from_row(row: Mapping[str, Any]) -> Any:
    from critwin.samplers.lm import Response

    return Response(
        tuple(row["prompt_ids"]),
        tuple(row["response_ids"]),
        row["prompt_text"],
        row["response_text"],
        row.get("stop_reason"),
    )


def generate_originals(
    sampler: Any,
    run: RunDir,
    datasets: Sequence[tuple[str, ProblemSet]],
    cfg: ReasoningConfig,
    chunk: int = 64,
    log: Callable[[str], None] | None = None,
) -> dict[tuple[str, str], Any]:
    """The original response of every problem: read from originals.jsonl, or generated in chunks of
    `chunk` problems (seeded by the dataset and chunk position, so a resumed run draws the same ones) and
    appended there as each chunk finishes. A failed generation is stored as {"failure": reason}."""
    have = {(r["dataset"], r["id"]): r for r in run.records(ORIGINALS_STREAM)}
    out: dict[tuple[str, str], Any] = {}
    for d, (name, ps) in enumerate(datasets):
        for start in range(0, len(ps), chunk):
            probs = ps.problems[start : start + chunk]
            if all((name, p.id) in have for p in probs):
                continue
            if log:
                log(f"generating original responses {start + 1}–{start + len(probs)} of {len(ps)} ({name})")
            seed = np.random.default_rng([cfg.seed, 1, d, start])
            resp = sampler.generate_responses([p.prompt() for p in probs], seed=seed)
            for p, r in zip(probs, resp, strict=True):
                row = (
                    {"dataset": name, "id": p.id, "failure": r.reason}
                    if isinstance(r, Failure)
                    else {
                        "dataset": name,
                        "id": p.id,
                        "prompt_ids": list(r.prompt_ids),
                        "response_ids": list(r.response_ids),
                        "prompt_text": r.prompt_text,
                        "response_text": r.response_text,
                        "stop_reason": r.stop_reason,
                    }
                )
                run.append_record(ORIGINALS_STREAM, row)
                have[(name, p.id)] = row
    for key, row in have.items():
        out[key] = Failure(row["failure"]) if "failure" in row else _response_from_row(row)
    return out


def _dataset_names(datasets: Sequence[ProblemSet]) -> list[str]:
    names, seen = [], {}
    for ps in datasets:
        base = ps.name or Path(ps.source).stem or "data"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


@dataclass
class ReasoningResult:
    """What `run_reasoning` returns: the summary written to summary.json and run facts."""

    out: Path
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    n_skipped_finished: int = 0
    seconds: float = 0.0


def run_reasoning(
    model: str | Path | Any,
    datasets: Sequence[ProblemSet],
    cfg: ReasoningConfig,
    out: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    threads: int | str | None = "auto",
    config_extra: Mapping[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ReasoningResult:
    """Run the reasoning scan of `datasets` with `model` (a local model directory, or an `HFSampler`) into
    the run directory `out`, resuming it when it holds the same run, and write the report.

    Every problem's record is appended to problems.jsonl as soon as it is finished (or failed); finished
    problems of an earlier attempt are skipped. Returns the summary ({"datasets": …, "cases": …})."""
    from tqdm import tqdm

    from critwin.samplers.hf import HFSampler

    start_time = time.perf_counter()
    log = log or (lambda _m: None)
    if not datasets:
        raise CritwinError("--data: give at least one dataset")
    names = _dataset_names(datasets)
    if isinstance(model, HFSampler):
        sampler = model
        model_name = str(
            getattr(getattr(model.model, "config", None), "_name_or_path", "") or "in-memory model"
        )
    else:
        sampler = None
        model_name = str(Path(model).resolve())
    config = {
        **cfg.to_dict(),
        "model": model_name,
        "data": [ps.source for ps in datasets],
        "datasets": names,
        "title": "critwin — critical windows in reasoning",
        "subtitle": f"{len(datasets)} dataset(s), task {cfg.task}, answers from the {cfg.answer_from}",
        "description": "Each original response is cut at the listed fractions kept; k endings are resampled "
        "from every cut and P(same answer as the original) is measured per cut, with 99% Wilson "
        "intervals. Windows: where that probability drops as fewer tokens are kept.",
        **dict(config_extra or {}),
    }
    # Refuse a mismatched resume before the (slow) model load, and only create the run directory once the
    # model has loaded and fits the settings, so that a bad model leaves no half-made run behind.
    existing = check_resumable(out, config)
    if sampler is None:
        sampler = HFSampler.from_pretrained(
            Path(model),
            dtype=dtype,
            device=device,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            chat=cfg.chat,
            batch_size=cfg.batch_size,
            cpu_threads=threads,
        )
    can_elicit = bool(sampler.chat)
    if cfg.answer_from == "elicit" and not can_elicit:
        raise CritwinError(
            "--answer-from elicit needs a tokenizer with a chat template (the elicitation is a "
            "second user turn); add a chat template or use --answer-from continuation"
        )
    run = existing or RunDir.create(out, EXPERIMENT, config)
    for line in run.healed:
        log(f"repaired {run.path}: {line}")
    done = {
        (r["dataset"], r["id"])
        for r in read_records(run.path)
        if r.get("status") == "ok" and run.is_finished(f"{r['dataset']}/{r['id']}")
    }
    n_resumed = len(done)
    if existing is not None:
        log(f"resuming {run.path}: {n_resumed} problem(s) already finished")
    skipped = {
        name: {"n_rows": ps.n_rows, "n_skipped": ps.n_skipped, "missing": ps.missing_counts}
        for name, ps in zip(names, datasets, strict=True)
    }
    run.append_record(DATASETS, skipped)
    n_total = sum(len(ps) for ps in datasets)
    try:
        originals = generate_originals(sampler, run, list(zip(names, datasets, strict=True)), cfg, log=log)
        todo = [
            (d, name, i, p)
            for d, (name, ps) in enumerate(zip(names, datasets, strict=True))
            for i, p in enumerate(ps)
            if (name, p.id) not in done
        ]
        bar = tqdm(todo, desc="critwin scan", unit="problem", file=sys.stderr, disable=not progress)
        for d, name, index, problem in bar:
            seed = np.random.default_rng([cfg.seed, 2, d, index])
            response = originals[(name, problem.id)]
            if isinstance(response, Failure):
                rec = {
                    "dataset": name,
                    "id": problem.id,
                    "status": "failed",
                    "error": f"original response failed: {response.reason}",
                }
            else:
                try:
                    rec = scan_problem(
                        sampler, problem, response, cfg, dataset=name, seed=seed, can_elicit=can_elicit,
                        run=run, order=(d, index),
                    )
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as err:  # one broken problem must not cost the finished ones
                    rec = {"dataset": name, "id": problem.id, "status": "failed", "error": first_line(err)}
            run.append_record(PROBLEMS_STREAM, rec)
            if rec["status"] == "ok":
                done.add((name, problem.id))
            else:
                log(f"problem {name}/{problem.id} failed: {rec['error']}")
        records = read_records(run.path)
        summary = write_reasoning_report(run, cfg, skipped)
    except KeyboardInterrupt:
        # Counted from what is on disk: the interrupt may land between a record's write and its bookkeeping.
        saved = {(r["dataset"], r["id"]) for r in read_records(run.path) if r.get("status") == "ok"}
        raise RunInterrupted(len(saved), n_total, run.path) from None
    return ReasoningResult(run.path, summary, records, n_resumed, time.perf_counter() - start_time)


def write_reasoning_report(
    run: RunDir, cfg: ReasoningConfig | None = None, skipped: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Write index.html and summary.json ({"datasets": per-dataset summary, "cases": per-case summary})."""
    from critwin.report.reasoning import build_reasoning_report
    from critwin.rundir import atomic_write, write_json

    if cfg is None:
        cfg = config_from_run(run)
    if skipped is None:
        rows = run.records(DATASETS)
        skipped = rows[-1] if rows else None
    records = read_records(run.path)
    datasets = summarize(records, cfg, skipped)
    write_json(run.path / "reasoning_summary.json", jsonable(datasets))
    html, cases = build_reasoning_report(run)
    summary = jsonable({"datasets": datasets, **cases})
    atomic_write(run.path / "index.html", lambda p: p.write_text(html))
    write_json(run.path / SUMMARY, summary)
    return summary


def config_from_run(run: RunDir) -> ReasoningConfig:
    """The ReasoningConfig stored in a run's config.json."""
    known = set(ReasoningConfig.__dataclass_fields__)
    kwargs = {k: v for k, v in run.config.items() if k in known}
    if "fractions" in kwargs:
        kwargs["fractions"] = tuple(kwargs["fractions"])
    return ReasoningConfig(**kwargs)


# --------------------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------------------
DEMO_K = 16


def run_reasoning_demo(
    out_dir: str | Path, seed: int = 0, progress: bool = False, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The reasoning scan of the bundled model on the ~20 bundled running-sum problems (dense cuts 0.05 …
    0.95, k = 16, answers from the continuation) into `out_dir`; returns the numbers for the demo's
    summary.json: window_at_first_error_rate and the number of problems it is computed on, share with a
    window, accuracy with / without a window, and the run's seconds."""
    # The sampler picks its thread count by measurement ("auto"): one thread for the tiny bundled model.
    cfg = ReasoningConfig(task="arith", k=DEMO_K, fractions=DENSE_FRACTIONS, seed=seed, max_new_tokens=300)
    ps = load_reasoning_problems(BUNDLED_PROBLEMS, "arith")
    res = run_reasoning(BUNDLED_MODEL, [ps], cfg, out_dir, device="cpu", progress=progress, log=log)
    return {"out": str(res.out), **demo_numbers(res.summary), "seconds": res.seconds}


def demo_numbers(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's summary.json "reasoning" numbers, read off the reasoning run's summary."""
    d = next(iter(summary["datasets"].values()))
    return {
        "window_at_first_error_rate": d["window_at_first_error_rate"],
        "n_problems_with_window": d["n_with_window"],
        "window_at_wrong_step_rate": d["window_at_wrong_step_rate"],
        "any_window_at_first_error_rate": d["any_window_at_first_error_rate"],
        "paper_rule_window_at_first_error_rate": d["paper_rule_errors"]["window_at_first_error_rate"],
        "paper_rule_n_problems_with_window": d["paper_rule_errors"]["n_with_window"],
        "first_error_window_recall": d["first_error_window_recall"],
        "n_chains_with_wrong_step": d["n_chains_with_wrong_step"],
        "error_tolerance_tokens": d["error_tolerance_tokens"],
        "n_problems": d["n_problems"],
        "share_with_window": d["share_with_window"],
        "accuracy_with_window": d["accuracy_with_window"],
        "accuracy_without_window": d["accuracy_without_window"],
        "accuracy": d["accuracy"],
    }
