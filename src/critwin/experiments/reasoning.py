"""The reasoning experiment (DESIGN §2): where in a chain of thought does the final answer get decided?

For every problem the model writes one response with chain of thought (the original). The response is cut
at token positions (fractions of it kept, or every few tokens), K endings are resampled from every cut
with the same sampling settings (any `LMSampler`; on HF with a shared-prefix cache), and the answer of
every ending is read either from the free continuation ("The answer is …", \\boxed{…}, last number) or
by the paper's elicitation turn (a follow-up user message asking for the answer, decoded greedily). The
curve is P(same answer as the original | cut) against the forward time t = tokens removed; windows are
where it drops as t grows, found by `detect_windows` (ours) and by the paper's rule side by side.

Per dataset the run reports the share of problems with a window and the accuracy of the original answers
with and without a window, each with a Wilson interval (Newcombe's for their gap). For the bundled
running-sum task (`--task arith`) the first wrong step of every chain is known exactly, so the run also
reports how often a detected window sits at the first wrong step (`window_at_first_error_rate`).

The experiment is data (`ReasoningExperiment`: one case per problem); `critwin.run` runs it into a run
directory (`critwin.rundir`): config, raw draws, curves and windows, plus originals.jsonl (each problem's
original response) and problems.jsonl (one record per finished or failed problem, appended as each one
finishes). A rerun with the same settings skips finished problems.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from critwin.curves import Draws, scan
from critwin.data import Problem, ProblemSet, RowIssue, load_problems
from critwin.data.problem import TASKS as PROBLEM_TASKS
from critwin.errors import CritwinError
from critwin.experiments import arith
from critwin.experiments.base import Case, CaseJournal, CaseResult
from critwin.features.answers import elicitation_prompt
from critwin.features.grading import ExactMatchGrader, Grader, grader_for
from critwin.features.similarity import THRESHOLD
from critwin.methods.anchors import (
    boundary_tokens,
    counterfactual_importance,
    replacement_sentence,
    sentence_importance,
    sentence_spans,
)
from critwin.methods.critical import critical_token
from critwin.methods.forks import (
    Branch,
    branch_tokens,
    change_points,
    check_positions,
    check_threshold,
    position_summary,
    survival,
)
from critwin.methods.pivotal import pivotal_tokens
from critwin.methods.revise import ARMS, REVISE_PROMPT, control_position, effect, mean_effect
from critwin.params import PARAMS, check, parts_from_flat, whole_number
from critwin.rundir import RunDir
from critwin.schedules import DENSE_FRACTIONS, PAPER_FRACTIONS, kept_positions
from critwin.stats import confidence_sequence, newcombe_interval, wilson_interval
from critwin.strategies import StrategySettings
from critwin.types import Failure
from critwin.windows import Window, WindowRule

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_MODEL = ASSETS / "reasoning_model"
BUNDLED_PROBLEMS = ASSETS / "reasoning_problems.jsonl"

TASKS = (*PROBLEM_TASKS, "arith")
ANSWER_FROM = ("continuation", "elicit")
OUTCOMES = ("same", "correct")

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
    "strategy",
    "budget",
    "n_min",
    "n_max",
    "stump",
    "outcome",
    "eps",
    "sentences",
    "forks",
    "fork_threshold",
    "fork_positions",
    "counterfactual",
    "similarity_threshold",
    "embedder",
    "revise",
    "revise_prompt",
)


# --------------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LMSettings:
    """How the language model samples (the sampler's part of a reasoning run): `temperature` (0 = greedy),
    nucleus `top_p`, at most `max_new_tokens` per response, the chat template on/off/auto (`chat` None),
    and rows per decoding batch."""

    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 2048
    chat: bool | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        check("temperature", self.temperature, "--temperature")
        check("top_p", self.top_p, "--top-p")
        check("max_new_tokens", self.max_new_tokens, "--max-new-tokens")
        check("batch_size", self.batch_size, "--batch-size")


@dataclass(frozen=True)
class CutSettings:
    """Where responses are cut and how the answer of an ending is read (the scan's part).

    `fractions` of the response kept (paper: 0.05 … 0.9), or every `dense_step` tokens when set; `k`
    endings resampled per cut. `answer_from` "continuation" reads the answer from an ending's own text;
    "elicit" asks for it in a follow-up user turn (`elicit_prompt`, default: the task's elicitation prompt)
    decoded greedily for at most `elicit_max_tokens` tokens. `stump`: also record, at every cut, the stump
    answer: the one elicited (that same turn) from the truncated prefix itself, with no continuation.
    `outcome` "same" scores an ending by whether its answer is the original's (the paper's P(same
    answer)); "correct" by whether it is right (P(correct), the outcome of Critical Tokens and PTS), and
    an incorrect original then gets its critical token (`critwin.methods.critical`, at most `eps` P(correct)
    after it at the statistics' ci_level). `sentences`: cut at the sentence boundaries of each response
    instead (`critwin.methods.anchors`), and record each sentence's resampling importance. `forks`: also
    force, at every position (or at the token positions `fork_positions`, 0-based), each token the model
    gives at least `fork_threshold` probability and resample k endings from it (`critwin.methods.forks`;
    needs the model's next-token distribution).
    `counterfactual` (with `sentences`): also each sentence's counterfactual importance, keeping only the
    endings whose replacement sentence has embedding similarity below `similarity_threshold` with it
    (`critwin.features.similarity`, model directory `embedder`, None: the bundled all-MiniLM-L6-v2).
    `revise`: for a response with a window, also revise at the window (`critwin.methods.revise`): k endings
    with and without `revise_prompt` appended right after the window and at a random control position.
    """

    k: int = 16
    fractions: tuple[float, ...] = PAPER_FRACTIONS
    dense_step: int | None = None
    answer_from: str = "continuation"
    elicit_prompt: str | None = None
    elicit_max_tokens: int = 32
    stump: bool = False
    outcome: str = "same"
    eps: float = 0.05
    sentences: bool = False
    forks: bool = False
    fork_threshold: float = 0.05
    fork_positions: tuple[int, ...] | None = None
    counterfactual: bool = False
    similarity_threshold: float = THRESHOLD
    embedder: str | None = None
    revise: bool = False
    revise_prompt: str = REVISE_PROMPT

    def __post_init__(self) -> None:
        if self.counterfactual and not self.sentences:
            raise CritwinError("--counterfactual scores sentences: it needs --sentences (critwin anchors)")
        if not self.revise_prompt:
            raise CritwinError("--revise-prompt is empty; give the re-prompt text, e.g. 'Wait, let me "
                               "re-check this step.'")
        if not -1 <= self.similarity_threshold <= 1:
            raise CritwinError(f"--similarity-threshold {self.similarity_threshold:g}: a cosine similarity "
                               "lies in [-1, 1] (Thought Anchors: 0.8)")
        if self.answer_from not in ANSWER_FROM:
            raise CritwinError(f"--answer-from {self.answer_from!r} unknown: use continuation or elicit")
        if self.outcome not in OUTCOMES:
            raise CritwinError(f"--outcome {self.outcome!r} unknown: use same or correct")
        check_threshold(self.fork_threshold)
        if self.fork_positions is not None:
            object.__setattr__(self, "fork_positions", check_positions(self.fork_positions))
            if not self.forks:
                raise CritwinError("--fork-positions picks where --forks forces tokens; add --forks (critwin "
                                   "forks) or drop --fork-positions")
        if not 0 < self.eps < 1:
            raise CritwinError(f"--eps {self.eps:g}: use a probability in (0, 1)")
        whole_number(1, "a whole number >= 1 (resample at least 1 ending per cut)").check(self.k, "k", "-k")
        if self.dense_step is not None:
            check("dense_step", self.dense_step, "--dense-step")
        fr = tuple(float(f) for f in self.fractions)
        if self.dense_step is None and not fr:
            raise CritwinError("--fractions is empty: give fractions kept such as 0.1,0.5,0.9")
        for f in fr:
            if not PARAMS["fraction"].ok(f):
                raise CritwinError(
                    f"--fractions: cut position {f:g} is out of range; fractions kept lie in "
                    "[0, 1] (0 keeps none of the response, 1 all of it)"
                )
        object.__setattr__(self, "fractions", fr)
        check("max_new_tokens", self.elicit_max_tokens, "--elicit-max-tokens")

    def kept_positions(self, length: int) -> list[int]:
        """Response tokens KEPT at each cut for a response of `length` tokens, ascending, without repeats."""
        return kept_positions(length, self.fractions, self.dense_step)


@dataclass(frozen=True)
class DatasetStatistics:
    """How a dataset is summarised (the statistics part): Wilson and Newcombe intervals at `ci_level`;
    `error_tolerance` tokens of slack when asking whether a window sits at the first wrong step (arith
    only; see `window_at_error`)."""

    ci_level: float = 0.95
    error_tolerance: int = 3

    def __post_init__(self) -> None:
        check("ci_level", self.ci_level)
        check("error_tolerance", self.error_tolerance)


_PARTS = {
    "sampling": LMSettings,
    "cuts": CutSettings,
    "search": StrategySettings,
    "windows": WindowRule,
    "stats": DatasetStatistics,
}
#: Parts whose settings enter config.json only when they differ from their defaults (runs of earlier
#: versions did not store them, so a run with the defaults writes the config it always wrote and resumes
#: an earlier run directory).
_NEW_PARTS = ("search",)
#: Fields of the cuts part stored only when they differ from these defaults (for the same reason).
_NEW_CUT_FIELDS = {"stump": False, "outcome": "same", "eps": 0.05, "sentences": False, "forks": False,
                   "fork_threshold": 0.05, "fork_positions": None, "counterfactual": False,
                   "similarity_threshold": THRESHOLD, "embedder": None, "revise": False,
                   "revise_prompt": REVISE_PROMPT}


@dataclass(frozen=True)
class ReasoningConfig:
    """Settings of a reasoning run: the `task` (how answers are graded), the run's `seed`, and one part per
    role — `sampling` (the sampler), `cuts` (the scan's cuts), `search` (the strategy that decides where
    and how often to draw: `critwin.strategies.StrategySettings`, default "fixed": k endings at every
    cut), `windows` (detection), `stats` (dataset summaries). `ReasoningConfig.from_flat(k=…, level=…)`
    builds one from flat settings (the CLI's and config.json's form); `to_dict()` gives that flat form
    back.
    """

    task: str = "arith"
    seed: int = 0
    sampling: LMSettings = field(default_factory=LMSettings)
    cuts: CutSettings = field(default_factory=CutSettings)
    search: StrategySettings = field(default_factory=StrategySettings)
    windows: WindowRule = field(default_factory=WindowRule)
    stats: DatasetStatistics = field(default_factory=DatasetStatistics)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CritwinError(f"--task {self.task!r} unknown: use one of {', '.join(TASKS)}")
        check("seed", self.seed, "--seed")

    @classmethod
    def from_flat(cls, **settings: Any) -> ReasoningConfig:
        """A config from flat settings (task, seed and any field of the parts); an unknown name is an
        error."""
        return cls(**parts_from_flat(settings, _PARTS, ("task", "seed"), "reasoning"))

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able settings (stored in config.json); the search settings only where they differ
        from the defaults."""
        d: dict[str, Any] = {"task": self.task, "seed": self.seed}
        for name in _PARTS:
            part = getattr(self, name)
            d.update(_changed(part) if name in _NEW_PARTS else asdict(part))
        d["fractions"] = list(self.cuts.fractions)
        for key, default in _NEW_CUT_FIELDS.items():  # runs of earlier versions stored no such keys
            if d[key] == default:
                del d[key]
        return d

    def elicitation(self) -> str:
        """The follow-up user message of the elicitation turn."""
        if self.cuts.elicit_prompt is not None:
            return self.cuts.elicit_prompt
        if self.task == "arith":
            return arith.ELICIT_PROMPTS[0]
        return elicitation_prompt(self.task)


def _changed(part: Any) -> dict[str, Any]:
    """The fields of a settings part that differ from their defaults."""
    return {f.name: getattr(part, f.name) for f in fields(part) if getattr(part, f.name) != f.default}


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


class CorrectFeature:
    """Scan feature: whether an ending's answer (read by `base`, a `ContinuationFeature` or
    `ElicitFeature`) is correct against `gold` (True / False; None when it has no answer or cannot be
    graded, so it counts as a failed draw, as in the P(same answer) scan). Scanned with reference True, the
    curve is P(correct | cut)."""

    def __init__(self, base: ContinuationFeature, gold: str):
        self.base, self.gold = base, gold
        self.grader = base.grader

    def __call__(self, sample: Any) -> bool | None:
        return self.batch([sample])[0]

    def batch(self, samples: list[Any]) -> list[bool | None]:
        answers = self.base.answers(samples)
        verdicts = self.grader.grade_many([(a, self.gold) for a in answers])
        return [None if a is None else _verdict(v) for a, v in zip(answers, verdicts, strict=True)]


# --------------------------------------------------------------------------------------------------------
# Windows in the text
# --------------------------------------------------------------------------------------------------------
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


def _slimmer(decode: Callable[[Sequence[int]], str]) -> Callable[[Draws], Draws]:
    """Draws with each resampled response reduced to what the report and the DPO export need: text, cut,
    stop reason, and the first token drawn after the cut (its id and text; None when the ending is
    empty)."""

    def slim(s: Any) -> Any:
        if isinstance(s, Failure):
            return {"failure": s.reason}
        ids = s.response_ids
        first = ids[s.n_kept] if s.n_kept is not None and len(ids) > s.n_kept else None
        return {"n_kept": s.n_kept, "text": s.response_text, "stop_reason": s.stop_reason, "first_id": first,
                "first_text": None if first is None else decode([first])}

    def slim_draws(draws: Draws) -> Draws:
        return replace(draws, samples=[[slim(s) for s in row] for row in draws.samples])

    return slim_draws


def scan_problem(
    sampler: Any,
    problem: Problem,
    response: Any,
    cfg: ReasoningConfig,
    *,
    dataset: str,
    seed: np.random.Generator,
    can_elicit: bool,
    journal: CaseJournal | None = None,
) -> CaseResult:
    """Scan one original response: its answers (both ways), correctness, curve, windows (ours and the
    paper's) and, for arith, the first wrong step. Returns the problem's result: its record (status "ok",
    or "failed" with the reason when the original has no answer or the strategy cannot scan it), raw
    draws, curve and windows.

    The scan's strategy is `cfg.search` built on the response (`StrategySettings.build`): grid = the cut
    times (tokens removed), k = `cfg.cuts.k`, resolution one token, support every t in [0, length], and
    the window rule's min_jump and level. Per-cut intervals are Wilson's for a fixed number of draws, and
    confidence sequences (`critwin.stats.confidence_sequence`, valid under data-dependent sampling) when
    the strategy chooses its draws by looking at earlier ones (`cfg.search.adaptive`); the record says
    which ("ci_method"). journal: the case's `CaseJournal`: the draws are stored there (slimmed) as they
    are made and an interrupted attempt's draws replayed, and the result carries no draws of its own.
    """
    case = f"{dataset}/{problem.id}"
    grader = grader_for_problem(cfg.task, problem)
    question = problem.prompt()
    cont = ContinuationFeature(grader)
    elic = (
        ElicitFeature(
            grader_for_problem(cfg.task, problem),
            sampler,
            question,
            cfg.elicitation(),
            cfg.cuts.elicit_max_tokens,
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
        "answer_from": cfg.cuts.answer_from,
    }
    answer = ans_cont if cfg.cuts.answer_from == "continuation" else ans_elic
    rec["answer"] = answer
    rec["correct"] = (
        rec["correct_continuation"] if cfg.cuts.answer_from == "continuation" else rec["correct_elicit"]
    )
    if cfg.task == "arith":
        slips = [
            {
                **asdict(e),
                "token": arith.char_to_token_index(sampler.decode, response.response_ids, e.char),
            }
            for e in arith.wrong_steps(problem.question, response.response_text)
        ]
        rec["first_error"] = slips[0] if slips else None
        rec["wrong_steps"] = slips
    if response.length == 0:
        return CaseResult(case, {**rec, "status": "failed", "error": "empty response: nothing to cut"})
    if answer is None:
        error = f"no answer in the original response ({cfg.cuts.answer_from})"
        return CaseResult(case, {**rec, "status": "failed", "error": error})

    feature = cont if cfg.cuts.answer_from == "continuation" else elic
    reference = feature(response)
    scored = feature if cfg.cuts.outcome == "same" else CorrectFeature(feature, problem.gold)
    offsets = sampler.char_offsets(response.response_ids)
    spans = sentence_spans(response.response_text) if cfg.cuts.sentences else []
    if cfg.cuts.sentences and len(spans) < 2:
        error = "the response has no sentence boundary (one sentence): there is nothing to cut between"
        return CaseResult(case, {**rec, "status": "failed", "error": error})
    kept = sorted(set(boundary_tokens(spans, offsets))) if spans else cfg.cuts.kept_positions(response.length)
    ts = sorted(response.length - k for k in kept)
    search = cfg.search
    try:
        strategy = search.build(
            grid=ts,
            n=cfg.cuts.k,
            resolution=1.0,
            support=range(response.length + 1),
            min_jump=cfg.windows.min_jump,
            level=cfg.windows.level,
            eps=cfg.cuts.eps,
            ci_level=cfg.stats.ci_level,
        )
    except CritwinError as err:  # e.g. a budget too small for this response's cuts: this problem only
        error = f"--strategy {search.strategy} cannot scan this response ({response.length} tokens): {err}"
        return CaseResult(case, {**rec, "status": "failed", "error": error})
    draws: list[Draws] = []
    seen: list[Draws] = []  # every call's slim draws, replayed or new (the counterfactual needs their texts)
    slim = _slimmer(sampler.decode)

    def keep(d: Draws) -> None:
        draws.append(d)
        seen.append(d)

    curve = scan(
        sampler,
        response,
        feature=scored,
        strategy=strategy,
        seed=seed,
        reference=reference if cfg.cuts.outcome == "same" else True,
        on_draws=None if journal is not None else (lambda d: keep(slim(d))),
        journal=None if journal is None else journal.mapped(slim).observed(seen.append),
    )
    detected, paper = cfg.windows.find(curve), cfg.windows.paper(curve)
    lo, hi, method = cut_intervals(curve.n_kept, curve.n_valid, cfg.windows.level, search.adaptive)
    rec["strategy"] = search.strategy
    rec["n_draws"] = int(curve.n_total.sum())
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
        "ci_level": cfg.windows.level,
        "ci_method": method,
        "n_draws": curve.n_total.tolist(),
        "reference": reference,
        "outcome": cfg.cuts.outcome,
    }
    rec["windows"] = [window_record(w, response.length, offsets) for w in detected]
    rec["paper_windows"] = [window_record(w, response.length, offsets) for w in paper]
    rec["has_window"] = bool(detected)
    rec["has_paper_window"] = bool(paper)
    if cfg.task == "arith":
        rec.update(error_alignment(rec, cfg.stats.error_tolerance))
    if cfg.cuts.outcome == "correct":
        rec["pivotal"] = pivotal_records(curve, cfg, response, offsets, rec.get("first_error"))
        if rec["correct"] is False:
            rec["critical"] = critical_record(curve, cfg, offsets, rec.get("first_error"))
    if cfg.cuts.forks:
        kept_label = reference if cfg.cuts.outcome == "same" else True
        try:
            rec["forks"] = fork_record(sampler, response, scored, kept_label, cfg, seed.spawn(1)[0], offsets,
                                       rec.get("first_error"))
        except CritwinError as err:  # e.g. a threshold that admits no token here: this problem only
            return CaseResult(case, {**rec, "status": "failed", "error": str(err)})
    if cfg.cuts.revise:
        graded, rng = CorrectFeature(feature, problem.gold), seed.spawn(1)[0]
        rec["revise"] = revise_record(sampler, response, graded, rec["windows"], cfg, rng, offsets)
    if spans:
        rec["anchors"] = anchor_records(curve, spans, offsets, cfg, rec.get("first_error"))
        if cfg.cuts.counterfactual:
            add_counterfactual_importance(rec["anchors"], seen, response, offsets, cfg, curve.reference)
    if cfg.cuts.stump:
        if elic is None:
            error = "--stump needs the chat template (the stump answer is elicited in a second user turn)"
            return CaseResult(case, {**rec, "status": "failed", "error": error})
        rec["stump"] = stump_answers(elic, feature.labeler, response, [int(k) for k in rec["curve"]["kept"]],
                                     offsets, reference, problem.gold)
        add_forced_importance(rec.get("anchors", []), rec["stump"])
    rec["status"] = "ok"
    meta = {
        "title": f"{dataset} · {problem.id}",
        "sampler": type(sampler).__name__,
        "feature": f"answer ({cfg.cuts.answer_from})",
        "n": int(curve.n_total.max()),
        "strategy": search.strategy,
        "ci_method": method,
    }
    return CaseResult(case, rec, tuple(draws), curve, tuple(detected), tuple(paper), meta)


def critical_record(curve: Any, cfg: ReasoningConfig, offsets: Sequence[int],
                    first_error: Mapping[str, Any] | None) -> dict[str, Any]:
    """The critical-token search of an incorrect original on its P(correct) curve
    (`critwin.methods.critical.critical_token` at `cfg.cuts.eps` and the statistics' ci_level), with the
    characters of the gap and, for arith, whether it sits at the first wrong step (± error_tolerance)."""
    found = critical_token(curve, eps=cfg.cuts.eps, level=cfg.stats.ci_level)
    out = found.to_dict()
    c = found.critical
    if c is not None:
        out["critical"].update(char_lo=offsets[c.kept_lo], char_hi=offsets[c.kept_hi])
        if first_error is not None:
            out["at_first_error"] = window_at_error(out["critical"], first_error["token"],
                                                    cfg.stats.error_tolerance)
    return out


def fork_record(sampler: Any, response: Any, feature: Any, reference: Any, cfg: ReasoningConfig,
                rng: np.random.Generator, offsets: Sequence[int], first_error: Mapping[str, Any] | None,
                ) -> dict[str, Any]:
    """Forking tokens (`critwin.methods.forks`) along one response: at every position each token with
    next-token probability >= `cfg.cuts.fork_threshold` (the model's law at the sampling temperature,
    before top-p) is forced and k endings resampled from it, all in one batch; per position the branches,
    p_same and the fork probability, then the change points of p_same (the positions where a new segment
    starts), the survival, and the top fork (the position whose redrawing most often changes the outcome)
    with whether it is the first wrong step."""
    import torch

    length = response.length
    chosen = cfg.cuts.fork_positions
    at = list(range(length)) if chosen is None else [p for p in chosen if p < length]
    if not at:
        raise CritwinError(f"--fork-positions: every position is past this response's end ({length} tokens: "
                           f"positions 0..{length - 1})")
    temperature = max(float(cfg.sampling.temperature), 1e-6)
    logits = sampler.next_token_logits(response, [float(length - p) for p in at])
    probs = torch.softmax(logits.double() / temperature, dim=-1).cpu().numpy()
    eos = tuple(getattr(getattr(sampler, "settings", None), "eos_token_ids", ()) or ())
    forced, where = [], []
    for row, p in zip(probs, at, strict=True):
        top = np.flatnonzero(row >= cfg.cuts.fork_threshold - 1e-12)
        for w in branch_tokens({int(t): float(row[t]) for t in top}, cfg.cuts.fork_threshold, eos):
            ids = response.response_ids[:p] + (w,)
            forced.append(replace(response, response_ids=ids, response_text=sampler.decode(ids)))
            where.append((p, w, float(row[w])))
    if not forced:
        raise CritwinError(f"--fork-threshold {cfg.cuts.fork_threshold:g} admits no token at any position of "
                           "this response; lower it")
    endings = sampler.resample_many(forced, [[0.0]] * len(forced), cfg.cuts.k, rng)
    branches: dict[int, list[Branch]] = {p: [] for p in at}
    for (p, w, q), x, (row,) in zip(where, forced, endings, strict=True):
        done = [replace(x, response_ids=x.response_ids + c.token_ids,
                        response_text=sampler.decode(x.response_ids + c.token_ids))
                for c in row if not isinstance(c, Failure)]
        labels = [lab for lab in feature.batch(done) if lab is not None]
        counts: dict[Any, int] = {}
        for lab in labels:
            counts[lab] = counts.get(lab, 0) + 1
        branches[p].append(Branch(w, q, counts))
    positions = []
    for p in at:
        summary = position_summary(branches[p], response.response_ids[p], reference)
        shown = [{"token_id": b.token_id, "text": sampler.decode([b.token_id]), "prob": b.prob, "n": b.n,
                  "same": b.share(reference) if b.n else None,
                  "counts": {str(k): v for k, v in b.counts.items()}}
                 for b in branches[p]]
        positions.append({"token": p, "token_id": response.response_ids[p], **summary, "branches": shown})
    scored = [d for d in positions if d["p_same"] is not None]
    changes = change_points([d["p_same"] for d in scored], [d["variance"] for d in scored])
    cuts = [d["token"] for d in scored]
    out: dict[str, Any] = {
        "threshold": cfg.cuts.fork_threshold,
        "n_draws": int(sum(b.n for bs in branches.values() for b in bs)),
        "positions": positions,
        "change_points": [cuts[b] for b in changes],
        "survival": survival([d["fork_probability"] or 0.0 for d in positions]),
    }
    if chosen is not None:  # the survival is then over the chosen positions only
        out["positions_chosen"] = list(chosen)
        out["positions_past_end"] = [p for p in chosen if p >= length]
    forks = [(d["fork_probability"], -d["token"]) for d in positions if d["fork_probability"]]
    if forks:
        best, token = max(forks)[0], -max(forks)[1]
        top = {"fork_probability": best, "kept_lo": token, "kept_hi": token + 1, "char_lo": offsets[token],
               "char_hi": offsets[token + 1]}
        if first_error is not None:
            top["at_first_error"] = window_at_error(top, first_error["token"], cfg.stats.error_tolerance)
        out["top"] = top
    return out


def fork_stats(records: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any] | None:
    """Over the problems with forks: how many, their draws and change points, and for the wrong chains whose
    first wrong step is known (arith) how often the top fork sits at it (Wilson)."""
    scanned = [r for r in records if "forks" in r]
    if not scanned:
        return None
    tops = [r["forks"].get("top") for r in scanned if r.get("correct") is False and r.get("first_error")]
    return {
        "n_problems": len(scanned),
        "n_draws": sum(r["forks"]["n_draws"] for r in scanned),
        "n_change_points": sum(len(r["forks"]["change_points"]) for r in scanned),
        **_rate("top_at_first_error_rate", [t["at_first_error"] for t in tops if t is not None], level),
    }


def revise_record(sampler: Any, response: Any, correct: Any, windows: Sequence[Mapping[str, Any]],
                  cfg: ReasoningConfig, rng: np.random.Generator, offsets: Sequence[int]) -> dict[str, Any]:
    """Revise at the window (`critwin.methods.revise`) for one response with a detected window: k endings
    per arm from the first kept_hi tokens of its main window and from a random control position (more than
    error_tolerance tokens from the window), each with and without `cfg.cuts.revise_prompt` appended, all
    in one batch; each arm's (correct, valid) counts, every ending's text after the arm's prefix with its
    verdict, and the re-prompt's effect at both positions (Newcombe, at the statistics' ci_level).
    `correct` labels an ending True / False (None: no gradable answer, a failed draw). A response without
    a window gets only the reason it was skipped."""
    window = main_window(windows)
    if window is None:
        return {"skipped": "no window: nothing to revise at"}
    prompt_ids = tuple(sampler.encode_text(cfg.cuts.revise_prompt))
    at = int(window["kept_hi"])
    control = control_position(response.length, int(window["kept_lo"]), at, cfg.stats.error_tolerance, rng)
    positions = {"window": at, "control": control}
    room = cfg.sampling.max_new_tokens - len(prompt_ids)
    if max(p for p in positions.values() if p is not None) >= room:
        return {"skipped": f"the re-prompt ({len(prompt_ids)} tokens) after the window leaves no room for an "
                "ending within --max-new-tokens"}
    arms: list[tuple[str, Any]] = []
    for where, p in positions.items():
        if p is None:
            continue
        for name, extra in (("plain", ()), ("revised", prompt_ids)):
            ids = tuple(response.response_ids[:p]) + extra
            x = replace(response, response_ids=ids, response_text=sampler.decode(ids))
            arms.append((f"{name}_{where}", x))
    endings = sampler.resample_many([x for _, x in arms], [[0.0]] * len(arms), cfg.cuts.k, rng)
    counts: dict[str, list[int]] = {}
    drawn: dict[str, list[dict[str, Any]]] = {}
    for (name, x), (row,) in zip(arms, endings, strict=True):
        done = [replace(x, response_ids=x.response_ids + c.token_ids,
                        response_text=sampler.decode(x.response_ids + c.token_ids))
                for c in row if not isinstance(c, Failure)]
        verdicts = correct.batch(done) if done else []
        labels = [lab for lab in verdicts if lab is not None]
        counts[name] = [sum(labels), len(labels)]
        # what each ending wrote after the arm's prefix, with its verdict (None: no gradable answer)
        drawn[name] = [{"text": d.response_text[len(x.response_text):], "correct": v}
                       for d, v in zip(done, verdicts, strict=True)]
        drawn[name] += [{"failure": c.reason} for c in row if isinstance(c, Failure)]
    level = cfg.stats.ci_level
    out: dict[str, Any] = {
        "prompt": cfg.cuts.revise_prompt,
        "window": {"kept": at, "char": offsets[at]},
        "control": None if control is None else {"kept": control, "char": offsets[control]},
        "arms": counts,
        "endings": drawn,
        "n_draws": len(arms) * cfg.cuts.k,
    }
    for where in positions if control is not None else ("window",):
        revised, plain = tuple(counts[f"revised_{where}"]), tuple(counts[f"plain_{where}"])
        out[f"{where}_effect"] = effect(revised, plain, level).to_dict()
    return out


def revise_stats(records: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any] | None:
    """Over the problems revised at their window: the mean effect of the re-prompt on P(correct) at the
    window, at the control position and their paired difference (window − control), each with a Student
    t interval across problems (`critwin.methods.revise.mean_effect`), and each arm's pooled accuracy
    (Wilson; endings of one problem are not independent draws of the dataset, so read it as a summary)."""
    revised = [r["revise"] for r in records if "arms" in (r.get("revise") or {})]
    if not any("revise" in r for r in records):
        return None
    win = [v["window_effect"]["effect"] for v in revised]
    ctl = [(v.get("control_effect") or {}).get("effect") for v in revised]
    paired = [w - c for w, c in zip(win, ctl, strict=True) if w is not None and c is not None]
    pooled = {}
    for arm in ARMS:
        k = sum(v["arms"].get(arm, [0, 0])[0] for v in revised)
        n = sum(v["arms"].get(arm, [0, 0])[1] for v in revised)
        pooled[arm] = {"correct": k, "n": n, "accuracy": k / n if n else None,
                       "ci": _wilson(k, n, level) if n else None}
    return {
        "n_problems": len(revised),
        "n_skipped": sum("skipped" in (r.get("revise") or {}) for r in records),
        "n_draws": sum(v["n_draws"] for v in revised),
        "window_effect": mean_effect(win, level),
        "control_effect": mean_effect(ctl, level),
        "window_minus_control": mean_effect(paired, level),
        "arms": pooled,
    }


def anchor_records(curve: Any, spans: Sequence[tuple[int, int]], offsets: Sequence[int], cfg: ReasoningConfig,
                   first_error: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Each sentence's resampling importance (`critwin.methods.anchors.sentence_importance`) on the scanned
    curve (P(same answer) or P(correct), per `cfg.cuts.outcome`; KL over the scan's labels), at the
    statistics' ci_level, with whether the sentence holds the first wrong step (arith, ± error_tolerance)."""
    kept = [int(round(curve.t_max - t)) for t in curve.t]
    success = {k: (int(a), int(b)) for k, a, b in zip(kept, curve.n_kept, curve.n_valid, strict=True)}
    answers = {k: dict(c) for k, c in zip(kept, curve.label_counts, strict=True)}
    out = []
    boundaries = boundary_tokens(spans, offsets)
    for imp in sentence_importance(spans, boundaries, success, answers, cfg.stats.ci_level):
        d = imp.to_dict()
        if first_error is not None:
            d["at_first_error"] = window_at_error(d, first_error["token"], cfg.stats.error_tolerance)
        out.append(d)
    return out


def add_counterfactual_importance(anchors: list[dict[str, Any]], draws: Sequence[Draws], response: Any,
                                  offsets: Sequence[int], cfg: ReasoningConfig, success: Any) -> None:
    """Each sentence's counterfactual importance (`critwin.methods.anchors.counterfactual_importance`) under
    "counterfactual": the valid endings drawn at the cut before it (all of the scan's calls pooled), each
    with the similarity (`critwin.features.similarity`, model `cfg.cuts.embedder`) of the sentence it wrote
    in its place to the original's rest of the sentence from that cut; the label counts after it."""
    from critwin.features.similarity import SentenceEmbedder

    by_kept: dict[int, list[tuple[str, Any]]] = {}
    for d in draws:
        for t, row, labels, fails in zip(d.ts, d.samples, d.labels, d.failures, strict=True):
            kept = int(round(response.length - t))
            by_kept.setdefault(kept, []).extend(
                (s["text"], lab) for s, lab, f in zip(row, labels, fails, strict=True)
                if lab is not None and f is None and isinstance(s, dict) and "text" in s)
    text = response.response_text
    pairs, owners = [], []
    for i, a in enumerate(anchors):
        start = offsets[a["kept_lo"]]
        original = text[start : a["char_hi"]]
        for ending, _ in by_kept.get(a["kept_lo"], []):
            pairs.append((original, replacement_sentence(ending, start)))
            owners.append(i)
    sims = SentenceEmbedder(cfg.cuts.embedder).similarities(pairs)
    scored: dict[int, list[float]] = {}
    for i, sim in zip(owners, sims, strict=True):
        scored.setdefault(i, []).append(sim)
    for i, a in enumerate(anchors):
        labels = [lab for _, lab in by_kept.get(a["kept_lo"], [])]
        after: dict[Any, int] = {}
        for _, lab in by_kept.get(a["kept_hi"], []):
            after[lab] = after.get(lab, 0) + 1
        got = counterfactual_importance(a["index"], list(zip(scored.get(i, []), labels, strict=True)), after,
                                        success, cfg.cuts.similarity_threshold, cfg.stats.ci_level)
        a["counterfactual"] = {**got.to_dict(), "threshold": cfg.cuts.similarity_threshold}


def add_forced_importance(anchors: list[dict[str, Any]], stump: Mapping[str, Any]) -> None:
    """Forced-answer importance of each sentence: whether the stump answer right after it is correct minus
    whether the one right before it is (None where either is ungraded)."""
    correct = dict(zip(stump["kept"], stump["correct"], strict=True))
    for a in anchors:
        before, after = correct.get(a["kept_lo"]), correct.get(a["kept_hi"])
        a["forced_importance"] = None if before is None or after is None else int(after) - int(before)


def top_anchor(rec: Mapping[str, Any], counterfactual: bool = False) -> Mapping[str, Any] | None:
    """The sentence that matters most: with P(correct), the one whose keeping lowers it most (the harmful
    step of a wrong chain); with P(same answer), the largest rise. None without a sentence of that sign.
    `counterfactual`: by the counterfactual importance instead (sentences without one are skipped)."""

    def score(a: Mapping[str, Any]) -> float | None:
        return (a.get("counterfactual") or {}).get("importance") if counterfactual else a["importance"]

    scored = [(v, a) for a in rec.get("anchors") or [] if (v := score(a)) is not None]
    if (rec.get("curve") or {}).get("outcome") == "correct":
        harmful = [(v, a) for v, a in scored if v < 0]
        return min(harmful, key=lambda va: (va[0], va[1]["index"]))[1] if harmful else None
    rising = [(v, a) for v, a in scored if v > 0]
    return max(rising, key=lambda va: (va[0], -va[1]["index"]))[1] if rising else None


def anchor_stats(records: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any] | None:
    """Over the problems cut at sentences: how many sentences were scored, and for the wrong chains whose
    first wrong step is known (arith) how often the top anchor (`top_anchor`) holds it (Wilson)."""
    scanned = [r for r in records if "anchors" in r]
    if not scanned:
        return None
    tops = [top_anchor(r) for r in scanned if r.get("correct") is False and r.get("first_error") is not None]
    out = {
        "n_problems": len(scanned),
        "n_sentences": sum(len(r["anchors"]) for r in scanned),
        **_rate("top_at_first_error_rate", [t["at_first_error"] for t in tops if t is not None], level),
    }
    cf = [a["counterfactual"] for r in scanned for a in r["anchors"] if "counterfactual" in a]
    if cf:  # how often the rewrites differ in meaning, pooled over every sentence's endings
        n = sum(c["n_before"] for c in cf)
        out["n_counterfactual"] = sum(c["importance"] is not None for c in cf)
        out["share_different"] = sum(c["n_different"] for c in cf) / n if n else None
    return out


def _wilson(k: int, n: int, level: float) -> list[float]:
    return [float(v) for v in wilson_interval(k, n, level)]


def _rate(name: str, flags: Sequence[bool], level: float) -> dict[str, Any]:
    """{name: share of True, name_ci: its Wilson interval, n_judged: how many}; {} when there are none."""
    if not flags:
        return {}
    return {name: sum(flags) / len(flags), f"{name}_ci": _wilson(sum(flags), len(flags), level),
            "n_judged": len(flags)}


def pivotal_records(curve: Any, cfg: ReasoningConfig, response: Any, offsets: Sequence[int],
                    first_error: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The pivotal tokens of a P(correct) curve (`critwin.methods.pivotal`, threshold: the window rule's
    min_jump, PTS's 0.2 by default), each with its token id, characters and, for arith, whether it sits at
    the first wrong step (± error_tolerance)."""
    out = []
    for p in pivotal_tokens(curve, cfg.windows.min_jump):
        d = {**p.to_dict(), "token_id": response.response_ids[p.token], "kept_lo": p.token,
             "kept_hi": p.token + 1, "char_lo": offsets[p.token], "char_hi": offsets[p.token + 1]}
        if first_error is not None:
            d["at_first_error"] = window_at_error(d, first_error["token"], cfg.stats.error_tolerance)
        out.append(d)
    return out


def pivotal_stats(records: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any] | None:
    """Over the problems scanned for P(correct): how many have a pivotal token, how many there are, and,
    for the wrong originals whose first wrong step is known (arith), how often the most harmful pivotal
    token (the largest drop of P(correct)) sits at it (Wilson interval at `level`)."""
    scanned = [r for r in records if "pivotal" in r]
    if not scanned:
        return None
    tops = [min(r["pivotal"], key=lambda p: (p["delta"], p["token"])) for r in scanned
            if r.get("correct") is False and r.get("first_error") is not None and r["pivotal"]]
    return {
        "n_problems": len(scanned),
        "n_with_pivotal": sum(bool(r["pivotal"]) for r in scanned),
        "n_pivotal": sum(len(r["pivotal"]) for r in scanned),
        **_rate("top_at_first_error_rate", [t["at_first_error"] for t in tops if t["delta"] < 0], level),
    }


def critical_stats(records: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any] | None:
    """Over the incorrect originals scanned for P(correct): how many got a critical token (Wilson
    interval at `level`) and, where the first wrong step is known (arith), the share of critical tokens at
    it."""
    searched = [r["critical"] for r in records if r.get("critical") is not None]
    if not searched:
        return None
    found = [c for c in searched if c["critical"] is not None]
    return {
        "n_incorrect": len(searched),
        "n_with_critical": len(found),
        "share_with_critical": len(found) / len(searched),
        "share_with_critical_ci": _wilson(len(found), len(searched), level),
        "eps": searched[0]["eps"],
        "level": searched[0]["level"],
        **_rate("at_first_error_rate", [c["at_first_error"] for c in found if "at_first_error" in c], level),
    }


def stump_answers(
    elic: ElicitFeature, labeler: Any, response: Any, kept: Sequence[int], offsets: Sequence[int],
    reference: Any, gold: Any,
) -> dict[str, Any]:
    """The stump answer at every cut (the official code records these): the answer elicited greedily from
    the response truncated to `kept` tokens, with no continuation — next to the resampled P(same answer).

    The prefix is the response's own text up to the end of its kept-th token (`offsets`, the tokens'
    character starts), so the stump sees exactly the tokens the scan kept. Returns the kept counts, the
    answers, whether each has the original's label (`reference`, given by the scan's `labeler`, so that
    equivalent answers compare equal; None: no answer) and whether it is correct against `gold` (None:
    ungraded).
    """
    text = response.response_text
    prefixes = [replace(response, response_ids=response.response_ids[:k], response_text=text[: offsets[k]])
                for k in kept]
    answers = elic.answers(prefixes)
    labels = labeler.label_many(answers)
    verdicts = elic.grader.grade_many([(a, gold) for a in answers])
    return {
        "kept": list(kept),
        "answer": answers,
        "same": [None if a is None else lab == reference for a, lab in zip(answers, labels, strict=True)],
        "correct": [_verdict(v) for v in verdicts],
    }


def stump_stats(records: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any] | None:
    """Over all cuts of `records` that have stump answers: how often the stump answer is the original's
    (`share_same`, Wilson interval at `level`; cuts without an answer count as not the same), the mean
    resampled P(same answer) at the same cuts (`mean_p_same`), and the stumps' accuracy (graded ones)."""
    same, correct, p_same = [], [], []
    for r in records:
        st = r.get("stump")
        if not st:
            continue
        p_at = dict(zip(r["curve"]["kept"], r["curve"]["p_same"], strict=True))
        same += [bool(v) for v in st["same"]]
        correct += [v for v in st["correct"] if v is not None]
        p_same += [p_at[k] for k in st["kept"] if p_at.get(k) is not None]
    if not same:
        return None
    return {
        "n_cuts": len(same),
        "share_same": sum(same) / len(same),
        "share_same_ci": _wilson(sum(same), len(same), level),
        "mean_p_same": float(np.mean(p_same)) if p_same else None,
        "n_graded": len(correct),
        "accuracy": sum(correct) / len(correct) if correct else None,
        "accuracy_ci": _wilson(sum(correct), len(correct), level) if correct else None,
    }


#: The two kinds of per-cut interval (stored as "ci_method" with every curve).
CI_METHODS = ("wilson", "confidence_sequence")


def cut_intervals(k: Any, n: Any, level: float, adaptive: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(lower, upper, method) of P(same answer) at each cut from k kept out of n valid draws at `level`:
    Wilson's interval when every cut got a number of draws fixed in advance; the anytime-valid confidence
    sequence (`critwin.stats.confidence_sequence`) when the strategy chose how often to draw by looking at
    earlier draws (`adaptive`), where a fixed-n interval would be too narrow. NaN where n == 0."""
    if adaptive:
        lo, hi = confidence_sequence(k, n, level)
        return lo, hi, "confidence_sequence"
    lo, hi = wilson_interval(k, n, level)
    return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float), "wilson"


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
            window_stats([r[key] for r in ok], correct, level=cfg.stats.ci_level)
            for key in ("has_window", "has_paper_window")
        )
        entry["paper_rule"] = {k: v for k, v in paper.items() if k not in ("ci_level", "ci_method")}
        entry["paper_rule"]["threshold"] = cfg.windows.paper_threshold
        entry["paper_rule"]["max_drop"] = cfg.windows.paper_max_drop
        entry["n_failed"] = sum(r.get("status") == "failed" for r in recs)
        entry["n_ungraded"] = sum(r.get("status") == "ok" and r.get("correct") is None for r in recs)
        entry["failures"] = sorted({r.get("error", "") for r in recs if r.get("status") == "failed"})[:10]
        if skipped and name in skipped:
            entry["rows"] = dict(skipped[name])
        if cfg.task == "arith":
            entry.update(first_error_stats(ok, cfg.stats.error_tolerance))
        for key, method_stats in (("anchors", anchor_stats), ("forks", fork_stats),
                                  ("pivotal_tokens", pivotal_stats), ("critical_tokens", critical_stats),
                                  ("stump", stump_stats), ("revise", revise_stats)):
            if (found := method_stats(ok, cfg.stats.ci_level)) is not None:
                entry[key] = found
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
# The experiment: one case per problem; records, resume and the report belong to the driver
# --------------------------------------------------------------------------------------------------------
def read_records(run_path: str | Path) -> list[dict[str, Any]]:
    """The latest record per case from problems.jsonl, in the cases' order (dataset, then problem), so that
    a run computed in any order or in shards reads back the same."""
    from critwin.rundir import read_jsonl

    latest: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(Path(run_path) / PROBLEMS):
        latest[row.get("case") or f"{row.get('dataset', '')}/{row.get('id', '')}"] = row
    return sorted(latest.values(), key=lambda r: tuple(r.get("order") or ()))


def original_row(dataset: str, problem: Problem, r: Any) -> dict[str, Any]:
    """The originals.jsonl row of one original response (or {"failure": reason})."""
    if isinstance(r, Failure):
        return {"dataset": dataset, "id": problem.id, "failure": r.reason}
    return {
        "dataset": dataset,
        "id": problem.id,
        "prompt_ids": list(r.prompt_ids),
        "response_ids": list(r.response_ids),
        "prompt_text": r.prompt_text,
        "response_text": r.response_text,
        "stop_reason": r.stop_reason,
    }


def dataset_names(datasets: Sequence[ProblemSet]) -> list[str]:
    """One name per dataset (its name or file stem; repeats get -2, -3 …)."""
    names, seen = [], {}
    for ps in datasets:
        base = ps.name or Path(ps.source).stem or "data"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


@dataclass
class ReasoningExperiment:
    """The reasoning experiment as data: one case per problem of `datasets`, settings `cfg`, run with a
    language-model sampler whose sampling settings match `cfg` (`sampler_settings`).

    A case draws the problem's original response and then its scan from the case's own generator (split
    in two), so every problem's numbers depend only on the run's seed and the problem's id.
    """

    datasets: Sequence[ProblemSet]
    cfg: ReasoningConfig
    model: str = "in-memory model"
    config_extra: Mapping[str, Any] = field(default_factory=dict)

    name = EXPERIMENT
    resume_keys = _RESUME_KEYS
    records_stream = PROBLEMS_STREAM
    journaled = True

    def __post_init__(self) -> None:
        if not self.datasets:
            raise CritwinError("--data: give at least one dataset")
        self.names = dataset_names(self.datasets)

    def config(self) -> dict[str, Any]:
        search = self.cfg.search
        how = (
            "Each original response is cut at the listed fractions kept; k endings are resampled from "
            "every cut and P(same answer as the original) is measured per cut, with 99% Wilson intervals."
            if search.strategy == "fixed"
            else f"Each original response is scanned by the {search.strategy} strategy (starting from the "
            "listed cuts); P(same answer as the original) is measured at every cut it drew at, with "
            + ("99% confidence sequences (valid when the draws depend on earlier ones)."
               if search.adaptive else "99% Wilson intervals.")
        )
        return {
            **self.cfg.to_dict(),
            "model": self.model,
            "data": [ps.source for ps in self.datasets],
            "datasets": self.names,
            "title": "critwin — critical windows in reasoning",
            "subtitle": f"{len(self.datasets)} dataset(s), task {self.cfg.task}, answers from the "
            f"{self.cfg.cuts.answer_from}",
            "description": f"{how} Windows: where that probability drops as fewer tokens are kept.",
            **dict(self.config_extra),
        }

    def sampler_settings(self) -> dict[str, Any]:
        """The sampling settings the sampler must be built with (`load_sampler(kind, path, **these)`)."""
        return asdict(self.cfg.sampling)

    def cases(self) -> list[Case]:
        return [
            Case(f"{name}/{p.id}", (d, i), (name, p), {"dataset": name, "id": p.id})
            for d, (name, ps) in enumerate(zip(self.names, self.datasets, strict=True))
            for i, p in enumerate(ps)
        ]

    def start_records(self) -> dict[str, list[dict[str, Any]]]:
        """Rows read and skipped per dataset (a record stream, so re-drawn reports can show them)."""
        skipped = {
            name: {"n_rows": ps.n_rows, "n_skipped": ps.n_skipped, "missing": ps.missing_counts}
            for name, ps in zip(self.names, self.datasets, strict=True)
        }
        return {DATASETS: [skipped]}

    def check(self, sampler: Any) -> None:
        if self.cfg.cuts.answer_from == "elicit" and not sampler.chat:
            raise CritwinError(
                "--answer-from elicit needs a tokenizer with a chat template (the elicitation is a "
                "second user turn); add a chat template or use --answer-from continuation"
            )
        if self.cfg.cuts.forks and not callable(getattr(sampler, "next_token_logits", None)):
            raise CritwinError(
                "--forks needs the model's next-token distribution, which the hf engine gives; use --engine "
                "hf"
            )
        if self.cfg.cuts.stump and not sampler.chat:
            raise CritwinError(
                "--stump needs a tokenizer with a chat template (the stump answer is elicited in a second "
                "user turn); add a chat template or drop --stump"
            )
        if self.cfg.cuts.counterfactual:
            from critwin.features.similarity import check_embedder

            check_embedder(self.cfg.cuts.embedder)

    def run_case(
        self, sampler: Any, case: Case, rng: np.random.Generator, journal: CaseJournal | None = None
    ) -> CaseResult:
        """The original response, then its scan (`scan_problem`); with a `journal` the scan's draws go
        there as they are made (an interrupted case resumes its search without redrawing) and the result
        carries none."""
        name, problem = case.data
        original_rng, scan_rng = rng.spawn(2)
        (response,) = sampler.generate_responses([problem.prompt()], seed=original_rng)
        originals = {ORIGINALS_STREAM: (original_row(name, problem, response),)}
        if isinstance(response, Failure):
            rec = {"dataset": name, "id": problem.id, "status": "failed",
                   "error": f"original response failed: {response.reason}"}
            return CaseResult(case.id, rec, streams=originals)
        res = scan_problem(
            sampler, problem, response, self.cfg, dataset=name, seed=scan_rng, can_elicit=bool(sampler.chat),
            journal=journal,
        )
        return replace(res, streams=originals)


def lm_factory(
    engine: str | Callable[..., Any], model: str | Path, experiment: ReasoningExperiment, **options: Any
) -> Callable[[], Any]:
    """A zero-argument builder of the language-model sampler of `model` with the sampling settings of
    `experiment` and engine `options` (device, dtype, cpu_threads …): built only when called, so a run can
    check its folder and settings first. `engine` is a registered kind ("hf", …: `load_sampler(engine,
    model, **options, **settings)`) or a loader called as engine(model, **options, **settings), e.g. the
    `load` of the CLI's `critwin.cli.engines.EngineChoice`."""

    def build() -> Any:
        if callable(engine):
            return engine(model, **options, **experiment.sampler_settings())
        from critwin.samplers.registry import load_sampler

        return load_sampler(engine, model, **options, **experiment.sampler_settings())

    return build


def config_from_run(run: RunDir) -> ReasoningConfig:
    """The ReasoningConfig stored in a run's config.json."""
    known = {"task", "seed"}.union(*(part.__dataclass_fields__ for part in _PARTS.values()))
    kwargs = {k: v for k, v in run.config.items() if k in known}
    if "fractions" in kwargs:
        kwargs["fractions"] = tuple(kwargs["fractions"])
    return ReasoningConfig.from_flat(**kwargs)


# --------------------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------------------
DEMO_K = 16


def demo_experiment(seed: int = 0) -> ReasoningExperiment:
    """The reasoning part of the demo: the bundled model's settings on the ~20 bundled running-sum problems
    (dense cuts 0.05 … 0.95, k = 16, answers from the continuation)."""
    cfg = ReasoningConfig.from_flat(
        task="arith", k=DEMO_K, fractions=DENSE_FRACTIONS, seed=seed, max_new_tokens=300
    )
    ps = load_reasoning_problems(BUNDLED_PROBLEMS, "arith")
    return ReasoningExperiment([ps], cfg, str(BUNDLED_MODEL.resolve()))


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
