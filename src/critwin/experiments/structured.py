"""Structured-output hierarchies: staircase windows read off N samples of a template with k blanks.

The experiment (DESIGN §2): a model fills a template with k blanks (a few options each); N outputs are
drawn ONCE. For each distinct output s (identified by its tuple of choices, or by its exact text), the
curve P(output = s | prefix of s) is estimated at every token and character position from the N samples
themselves, without re-generation: among the samples that start with the first j tokens of s, the fraction
whose output equals s. In the forward-time convention t = L − j (tokens removed from the end of s), so the
curve is a `Curve`, and `critwin.windows.step_windows` finds its one-token jumps.

Theory overlay (DESIGN §1, autoregressive truncation): if the text before the token that decides blank m
has the same law whatever is chosen later, the curve is flat except for one-token windows at the deciding
token of each chosen word — its first token, or the first token that tells it from the other options when
options share a beginning — and the plateau after m choices are visible equals
p(s | choices 1..m) = Π_{i>m} p(c_i | c_1..c_{i−1}). `analyze` checks the measured plateaus against that
product of conditional choice frequencies on samples the prediction did not use (a seeded half-split: the
choice law from one half, the plateaus from the other; or a second sample; or exact probabilities for
exact testbeds), so the check can fail: with the same samples on both sides the residuals would be 0 by
construction whenever the prefix counts equal the choice counts.

As an experiment (`StructuredExperiment`, run by `critwin.driver.run`): one case per batch of outputs, batch
b drawn from `case_rng(seed, b)` and stored as its part of outputs.parquet; `critwin.report.structured.
write_report` analyses all batches from the run directory alone, once every one is stored.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from critwin import params
from critwin.curves import Curve
from critwin.errors import CritwinError
from critwin.experiments.base import Case, CaseResult
from critwin.features.choices import ChoiceTemplate, normalize, parse_choices
from critwin.rundir import RunDir, TheoryInterval, atomic_write, case_key, write_json
from critwin.samplers.base import Failure
from critwin.seeds import case_rng
from critwin.serialize import jsonable
from critwin.stats import holm_reject, newcombe_interval, wilson_interval
from critwin.windows import Window, step_windows

Unit = Literal["tokens", "chars"]
Equality = Literal["choices", "exact"]
Check = Literal["held_out", "other_sample", "exact"]
Decode = Callable[[Sequence[int]], str]


# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StructuredOutput:
    """One sampled output: its text, its tokens, where each token starts in the text, and its parse.

    tokens: token ids of the response (the characters themselves when the output is plain text);
    token_starts[i]: character offset in `text` where token i starts (None when no decoder was given);
    choices/spans: the parsed choices and their character spans (None unless status == "ok");
    status: "ok", "empty", "no_match", "ambiguous" (template filled wrongly) or "failed" (backend Failure).
    """

    text: str
    tokens: tuple[Hashable, ...]
    token_starts: tuple[int, ...] | None
    choices: tuple[str, ...] | None
    spans: tuple[tuple[int, int], ...] | None
    status: str
    reason: str = ""


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def token_starts(ids: Sequence[int], decode: Decode, text: str | None = None) -> tuple[str, tuple[int, ...]]:
    """Decode `ids` and find where each token starts in the text (by decoding growing prefixes).

    A prefix that decodes to a non-prefix of the text (a multi-byte character split between tokens) is
    matched by its longest common prefix, so a start is never past the character the token completes.
    """
    full = decode(list(ids)) if text is None else text
    starts = []
    for j in range(len(ids)):
        starts.append(_common_prefix(decode(list(ids[:j])), full) if j else 0)
    # Starts must be non-decreasing even when a partial decode overshoots a later one.
    starts = list(np.minimum.accumulate(np.array(starts[::-1] or [0]))[::-1]) if starts else []
    return full, tuple(int(s) for s in starts)


def make_output(
    sample: Any,
    template: ChoiceTemplate,
    *,
    decode: Decode | None = None,
    mode: Literal["full", "search"] = "full",
) -> StructuredOutput:
    """Turn one sample into a `StructuredOutput`.

    Accepted samples: a `Failure` (status "failed"); a str (tokens = characters); a sequence of token ids
    (needs `decode`); a response object with `response_ids` (and `response_text`, or `decode`).
    """
    if isinstance(sample, Failure):
        return StructuredOutput("", (), (), None, None, "failed", sample.reason or "backend failure")
    if isinstance(sample, str):
        text, toks, starts = sample, tuple(sample), tuple(range(len(sample)))
    else:
        ids = getattr(sample, "response_ids", sample)
        try:
            ids = tuple(int(i) for i in ids)
        except (TypeError, ValueError) as err:
            raise CritwinError(
                f"sample: a {type(sample).__name__} is neither text, token ids nor a response with "
                ".response_ids"
            ) from err
        given = getattr(sample, "response_text", None)
        if decode is None:
            if not isinstance(given, str):
                raise CritwinError("decode: token-id samples need a decoder; pass decode=tokenizer.decode")
            text, starts_opt = given, None
        else:
            text, starts_opt = token_starts(ids, decode)
        toks = ids
        starts = starts_opt
    parsed = parse_choices(template, text, mode=mode)
    return StructuredOutput(text, toks, starts, parsed.choices, parsed.spans, parsed.status)


def draw_batch(
    sampler: Any,
    m: int,
    template: ChoiceTemplate,
    rng: np.random.Generator,
    *,
    decode: Decode | None = None,
    mode: Literal["full", "search"] = "full",
) -> list[StructuredOutput]:
    """Draw m outputs from `sampler.sample(m, rng)` in one call and parse each one (a backend `Failure` is
    kept as an output with status "failed")."""
    got = list(sampler.sample(m, rng))
    if len(got) != m:
        raise CritwinError(f"{type(sampler).__name__}.sample returned {len(got)} samples for {m}")
    return [make_output(s, template, decode=decode, mode=mode) for s in got]


def draw_outputs(
    sampler: Any,
    n: int,
    template: ChoiceTemplate,
    *,
    batch_size: int = 256,
    seed: int | np.random.Generator = 0,
    decode: Decode | None = None,
    mode: Literal["full", "search"] = "full",
    progress: bool = False,
) -> list[StructuredOutput]:
    """Draw n outputs from `sampler.sample` once, in batches of `batch_size`, and parse each one.

    Batch b is drawn with its own generator `case_rng(seed, b)` (= `default_rng([seed, b])`), the one
    `StructuredExperiment` gives its case b, so the same seed and batch size give the same outputs however
    the work is split, here or in a run directory. Backend `Failure`s are kept as outputs with status
    "failed".
    """
    params.check("n", n)
    params.check("batch_size", batch_size)
    base = int(seed.integers(2**63)) if isinstance(seed, np.random.Generator) else int(seed)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=n, desc="sampling", unit="sample", file=sys.stderr)
    out: list[StructuredOutput] = []
    for b, (_start, m) in enumerate(batches(n, batch_size)):
        out += draw_batch(sampler, m, template, case_rng(base, b), decode=decode, mode=mode)
        if bar is not None:
            bar.update(m)
    if bar is not None:
        bar.close()
    return out


def batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(first output, number of outputs) of each batch of n outputs drawn batch_size at a time."""
    return [(start, min(batch_size, n - start)) for start in range(0, n, batch_size)]


# ----------------------------------------------------------------------------------------------------------
# The prefix-conditional estimator
# ----------------------------------------------------------------------------------------------------------
class PrefixIndex:
    """The N sample sequences as one padded integer array, with their labels, for prefix counting.

    `counts_along(seq)` returns, for j = 0..len(seq), the Counter of labels of the samples whose sequence
    starts with seq[:j] (None = a sample whose label could not be read). Built once, queried per target:
    each query compares all samples with seq at once (O(N · len(seq)) vectorised, O(N · L) memory), which
    stays small where a trie over 10^4 samples × 10^2 characters would need millions of nodes.
    """

    def __init__(self, sequences: Sequence[Sequence[Hashable]], labels: Sequence[Hashable | None]) -> None:
        if len(sequences) != len(labels):
            raise CritwinError("sequences and labels must have equal lengths")
        self._vocab: dict[Hashable, int] = {}
        width = max((len(q) for q in sequences), default=0)
        arr = np.full((len(sequences), width), -1, dtype=np.int64)  # -1 pads past each sample's end
        for i, seq in enumerate(sequences):
            arr[i, : len(seq)] = [self._vocab.setdefault(tok, len(self._vocab)) for tok in seq]
        self._arr = arr
        codes: dict[Hashable | None, int] = {}
        self._codes = np.array([codes.setdefault(lab, len(codes)) for lab in labels], dtype=np.int64)
        self._labels: list[Hashable | None] = list(codes)

    def counts_along(self, seq: Sequence[Hashable]) -> list[Counter]:
        """Label counts of the samples starting with seq[:j], for j = 0..len(seq)."""
        m = len(seq)
        target = np.array([self._vocab.get(tok, -2) for tok in seq], dtype=np.int64)  # -2 matches nothing
        w = min(m, self._arr.shape[1])
        eq = self._arr[:, :w] == target[:w]
        # Length of the common prefix of each sample with seq (w when they agree on all w positions).
        lcp = np.where(eq.all(axis=1), w, eq.argmin(axis=1)) if w else np.zeros(len(self._arr), np.int64)
        k = len(self._labels)
        hist = np.bincount(self._codes * (m + 1) + lcp, minlength=k * (m + 1)).reshape(k, m + 1)
        at_least = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # per label: samples with common prefix >= j
        out = []
        for j in range(m + 1):
            col = at_least[:, j]
            out.append(Counter({self._labels[c]: int(col[c]) for c in np.flatnonzero(col)}))
        return out


def prefix_curve(
    index: PrefixIndex, seq: Sequence[Hashable], reference: Hashable, time_unit: Unit
) -> Curve:
    """P(label = reference | prefix of `seq`) as a `Curve` in forward time t = len(seq) − j.

    At t (j = L − t symbols kept) the counts are those of the samples starting with seq[:j]; samples with
    label None count as failed. t = 0 is the whole output, t = L the empty prefix (all samples).
    """
    counts = index.counts_along(seq)[::-1]  # t ascending = prefix length descending
    label_counts = [{k: v for k, v in c.items() if k is not None} for c in counts]
    return Curve(
        t=np.arange(len(counts), dtype=float),
        n_valid=[sum(lc.values()) for lc in label_counts],
        n_kept=[lc.get(reference, 0) for lc in label_counts],
        n_failed=[c.get(None, 0) for c in counts],
        label_counts=tuple(label_counts),
        reference=reference,
        time_unit=time_unit,
        t_max=float(len(seq)),
    )


# ----------------------------------------------------------------------------------------------------------
# Theory overlay
# ----------------------------------------------------------------------------------------------------------
def deciding_chars(template: ChoiceTemplate, out: StructuredOutput) -> tuple[int, ...]:
    """For each blank, the character offset in `out.text` that first tells the chosen option from the others.

    That is the first character of the chosen word unless another option of the same blank starts the
    same way (then the first character where they differ, which may be just past the chosen word).
    """
    if out.choices is None or out.spans is None:
        raise CritwinError("deciding_chars needs an output that fills the template (status 'ok')")
    result = []
    _, origin = normalize(out.text)
    for opts, choice, (a, _b) in zip(template.options, out.choices, out.spans, strict=True):
        mine = normalize(choice)[0]
        shared = max(_common_prefix(mine, normalize(o)[0]) for o in opts if o != choice)
        # Walk `shared` normalized characters forward from the option's first character.
        k = origin.index(a) + shared
        result.append(origin[k] if k < len(origin) else len(out.text))
    return tuple(result)


def char_to_token(starts: Sequence[int], char: int) -> int:
    """Index of the token that contains character offset `char` (the last token starting at or before it)."""
    idx = int(np.searchsorted(np.asarray(starts), char, side="right")) - 1
    return max(idx, 0)


@dataclass(frozen=True)
class Staircase:
    """The measured and predicted staircase of one distinct output s, in one unit (tokens or chars).

    curve: P(output = s | first j units of s) in forward time t = L − j; deciding[m]: index (0-based, in
    units) of the unit that decides blank m; first_unit[m]: index of the first unit of the chosen word;
    predicted[t]: theory plateau p(s | choices decided within the kept prefix), from the prediction source
    of `analyze`'s check (held-out half, other sample or exact probabilities; NaN where unavailable);
    theory_windows: per blank (t_after, t_before) = (L − d − 1, L − d): the one-unit window;
    windows: windows detected on the curve.
    """

    unit: Unit
    curve: Curve
    deciding: tuple[int, ...]
    first_unit: tuple[int, ...]
    predicted: np.ndarray
    theory_windows: tuple[tuple[float, float], ...]
    windows: tuple[Window, ...]


@dataclass(frozen=True)
class Target:
    """One distinct output s: its choices, how many samples produced it, its text (the most frequent
    spelling, `representative`), and its staircases per unit."""

    key: str
    choices: tuple[str, ...]
    count: int
    text: str
    staircases: dict[str, Staircase] = field(default_factory=dict)
    representative: StructuredOutput | None = None

    def pieces(self, unit: str) -> list[str]:
        """The text of each unit of the representative output (characters, or decoded token pieces)."""
        rep = self.representative
        if unit == "chars" or rep is None or rep.token_starts is None:
            return list(self.text)
        bounds = [*rep.token_starts, len(rep.text)]
        return [rep.text[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def revealed(deciding: Sequence[int], j: int) -> int:
    """Number of blanks decided within the first j units (deciding position < j)."""
    return sum(1 for d in deciding if d < j)


def plateau_predictions(
    deciding: Sequence[int],
    length: int,
    choices: tuple[str, ...],
    prefix_mass: Callable[[tuple[str, ...]], float],
) -> np.ndarray:
    """Predicted P(output = s | first j units) for t = L − j, t = 0..L: prefix_mass(c) / prefix_mass(c[:m]).

    prefix_mass(c[:m]) is the probability (or count) of outputs whose first m choices are c[:m]; with
    m = number of blanks decided within the first j units. Result indexed by t ascending; NaN where
    prefix_mass(c[:m]) = 0.
    """
    full = prefix_mass(choices)
    pred = np.full(length + 1, np.nan)
    for t in range(length + 1):
        m = revealed(deciding, length - t)
        denom = prefix_mass(choices[:m])
        pred[t] = full / denom if denom > 0 else np.nan
    return pred


def choice_frequencies(outputs: Sequence[StructuredOutput]) -> Callable[[tuple[str, ...]], float]:
    """prefix_mass from the samples: the number of well-filled outputs whose first choices equal c[:m]."""
    counts: Counter = Counter()
    for o in outputs:
        if o.choices is not None:
            for m in range(len(o.choices) + 1):
                counts[o.choices[:m]] += 1
    return lambda prefix: float(counts.get(tuple(prefix), 0))


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of sample indices 0..n−1 into (estimation, measurement) halves (sorted; the
    measurement half gets the odd one out). Same (n, seed), same split."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


# ----------------------------------------------------------------------------------------------------------
# The whole analysis
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StructuredResult:
    """Everything `analyze` computes: the outputs, per-target staircases, the plateau check and a summary."""

    template: ChoiceTemplate
    outputs: tuple[StructuredOutput, ...]
    targets: tuple[Target, ...]
    fit: pd.DataFrame
    summary: dict[str, Any]


def _target_key(choices: tuple[str, ...]) -> str:
    return " | ".join(choices)


def _staircase(
    index: PrefixIndex,
    seq: Sequence[Hashable],
    reference: Hashable,
    unit: Unit,
    deciding: tuple[int, ...],
    first_unit: tuple[int, ...],
    choices: tuple[str, ...],
    prefix_mass: Callable[[tuple[str, ...]], float],
    level: float,
    min_jump: float,
) -> Staircase:
    curve = prefix_curve(index, seq, reference, unit)
    length = len(seq)
    pred = plateau_predictions(deciding, length, choices, prefix_mass)
    theory = tuple((float(length - d - 1), float(length - d)) for d in deciding)
    wins = tuple(step_windows(curve, level=level, min_jump=min_jump))
    return Staircase(unit, curve, deciding, first_unit, pred, theory, wins)


#: Columns of `StructuredResult.fit` (one row per plateau of each staircase).
FIT_COLUMNS = (
    "target", "unit", "choices_revealed", "j_lo", "j_hi", "j", "n", "n_kept", "measured", "ci_lo", "ci_hi",
    "n_pred", "n_pred_kept", "predicted", "residual", "residual_lo", "residual_hi", "z", "p_value", "tested",
    "covered", "rejected",
)


def _plateau_rows(
    target: Target,
    st: Staircase,
    measure: Curve,
    pred_counts: Callable[[tuple[str, ...]], float] | None,
    ci_level: float,
    trivial_last: bool,
) -> list[dict[str, Any]]:
    """One row per plateau m: the measured P(output = s | first j units) at the plateau's LAST prefix j
    (just before the next deciding unit, where text that gives a later choice away would show) on the
    `measure` curve, against the predicted plateau p(s | first m choices).

    pred_counts: the choice counts of the prediction's own sample (held-out half or another sample); the
    interval of measured − predicted is then Newcombe's for two independent proportions, p_value the
    two-sided pooled two-proportion z-test. None: the prediction `st.predicted` is exact, the interval is
    the measured value's Wilson interval minus it, p_value the two-sided exact binomial test.
    covered: the interval contains 0. tested: both sides have samples, and the plateau is not the last
    one when `trivial_last` (all choices known, so measured = predicted = 1 by definition). "rejected" is
    filled in by `analyze` (Holm over the tested plateaus).
    """
    rows = []
    length = len(measure) - 1
    lo_ci, hi_ci = wilson_interval(measure.n_kept, measure.n_valid, ci_level)
    plateaus: dict[int, list[int]] = {}
    for j in range(length + 1):
        plateaus.setdefault(revealed(st.deciding, j), []).append(j)
    n_blanks = len(st.deciding)
    for m, js in plateaus.items():
        j = js[-1]
        t = length - j
        n, k = int(measure.n_valid[t]), int(measure.n_kept[t])
        meas = k / n if n else float("nan")
        if pred_counts is None:
            n_p, k_p, pred = float("nan"), float("nan"), float(st.predicted[t])
            ok = n > 0 and np.isfinite(pred)
        else:
            n_p, k_p = pred_counts(target.choices[:m]), pred_counts(target.choices)
            pred = k_p / n_p if n_p > 0 else float("nan")
            ok = n > 0 and n_p > 0
        tested = bool(ok and not (trivial_last and m == n_blanks))
        r_lo = r_hi = z = p_value = float("nan")
        if ok and pred_counts is None:
            r_lo, r_hi = float(lo_ci[t]) - pred, float(hi_ci[t]) - pred
            se = np.sqrt(pred * (1 - pred) / n)
            if 0.0 < pred < 1.0:
                p_value = float(stats.binomtest(k, n, pred).pvalue)
            else:
                p_value = 1.0 if meas == pred else 0.0
        elif ok:
            r_lo, r_hi = newcombe_interval(k, n, int(k_p), int(n_p), ci_level)
            se = np.sqrt(meas * (1 - meas) / n + pred * (1 - pred) / n_p)
            pooled = (k + k_p) / (n + n_p)
            se0 = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / n_p))
            p_value = float(2 * stats.norm.sf(abs(meas - pred) / se0)) if se0 > 0 else 1.0
        if ok:
            z = (meas - pred) / se if se > 0 else (0.0 if meas == pred else float("nan"))
        rows.append(
            {
                "target": target.key,
                "unit": st.unit,
                "choices_revealed": m,
                "j_lo": js[0],
                "j_hi": js[-1],
                "j": j,
                "n": n,
                "n_kept": k,
                "measured": meas,
                "ci_lo": float(lo_ci[t]),
                "ci_hi": float(hi_ci[t]),
                "n_pred": n_p,
                "n_pred_kept": k_p,
                "predicted": pred,
                "residual": meas - pred,
                "residual_lo": r_lo,
                "residual_hi": r_hi,
                "z": z,
                "p_value": p_value,
                "tested": tested,
                # A rounding hair outside [lo, hi] must not count as a miss.
                "covered": bool(ok and r_lo - 1e-12 <= 0.0 <= r_hi + 1e-12),
                "rejected": False,
            }
        )
    return rows


def _windows_at_deciding(st: Staircase) -> tuple[int, int]:
    """(detected windows that contain a deciding position, detected windows)."""
    hits = 0
    for w in st.windows:
        if any(w.t_lo <= a and b <= w.t_hi for a, b in st.theory_windows):
            hits += 1
    return hits, len(st.windows)


def _check_description(check: Check, n_est: int, n_meas: int, ci_level: float, seed: int) -> str:
    what = (
        f"measured P(output = s | prefix) at the last prefix of each plateau, on {n_meas} samples, against "
    )
    if check == "exact":
        return what + f"the exact p(s | choices decided so far); {ci_level:.0%} Wilson interval of the " \
            "measurement"
    if check == "other_sample":
        source = f"the choice frequencies of another sample of {n_est} outputs"
    else:
        source = (f"the choice frequencies of the other {n_est} samples (seeded half-split, seed {seed}; the "
                  "prediction never sees the samples it is checked on)")
    return what + f"p(s | choices decided so far) from {source}; {ci_level:.0%} Newcombe interval of the " \
        "difference"


def analyze(
    outputs: Sequence[StructuredOutput],
    template: ChoiceTemplate,
    *,
    top: int | None = 8,
    min_count: int = 1,
    equality: Equality = "choices",
    units: Sequence[Unit] = ("tokens", "chars"),
    prefix_mass: Callable[[tuple[str, ...]], float] | None = None,
    predict_from: Sequence[StructuredOutput] | None = None,
    split_seed: int = 0,
    level: float = 0.99,
    min_jump: float = 0.05,
    ci_level: float = 0.95,
) -> StructuredResult:
    """Staircases of the `top` most frequent distinct outputs (with at least `min_count` samples), and a
    check of their plateaus against the theory that can fail.

    equality "choices": output = s means the same tuple of choices (case/whitespace variants pooled);
    "exact": the same token sequence. Wrongly filled outputs are failed items at every prefix they share.
    Windows are one-token steps found by `step_windows(level, min_jump)` on the curves of all samples.

    The plateau check (`fit`, one row per plateau, see `_plateau_rows`) compares measured plateaus with
    p(s | choices decided so far) computed from data the measurement does not use:
    - default ("held_out"): the outputs are split in two by a seeded permutation (`split_halves`,
      `split_seed`); predictions come from the choice frequencies of one half, measurements from the other;
    - predict_from ("other_sample"): predictions from the choice frequencies of those outputs (e.g. another
      run of the same model), measurements from all `outputs`;
    - prefix_mass ("exact"): exact p(first m choices = c[:m]) of an exact testbed, measurements from all.
    Staircase.predicted holds the same predictions for every prefix. Summary: coverage = share of tested
    plateaus whose `ci_level` interval of measured − predicted contains 0 (about `ci_level` on average
    when the theory holds — one run's value scatters more than a binomial, since the plateaus of one
    output share its samples — and far below it when text before a decision depends on later choices,
    or the laws differ); n_rejected = plateaus rejected by Holm's procedure at family-wise error
    1 − ci_level (any rejection is evidence against the theory at that level, whatever the dependence);
    max_abs_residual and rmse of measured − predicted over the tested plateaus.
    """
    if equality not in ("choices", "exact"):
        raise CritwinError(f"equality={equality!r}: use 'choices' or 'exact'")
    bad_units = [u for u in units if u not in ("tokens", "chars")]
    if bad_units or not units:
        raise CritwinError(f"units={list(units)!r}: use 'tokens' and/or 'chars'")
    params.check("min_count", min_count)
    if prefix_mass is not None and predict_from is not None:
        raise CritwinError("prefix_mass and predict_from: give at most one source of predictions")
    outputs = tuple(outputs)
    if not outputs:
        raise CritwinError("outputs: no samples; draw at least one output")
    if "tokens" in units and any(o.status == "ok" and o.token_starts is None for o in outputs):
        raise CritwinError("outputs lack token offsets; draw them with decode=tokenizer.decode or use "
                           "units=('chars',)")
    status = Counter(o.status for o in outputs)
    ok = [o for o in outputs if o.choices is not None]
    freq = Counter(o.choices for o in ok)

    check: Check
    if prefix_mass is not None:
        check, measured_on, pred_counts = "exact", outputs, None
        mass, n_est = prefix_mass, 0
    elif predict_from is not None:
        predict_from = tuple(predict_from)
        if not predict_from:
            raise CritwinError("predict_from: no samples; pass the outputs to predict from, or leave it out")
        check, measured_on = "other_sample", outputs
        pred_counts = mass = choice_frequencies(predict_from)
        n_est = len(predict_from)
    else:
        if len(outputs) < 2:
            raise CritwinError("outputs: the held-out check needs at least 2 samples; draw more")
        est, meas = split_halves(len(outputs), split_seed)
        check, measured_on = "held_out", tuple(outputs[i] for i in meas)
        pred_counts = mass = choice_frequencies([outputs[i] for i in est])
        n_est = len(est)
    # Which outputs get a staircase must not favour one side of the check: ranking by the measured
    # sample's own frequencies would pick outputs that came up more often than their law says (winner's
    # curse; seen here as 4 of 24 exact plateaus "rejected" on a law that holds). So rank by the exact
    # probability, or by the pooled counts of both samples, under which the two sides stay exchangeable.
    if check == "exact":
        rank_key = {c: -prefix_mass(c) for c in freq}
    else:
        pooled = freq + Counter(o.choices for o in (predict_from or ()) if o.choices is not None)
        rank_key = {c: -pooled[c] for c in freq}
    ranked = [c for c in sorted(freq, key=lambda c: (rank_key[c], c)) if freq[c] >= min_count]
    if top is not None:
        ranked = ranked[:top]

    def label(o: StructuredOutput, unit: Unit) -> Hashable | None:
        if equality == "choices":
            return o.choices
        if o.status == "failed":
            return None
        return tuple(o.tokens) if unit == "tokens" else o.text

    def index_of(sample: Sequence[StructuredOutput], unit: Unit) -> PrefixIndex:
        seqs = [o.tokens if unit == "tokens" else o.text for o in sample]
        return PrefixIndex(seqs, [label(o, unit) for o in sample])

    indexes = {unit: index_of(outputs, unit) for unit in units}
    measure_indexes = indexes if measured_on is outputs else {u: index_of(measured_on, u) for u in units}

    targets: list[Target] = []
    fit_rows: list[dict[str, Any]] = []
    hits = total_w = 0
    for choices in ranked:
        members = [o for o in ok if o.choices == choices]
        # Representative text: the most frequent exact spelling of this choice tuple.
        rep_tokens, _ = Counter(o.tokens for o in members).most_common(1)[0]
        rep = next(o for o in members if o.tokens == rep_tokens)
        target = Target(_target_key(choices), choices, len(members), rep.text, representative=rep)
        dchars = deciding_chars(template, rep)
        fchars = tuple(a for a, _ in rep.spans or ())
        for unit in units:
            if unit == "tokens":
                assert rep.token_starts is not None
                dec = tuple(char_to_token(rep.token_starts, c) for c in dchars)
                first = tuple(char_to_token(rep.token_starts, c) for c in fchars)
                seq: Sequence[Hashable] = rep.tokens
            else:
                dec, first, seq = dchars, fchars, rep.text
            ref = label(rep, unit)
            st = _staircase(indexes[unit], seq, ref, unit, dec, first, choices, mass, level, min_jump)
            target.staircases[unit] = st
            measure = (st.curve if measured_on is outputs
                       else prefix_curve(measure_indexes[unit], seq, ref, unit))
            fit_rows += _plateau_rows(target, st, measure, pred_counts, ci_level, equality == "choices")
            h, w = _windows_at_deciding(st)
            hits += h
            total_w += w
        targets.append(target)

    fit = pd.DataFrame(fit_rows, columns=list(FIT_COLUMNS))
    is_tested = fit["tested"].to_numpy(bool)
    # Holm is valid under any dependence between the tests (plateaus of one output share its samples).
    rejected = np.zeros(len(fit), dtype=bool)
    rejected[is_tested] = holm_reject(fit["p_value"].to_numpy(float)[is_tested], 1.0 - ci_level)
    fit["rejected"] = rejected
    tested = fit[is_tested]
    res = tested["residual"].to_numpy(float)
    n_tested, n_covered = int(len(tested)), int(tested["covered"].sum())
    summary = {
        "n_samples": len(outputs),
        "status_counts": dict(status),
        "n_ok": len(ok),
        "n_distinct": len(freq),
        "n_targets": len(targets),
        "equality": equality,
        "check": check,
        "check_description": _check_description(check, n_est, len(measured_on), ci_level, split_seed),
        "split_seed": split_seed if check == "held_out" else None,
        "n_prediction_samples": n_est,
        "n_measurement_samples": len(measured_on),
        "n_plateaus": int(len(fit)),
        "n_tested": n_tested,
        "max_abs_residual": float(np.max(np.abs(res))) if res.size else None,
        "rmse": float(np.sqrt(np.mean(res**2))) if res.size else None,
        "coverage": n_covered / n_tested if n_tested else None,
        "ci_level": ci_level,
        "n_rejected": int(rejected.sum()),
        "family_wise_alpha": 1.0 - ci_level,
        "windows_detected": total_w,
        "windows_at_deciding_token": hits,
    }
    return StructuredResult(template, outputs, tuple(targets), fit, summary)


# ----------------------------------------------------------------------------------------------------------
# Run directory
# ----------------------------------------------------------------------------------------------------------
def outputs_frame(outputs: Sequence[StructuredOutput]) -> pd.DataFrame:
    """The raw outputs as a table (text, tokens as JSON, token_starts, choices, spans, status, reason)."""
    return pd.DataFrame(
        {
            "text": [o.text for o in outputs],
            "tokens": [json.dumps(list(o.tokens)) for o in outputs],
            "token_starts": [
                None if o.token_starts is None else json.dumps(list(o.token_starts)) for o in outputs
            ],
            "choices": [None if o.choices is None else json.dumps(list(o.choices)) for o in outputs],
            "spans": [None if o.spans is None else json.dumps([list(s) for s in o.spans]) for o in outputs],
            "status": [o.status for o in outputs],
            "reason": [o.reason for o in outputs],
        }
    )


def outputs_from_frame(df: pd.DataFrame) -> list[StructuredOutput]:
    """Inverse of `outputs_frame`."""
    need = {"text", "tokens", "token_starts", "choices", "spans", "status", "reason"}
    if not need <= set(df.columns):
        raise CritwinError(f"outputs table lacks columns {sorted(need - set(df.columns))}; it was not "
                           "written by critwin")
    def opt(v: Any) -> Any:
        # Missing cells come back as None or NaN depending on the pandas string dtype.
        return json.loads(v) if isinstance(v, str) else None

    out = []
    for r in df.itertuples(index=False):
        starts, choices, spans = opt(r.token_starts), opt(r.choices), opt(r.spans)
        out.append(
            StructuredOutput(
                text=str(r.text),
                tokens=tuple(json.loads(r.tokens)),
                token_starts=None if starts is None else tuple(starts),
                choices=None if choices is None else tuple(choices),
                spans=None if spans is None else tuple(tuple(s) for s in spans),
                status=str(r.status),
                reason=r.reason if isinstance(r.reason, str) else "",
            )
        )
    return out


OUTPUTS_TABLE = "outputs"
OUTPUTS = f"{OUTPUTS_TABLE}.parquet"  # raw: one part per batch of draws (read the folder with pandas)
FIT = "fit.csv"
# Settings that must agree for a rerun to resume a structured run (everything the outputs depend on, and
# the analysis settings stored with them).
RESUME_KEYS = ("model", "prompt", "n", "temperature", "top_p", "max_new_tokens", "seed", "mode", "batch_size",
               "template", "equality", "top", "min_count", "level", "min_jump", "ci_level", "split_seed",
               "reanalyzed_from")
SUMMARY = "structured.json"


def case_name(target: Target, unit: str) -> str:
    """Name of the run-directory case holding one staircase."""
    return f"{target.key} [{unit}]"


def write_run(result: StructuredResult, run: RunDir) -> RunDir:
    """Store a structured-output analysis in a run directory (experiment "structured").

    Curves and windows go through `RunDir` (one case per distinct output and unit; the predicted plateaus
    in the `exact` column), the raw outputs to outputs.parquet, the plateau fit to fit.csv and the summary
    to structured.json. `read_run` gives the outputs back, so the analysis can be redone without a model.
    """
    names = [case_name(tg, unit) for tg in result.targets for unit in tg.staircases]
    for stale in set(run.case_names()) - set(names):  # left by an earlier analysis of the same outputs
        run.start_case(stale)
    for tg in result.targets:
        for unit, st in tg.staircases.items():
            name = case_name(tg, unit)
            run.write_curve(name, st.curve, exact=st.predicted, order=names.index(name))
            theory = [
                TheoryInterval(a, b, label=f"blank {m + 1}: {c}")
                for m, ((a, b), c) in enumerate(zip(st.theory_windows, tg.choices, strict=True))
            ]
            run.write_case(
                name,
                detected=st.windows,
                theory=theory,
                meta={
                    "title": f"{tg.text!r} ({unit})",
                    "kind": "structured",
                    "target": tg.key,
                    "unit": unit,
                    "choices": list(tg.choices),
                    "count": tg.count,
                    "text": tg.text,
                    "pieces": tg.pieces(unit),
                    "deciding": list(st.deciding),
                    "first_unit": list(st.first_unit),
                    "sampler": "N samples drawn once; P(output = s | prefix of s) from the samples",
                    "feature": "tuple of template choices",
                    "description": "Staircase of one distinct output: predicted plateaus (black) are "
                    "p(s | choices decided so far); shaded bands are the one-unit windows at the deciding "
                    "unit of each chosen word.",
                },
            )
    if not run.part_names(OUTPUTS_TABLE):  # outputs drawn outside a run (`draw_outputs`): one part for all
        run.write_part(OUTPUTS_TABLE, "000000", outputs_frame(result.outputs))
    atomic_write(run.path / FIT, lambda p: result.fit.to_csv(p, index=False))
    write_json(run.path / SUMMARY, jsonable(result.summary), indent=1)
    return run


def _stored_frame(run: RunDir) -> pd.DataFrame | None:
    """The readable stored outputs in draw order: the parts of the batch cases of a `StructuredExperiment`
    run (named by their case key) in batch order, or else all parts in name order (`write_run`, earlier
    versions: one part per batch, named by its number); None when there are none."""
    names = set(run.part_names(OUTPUTS_TABLE))
    cfg = run.config
    if "n" in cfg:
        n_batches = len(batches(int(cfg["n"]), int(cfg.get("batch_size", 256))))
        keys = [case_key(batch_id(b)) for b in range(n_batches)]
        if names & set(keys):
            frames = [df for k in keys if (df := run.read_part(OUTPUTS_TABLE, k)) is not None]
            return pd.concat(frames, ignore_index=True) if frames else None
    return run.read_parts(OUTPUTS_TABLE)


def _check_structured(run: RunDir) -> None:
    if run.config.get("experiment") != "structured":
        raise CritwinError(f"run dir {run.path}: not a `critwin structured` run; pass one")


def read_run(run: RunDir) -> tuple[ChoiceTemplate, list[StructuredOutput]]:
    """The template and the raw outputs of a structured run directory, in draw order (to re-analyze
    without a model)."""
    _check_structured(run)
    frame = _stored_frame(run)
    if frame is None:
        raise CritwinError(f"run dir {run.path}: no readable {OUTPUTS}; rerun `critwin structured` into it")
    template = ChoiceTemplate.parse(run.config["template"])
    return template, outputs_from_frame(frame)


def missing_outputs(run: RunDir) -> list[str]:
    """[] when every output of the run is stored (an analysis of some of them would be another result),
    else one line saying how many are: ["outputs (have of want drawn)"]."""
    frame = _stored_frame(run)
    have, want = (0 if frame is None else len(frame)), int(run.config.get("n", 0))
    if frame is None or (want and have < want):
        return [f"outputs ({have} of {want} drawn)"]
    return []


# ----------------------------------------------------------------------------------------------------------
# The experiment as data: settings in parts, one case per seeded batch of outputs
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSettings:
    """How the model samples (the sampler's part): `temperature` (0 = greedy), nucleus `top_p`, at most
    `max_new_tokens` per output."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "max_new_tokens"):
            params.check(name, getattr(self, name))


@dataclass(frozen=True)
class Drawing:
    """How the outputs are drawn (the cases' part): `n` outputs, once, in batches of `batch_size` (one case
    each, seeded by its batch number), each parsed against the template in `mode` ("full": the output is
    the filled template; "search": find it inside longer text)."""

    n: int = 1000
    batch_size: int = 256
    mode: Literal["full", "search"] = "full"

    def __post_init__(self) -> None:
        params.check("n", self.n)
        params.check("batch_size", self.batch_size)
        if self.mode not in ("full", "search"):
            raise CritwinError(f"mode={self.mode!r}: use 'full' or 'search'")


@dataclass(frozen=True)
class Analysis:
    """Which staircases are drawn and how their windows are found (`analyze`'s part): the `top` most
    frequent distinct outputs with at least `min_count` samples, outputs equal by `equality` ("choices" or
    "exact"), one-step windows by `step_windows(level, min_jump)`."""

    top: int | None = 8
    min_count: int = 1
    equality: Equality = "choices"
    level: float = 0.99
    min_jump: float = 0.05

    def __post_init__(self) -> None:
        if self.top is not None:
            params.check("top", self.top)
        for name in ("min_count", "level", "min_jump"):
            params.check(name, getattr(self, name))
        if self.equality not in ("choices", "exact"):
            raise CritwinError(f"equality={self.equality!r}: use 'choices' or 'exact'")


@dataclass(frozen=True)
class Statistics:
    """The plateau check (the statistics part): intervals and Holm's procedure at `ci_level`, the held-out
    half-split seeded by `split_seed`."""

    ci_level: float = 0.95
    split_seed: int = 0

    def __post_init__(self) -> None:
        params.check("ci_level", self.ci_level)
        params.PARAMS["seed"].check(self.split_seed, "split_seed")


_PARTS = {"sampling": SamplerSettings, "drawing": Drawing, "analysis": Analysis, "stats": Statistics}
_TOP_LEVEL = ("template", "prompt", "seed")


@dataclass(frozen=True)
class StructuredConfig:
    """Settings of a structured-output run: the `template` (text with blanks), the user `prompt` (None:
    the template's own prompt), the run's `seed`, and one part per role — `sampling` (the sampler),
    `drawing` (the batches), `analysis` (staircases and windows), `stats` (the plateau check).
    `from_flat(n=…, top=…)` builds one from flat settings (the CLI's and config.json's form); `to_dict()`
    gives that flat form back."""

    template: str
    prompt: str | None = None
    seed: int = 0
    sampling: SamplerSettings = field(default_factory=SamplerSettings)
    drawing: Drawing = field(default_factory=Drawing)
    analysis: Analysis = field(default_factory=Analysis)
    stats: Statistics = field(default_factory=Statistics)

    def __post_init__(self) -> None:
        ChoiceTemplate.parse(self.template)  # a one-line error for a template without blanks
        params.check("seed", self.seed)

    @classmethod
    def from_flat(cls, **settings: Any) -> StructuredConfig:
        """A config from flat settings (template, prompt, seed and any field of the parts); an unknown name
        is an error."""
        return cls(**params.parts_from_flat(settings, _PARTS, _TOP_LEVEL, "structured"))

    @classmethod
    def from_run(cls, run: RunDir) -> StructuredConfig:
        """The config stored in a structured run's config.json (settings it lacks take their defaults)."""
        known = set(_TOP_LEVEL).union(*(part.__dataclass_fields__ for part in _PARTS.values()))
        return cls.from_flat(**{k: v for k, v in run.config.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able settings (stored in config.json)."""
        s, d, a, st = self.sampling, self.drawing, self.analysis, self.stats
        return {"prompt": self.prompt, "n": d.n, "temperature": s.temperature, "top_p": s.top_p,
                "max_new_tokens": s.max_new_tokens, "seed": self.seed, "mode": d.mode,
                "batch_size": d.batch_size, "template": self.template, "equality": a.equality, "top": a.top,
                "min_count": a.min_count, "level": a.level, "min_jump": a.min_jump, "ci_level": st.ci_level,
                "split_seed": st.split_seed}


def batch_id(b: int) -> str:
    """Case id of batch b of a structured run."""
    return str(b)


@dataclass
class StructuredExperiment:
    """The structured-output experiment as data: one case per batch of `cfg.drawing` (case "b" draws
    outputs batch_size·b … from `case_rng(seed, b)` and returns them as its part of outputs.parquet); the
    analysis over all batches is the report writer's (`critwin.report.structured.write_report`), from the
    run directory alone.

    With `source` (a structured run directory) the outputs are not drawn but copied, batch by batch, from
    that run (re-analysis with other `analysis` settings; no sampler).
    """

    cfg: StructuredConfig
    model: str | None = "in-memory model"
    source: RunDir | None = None

    name = "structured"
    resume_keys = RESUME_KEYS

    def __post_init__(self) -> None:
        self.template = ChoiceTemplate.parse(self.cfg.template)
        self._source_outputs: list[StructuredOutput] | None = None

    @classmethod
    def reanalysis(cls, source: str | Path, **analysis: Any) -> StructuredExperiment:
        """The re-analysis of the outputs stored in the run `source` (all of them drawn) with other
        `Analysis` settings (e.g. equality, top, min_count)."""
        old = RunDir.open(source)
        _, outputs = read_run(old)
        cfg = StructuredConfig.from_run(old)
        if "n" in old.config and len(outputs) < cfg.drawing.n:  # what `missing_outputs` says, read once
            raise CritwinError(f"--from-run {source}: only {len(outputs)} of its {cfg.drawing.n} outputs are "
                               "stored; rerun the command that made it to draw the rest, then re-analyze")
        flat = {**cfg.to_dict(), **analysis, "n": len(outputs)}
        exp = cls(StructuredConfig.from_flat(**flat), old.config.get("model"), old)
        exp._source_outputs = outputs
        return exp

    def config(self) -> dict[str, Any]:
        out = {"model": self.model, **self.cfg.to_dict()}
        if self.source is not None:
            out["reanalyzed_from"] = str(self.source.path)
        return out

    def sampler_settings(self) -> dict[str, Any]:
        """The settings the sampler must be built with (`load_sampler(kind, path, **these)`, then
        `.with_prompt(prompt)`)."""
        return {**asdict(self.cfg.sampling), "batch_size": self.cfg.drawing.batch_size}

    @property
    def prompt(self) -> str:
        """The user prompt the sampler answers."""
        return self.cfg.prompt if self.cfg.prompt is not None else self.template.prompt()

    def cases(self) -> list[Case]:
        return [
            Case(batch_id(b), (b,), (start, m), {"batch": b}, seed_key=b)
            for b, (start, m) in enumerate(batches(self.cfg.drawing.n, self.cfg.drawing.batch_size))
        ]

    def check(self, sampler: Any) -> None:
        if self.source is None and not callable(getattr(sampler, "sample", None)):
            raise CritwinError(f"sampler: a {type(sampler).__name__} cannot draw outputs; pass one with "
                               ".sample(n, rng), e.g. load_sampler(...).with_prompt(prompt)")

    def run_case(self, sampler: Any, case: Case, rng: np.random.Generator) -> CaseResult:
        start, m = case.data
        if self._source_outputs is not None:
            outputs = self._source_outputs[start : start + m]
        else:
            outputs = draw_batch(sampler, m, self.template, rng, decode=getattr(sampler, "decode", None),
                                 mode=self.cfg.drawing.mode)
        status = Counter(o.status for o in outputs)
        record = {"status": "ok", "n": m, "status_counts": dict(status)}
        return CaseResult(case.id, record, parts={OUTPUTS_TABLE: outputs_frame(outputs)})


def analyze_run(run: RunDir) -> StructuredResult:
    """`analyze` the stored outputs of a structured run with the settings of its config.json."""
    template, outputs = read_run(run)
    a, st = (cfg := StructuredConfig.from_run(run)).analysis, cfg.stats
    return analyze(outputs, template, top=a.top, min_count=a.min_count, equality=a.equality,
                   level=a.level, min_jump=a.min_jump, ci_level=st.ci_level, split_seed=st.split_seed)
