"""Run directories: everything a run produced, enough to re-draw its report without any model.

Layout (format version `FORMAT`; every file is replaced atomically, so a crash leaves the files that were
already written readable):

```
RUN_DIR/
  config.json        {"critwin_run": FORMAT, "experiment": str, "created": ISO time, ...run settings}
  samples.parquet/   one part-NNNNN.parquet per scan call (read the folder with pandas.read_parquet):
                       case (str), t (float64), draw (int64),
                       label (str, JSON of the label; null when failed),
                       failed (bool), failure (str; reason, null when valid), sample (str, JSON of the sample)
  curves.parquet     one row per (case, t): case (str), then `Curve.to_frame()` columns
                       t, n_valid, n_kept, n_failed, p_hat, label_counts, reference, time_unit, t_max,
                       then exact (float64, exact P(kept) or NaN), exact_se (float64; 0 when exact)
  windows.json       {"critwin_run": FORMAT, "cases": {case: {
                         "detected": [Window.to_dict()...], "paper": [...],
                         "theory": [{"lo": t, "hi": t, "lo_interval": [a, b], "hi_interval": [a, b],
                                     "label": str}...], "eps": float | null, "meta": {...}}}}
  index.html, summary.json   the report (`critwin report RUN_DIR` rewrites them from the files above)
```

Times are forward times t (t grows with degradation) in each curve's `time_unit`. Only config.json carries
a time stamp, so the same seed gives byte-identical files otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from critwin.errors import CritwinError
from critwin.scan import Curve, Draws, encode_label
from critwin.serialize import jsonable
from critwin.windows import Window

FORMAT = 1
CONFIG = "config.json"
SAMPLES = "samples.parquet"
CURVES = "curves.parquet"
WINDOWS = "windows.json"


@dataclass(frozen=True)
class TheoryInterval:
    """A window predicted by the theory, [lo, hi] in forward time, with the edges' uncertainty intervals."""

    lo: float
    hi: float
    lo_interval: tuple[float, float] | None = None
    hi_interval: tuple[float, float] | None = None
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (infinite edges become null)."""

        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "lo": num(self.lo),
            "hi": num(self.hi),
            "lo_interval": None if self.lo_interval is None else [num(v) for v in self.lo_interval],
            "hi_interval": None if self.hi_interval is None else [num(v) for v in self.hi_interval],
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TheoryInterval:
        """Inverse of `to_dict` (null edges become ±inf)."""

        def num(v: Any, default: float) -> float:
            return default if v is None else float(v)

        try:
            return cls(
                lo=num(d["lo"], -math.inf),
                hi=num(d["hi"], math.inf),
                lo_interval=None
                if d.get("lo_interval") is None
                else (num(d["lo_interval"][0], -math.inf), num(d["lo_interval"][1], math.inf)),
                hi_interval=None
                if d.get("hi_interval") is None
                else (num(d["hi_interval"][0], -math.inf), num(d["hi_interval"][1], math.inf)),
                label=str(d.get("label", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise CritwinError(
                f"theory window record {d!r} is malformed ({err}); rewrite windows.json"
            ) from err


def theory_intervals(windows: Sequence[Any], labels: Sequence[str] | None = None) -> list[TheoryInterval]:
    """Convert `critwin.theory.TheoryWindow`s (edges with lo/hi uncertainty; None = no edge) to intervals."""
    out = []
    for i, w in enumerate(windows):
        lo = -math.inf if w.lo is None else float(w.lo.t)
        hi = math.inf if w.hi is None else float(w.hi.t)
        out.append(
            TheoryInterval(
                lo=lo,
                hi=hi,
                lo_interval=None if w.lo is None else (float(w.lo.lo), float(w.lo.hi)),
                hi_interval=None if w.hi is None else (float(w.hi.lo), float(w.hi.hi)),
                label="" if labels is None else str(labels[i]),
            )
        )
    return out


@dataclass
class CaseRecord:
    """Everything stored about one case (one scanned sample with one feature)."""

    name: str
    curve: Curve | None = None
    exact: np.ndarray | None = None
    exact_se: np.ndarray | None = None
    detected: list[Window] = field(default_factory=list)
    paper: list[Window] = field(default_factory=list)
    theory: list[TheoryInterval] = field(default_factory=list)
    eps: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def encode_sample(sample: Any) -> str:
    """JSON text of a sample: arrays/tuples as lists, dataclasses as dicts, objects with `to_dict()` through
    it, anything else as its repr."""

    def plain(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, list | tuple):
            return [plain(u) for u in v]
        if isinstance(v, dict):
            return {str(k): plain(u) for k, u in v.items()}
        if isinstance(v, str | int | bool) or v is None:
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else str(v)
        if callable(getattr(v, "to_dict", None)):
            return plain(v.to_dict())
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return plain(dataclasses.asdict(v))
        return repr(v)

    return json.dumps(plain(sample), allow_nan=False)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n"))


class RunDir:
    """A run directory (see the module docstring). Create with `RunDir.create`, read with `RunDir.open`."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = path
        self.config = config
        self._curves: dict[str, pd.DataFrame] = {}
        self._cases: dict[str, dict[str, Any]] = {}
        self._parts = 0

    # -- creating and opening --------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, experiment: str, config: Mapping[str, Any] | None = None) -> RunDir:
        """Start a run in `path` (created; must be empty or absent) and write config.json."""
        p = Path(path)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise CritwinError(f"--out {p} exists and is not an empty folder; choose a new folder")
        p.mkdir(parents=True, exist_ok=True)
        (p / SAMPLES).mkdir()
        cfg = {
            "critwin_run": FORMAT,
            "experiment": experiment,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **dict(config or {}),
        }
        _write_json(p / CONFIG, cfg)
        run = cls(p, cfg)
        run._write_windows()
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open an existing run directory; CritwinError (one line) when it is missing, foreign or corrupt."""
        p = Path(path)
        if not p.is_dir():
            raise CritwinError(f"run directory {p} does not exist; pass the folder a critwin run wrote")
        if not (p / CONFIG).is_file():
            raise CritwinError(
                f"{p} is not a critwin run directory (no {CONFIG}); pass the folder a run wrote"
            )
        try:
            cfg = json.loads((p / CONFIG).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CritwinError(
                f"{p / CONFIG} is corrupt ({type(err).__name__}); re-run to rewrite it"
            ) from err
        if not isinstance(cfg, dict) or "critwin_run" not in cfg:
            raise CritwinError(f"{p} is not a critwin run directory ({CONFIG} lacks 'critwin_run')")
        if cfg["critwin_run"] != FORMAT:
            raise CritwinError(
                f"{p} has run format {cfg['critwin_run']!r}; this critwin reads format {FORMAT}, "
                "upgrade critwin"
            )
        run = cls(p, cfg)
        run._load()
        return run

    def _load(self) -> None:
        curves = self.path / CURVES
        if curves.exists():
            try:
                df = pd.read_parquet(curves)
            except Exception as err:  # pyarrow raises several types for damaged files
                raise CritwinError(
                    f"{curves} is corrupt ({type(err).__name__}); re-run to rewrite it"
                ) from err
            if "case" not in df.columns:
                raise CritwinError(f"{curves} lacks the 'case' column; it was not written by critwin")
            for name, rows in df.groupby("case", sort=False):
                self._curves[str(name)] = rows.reset_index(drop=True)
        win = self.path / WINDOWS
        if win.exists():
            try:
                obj = json.loads(win.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise CritwinError(f"{win} is corrupt ({type(err).__name__}); re-run to rewrite it") from err
            if not isinstance(obj, dict) or not isinstance(obj.get("cases"), dict):
                raise CritwinError(f"{win} lacks a 'cases' object; it was not written by critwin")
            self._cases = obj["cases"]
        parts = self.path / SAMPLES
        self._parts = len(list(parts.glob("part-*.parquet"))) if parts.is_dir() else 0

    # -- writing -------------------------------------------------------------------------------------------
    def draws_writer(self, case: str) -> Callable[[Draws], None]:
        """A callback for `scan(on_draws=...)` that saves the raw draws of `case`."""
        return lambda draws: self.write_draws(case, draws)

    def write_draws(self, case: str, draws: Draws) -> None:
        """Append the raw draws of one scan call as a new part of samples.parquet."""
        rows: dict[str, list[Any]] = {
            k: [] for k in ("case", "t", "draw", "label", "failed", "failure", "sample")
        }
        for i, t in enumerate(draws.ts):
            for j, sample in enumerate(draws.samples[i]):
                label = draws.labels[i][j]
                rows["case"].append(case)
                rows["t"].append(float(t))
                rows["draw"].append(j)
                rows["label"].append(None if label is None else encode_label(label))
                rows["failed"].append(draws.failures[i][j] is not None)
                rows["failure"].append(draws.failures[i][j])
                rows["sample"].append(encode_sample(sample))
        df = pd.DataFrame(rows).astype(
            {
                "case": "string",
                "t": "float64",
                "draw": "int64",
                "label": "string",
                "failed": "bool",
                "failure": "string",
                "sample": "string",
            }
        )
        (self.path / SAMPLES).mkdir(exist_ok=True)
        target = self.path / SAMPLES / f"part-{self._parts:05d}.parquet"
        _atomic_write(target, lambda p: df.to_parquet(p, index=False))
        self._parts += 1

    def write_curve(
        self,
        case: str,
        curve: Curve,
        exact: Sequence[float] | None = None,
        exact_se: Sequence[float] | None = None,
    ) -> None:
        """Store (or replace) the curve of `case` and its exact values (NaN: unknown) in curves.parquet."""
        df = curve.to_frame()
        m = len(df)
        ex = np.full(m, np.nan) if exact is None else np.asarray(exact, dtype=float)
        se = np.zeros(m) if exact_se is None else np.asarray(exact_se, dtype=float)
        if ex.shape != (m,) or se.shape != (m,):
            raise CritwinError(f"exact values for case {case!r}: need one per curve point ({m})")
        df.insert(0, "case", case)
        df["exact"] = ex
        df["exact_se"] = se
        self._curves[case] = df
        table = pd.concat(list(self._curves.values()), ignore_index=True)
        _atomic_write(self.path / CURVES, lambda p: table.to_parquet(p, index=False))

    def write_case(
        self,
        case: str,
        *,
        detected: Sequence[Window] = (),
        paper: Sequence[Window] = (),
        theory: Sequence[TheoryInterval] = (),
        eps: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Store (or replace) the windows and display metadata of `case` in windows.json."""
        self._cases[case] = {
            "detected": [w.to_dict() for w in detected],
            "paper": [w.to_dict() for w in paper],
            "theory": [w.to_dict() for w in theory],
            "eps": eps,
            "meta": jsonable(dict(meta or {})),
        }
        self._write_windows()

    def _write_windows(self) -> None:
        _write_json(self.path / WINDOWS, {"critwin_run": FORMAT, "cases": self._cases})

    # -- reading -------------------------------------------------------------------------------------------
    def case_names(self) -> list[str]:
        """Cases in the order they were first written (curves first, then windows-only cases)."""
        return list(dict.fromkeys([*self._curves, *self._cases]))

    def case(self, name: str) -> CaseRecord:
        """Everything stored about one case."""
        rec = CaseRecord(name)
        if name in self._curves:
            df = self._curves[name]
            for col in ("exact", "exact_se"):
                if col not in df.columns:
                    raise CritwinError(f"{self.path / CURVES} lacks the {col!r} column; re-run to rewrite it")
            df = df.sort_values("t")
            rec.curve = Curve.from_frame(df)
            rec.exact = df["exact"].to_numpy(float)
            rec.exact_se = df["exact_se"].to_numpy(float)
        c = self._cases.get(name)
        if c is not None:
            try:
                rec.detected = [Window.from_dict(w) for w in c.get("detected", [])]
                rec.paper = [Window.from_dict(w) for w in c.get("paper", [])]
                rec.theory = [TheoryInterval.from_dict(w) for w in c.get("theory", [])]
                rec.eps = c.get("eps")
                rec.meta = dict(c.get("meta") or {})
            except (AttributeError, TypeError) as err:
                raise CritwinError(
                    f"{self.path / WINDOWS}: case {name!r} is malformed; re-run to rewrite it"
                ) from err
        return rec

    def cases(self) -> list[CaseRecord]:
        """All cases."""
        return [self.case(n) for n in self.case_names()]

    def read_samples(self) -> pd.DataFrame:
        """All raw draws (empty frame with the schema's columns if none were written)."""
        parts = sorted((self.path / SAMPLES).glob("part-*.parquet"))
        if not parts:
            return pd.DataFrame(columns=["case", "t", "draw", "label", "failed", "failure", "sample"])
        try:
            return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        except Exception as err:
            raise CritwinError(
                f"{self.path / SAMPLES} has a corrupt part ({type(err).__name__}); re-run"
            ) from err


