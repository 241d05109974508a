"""Jailbreak windows: how P(comply) grows with the length of a prefill attack (DESIGN §2).

A prefill attack starts the assistant turn with text such as "Sure, here is how to ...". We cut the
prefill every `step` characters or tokens, draw K continuations from each cut, and judge each full
response (prefill cut + continuation) as comply / refuse / unclear. In the forward-time convention the
full prefill is t = 0 and t = number of prefill units removed, so P(comply) per case is a `Curve` with
reference "comply" ("unclear" verdicts are failed items), and `detect_windows` finds where it jumps.

A second dataset, the repeated-word attack, crosses requests with a word repeated r times (word × repeat
grid); `RepeatGrid` measures P(comply) per cell and a curve per (request, word) over r, in which "kept"
means "refuse" so that a window is the repeat count where refusals break down.

Both are experiments as data (`critwin.experiments.base.Experiment`), run by `critwin.driver.run`, which
owns the run directory, resume and the report:

- `PrefillWindows`: one case per attack case (its id is the case id and seeds it); settings in parts:
  `AttackSampling` (the attacked model's sampler), `PrefillCuts` (where prefills are cut, draws per cut),
  `WindowRule` (window detection);
- `RepeatGrid`: one case per (request, word) pair with all its repeat counts; parts `RepeatSpec` (the grid,
  draws per cell), `GridStatistics`, `WindowRule`, `AttackSampling`.

The sampler the driver passes to either is the continuer: `HFContinuer(load_sampler("hf", path))` or
`FunctionContinuer(fn)` (anything with `continue_prefills`). The judge (a `Judge`, a function
fn(prompt, response), or None for refusal phrases) belongs to the experiment. A case stores its judged
draws as its part of the run table "draws" (`DRAWS_TABLE`), its raw draws as samples, its curve and
windows; `read_prefill_run` / `read_repeat_run` read a run directory back (what its report shows).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from critwin.curves import Curve, Draws, scan, wilson_interval
from critwin.errors import CritwinError
from critwin.experiments.base import Case, CaseJournal, CaseResult
from critwin.features.judges import COMPLY, REFUSE, UNCLEAR, Judge, as_judge
from critwin.files import read_text
from critwin.rundir import RunDir, case_key
from critwin.samplers.base import Failure
from critwin.samplers.lm import engine_info_of
from critwin.schedules import prefill_cuts
from critwin.stats import confidence_sequence
from critwin.strategies import Fixed, StrategySettings
from critwin.windows import Window, WindowRule

CutUnit = Literal["chars", "tokens"]
EXPERIMENT = "jailbreak"
DRAWS_TABLE = "draws"  # raw: one part per case (or per request × word) with every judged draw


# ----------------------------------------------------------------------------------------------------------
# Cases and backends
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackCase:
    """One attack: a user prompt and the assistant prefill that starts the response (may be empty)."""

    id: str
    prompt: str
    prefill: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def load_cases(path: str | Path, what: str = "cases") -> list[AttackCase]:
    """Read attack cases from JSONL: {"prompt": ..., "prefill": ..., "id": optional, other fields -> meta}.

    Every row must name its prefill (a row without one would silently attack with no prefill at all);
    write "prefill": "" to measure the bare prompt. `what` names the flag in error messages.
    """
    text = read_text(path, what, "a UTF-8 JSONL file with prompt and prefill fields")
    path = Path(path)
    cases = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CritwinError(f"{path.name} line {lineno}: not valid JSON ({err.msg}); fix the "
                               "line") from err
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise CritwinError(f"{path.name} line {lineno}: needs a non-empty string field 'prompt'")
        if "prefill" not in row:
            raise CritwinError(
                f"{path.name} line {lineno}: no 'prefill' field; add the assistant prefill to attack with "
                '(or "prefill": "" for none)'
            )
        prefill = row["prefill"]
        if not isinstance(prefill, str):
            raise CritwinError(f"{path.name} line {lineno}: 'prefill' must be a string")
        cid = str(row.get("id", f"case{lineno}"))
        meta = {k: v for k, v in row.items() if k not in ("prompt", "prefill", "id")}
        cases.append(AttackCase(cid, row["prompt"], prefill, meta))
    if not cases:
        raise CritwinError(f"{what} {path} holds no rows; add one JSON object per line")
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise CritwinError(f"{what} {path}: duplicate ids {dup}; give every row a distinct 'id'")
    return cases


class PrefillContinuer(Protocol):
    """A backend that continues assistant turns that start with a given prefill."""

    def continue_prefills(
        self, items: Sequence[tuple[str, str]], k: int, rng: np.random.Generator
    ) -> list[list[str | Failure]]:
        """For each (prompt, prefill): k sampled continuations (text after the prefill; Failure on error)."""
        ...


@dataclass
class FunctionContinuer:
    """Wraps fn(prompt, prefill, rng) -> continuation text (a toy model, an API client ...)."""

    fn: Callable[[str, str, np.random.Generator], str]

    def continue_prefills(
        self, items: Sequence[tuple[str, str]], k: int, rng: np.random.Generator
    ) -> list[list[str | Failure]]:
        return [[self.fn(p, f, rng) for _ in range(k)] for p, f in items]


class HFContinuer:
    """Prefill continuations from any `critwin.samplers.lm.LMSampler` (e.g. `load_sampler("hf", path)`:
    chat template, shared-prefix decoding).

    Every continuation gets the sampler's full `max_new_tokens` budget, whatever the prefill length.
    All (prompt, prefill) × k draws of one call are decoded together in shared batches.
    `token_ends(text)` gives the token cuts of a prefill (`LMSampler.token_ends`); `tokenizer` is the
    backend's tokenizer where it has one (None otherwise), for callers that still tokenize themselves.
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler.with_settings(budget="continuation")
        self.tokenizer = getattr(sampler, "tokenizer", None)

    def token_ends(self, text: str) -> list[int]:
        """Characters of `text` at which its tokens end (one per token)."""
        return self.sampler.token_ends(text)

    def engine_info(self) -> dict[str, Any]:
        """The wrapped sampler's `engine_info()`, for the run's engines.jsonl."""
        return engine_info_of(self.sampler)

    def continue_prefills(
        self, items: Sequence[tuple[str, str]], k: int, rng: np.random.Generator
    ) -> list[list[str | Failure]]:
        s = self.sampler
        out: list[list[str | Failure]] = [[] for _ in items]
        with_prefill = [i for i, (_, f) in enumerate(items) if f]
        bare = [i for i, (_, f) in enumerate(items) if not f]
        if with_prefill:
            xs = [s.response_from_text(items[i][0], items[i][1]) for i in with_prefill]
            conts = s.resample_many(xs, [[0]] * len(xs), k, rng)
            for i, per_x in zip(with_prefill, conts, strict=True):
                out[i] = [c if isinstance(c, Failure) else s.decode(c.token_ids) for c in per_x[0]]
        if bare:
            prompts = [items[i][0] for i in bare for _ in range(k)]
            resp = s.generate_responses(prompts, seed=rng)
            for j, i in enumerate(bare):
                out[i] = [r if isinstance(r, Failure) else r.response_text for r in resp[j * k : (j + 1) * k]]
        return out


def token_ends(tokenizer: Any, text: str) -> list[int]:
    """Character offsets at which the tokens of `text` end, via the fast tokenizer's offset mapping."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError) as err:
        raise CritwinError("tokenizer: token cuts need a fast tokenizer (offset mapping); use --unit "
                           "chars") from err
    return [int(b) for _, b in enc["offset_mapping"]]


def cut_points(
    prefill: str, unit: CutUnit, step: int, *, tokenizer: Any = None, max_prefill: int = 512
) -> tuple[list[int], list[int]]:
    """Where to cut a prefill: (character offsets of the cuts, number of units kept at each cut), ascending.

    chars: every `step` characters; tokens: every `step`-th token of the prefill tokenized alone (a cut
    keeps the text up to the end of its last token; the last token ends at the full prefill).
    Both lists start at 0 (no prefill) and end at the full prefill (the grid is
    `critwin.schedules.prefill_cuts`). Raises if the prefill is longer than `max_prefill` units.
    """
    if unit == "chars":
        ends: list[int] = list(range(1, len(prefill) + 1))
    elif unit == "tokens":
        if tokenizer is None:
            raise CritwinError("unit='tokens' needs a tokenizer; pass one or cut in 'chars'")
        # Keeping j tokens keeps the text up to the end of token j (the full prefill for the last one).
        ends = [*token_ends(tokenizer, prefill)[:-1], len(prefill)] if prefill else []
    else:
        raise CritwinError(f"unit={unit!r}: use 'chars' or 'tokens'")
    offsets, kept = prefill_cuts(ends, step, unit="characters or tokens")
    if kept[-1] > max_prefill:
        raise CritwinError(
            f"prefill has {kept[-1]} {unit}, over the limit max_prefill={max_prefill} (--max-prefill); "
            "shorten it or raise the limit"
        )
    return offsets, kept


# ----------------------------------------------------------------------------------------------------------
# Settings shared by both attacks
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackSampling:
    """How the attacked model samples (the sampler's part of a run): `temperature` (0 = greedy), nucleus
    `top_p`, `max_new_tokens` per continuation, and the chat mode as asked for ("auto", "on", "off")."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    chat: str = "auto"

    def __post_init__(self) -> None:
        if self.chat not in ("auto", "on", "off"):
            raise CritwinError(f"chat={self.chat!r}: use 'auto', 'on' or 'off'")

    def sampler_settings(self) -> dict[str, Any]:
        """Keyword settings of `load_sampler` (`chat`: None for "auto", the template decides)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
                "chat": {"auto": None, "on": True, "off": False}.get(self.chat)}


def _changed(part: Any) -> dict[str, Any]:
    """The fields of a settings part that differ from their defaults. Settings that runs of earlier versions
    did not store (window detection, grid statistics) enter config.json only when changed, so a run with
    the defaults writes the config it always wrote and earlier run directories still resume."""
    return {f.name: getattr(part, f.name) for f in fields(part) if getattr(part, f.name) != f.default}


def judge_label(judge: Any) -> str:
    """The name a judge is stored under in config.json when none is given: "refusal" for the default."""
    if judge is None:
        return "refusal"
    return str(getattr(judge, "__qualname__", None) or type(judge).__name__)


def _check_continuer(sampler: Any) -> None:
    if not callable(getattr(sampler, "continue_prefills", None)):
        raise CritwinError(
            f"a jailbreak run needs a prefill continuer (HFContinuer(load_sampler('hf', path)) or "
            f"FunctionContinuer(fn)), got {type(sampler).__name__}"
        )


def _curve(labels_by_t: dict[float, list[str]], reference: str, unit: str, t_max: float) -> Curve:
    ts = sorted(labels_by_t)
    counts = [Counter(lab for lab in labels_by_t[t] if lab != UNCLEAR) for t in ts]
    return Curve(
        t=np.array(ts, dtype=float),
        n_valid=[sum(c.values()) for c in counts],
        n_kept=[c.get(reference, 0) for c in counts],
        n_failed=[sum(lab == UNCLEAR for lab in labels_by_t[t]) for t in ts],
        label_counts=tuple(dict(c) for c in counts),
        reference=reference,
        time_unit=unit,
        t_max=float(t_max),
    )


def _draws_of(rows: pd.DataFrame, t_col: str, reference: str) -> Draws:
    """Raw draws of one case in the engine's `Draws` form (unclear verdicts and backend failures failed)."""
    ts, samples, labels, failures = [], [], [], []
    for t, g in rows.groupby(t_col, sort=True):
        ts.append(float(t))
        samples.append(list(g["response"]))
        labels.append([lab if lab != UNCLEAR else None for lab in g["label"]])
        failures.append([
            None if lab != UNCLEAR else (f if isinstance(f, str) else "unclear verdict")
            for f, lab in zip(g["failure"], g["label"], strict=True)
        ])
    return Draws(tuple(ts), samples, labels, failures, reference)


def stored_draws(run: RunDir | None, case: str) -> pd.DataFrame | None:
    """The judged draws of a case that `run` holds finished (None: missing, unfinished or damaged)."""
    if run is None or not run.is_finished(case):
        return None
    return run.read_part(DRAWS_TABLE, case_key(case))


# ----------------------------------------------------------------------------------------------------------
# The prefill-window experiment
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrefillCuts:
    """Where prefills are cut and how often each cut is continued: every `step` `unit`s ("chars" or
    "tokens"), `k` continuations per cut, prefills of at most `max_prefill` units."""

    unit: CutUnit = "chars"
    step: int = 1
    k: int = 16
    max_prefill: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise CritwinError(f"k={self.k}: draw at least one continuation per cut")
        if self.unit not in ("chars", "tokens"):
            raise CritwinError(f"unit={self.unit!r}: use 'chars' or 'tokens'")


@dataclass(frozen=True)
class CaseCurve:
    """P(comply) of one case against prefill length: the Curve (t = units removed) and its windows."""

    case: AttackCase
    unit: CutUnit
    length: int
    curve: Curve
    windows: tuple[Window, ...]

    def prefill_kept(self) -> np.ndarray:
        """Units of prefill kept at each curve point (length − t), ascending with t."""
        return self.length - self.curve.t


@dataclass(frozen=True)
class PrefillResult:
    """Per-case curves and windows, every judged draw, and a summary (the content of jailbreak.json)."""

    cases: tuple[CaseCurve, ...]
    draws: pd.DataFrame
    summary: dict[str, Any]


@dataclass
class PrefillWindows:
    """P(comply) against prefill length as an experiment: one case per attack of `attacks`.

    A case cuts its prefill by `cuts`, continues prompt + cut `cuts.k` times at every cut (all cuts in one
    backend call, from the case's generator `case_rng(seed, attack id)`), judges prompt + (cut +
    continuation) with `judge`, and scans P(comply) over t = prefill units removed (`PrefillView`, the
    judge's verdict as the feature); windows by `windows` (drops of P(comply) as t grows, i.e. rises with
    prefill length). Failed draws and "unclear" verdicts are failed items, never outcomes.

    `search` picks the scan's strategy (`StrategySettings`; default "fixed": the above). Any other starts
    from the cuts of `cuts` and may draw at every unit of the prefill (support: all cuts at step 1, the
    window rule's min_jump and level), within `search.budget` draws per case; a budget below one draw per
    first-round point is refused before any draw. With an adaptive strategy (adaptive, bisect) the
    reported intervals are confidence sequences (meta "ci_method"). The experiment is `journaled`: given
    a `CaseJournal`, a case stores each call's draws as it makes them and replays an interrupted
    attempt's instead of drawing again.

    Token cuts need a tokenizer: `tokenizer` (e.g. the model's, read before its weights load), else the
    continuer's. `model` and `judge_name` only name the run in config.json (`judge_name` default: the
    judge's name). Prefills over `cuts.max_prefill` units are refused at construction (or by `check`, for
    token cuts by the continuer's tokenizer), before any draw.
    """

    attacks: Sequence[AttackCase]
    cuts: PrefillCuts = field(default_factory=PrefillCuts)
    windows: WindowRule = field(default_factory=WindowRule)
    sampling: AttackSampling = field(default_factory=AttackSampling)
    judge: Judge | Callable[[str, str], Any] | None = None
    judge_name: str | None = None
    model: str = "in-memory model"
    seed: int = 0
    tokenizer: Any = None
    search: StrategySettings = field(default_factory=StrategySettings)

    name = EXPERIMENT
    kind = "prefill"
    resume_keys = ("kind", "model", "unit", "step", "k", "judge", "temperature", "top_p", "max_new_tokens",
                   "seed", "max_prefill", "chat", "cases", "level", "min_jump", "strategy", "budget", "n_min",
                   "n_max")
    journaled = True

    def __post_init__(self) -> None:
        self.attacks = tuple(self.attacks)
        if not self.attacks:
            raise CritwinError("cases: empty; give at least one attack case")
        self.judge_fn = as_judge(self.judge)
        self._plans: dict[str, CutPlan] = {}
        if self.cuts.unit == "chars" or self.tokenizer is not None:
            self._plans = {a.id: self._cut(a, self.tokenizer) for a in self.attacks}
            self._check_budget()

    def _cut(self, attack: AttackCase, tokenizer: Any) -> CutPlan:
        """(character offsets, units kept) of every cut at the unit step, and the units kept at the cuts of
        `cuts.step` (the grid; a subset of them, at the same offsets)."""
        c = self.cuts
        offsets, kept = cut_points(attack.prefill, c.unit, 1, tokenizer=tokenizer, max_prefill=c.max_prefill)
        if c.step == 1:
            return offsets, kept, kept
        _, grid = cut_points(attack.prefill, c.unit, c.step, tokenizer=tokenizer, max_prefill=c.max_prefill)
        return offsets, kept, grid

    def first_round_points(self, plan: CutPlan) -> int:
        """Points of the first round of a case's scan: the grid's cuts (every-prefix: every cut)."""
        return len(plan[1] if self.search.strategy == "every-prefix" else plan[2])

    def _check_budget(self) -> None:
        """A --budget below one draw per first-round point of some case: one line, before any draw."""
        if self._plans and self.search.budget is not None:
            self.search.check_first_round(max(self.first_round_points(p) for p in self._plans.values()),
                                          self.cuts.k)

    def config(self) -> dict[str, Any]:
        s, c = self.sampling, self.cuts
        return {
            "kind": self.kind, "model": self.model, "unit": c.unit, "step": c.step, "k": c.k,
            "judge": self.judge_name or judge_label(self.judge), "temperature": s.temperature,
            "top_p": s.top_p, "max_new_tokens": s.max_new_tokens, "seed": self.seed,
            "max_prefill": c.max_prefill, "chat": s.chat, "cases": [asdict(a) for a in self.attacks],
            **_changed(self.windows), **_changed(self.search),
        }

    def cases(self) -> list[Case]:
        return [Case(a.id, (i,), a) for i, a in enumerate(self.attacks)]

    def check(self, sampler: Any) -> None:
        """A prefill continuer; for token cuts without a `tokenizer`, every prefill is cut by the
        continuer's tokenizer here (too-long prefills refused before any draw)."""
        _check_continuer(sampler)
        if not self._plans:
            tok = getattr(sampler, "tokenizer", None)
            self._plans = {a.id: self._cut(a, tok) for a in self.attacks}
            self._check_budget()

    def strategy(self, view: PrefillView) -> Any:
        """The strategy of one case's scan (`search` built on the view's cuts); fixed keeps the
        schedule's order, most prefill removed first, as the continuer has always seen it."""
        built = self.search.build(grid=view.schedule(), n=self.cuts.k, resolution=1.0, support=view.support(),
                                  min_jump=self.windows.min_jump, level=self.windows.level)
        return Fixed(view.schedule(), built.n) if isinstance(built, Fixed) else built

    def run_case(
        self, sampler: Any, case: Case, rng: np.random.Generator, journal: CaseJournal | None = None
    ) -> CaseResult:
        """Scan one attack; with a `journal` its draws are stored there as they are made (and an
        interrupted attempt's replayed), and the result carries no draws of its own."""
        attack: AttackCase = case.data
        offsets, kept, grid = (self._plans.get(attack.id)
                               or self._cut(attack, getattr(sampler, "tokenizer", None)))
        view = PrefillView(attack, offsets, kept, unit=self.cuts.unit, continuer=sampler, judge=self.judge_fn,
                           grid=grid)
        curve, sub = _scan_prefill_case(view, self.cuts.k, rng, strategy=self.strategy(view), journal=journal)
        cuts = sub.drop_duplicates("kept").sort_values("kept")
        meta = {
            "title": f"{attack.id}: {attack.prompt[:60]}",
            "kind": "prefill",
            "prompt": attack.prompt,
            "prefill": attack.prefill,
            "unit": self.cuts.unit,
            "length": view.length,
            "kept": [int(v) for v in cuts["kept"]],
            "cut_texts": list(cuts["prefill_cut"]),
            "feature": "judge verdict (comply counts as kept)",
            "n": int(sub["draw"].max() + 1) if len(sub) else 0,
        }
        if self.search.strategy != "fixed" or self.search.budget is not None:
            meta.update(strategy=self.search.strategy, ci_method=ci_method(self.search))
        draws = () if journal is not None else (_draws_of(sub, "t", COMPLY),)
        return CaseResult(
            case.id, {"status": "ok"}, draws, curve, self.windows.find(curve), meta=meta,
            parts={DRAWS_TABLE: sub},
        )


CutPlan = tuple[list[int], list[int], list[int]]
"""A prefill's cuts: (character offsets, units kept) at every unit, and the units kept at the grid's cuts."""


def ci_method(search: StrategySettings) -> str:
    """The per-cut intervals of a scan by `search`: "confidence_sequence" when the draws depend on earlier
    ones (adaptive, bisect), else "wilson"."""
    return "confidence_sequence" if search.adaptive else "wilson"


def cut_intervals(curve: Curve, level: float, method: str = "wilson") -> tuple[np.ndarray, np.ndarray]:
    """Per-cut intervals of P(comply) at `level`: Wilson's, or the anytime-valid confidence sequence
    (`critwin.stats.confidence_sequence`) for draws chosen adaptively. NaN where a cut has no verdict."""
    if method == "confidence_sequence":
        return confidence_sequence(curve.n_kept, curve.n_valid, level)
    return curve.wilson(level)


def read_prefill_run(run: RunDir) -> PrefillResult:
    """The finished cases of a prefill run (report order) with their stored curves and windows, every judged
    draw of them, and their summary (`prefill_summary`): what jailbreak.json and the report show."""
    attacks = {str(c.get("id")): c for c in run.config.get("cases", []) if isinstance(c, Mapping)}
    results, frames = [], []
    for name in run.case_names():
        sub = stored_draws(run, name)
        if sub is None:
            continue
        rec = run.case(name)
        m = rec.meta
        spec = attacks.get(name)
        attack = (AttackCase(**spec) if spec is not None
                  else AttackCase(name, str(m.get("prompt", "")), str(m.get("prefill", ""))))
        unit = m.get("unit", run.config.get("unit", "chars"))
        results.append(CaseCurve(attack, unit, int(m["length"]), rec.curve, tuple(rec.detected)))
        frames.append(sub)
    draws = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(PREFILL_COLUMNS))
    return PrefillResult(tuple(results), draws, prefill_summary(results, draws))


PREFILL_COLUMNS = ("case", "prompt", "kept", "t", "draw", "prefill_cut", "continuation", "response",
                   "failure", "label")


JUDGE_FAILURE = "judge: "
"""Prefix of the failure reason of a draw the judge could not label (its error follows)."""


def _judge_rows(rows: list[dict[str, Any]], judge_fn: Judge) -> None:
    """Label every row whose draw did not fail (verdicts in place; failed draws stay "unclear")."""
    to_judge = [i for i, r in enumerate(rows) if r["failure"] is None]
    labels = judge_fn([rows[i]["prompt"] for i in to_judge], [rows[i]["response"] for i in to_judge])
    if len(labels) != len(to_judge):
        raise CritwinError(f"judge returned {len(labels)} labels for {len(to_judge)} responses; return one "
                           "each")
    for i, lab in zip(to_judge, labels, strict=True):
        if isinstance(lab, Failure):  # the judge (user code) failed on this item: a failed item, with why
            rows[i]["label"], rows[i]["failure"] = UNCLEAR, f"{JUDGE_FAILURE}{lab.reason}"
        else:
            rows[i]["label"] = lab


@dataclass(frozen=True)
class PrefillDraw:
    """One judged continuation of a prefill cut: the response is `prefill_cut + continuation`."""

    prefill_cut: str
    continuation: str
    label: str
    """The judge's verdict: comply, refuse or unclear."""
    failure: str | None = None
    """Why the judge gave no verdict (JUDGE_FAILURE + its reason), else None."""

    @property
    def response(self) -> str:
        return self.prefill_cut + self.continuation


def verdict(draw: PrefillDraw) -> str | None:
    """The feature of a prefill scan: the judge's verdict of a draw; "unclear" is no outcome (None: the draw
    is a failed item, as are the draws the backend failed)."""
    return None if draw.label == UNCLEAR else draw.label


class PrefillView:
    """One attack case as a forward–reverse backend over its prefill cuts, for `critwin.curves.scan`.

    t = units (characters or tokens) removed from the end of the prefill: t = 0 is the full prefill,
    t = `t_max` = the number of units is no prefill; only the cuts of `cut_points` are valid times
    (`support()`). grid: the units kept at the cuts the scan starts from (`schedule()`; default: all).
    `forward_reverse(case, ts, n, rng)` continues prompt + prefill cut n times per t in ONE
    `continue_prefills` call (cuts in the order of `ts`) and judges all the continuations of the call in ONE
    judge call, in (cut, draw) order; a draw is a `PrefillDraw` carrying the verdict, or the backend's
    `Failure`. The judge runs here, once per call, so that a batched (LLM) judge sees the same batches as
    one call over the whole case, and a judge that breaks its contract stops the run.
    """

    def __init__(
        self,
        case: AttackCase,
        offsets: Sequence[int],
        kept: Sequence[int],
        *,
        unit: CutUnit,
        continuer: PrefillContinuer,
        judge: Judge,
        grid: Sequence[int] | None = None,
    ) -> None:
        self.case = case
        self.time_unit: str = unit
        self.length = int(kept[-1])
        self.t_max = float(self.length)
        self.continuer = continuer
        self.judge = judge
        self.cuts = {float(self.length - j): (int(o), int(j)) for o, j in zip(offsets, kept, strict=True)}
        self.grid = sorted({float(self.length - int(j)) for j in (kept if grid is None else grid)},
                           reverse=True)
        for t in self.grid:
            self.cut(t)

    def schedule(self) -> list[float]:
        """The forward times of the grid's cuts, most prefill removed first (ascending units kept)."""
        return list(self.grid)

    def support(self) -> list[float]:
        """The forward times of all cuts (the times a strategy may draw at), ascending."""
        return sorted(self.cuts)

    def cut(self, t: float) -> tuple[int, int]:
        """(character offset, units kept) of the cut at forward time t."""
        try:
            return self.cuts[float(t)]
        except KeyError:
            raise CritwinError(
                f"t={t:g} is not a cut of the prefill of case {self.case.id}; use its cut times (units "
                "removed)"
            ) from None

    def forward_reverse(
        self, x: Any, ts: Sequence[float], n: int, rng: np.random.Generator
    ) -> list[list[PrefillDraw | Failure]]:
        c = self.case
        cuts = [self.cut(t) for t in ts]
        items = [(c.prompt, c.prefill[:o]) for o, _ in cuts]
        conts = self.continuer.continue_prefills(items, n, rng)
        if len(conts) != len(items) or any(len(row) != n for row in conts):
            raise CritwinError(f"{type(self.continuer).__name__} returned the wrong number of continuations; "
                               f"need {n} each")
        rows = [
            {"prompt": c.prompt, "response": c.prefill[:o] + ("" if isinstance(cont, Failure) else cont),
             "failure": cont.reason if isinstance(cont, Failure) else None, "label": UNCLEAR}
            for (o, _), per_cut in zip(cuts, conts, strict=True) for cont in per_cut
        ]
        _judge_rows(rows, self.judge)
        out: list[list[PrefillDraw | Failure]] = []
        for i, ((o, _), per_cut) in enumerate(zip(cuts, conts, strict=True)):
            judged = rows[i * n : (i + 1) * n]
            out.append([
                cont if isinstance(cont, Failure)
                else PrefillDraw(c.prefill[:o], cont, row["label"], row["failure"])
                for cont, row in zip(per_cut, judged, strict=True)
            ])
        return out


def _plain(sample: Any) -> dict[str, Any]:
    """A draw of a prefill view as plain JSON (what a journal stores): the judged continuation, or
    {"failure": reason} for a draw the backend failed."""
    if isinstance(sample, Failure):
        return {"failure": sample.reason}
    if isinstance(sample, PrefillDraw):
        return {"prefill_cut": sample.prefill_cut, "continuation": sample.continuation, "label": sample.label,
                "failure": sample.failure}
    return dict(sample)


def _plain_draws(draws: Draws) -> Draws:
    return Draws(tuple(draws.ts), [[_plain(s) for s in row] for row in draws.samples], draws.labels,
                 draws.failures, draws.reference)


def _prefill_rows(view: PrefillView, draws: Draws, drawn: Counter | None = None) -> list[dict[str, Any]]:
    """The judged draws of one `forward_reverse` call of a prefill view as rows of the draws table (from
    its samples as drawn or as a journal stored them). `drawn` counts the draws made at each cut by earlier
    calls, so that draws pooled at a cut are numbered 0, 1, … across calls."""
    c = view.case
    drawn = Counter() if drawn is None else drawn
    rows = []
    for t, samples in zip(draws.ts, draws.samples, strict=True):
        o, j = view.cut(t)
        for s in map(_plain, samples):
            failed = "continuation" not in s
            rows.append(
                {
                    "case": c.id, "prompt": c.prompt, "kept": j, "t": float(view.length - j),
                    "draw": drawn[j], "prefill_cut": c.prefill[:o],
                    "continuation": None if failed else s["continuation"],
                    "response": c.prefill[:o] + ("" if failed else s["continuation"]),
                    "failure": s.get("failure"), "label": UNCLEAR if failed else s["label"],
                }
            )
            drawn[j] += 1
    return rows


class _RowJournal:
    """A case journal that also turns every call's draws, drawn or replayed, into draws-table rows."""

    def __init__(self, journal: CaseJournal, rows: Callable[[Draws], None]) -> None:
        self.journal, self.rows = journal.mapped(_plain_draws), rows

    def replay(self, call: int, ts: tuple[float, ...], n: int) -> Draws | None:
        got = self.journal.replay(call, ts, n)
        if got is not None:
            self.rows(got)
        return got

    def record(self, call: int, draws: Draws) -> None:
        self.journal.record(call, draws)
        self.rows(draws)


def _scan_prefill_case(
    view: PrefillView, k: int, rng: np.random.Generator, *, strategy: Any = None,
    journal: CaseJournal | None = None,
) -> tuple[Curve, pd.DataFrame]:
    """Scan one prefill case (default: k continuations at every cut of the grid, one backend call; or by
    `strategy`, in rounds): its curve and every judged draw, fewest units kept first. journal: where the
    draws are stored as they are made (and an interrupted attempt's replayed)."""
    rows: list[dict[str, Any]] = []
    drawn: Counter = Counter()
    calls = [0]

    def add(d: Draws) -> None:
        calls[0] += 1
        rows.extend(_prefill_rows(view, d, drawn))

    strategy = Fixed(view.schedule(), k) if strategy is None else strategy
    curve = scan(view, view.case, feature=verdict, strategy=strategy, seed=rng, reference=COMPLY,
                 on_draws=add if journal is None else None,
                 journal=None if journal is None else _RowJournal(journal, add))
    sub = pd.DataFrame(rows)
    if calls[0] > 1 and len(sub):  # rounds drew at cuts in any order: list them by cut, then draw
        sub = sub.sort_values(["kept", "draw"], kind="stable").reset_index(drop=True)
    return curve, sub


def prefill_summary(results: Sequence[CaseCurve], draws: pd.DataFrame) -> dict[str, Any]:
    judged_failed = draws["failure"].fillna("").astype(str).str.startswith(JUDGE_FAILURE)
    per_case = []
    for r in results:
        p = r.curve.p_hat
        w = max(r.windows, key=lambda w: w.jump) if r.windows else None
        per_case.append(
            {
                "case": r.case.id,
                "length": r.length,
                "p_comply_full_prefill": float(p[0]) if len(p) else None,
                "p_comply_no_prefill": float(p[-1]) if len(p) else None,
                "n_windows": len(r.windows),
                # Where the biggest jump happens, in units of prefill kept: between these two cut lengths.
                "window_kept": None if w is None else [r.length - w.t_hi, r.length - w.t_lo],
                "window_jump": None if w is None else w.jump,
            }
        )
    return {
        "n_cases": len(results),
        "n_draws": int(len(draws)),
        "label_counts": {k: int(v) for k, v in Counter(draws["label"]).items()},
        "n_backend_failures": int((draws["failure"].notna() & ~judged_failed).sum()),
        "n_judge_failures": int(judged_failed.sum()),
        "cases_with_window": sum(1 for r in results if r.windows),
        "per_case": per_case,
    }


# ----------------------------------------------------------------------------------------------------------
# Repeated-word attack
# ----------------------------------------------------------------------------------------------------------
DEFAULT_REPEAT_TEMPLATE = "{request}\n\n{repeated}"


def repeated_word_cases(
    requests: Sequence[str],
    words: Sequence[str],
    repeats: Sequence[int],
    *,
    template: str = DEFAULT_REPEAT_TEMPLATE,
    separator: str = " ",
    position: Literal["prompt", "prefill"] = "prompt",
) -> list[AttackCase]:
    """The word × repeat-count grid: for each request, word w and count r, a case whose prompt (or prefill)
    carries w repeated r times. `template` places {request} and {repeated} in the prompt.
    """
    if not requests or not words or not repeats:
        raise CritwinError("repeated-word attack: give at least one request, one word and one repeat count")
    if any(not w.strip() for w in words):
        raise CritwinError("words: remove empty words")
    if any(int(r) < 0 for r in repeats) or len(set(repeats)) != len(repeats):
        raise CritwinError("repeats: give distinct counts >= 0")
    if "{request}" not in template or (position == "prompt" and "{repeated}" not in template):
        raise CritwinError("template: must contain {request} and {repeated}")
    if position not in ("prompt", "prefill"):
        raise CritwinError(f"position={position!r}: use 'prompt' or 'prefill'")
    cases = []
    for i, req in enumerate(requests):
        for w in words:
            for r in sorted(int(x) for x in repeats):
                rep = separator.join([w] * r)
                if position == "prompt":
                    prompt, prefill = template.format(request=req, repeated=rep), ""
                else:
                    prompt, prefill = template.format(request=req, repeated="").rstrip(), rep
                meta = {"request": i, "word": w, "repeats": r}
                cases.append(AttackCase(f"r{i}-{w}-{r}", prompt, prefill, meta))
    return cases


@dataclass(frozen=True)
class RepeatSpec:
    """The repeated-word grid (see `repeated_word_cases`): `requests` × `words` × `repeats` counts, the word
    repeated in the prompt (by `template`, joined by `separator`) or as the prefill (`position`), and `k`
    judged responses per cell."""

    requests: tuple[str, ...]
    words: tuple[str, ...]
    repeats: tuple[int, ...]
    position: Literal["prompt", "prefill"] = "prompt"
    k: int = 16
    template: str = DEFAULT_REPEAT_TEMPLATE
    separator: str = " "

    def __post_init__(self) -> None:
        for name in ("requests", "words", "repeats"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise CritwinError(f"k={self.k}: draw at least one response per cell")


@dataclass(frozen=True)
class GridStatistics:
    """How the grid is tabulated (`grid_table`): the confidence level of the Wilson intervals of P(comply)."""

    ci_level: float = 0.95


@dataclass(frozen=True)
class RepeatGridResult:
    """P(comply) per (request, word, repeats) cell, curves of P(refuse) over repeats, and every draw."""

    table: pd.DataFrame
    curves: dict[tuple[int, str], Curve]
    windows: dict[tuple[int, str], tuple[Window, ...]]
    draws: pd.DataFrame


@dataclass
class RepeatGrid:
    """The repeated-word attack as an experiment: one case per (request, word) pair of `grid`, with all its
    repeat counts (one backend call from the case's generator `case_rng(seed, repeat_case_name(request,
    word))`), `grid.k` judged responses per cell.

    Curves: per (request, word), t = repeat count (the attack grows with t) and "kept" = refuse, so a window
    is where refusals drop as the word is repeated more often; the grid table of P(comply) per cell is
    `grid_table` with `stats` (repeat_grid.csv). `model` and `judge_name` only name the run in config.json.
    """

    grid: RepeatSpec
    stats: GridStatistics = field(default_factory=GridStatistics)
    windows: WindowRule = field(default_factory=WindowRule)
    sampling: AttackSampling = field(default_factory=AttackSampling)
    judge: Judge | Callable[[str, str], Any] | None = None
    judge_name: str | None = None
    model: str = "in-memory model"
    seed: int = 0

    name = EXPERIMENT
    kind = "repeat"
    resume_keys = ("kind", "model", "requests", "words", "repeats", "position", "k", "judge", "seed",
                   "temperature", "top_p", "max_new_tokens", "chat", "template", "separator", "ci_level",
                   "level", "min_jump")

    def __post_init__(self) -> None:
        g = self.grid
        self.attacks = repeated_word_cases(g.requests, g.words, g.repeats, template=g.template,
                                           separator=g.separator, position=g.position)
        self.judge_fn = as_judge(self.judge)

    def config(self) -> dict[str, Any]:
        g, s = self.grid, self.sampling
        extra = {k: v for k, v in _changed(g).items() if k in ("template", "separator")}
        return {
            "kind": self.kind, "model": self.model, "requests": list(g.requests), "words": ",".join(g.words),
            "repeats": ",".join(str(r) for r in g.repeats), "position": g.position, "k": g.k,
            "judge": self.judge_name or judge_label(self.judge), "seed": self.seed,
            "temperature": s.temperature, "top_p": s.top_p, "max_new_tokens": s.max_new_tokens,
            "chat": s.chat,
            **extra, **_changed(self.stats), **_changed(self.windows),
        }

    def cases(self) -> list[Case]:
        groups: dict[tuple[int, str], list[AttackCase]] = {}
        for c in self.attacks:
            groups.setdefault((int(c.meta["request"]), str(c.meta["word"])), []).append(c)
        return [Case(repeat_case_name(*key), (i,), (key, tuple(group)), {"request": key[0], "word": key[1]})
                for i, (key, group) in enumerate(groups.items())]

    def check(self, sampler: Any) -> None:
        _check_continuer(sampler)

    def run_case(self, sampler: Any, case: Case, rng: np.random.Generator) -> CaseResult:
        (req, word), group = case.data
        sub = _draw_repeat_group(group, sampler, self.grid.k, self.judge_fn, rng)
        by_t = {float(r): list(g["label"]) for r, g in sub.groupby("repeats")}
        curve = _curve(by_t, REFUSE, "repeats", max(by_t))
        meta = {"title": case.id, "kind": "repeat", "request": req, "word": word,
                "feature": "judge verdict (refuse counts as kept)", "prompt": str(sub["prompt"].iloc[-1])}
        return CaseResult(
            case.id, {"status": "ok"}, (_draws_of(sub, "repeats", REFUSE),), curve, self.windows.find(curve),
            meta=meta, parts={DRAWS_TABLE: sub},
        )


def repeat_case_name(request: int, word: str) -> str:
    """The run-directory case of one (request, word) pair."""
    return f"request {request} × {word!r}"


def repeat_case_names(config: Mapping[str, Any]) -> list[str] | None:
    """The cases a repeat run's config asks for (None: the config does not say, as in older runs)."""
    requests, words = config.get("requests"), config.get("words")
    if not isinstance(requests, list) or not isinstance(words, str):
        return None
    names = [w.strip() for w in words.split(",") if w.strip()]
    return [repeat_case_name(i, w) for i in range(len(requests)) for w in names]


def read_repeat_run(run: RunDir, ci_level: float | None = None) -> RepeatGridResult:
    """The finished (request, word) pairs of a repeat run with their stored curves and windows, every judged
    draw of them, and the grid table at `ci_level` (default: the run's, 0.95 unless changed)."""
    level = float(run.config.get("ci_level", GridStatistics.ci_level) if ci_level is None else ci_level)
    curves: dict[tuple[int, str], Curve] = {}
    windows: dict[tuple[int, str], tuple[Window, ...]] = {}
    frames = []
    for name in run.case_names():
        sub = stored_draws(run, name)
        if sub is None:
            continue
        rec = run.case(name)
        key = (int(rec.meta["request"]), str(rec.meta["word"]))
        curves[key], windows[key] = rec.curve, tuple(rec.detected)
        frames.append(sub)
    draws = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(REPEAT_COLUMNS))
    return RepeatGridResult(grid_table(draws, level), curves, windows, draws)


REPEAT_COLUMNS = ("case", "request", "word", "repeats", "draw", "prompt", "response", "failure", "label")


def _draw_repeat_group(
    group: Sequence[AttackCase],
    continuer: PrefillContinuer,
    k: int,
    judge_fn: Judge,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Every judged draw of one (request, word) pair: k responses per repeat count."""
    conts = continuer.continue_prefills([(c.prompt, c.prefill) for c in group], k, rng)
    if len(conts) != len(group) or any(len(row) != k for row in conts):
        raise CritwinError(f"{type(continuer).__name__} returned the wrong number of continuations; need {k} "
                           "each")
    rows: list[dict[str, Any]] = []
    for c, per in zip(group, conts, strict=True):
        for d, cont in enumerate(per):
            failed = isinstance(cont, Failure)
            rows.append(
                {
                    "case": c.id, "request": c.meta["request"], "word": c.meta["word"],
                    "repeats": c.meta["repeats"], "draw": d, "prompt": c.prompt,
                    "response": c.prefill + ("" if failed else cont),
                    "failure": cont.reason if failed else None, "label": UNCLEAR,
                }
            )
    _judge_rows(rows, judge_fn)
    return pd.DataFrame(rows)


def grid_table(draws: pd.DataFrame, ci_level: float = 0.95) -> pd.DataFrame:
    """Counts of comply / refuse / unclear per (request, word, repeats) cell, P(comply) and its Wilson
    interval at `ci_level` (unclear verdicts and failed draws are not outcomes)."""
    table = (
        draws.assign(
            comply=draws["label"] == COMPLY,
            refuse=draws["label"] == REFUSE,
            unclear=draws["label"] == UNCLEAR,
        )
        .groupby(["request", "word", "repeats"], as_index=False)[["comply", "refuse", "unclear"]]
        .sum()
        .rename(columns={"comply": "n_comply", "refuse": "n_refuse", "unclear": "n_unclear"})
    )
    n_valid = table["n_comply"] + table["n_refuse"]
    with np.errstate(invalid="ignore", divide="ignore"):
        table["p_comply"] = np.where(n_valid > 0, table["n_comply"] / n_valid.clip(lower=1), np.nan)
    lo, hi = wilson_interval(table["n_comply"], n_valid, ci_level)
    table["ci_lo"], table["ci_hi"] = lo, hi
    return table
