"""The forward–reverse experiment FR_t: schedule × n resamples of one sample → a `Curve`.

For one sample x and each forward time t in a schedule (t grows with degradation, in the sampler's
`time_unit`), `scan` asks the sampler for n draws X' ~ p(· | Y_t) (one batched `forward_reverse` call),
reads a feature off every draw and counts how often the feature of x is kept. The result, a `Curve`,
holds per t the counts, p̂ = P(kept), Wilson intervals and the distribution of labels. Failed draws
(a backend `Failure`, or a feature that returns None for an unparseable sample) are counted separately,
never as outcomes.

Curves are additive: `scan(..., curve=old)` adds draws at (possibly new) t values to an existing curve,
which is what an adaptive search needs (spend more samples where the curve moves).
"""

from __future__ import annotations

import json
import math
import numbers
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from critwin.errors import CritwinError
from critwin.samplers.base import Failure, Sampler
from critwin.stats import wilson_interval  # re-exported: critwin.scan.wilson_interval stays importable

Label = Hashable
Feature = Callable[[Any], Label | None]

# Columns of `Curve.to_frame()`; `Curve.from_frame` needs at least these.
CURVE_COLUMNS = ("t", "n_valid", "n_kept", "n_failed", "label_counts", "reference", "time_unit", "t_max")


# ----------------------------------------------------------------------------------------------------------
# Labels on disk: JSON text. Tuples become JSON arrays and come back as tuples (labels are hashable, so a
# list is never a label and the decoding is unambiguous); numpy scalars become Python scalars.
# ----------------------------------------------------------------------------------------------------------
def _plain(label: Any) -> Any:
    if isinstance(label, bool | str) or label is None:
        return label
    if isinstance(label, numbers.Integral):
        return int(label)
    if isinstance(label, numbers.Real):
        return float(label)
    if isinstance(label, tuple):
        return [_plain(v) for v in label]
    raise CritwinError(
        f"label {label!r} of type {type(label).__name__} cannot be saved; "
        "make the feature return str, int, float, bool or tuples of these"
    )


def _unplain(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_unplain(v) for v in value)
    return value


def encode_label(label: Label) -> str:
    """The JSON text of a label (str, int, float, bool or nested tuples of these)."""
    return json.dumps(_plain(label), allow_nan=False)


def decode_label(text: str) -> Label:
    """Inverse of `encode_label`."""
    return _unplain(json.loads(text))


# ----------------------------------------------------------------------------------------------------------
# Curve
# ----------------------------------------------------------------------------------------------------------
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
                    json.dumps([[_plain(k), int(v)] for k, v in sorted(c.items(), key=lambda kv: str(kv[0]))])
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
            counts = tuple({_unplain(k): int(v) for k, v in json.loads(s)} for s in df["label_counts"])
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
                f"schedule: t={t:g} is outside [0, {t_max:g}] ({unit}) for this sampler; "
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


def scan(
    sampler: Sampler,
    x: Any,
    schedule: Sequence[float],
    n: int,
    feature: Feature,
    *,
    seed: int | np.random.Generator = 0,
    reference: Label | None = None,
    curve: Curve | None = None,
    on_draws: Callable[[Draws], None] | None = None,
) -> Curve:
    """Run FR_t on sample `x` for every t in `schedule` (forward times, t grows with degradation) with n
    resamples each, all in ONE `sampler.forward_reverse` call, and count how often `feature` is kept.

    A feature may offer `feature.batch(samples) -> labels` to label a whole row of draws at once.
    reference: the label counted as "kept" (default: feature(x)). curve: an existing curve of the same
    sample to add these draws to (new t values are inserted, repeated ones pooled); use a fresh seed for
    each addition. on_draws: called with the raw `Draws` before the curve is built (to save them).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise CritwinError(f"n={n!r} must be a whole number >= 1 (resamples per t)")
    n = int(n)
    unit = getattr(sampler, "time_unit", None)
    t_max = getattr(sampler, "t_max", None)
    if not isinstance(unit, str) or t_max is None or not callable(getattr(sampler, "forward_reverse", None)):
        raise CritwinError(
            f"{type(sampler).__name__} is not a Sampler (needs time_unit, t_max, forward_reverse)"
        )
    ts = _check_schedule(schedule, float(t_max), unit)
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

    out = sampler.forward_reverse(x, ts, n, rng)
    if len(out) != len(ts) or any(len(row) != n for row in out):
        raise CritwinError(
            f"{type(sampler).__name__}.forward_reverse returned {len(out)} rows for {len(ts)} times "
            f"(need {n} draws each); the backend breaks the Sampler contract"
        )
    labels: list[list[Label | None]] = []
    failures: list[list[str | None]] = []
    batch = getattr(feature, "batch", None)
    for t, row in zip(ts, out, strict=True):
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
        on_draws(Draws(tuple(ts), [list(r) for r in out], labels, failures, reference))

    order = np.argsort(ts, kind="stable")
    counts = [Counter(lab for lab in labels[i] if lab is not None) for i in order]
    new = Curve(
        t=np.array(ts)[order],
        n_valid=[sum(c.values()) for c in counts],
        n_kept=[c.get(reference, 0) for c in counts],
        n_failed=[sum(lab is None for lab in labels[i]) for i in order],
        label_counts=tuple(dict(c) for c in counts),
        reference=reference,
        time_unit=unit,
        t_max=float(t_max),
    )
    return new if curve is None else curve.merge(new)
