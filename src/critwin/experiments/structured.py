"""Structured-output hierarchies: staircase windows read off N samples of a template with k blanks.

The experiment (DESIGN §2): a model fills a template with k blanks (a few options each); N outputs are
drawn ONCE. For each distinct output s (identified by its tuple of choices, or by its exact text), the
curve P(output = s | prefix of s) is estimated at every token and character position from the N samples
themselves, without re-generation: among the samples that start with the first j tokens of s, the fraction
whose output equals s. In the forward-time convention t = L − j (tokens removed from the end of s), so the
curve is a `Curve`, and `step_windows` finds its one-token jumps.

Theory overlay (DESIGN §1, autoregressive truncation): if the text before the token that decides blank m
has the same law whatever is chosen later, the curve is flat except for one-token windows at the deciding
token of each chosen word — its first token, or the first token that tells it from the other options when
options share a beginning — and the plateau after m choices are visible equals
p(s | choices 1..m) = Π_{i>m} p(c_i | c_1..c_{i−1}). `analyze` reports the fit of the measured plateaus
to that product of conditional choice frequencies (or to exact probabilities, for exact testbeds).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from critwin.errors import CritwinError
from critwin.features.choices import ChoiceTemplate, normalize, parse_choices
from critwin.rundir import RunDir, TheoryInterval
from critwin.samplers.base import Failure
from critwin.scan import Curve, wilson_interval
from critwin.windows import Window, drop_p_value, holm_reject, newcombe_interval

Unit = Literal["tokens", "chars"]
Equality = Literal["choices", "exact"]
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

    Same seed, same outputs. Backend `Failure`s are kept as outputs with status "failed".
    """
    if n < 1:
        raise CritwinError(f"n={n} must be >= 1 (number of samples to draw)")
    if batch_size < 1:
        raise CritwinError(f"batch_size={batch_size} must be >= 1")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    samples: list[Any] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="sampling", unit="sample", file=__import__("sys").stderr)
    while len(samples) < n:
        m = min(batch_size, n - len(samples))
        got = list(sampler.sample(m, rng))
        if len(got) != m:
            raise CritwinError(f"{type(sampler).__name__}.sample returned {len(got)} samples for {m}")
        samples += got
        if bar is not None:
            bar.update(m)
    if bar is not None:
        bar.close()
    return [make_output(s, template, decode=decode, mode=mode) for s in samples]


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


def step_windows(curve: Curve, *, level: float = 0.99, min_jump: float = 0.05) -> list[Window]:
    """One-unit windows of a staircase: every step t -> t + 1 where P(output = s | prefix) drops.

    The theory puts each window of a structured output at a single token, and neighbouring windows can be
    one token apart (two words in a row), so the steps are tested one by one instead of being merged into
    stretches: a one-sided two-proportion test per step, Holm's correction over all steps at family-wise
    level `level`, and a drop of at least `min_jump`. Returns windows (t_lo = t, t_hi = t + 1), rule "step".
    """
    if not 0.0 < level < 1.0:
        raise CritwinError(f"level={level} must lie strictly between 0 and 1 (e.g. 0.99)")
    k, n, t = curve.n_kept, curve.n_valid, curve.t
    steps = [i for i in range(len(t) - 1) if n[i] > 0 and n[i + 1] > 0]
    if not steps:
        return []
    idx = np.array(steps)
    pv = drop_p_value(k[idx], n[idx], k[idx + 1], n[idx + 1])
    keep = holm_reject(pv, 1.0 - level)
    out = []
    for i, p, ok in zip(steps, pv, keep, strict=True):
        p0, p1 = k[i] / n[i], k[i + 1] / n[i + 1]
        if ok and p0 - p1 >= min_jump:
            ci = newcombe_interval(int(k[i]), int(n[i]), int(k[i + 1]), int(n[i + 1]), level)
            out.append(Window(float(t[i]), float(t[i + 1]), float(p0), float(p1), float(p0 - p1), ci,
                              float(p), level, "step"))
    return out


def char_to_token(starts: Sequence[int], char: int) -> int:
    """Index of the token that contains character offset `char` (the last token starting at or before it)."""
    idx = int(np.searchsorted(np.asarray(starts), char, side="right")) - 1
    return max(idx, 0)


@dataclass(frozen=True)
class Staircase:
    """The measured and predicted staircase of one distinct output s, in one unit (tokens or chars).

    curve: P(output = s | first j units of s) in forward time t = L − j; deciding[m]: index (0-based, in
    units) of the unit that decides blank m; first_unit[m]: index of the first unit of the chosen word;
    predicted[t]: theory plateau p(s | choices decided within the kept prefix) (NaN where unavailable);
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
    m = number of blanks decided within the first j units. Result indexed by t ascending.
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


# ----------------------------------------------------------------------------------------------------------
# The whole analysis
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StructuredResult:
    """Everything `analyze` computes: the outputs, per-target staircases, the plateau fit and a summary."""

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


def _plateau_rows(target: Target, st: Staircase, ci_level: float) -> list[dict[str, Any]]:
    rows = []
    length = len(st.curve) - 1
    lo_ci, hi_ci = wilson_interval(st.curve.n_kept, st.curve.n_valid, ci_level)
    # Plateau m: the prefix lengths j that have decided exactly m blanks (a contiguous range of j).
    plateaus: dict[int, list[int]] = {}
    for j in range(length + 1):
        plateaus.setdefault(revealed(st.deciding, j), []).append(j)
    for m, js in plateaus.items():
        j0 = js[0]
        t0 = length - j0  # first (largest-sample) point of the plateau
        n = int(st.curve.n_valid[t0])
        k = int(st.curve.n_kept[t0])
        pred = float(st.predicted[t0])
        meas = k / n if n else float("nan")
        se = np.sqrt(pred * (1 - pred) / n) if n and 0 < pred < 1 else float("nan")
        rows.append(
            {
                "target": target.key,
                "unit": st.unit,
                "choices_revealed": m,
                "j_lo": j0,
                "j_hi": js[-1],
                "n": n,
                "n_kept": k,
                "measured": meas,
                "ci_lo": float(lo_ci[t0]),
                "ci_hi": float(hi_ci[t0]),
                "predicted": pred,
                "residual": meas - pred,
                "z": (meas - pred) / se if se == se and se > 0 else float("nan"),
                "covered": bool(lo_ci[t0] - 1e-12 <= pred <= hi_ci[t0] + 1e-12) if n else False,
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


def analyze(
    outputs: Sequence[StructuredOutput],
    template: ChoiceTemplate,
    *,
    top: int | None = 8,
    min_count: int = 1,
    equality: Equality = "choices",
    units: Sequence[Unit] = ("tokens", "chars"),
    prefix_mass: Callable[[tuple[str, ...]], float] | None = None,
    level: float = 0.99,
    min_jump: float = 0.05,
    ci_level: float = 0.95,
) -> StructuredResult:
    """Staircases of the `top` most frequent distinct outputs (with at least `min_count` samples).

    equality "choices": output = s means the same tuple of choices (case/whitespace variants pooled);
    "exact": the same token sequence. Wrongly filled outputs are failed items at every prefix they share.
    prefix_mass: exact p(first m choices = c[:m]) for an exact testbed; default the sample frequencies.
    Windows are one-token steps found by `step_windows(level, min_jump)`; plateau intervals use `ci_level`.
    """
    if equality not in ("choices", "exact"):
        raise CritwinError(f"equality={equality!r}: use 'choices' or 'exact'")
    bad_units = [u for u in units if u not in ("tokens", "chars")]
    if bad_units or not units:
        raise CritwinError(f"units={list(units)!r}: use 'tokens' and/or 'chars'")
    if min_count < 1:
        raise CritwinError("min_count: must be >= 1")
    outputs = tuple(outputs)
    if not outputs:
        raise CritwinError("outputs: no samples; draw at least one output")
    if "tokens" in units and any(o.status == "ok" and o.token_starts is None for o in outputs):
        raise CritwinError("outputs lack token offsets; draw them with decode=tokenizer.decode or use "
                           "units=('chars',)")
    status = Counter(o.status for o in outputs)
    ok = [o for o in outputs if o.choices is not None]
    freq = Counter(o.choices for o in ok)
    mass = prefix_mass or choice_frequencies(outputs)
    ranked = [c for c, n in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
    if top is not None:
        ranked = ranked[:top]

    def label(o: StructuredOutput, unit: Unit) -> Hashable | None:
        if equality == "choices":
            return o.choices
        if o.status == "failed":
            return None
        return tuple(o.tokens) if unit == "tokens" else o.text

    indexes: dict[str, PrefixIndex] = {}
    for unit in units:
        seqs = [o.tokens if unit == "tokens" else o.text for o in outputs]
        indexes[unit] = PrefixIndex(seqs, [label(o, unit) for o in outputs])

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
            fit_rows += _plateau_rows(target, st, ci_level)
            h, w = _windows_at_deciding(st)
            hits += h
            total_w += w
        targets.append(target)

    fit = pd.DataFrame(
        fit_rows,
        columns=[
            "target", "unit", "choices_revealed", "j_lo", "j_hi", "n", "n_kept", "measured",
            "ci_lo", "ci_hi", "predicted", "residual", "z", "covered",
        ],
    )
    res = fit["residual"].to_numpy(float) if len(fit) else np.array([])
    finite = res[np.isfinite(res)]
    summary = {
        "n_samples": len(outputs),
        "status_counts": dict(status),
        "n_ok": len(ok),
        "n_distinct": len(freq),
        "n_targets": len(targets),
        "equality": equality,
        "prediction": "exact" if prefix_mass is not None else "choice_frequencies",
        "n_plateaus": int(len(fit)),
        "max_abs_residual": float(np.max(np.abs(finite))) if finite.size else None,
        "rmse": float(np.sqrt(np.mean(finite**2))) if finite.size else None,
        "coverage": float(fit["covered"].mean()) if len(fit) else None,
        "ci_level": ci_level,
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


OUTPUTS = "outputs.parquet"
FIT = "fit.csv"
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
    for tg in result.targets:
        for unit, st in tg.staircases.items():
            name = case_name(tg, unit)
            run.write_curve(name, st.curve, exact=st.predicted)
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
    outputs_frame(result.outputs).to_parquet(run.path / OUTPUTS, index=False)
    result.fit.to_csv(run.path / FIT, index=False)
    (run.path / SUMMARY).write_text(json.dumps(to_plain(result.summary), indent=1))
    return run


def to_plain(obj: Any) -> Any:
    """JSON-able copy (tuples to lists, numpy scalars to Python, dict keys to strings)."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def read_run(run: RunDir) -> tuple[ChoiceTemplate, list[StructuredOutput]]:
    """The template and the raw outputs of a structured run directory (to re-analyze without a model)."""
    if run.config.get("experiment") != "structured" or not (run.path / OUTPUTS).is_file():
        raise CritwinError(f"run dir {run.path}: not a `critwin structured` run (no {OUTPUTS}); pass one")
    template = ChoiceTemplate.parse(run.config["template"])
    return template, outputs_from_frame(pd.read_parquet(run.path / OUTPUTS))
