"""The forward–reverse experiment FR_t: schedule × n resamples of one sample → a `Curve` (`cw.scan`).

For one sample x and each forward time t in a schedule (t grows with degradation, in the sampler's
`time_unit`), `scan` asks the sampler for n draws X' ~ p(· | Y_t) (one batched `forward_reverse` call),
reads a feature off every draw and counts how often the feature of x is kept. The result, a `Curve`,
holds per t the counts, p̂ = P(kept), Wilson intervals and the distribution of labels. Failed draws
(a backend `Failure`, or a feature that returns None for an unparseable sample) are counted separately,
never as outcomes.

Which (t, n) to draw is decided by a strategy (`critwin.strategies`): the schedule form
`scan(sampler, x, schedule, n, feature)` is the one-round `Fixed(schedule, n)`; `scan(..., strategy=s)` asks
`s` round by round, with the curve so far, until it stops. Curves are additive: `scan(..., curve=old)` adds
draws at (possibly new) t values to an existing curve.
"""

from __future__ import annotations

import json
import math
import numbers
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from critwin.errors import CritwinError
from critwin.samplers.base import ForwardReverse
from critwin.serialize import decode_label, encode_label, label_from_plain, plain_label
from critwin.stats import wilson_interval
from critwin.types import Failure, Feature, Label

__all__ = [
    "CURVE_COLUMNS", "Curve", "Draws", "Feature", "Journal", "Label", "decode_label", "encode_label", "scan",
]

# Columns of `Curve.to_frame()`; `Curve.from_frame` needs at least these.
CURVE_COLUMNS = ("t", "n_valid", "n_kept", "n_failed", "label_counts", "reference", "time_unit", "t_max")


# ----------------------------------------------------------------------------------------------------------
# Curve
# ----------------------------------------------------------------------------------------------------------
def _by_text(item: tuple[Any, int]) -> str:
    return str(item[0])


def _frozen(a: Any, dtype: Any) -> np.ndarray:
    arr = np.array(a, dtype=dtype, copy=True).reshape(-1)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Curve:
    """Fraction of resamples that keep the feature of one sample, per forward time t.

    t: ascending forward times (t grows with degradation; units `time_unit`, at most `t_max`).
    n_valid: draws with a label; n_kept: draws whose label equals `reference`; n_failed: draws that
    failed (backend `Failure` or feature returned None). label_counts[i]: label -> count at t[i].
    """

    t: np.ndarray
    n_valid: np.ndarray
    n_kept: np.ndarray
    n_failed: np.ndarray
    label_counts: tuple[Mapping[Label, int], ...]
    reference: Label
    time_unit: str
    t_max: float | None = None

    def __post_init__(self) -> None:
        t = _frozen(self.t, float)
        object.__setattr__(self, "t", t)
        for name in ("n_valid", "n_kept", "n_failed"):
            object.__setattr__(self, name, _frozen(getattr(self, name), np.int64))
        counts = tuple(dict(c) for c in self.label_counts)
        object.__setattr__(self, "label_counts", counts)
        m = len(t)
        if not (len(self.n_valid) == len(self.n_kept) == len(self.n_failed) == len(counts) == m):
            raise CritwinError("Curve: t, n_valid, n_kept, n_failed and label_counts must have equal lengths")
        if m and (not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0)):
            raise CritwinError("Curve: t must be finite and strictly ascending")
        if np.any(self.n_valid < 0) or np.any(self.n_failed < 0) or np.any(self.n_kept < 0):
            raise CritwinError("Curve: counts must be non-negative")
        for i, c in enumerate(counts):
            if sum(c.values()) != self.n_valid[i] or c.get(self.reference, 0) != self.n_kept[i]:
                raise CritwinError(
                    f"Curve: label_counts at t={t[i]:g} disagree with n_valid/n_kept; rebuild the curve"
                )
        try:
            hash(self.reference)
        except TypeError as err:
            raise CritwinError(f"Curve: reference {self.reference!r} is not hashable") from err

    # -- derived numbers ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.t)

    @property
    def n_total(self) -> np.ndarray:
        """All draws per t, failed ones included."""
        return self.n_valid + self.n_failed

    @property
    def p_hat(self) -> np.ndarray:
        """Estimated P(kept) = n_kept / n_valid per t (NaN where no draw has a label)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_valid > 0, self.n_kept / np.maximum(self.n_valid, 1), np.nan)

    def wilson(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Wilson interval (lo, hi) for P(kept) per t at confidence `level`; NaN where n_valid == 0."""
        return wilson_interval(self.n_kept, self.n_valid, level)

    def fraction_kept(self) -> np.ndarray:
        """Display coordinate for LLMs: fraction of the response kept, 1 − t/t_max (needs t_max)."""
        if not self.t_max:
            raise CritwinError("Curve.fraction_kept needs t_max (the response length); set it when scanning")
        return 1.0 - self.t / self.t_max

    def label_distribution(self, i: int) -> dict[Label, float]:
        """Share of each label among the valid draws at t[i]."""
        total = int(self.n_valid[i])
        return {k: v / total for k, v in self.label_counts[i].items()} if total else {}

    # -- combining ---------------------------------------------------------------------------------------
    def merge(self, other: Curve) -> Curve:
        """Pool the draws of two curves of the same sample (same reference and time unit)."""
        if other.reference != self.reference or other.time_unit != self.time_unit:
            raise CritwinError(
                f"cannot add draws with reference {other.reference!r} ({other.time_unit}) to a curve with "
                f"reference {self.reference!r} ({self.time_unit}); pass the same reference and sampler"
            )
        rows: dict[float, list[Any]] = {}
        for c in (self, other):
            for i, t in enumerate(c.t):
                r = rows.setdefault(float(t), [0, 0, 0, Counter()])
                r[0] += int(c.n_valid[i])
                r[1] += int(c.n_kept[i])
                r[2] += int(c.n_failed[i])
                r[3].update(c.label_counts[i])
        ts = sorted(rows)
        return Curve(
            t=np.array(ts),
            n_valid=[rows[t][0] for t in ts],
            n_kept=[rows[t][1] for t in ts],
            n_failed=[rows[t][2] for t in ts],
            label_counts=tuple(dict(rows[t][3]) for t in ts),
            reference=self.reference,
            time_unit=self.time_unit,
            t_max=self.t_max if self.t_max is not None else other.t_max,
        )

    # -- on-disk form ------------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per t: t, n_valid, n_kept, n_failed, p_hat, label_counts (JSON list of [label, count]),
        reference (JSON), time_unit, t_max. Parquet-able; `Curve.from_frame` reads it back."""
        ref = encode_label(self.reference)
        return pd.DataFrame(
            {
                "t": self.t.astype(float),
                "n_valid": self.n_valid.astype(np.int64),
                "n_kept": self.n_kept.astype(np.int64),
                "n_failed": self.n_failed.astype(np.int64),
                "p_hat": self.p_hat,
                "label_counts": [
                    json.dumps([[plain_label(k), int(v)] for k, v in sorted(c.items(), key=_by_text)])
                    for c in self.label_counts
                ],
                "reference": [ref] * len(self),
                "time_unit": [self.time_unit] * len(self),
                "t_max": [np.nan if self.t_max is None else float(self.t_max)] * len(self),
            }
        )

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Curve:
        """Rebuild a Curve from `to_frame()` rows (any row order); CritwinError if columns are missing."""
        missing = [c for c in CURVE_COLUMNS if c not in df.columns]
        if missing:
            raise CritwinError(f"curve table lacks columns {missing}; it was not written by critwin")
        if len(df) == 0:
            raise CritwinError("curve table is empty; scan at least one t")
        df = df.sort_values("t")
        refs = set(df["reference"])
        units = set(df["time_unit"])
        if len(refs) != 1 or len(units) != 1:
            raise CritwinError("curve table mixes several curves; select one curve's rows first")
        try:
            counts = tuple(
                {label_from_plain(k): int(v) for k, v in json.loads(s)} for s in df["label_counts"]
            )
            reference = decode_label(refs.pop())
        except (ValueError, TypeError) as err:
            raise CritwinError(
                f"curve table has unreadable label_counts/reference ({err}); rewrite it"
            ) from err
        t_max = float(df["t_max"].iloc[0])
        return cls(
            t=df["t"].to_numpy(float),
            n_valid=df["n_valid"].to_numpy(np.int64),
            n_kept=df["n_kept"].to_numpy(np.int64),
            n_failed=df["n_failed"].to_numpy(np.int64),
            label_counts=counts,
            reference=reference,
            time_unit=str(units.pop()),
            t_max=None if math.isnan(t_max) else t_max,
        )


# ----------------------------------------------------------------------------------------------------------
# scan
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Draws:
    """The raw draws of one `scan` call, handed to `on_draws` (e.g. to save them in a run directory).

    samples[i][j], labels[i][j], failures[i][j] belong to ts[i], draw j; failures holds the reason of a
    failed draw (backend Failure or "feature returned None") and None for a valid one.
    """

    ts: tuple[float, ...]
    samples: list[list[Any]]
    labels: list[list[Label | None]]
    failures: list[list[str | None]]
    reference: Label


@runtime_checkable
class Journal(Protocol):
    """Where a scan keeps its draws as it makes them, so that a killed scan resumes without redrawing.

    `replay(call, ts, n)`: the draws an earlier attempt made in the scan's `call`-th `forward_reverse`
    call (0, 1, …) when they were for the same times `ts` and the same n, else None (then the scan draws,
    and a journal drops what it held from that call on). `record(call, draws)`: store new draws (before
    they are counted). Replayed draws keep their stored labels; nothing is redrawn or relabelled.
    """

    def replay(self, call: int, ts: tuple[float, ...], n: int) -> Draws | None: ...

    def record(self, call: int, draws: Draws) -> None: ...


def _check_schedule(schedule: Sequence[float], t_max: float, unit: str) -> list[float]:
    try:
        ts = [float(t) for t in schedule]
    except (TypeError, ValueError) as err:
        raise CritwinError(
            f"schedule must be a list of numbers (forward times in {unit}); got {schedule!r}"
        ) from err
    if not ts:
        raise CritwinError("schedule is empty; give at least one forward time t")
    for t in ts:
        if not math.isfinite(t) or t < 0 or t > t_max:
            raise CritwinError(
                f"schedule: t={t:g} is outside [0, {t_max:g}] ({unit}) for this sample; "
                "use times in that range"
            )
    if len(set(ts)) != len(ts):
        raise CritwinError("schedule has repeated t values; list each t once (raise n for more draws)")
    return ts


def _message(err: BaseException) -> str:
    msg = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}({msg!r})"


def _check_hashable(label: Label, where: str) -> None:
    try:
        hash(label)
    except TypeError as err:
        raise CritwinError(
            f"feature returned an unhashable {type(label).__name__} on {where}; "
            "return a hashable label such as a str, int or tuple"
        ) from err


def _label_of(feature: Feature, sample: Any, where: str) -> Label | None:
    """The label of the scanned sample itself; a feature that raises on it is a one-line CritwinError (with
    no reference label there is no curve to measure)."""
    try:
        label = feature(sample)
    except Exception as err:  # the feature is user code: report which sample broke it, on one line
        raise CritwinError(
            f"feature raised {_message(err)} on {where}; "
            "fix the feature or make it return None for samples it cannot read"
        ) from err
    if label is not None:
        _check_hashable(label, where)
    return label


def _draw_label(feature: Feature, sample: Any, where: str) -> tuple[Label | None, str | None]:
    """(label, None), or (None, why) for a draw the feature could not label. A feature that raises is user
    code failing on one draw: that draw is a failed item with the error as its reason, and the scan goes
    on. An unhashable label is a broken feature contract and stays an error."""
    try:
        label = feature(sample)
    except Exception as err:  # user code: this draw fails, the others are still measured
        return None, f"feature raised {_message(err)}"
    if label is None:
        return None, "feature returned None"
    _check_hashable(label, where)
    return label, None


def _batch_labels(
    batch: Callable[[list[Any]], Sequence[Label | None]], samples: list[Any], t: float
) -> tuple[list[Label | None], list[str | None]]:
    """(labels, failure reasons) of the draws at one t from `feature.batch`. When the batch call raises,
    every draw it was given is a failed item with that error (the draws at other times are unaffected)."""
    try:
        found = list(batch(samples))
    except Exception as err:  # user code: these draws fail with the reason, the scan goes on
        return [None] * len(samples), [f"feature.batch raised {_message(err)}"] * len(samples)
    if len(found) != len(samples):
        raise CritwinError(
            f"feature.batch returned {len(found)} labels for {len(samples)} samples at t={t:g}"
        )
    for j, label in enumerate(found):
        if label is not None:
            _check_hashable(label, f"a draw at t={t:g} (#{j})")
    return found, [None if label is not None else "feature returned None" for label in found]


MAX_ROUNDS = 1000
"""Default bound on the rounds of one scan: a strategy still proposing draws after this many is an error."""


def _sampler_info(sampler: Any, x: Any) -> tuple[str, float]:
    """(time unit, t_max of this sample): the sample's own `t_max` when it has one, else the sampler's."""
    unit = getattr(sampler, "time_unit", None)
    t_max = getattr(sampler, "t_max", None)
    if not isinstance(unit, str) or t_max is None or not callable(getattr(sampler, "forward_reverse", None)):
        raise CritwinError(
            f"{type(sampler).__name__} is not a Sampler (needs time_unit, t_max, forward_reverse)"
        )
    own = getattr(x, "t_max", None)
    if own is not None:
        if isinstance(own, bool) or not isinstance(own, numbers.Real) or not math.isfinite(own) or own < 0:
            raise CritwinError(
                f"the scanned sample's t_max={own!r} is not a finite number >= 0; fix its t_max (its length)"
            )
        return unit, float(own)
    return unit, float(t_max)


def _check_round(requests: Any, who: str, t_max: float, unit: str) -> dict[int, list[float]]:
    """The times of one round grouped by n (groups and times in the order proposed); one-line errors naming
    the strategy for anything that is not a Request with 0 <= t <= t_max and a whole n >= 1."""
    if requests is None or isinstance(requests, str | bytes) or not isinstance(requests, Sequence | tuple):
        raise CritwinError(
            f"strategy {who} returned {type(requests).__name__} from propose(); return a list of "
            "Request(t, n), or an empty list to stop"
        )
    groups: dict[int, list[float]] = {}
    seen: set[float] = set()
    for req in requests:
        if hasattr(req, "t") and hasattr(req, "n"):
            t, n = req.t, req.n
        elif isinstance(req, tuple) and len(req) == 2:
            t, n = req
        else:
            raise CritwinError(f"strategy {who} proposed {req!r}; propose Request(t, n) values")
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise CritwinError(
                f"strategy {who} proposed t={t!r}; t must be a number (a forward time in {unit})"
            )
        t = float(t)
        if not math.isfinite(t) or t < 0 or t > t_max:
            raise CritwinError(
                f"strategy {who} proposed t={t:g}, outside [0, {t_max:g}] ({unit}) for this sample; propose "
                "times in that range"
            )
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise CritwinError(
                f"strategy {who} proposed n={n!r} at t={t:g}; n must be a whole number >= 1 (draws at t)"
            )
        if t in seen:
            raise CritwinError(
                f"strategy {who} proposed t={t:g} twice in one round; propose each t once per round (raise "
                "its n for more draws)"
            )
        seen.add(t)
        groups.setdefault(int(n), []).append(t)
    return groups


def _counted(ts: Sequence[float], labels: Sequence[Sequence[Label | None]], reference: Label, unit: str,
             t_max: float) -> Curve:
    order = np.argsort(ts, kind="stable")
    counts = [Counter(lab for lab in labels[i] if lab is not None) for i in order]
    return Curve(
        t=np.array(ts, dtype=float)[order],
        n_valid=[sum(c.values()) for c in counts],
        n_kept=[c.get(reference, 0) for c in counts],
        n_failed=[sum(lab is None for lab in labels[i]) for i in order],
        label_counts=tuple(dict(c) for c in counts),
        reference=reference,
        time_unit=unit,
        t_max=t_max,
    )


def _draw(
    sampler: ForwardReverse,
    x: Any,
    ts: list[float],
    n: int,
    feature: Feature,
    rng: np.random.Generator,
    reference: Label,
    unit: str,
    t_max: float,
    on_draws: Callable[[Draws], None] | None,
) -> Curve:
    """One batched `forward_reverse` call: n draws at every t of `ts`, labelled, handed to `on_draws`,
    counted into a curve. The backend may return its rows as a list or yield them one t at a time
    (streaming): each row is labelled as it arrives, and kept only when `on_draws` needs the samples."""
    labels: list[list[Label | None]] = []
    failures: list[list[str | None]] = []
    kept_rows: list[list[Any]] = []
    batch = getattr(feature, "batch", None)
    rows = iter(sampler.forward_reverse(x, ts, n, rng))

    def broken(got: str) -> CritwinError:
        return CritwinError(
            f"{type(sampler).__name__}.forward_reverse returned {got} for {len(ts)} times (need {n} draws "
            "each); the backend breaks the Sampler contract"
        )

    for i, t in enumerate(ts):
        row = next(rows, None)
        if row is None:
            raise broken(f"{i} rows")
        row = list(row)
        if len(row) != n:
            raise broken(f"a row of {len(row)} draws at t={t:g}")
        ok = [j for j, sample in enumerate(row) if not isinstance(sample, Failure)]
        lab_row: list[Label | None] = [None] * n
        fail_row: list[str | None] = [
            (s.reason or "backend failure") if isinstance(s, Failure) else None for s in row
        ]
        if callable(batch) and ok:
            found, why = _batch_labels(batch, [row[j] for j in ok], t)
            for j, label, reason in zip(ok, found, why, strict=True):
                lab_row[j], fail_row[j] = label, reason
        else:
            for j in ok:
                lab_row[j], fail_row[j] = _draw_label(feature, row[j], f"draw {j} at t={t:g}")
        labels.append(lab_row)
        failures.append(fail_row)
        if on_draws is not None:
            kept_rows.append(row)
    if next(rows, None) is not None:
        raise broken(f"more than {len(ts)} rows")
    if on_draws is not None:
        on_draws(Draws(tuple(ts), kept_rows, labels, failures, reference))
    return _counted(ts, labels, reference, unit, t_max)


def _replayed(draws: Draws, reference: Label, unit: str, t_max: float) -> Curve:
    """The curve of draws an earlier attempt stored (labels as stored; failed draws have no label)."""
    labels = [[None if f is not None else lab for lab, f in zip(lab_row, fail_row, strict=True)]
              for lab_row, fail_row in zip(draws.labels, draws.failures, strict=True)]
    return _counted(list(draws.ts), labels, reference, unit, t_max)


def scan(
    sampler: ForwardReverse,
    x: Any,
    schedule: Sequence[float] | None = None,
    n: int | None = None,
    feature: Feature | None = None,
    *,
    strategy: Any = None,
    seed: int | np.random.Generator = 0,
    reference: Label | None = None,
    curve: Curve | None = None,
    on_draws: Callable[[Draws], None] | None = None,
    max_rounds: int = MAX_ROUNDS,
    journal: Journal | None = None,
) -> Curve:
    """Run FR_t on sample `x` and count how often `feature` is kept, at the forward times (t grows with
    degradation) that `schedule` and `n`, or a `strategy`, ask for.

    `scan(sampler, x, schedule, n, feature)`: n resamples at every t of `schedule`, all in ONE
    `sampler.forward_reverse` call; it is `strategy=critwin.strategies.Fixed(schedule, n)`.
    `scan(sampler, x, feature=feature, strategy=s)`: rounds until `s.propose(curve_so_far, t_max)` returns
    an empty sequence; in each round the requests with equal n are drawn in one `forward_reverse` call and
    pooled into the curve. The first sampler call draws from the Generator made from `seed` (a Generator
    is used as it is), so a one-round strategy uses exactly the random stream of the schedule form; call c
    >= 1 draws from the c-th child spawned from it, so its numbers do not depend on how many random numbers
    earlier calls used (a resumed scan replays them without drawing). A strategy that still proposes after
    `max_rounds` rounds is an error.

    t_max: the sample's own `x.t_max` when it has one (a response knows its length), else `sampler.t_max`;
    every t must lie in [0, t_max] and the curve carries it. A feature may offer `feature.batch(samples) ->
    labels` to label a whole row of draws at once. reference: the label counted as "kept" (default:
    feature(x)). curve: an existing curve of the same sample to add these draws to (new t values are
    inserted, repeated ones pooled); use a fresh seed for each addition. on_draws: called with the raw
    `Draws` of every `forward_reverse` call before they are counted (to save them). journal: a `Journal`
    that stores every call's draws as they are made and hands back those of an earlier, interrupted
    attempt, which are replayed instead of drawn (strategies are functions of the curve, so the same
    rounds come back).
    """
    if strategy is None:
        if schedule is None or n is None:
            raise CritwinError(
                "scan needs a schedule and n (resamples per t), or strategy=...; pass one of the two"
            )
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise CritwinError(f"n={n!r} must be a whole number >= 1 (resamples per t)")
    elif schedule is not None or n is not None:
        raise CritwinError(
            "scan got both a schedule/n and strategy=; pass one of them (Fixed(schedule, n) is the schedule "
            "form)"
        )
    elif not callable(getattr(strategy, "propose", None)):
        raise CritwinError(
            f"strategy={type(strategy).__name__} has no propose(curve, t_max); pass a critwin.strategies "
            "Strategy such as Fixed(schedule, n)"
        )
    if feature is None:
        raise CritwinError("scan needs feature=: a function from a sample to its label")
    unit, t_max = _sampler_info(sampler, x)
    if strategy is None:
        ts = _check_schedule(schedule, t_max, unit)
        plan = [(t, int(n)) for t in ts]

        def propose(so_far: Curve | None, _t_max: float) -> list[tuple[float, int]]:
            return plan if so_far is None else []

        who = "schedule"
    else:
        propose, who = strategy.propose, type(strategy).__name__
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, numbers.Integral) or max_rounds < 1:
        raise CritwinError(f"max_rounds={max_rounds!r} must be a whole number >= 1")
    if reference is None:
        reference = _label_of(feature, x, "the scanned sample x")
        if reference is None:
            raise CritwinError(
                "feature returned None for the scanned sample x itself; pass reference=... or scan a sample "
                "the feature can read"
            )
    else:
        try:
            hash(reference)
        except TypeError as err:
            raise CritwinError(f"reference {reference!r} is not hashable; pass a str, int or tuple") from err
    if curve is not None and (curve.reference != reference or curve.time_unit != unit):
        raise CritwinError(
            f"curve= has reference {curve.reference!r} ({curve.time_unit}) but this scan uses {reference!r} "
            f"({unit}); add draws only to a curve of the same sample, feature and sampler"
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    mine: Curve | None = None
    call = 0
    for done in range(int(max_rounds) + 1):
        groups = _check_round(propose(mine, t_max), who, t_max, unit)
        if not groups:
            break
        if done == max_rounds:
            raise CritwinError(
                f"strategy {who} still proposes draws after max_rounds={max_rounds} rounds; make it return "
                "an empty list to stop, or raise max_rounds"
            )
        for n_t, ts_n in groups.items():
            stored = journal.replay(call, tuple(ts_n), n_t) if journal is not None else None
            if stored is not None:
                new = _replayed(stored, reference, unit, t_max)
            else:
                gen = rng if call == 0 else rng.spawn(1)[0]
                save = on_draws
                if journal is not None:
                    def save(d: Draws, c: int = call) -> None:
                        journal.record(c, d)
                        if on_draws is not None:
                            on_draws(d)
                new = _draw(sampler, x, ts_n, n_t, feature, gen, reference, unit, t_max, save)
            if call > 0 and stored is not None:
                rng.spawn(1)  # keep the spawn count of an uninterrupted scan
            call += 1
            mine = new if mine is None else mine.merge(new)
    if mine is None:
        if curve is not None:
            return curve
        raise CritwinError(
            f"strategy {who} proposed nothing in its first round; propose at least one Request(t, n)"
        )
    return mine if curve is None else curve.merge(mine)
