"""Run directories: everything a run produced, enough to re-draw its report without any model.

Layout (format version `FORMAT`). Raw records are written once, each file atomically (written aside, then
renamed), so a crash at any moment leaves every file either absent or whole. Derived files are projections
of the raw records and are rebuilt whenever they are missing, damaged or behind (`RunDir.open`, `critwin
repair RUN`):

```
RUN_DIR/
  config.json        raw  {"critwin_run": FORMAT, "experiment": str, "created": ISO time, ...run settings}
  .critwin/config.json    raw  a copy of config.json, restored from when config.json is damaged or gone
  samples.parquet/   raw  one part-<case key>-<call>.parquet per scan call (read the folder with
                       pandas.read_parquet): case (str), call (int64: the case's scan call), t (float64),
                       draw (int64), label (str, JSON of the label; null when failed), failed (bool),
                       failure (str; reason, null when valid), sample (str, JSON of the sample)
  cases/             raw  one <case key>.json per case: its curve, exact values, windows, display metadata,
                       its place in the report and the sample parts it was computed from
  <stream>.jsonl     raw  append-only record streams of an experiment (e.g. problems.jsonl); a torn last
                       line (a crash mid-append) is ignored and closed before the next append
  curves.parquet     derived  one row per (case, t): case (str), then `Curve.to_frame()` columns
                       t, n_valid, n_kept, n_failed, p_hat, label_counts, reference, time_unit, t_max,
                       then exact (float64, exact P(kept) or NaN), exact_se (float64; 0 when exact)
  windows.json       derived  {"critwin_run": FORMAT, "cases": {case: {
                         "detected": [Window.to_dict()...], "paper": [...],
                         "theory": [{"lo": t, "hi": t, "lo_interval": [a, b], "hi_interval": [a, b],
                                     "label": str}...], "eps": float | null, "meta": {...}}}}
  index.html, summary.json   derived: the report (`critwin report RUN_DIR` rewrites them)
  damaged/           files that could not be read, moved aside (never deleted) with damaged/log.jsonl
```

A damaged raw file costs only the case it belongs to: `RunDir.open` moves it to damaged/, and the case is
listed in `damaged_cases` so that a resumed run computes it again. Rows are deduplicated on read by
(case, call, t, draw). Times are forward times t (t grows with degradation) in each curve's `time_unit`.
Only config.json carries a time stamp, so the same seed gives byte-identical files otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from critwin.errors import CritwinError
from critwin.files import RUN_CONFIGS, check_run_folder
from critwin.scan import Curve, Draws, encode_label
from critwin.serialize import jsonable
from critwin.windows import Window

FORMAT = 2
CONFIG, CONFIG_COPY = RUN_CONFIGS
SAMPLES = "samples.parquet"
CASES = "cases"
CURVES = "curves.parquet"
WINDOWS = "windows.json"
DAMAGED = "damaged"
SAMPLE_COLUMNS = ("case", "call", "t", "draw", "label", "failed", "failure", "sample")
_SAMPLE_DTYPES = {
    "case": "string",
    "call": "int64",
    "t": "float64",
    "draw": "int64",
    "label": "string",
    "failed": "bool",
    "failure": "string",
    "sample": "string",
}


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
                f"theory window record {d!r} is malformed ({err}); run `critwin repair` on the run"
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


def case_key(case: str) -> str:
    """File-name-safe key of a case name (case names hold '/', spaces, quotes …)."""
    return hashlib.sha1(case.encode("utf-8")).hexdigest()[:16]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a hidden temporary file and a rename: readers see the old file or the new one,
    never a torn one (pyarrow and pandas skip the dot-files of a dataset folder)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    """Atomically write strict JSON (numpy values made plain; non-finite floats are an error)."""
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=indent, allow_nan=False) + "\n"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL record stream; lines that do not parse (a torn last line after a crash, damage) are
    skipped, and so cost only the records they held."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    """Append one record and flush it to disk; a torn last line left by a crash is closed first so that the
    new record stays whole."""
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, 2)
            torn = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        f.write(json.dumps(jsonable(dict(row)), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _curve_record(curve: Curve) -> dict[str, Any]:
    df = curve.to_frame()
    return {
        "t": [float(v) for v in curve.t],
        "n_valid": [int(v) for v in curve.n_valid],
        "n_kept": [int(v) for v in curve.n_kept],
        "n_failed": [int(v) for v in curve.n_failed],
        "label_counts": list(df["label_counts"]),
        "reference": encode_label(curve.reference),
        "time_unit": curve.time_unit,
        "t_max": curve.t_max,
    }


def _curve_frame(rec: Mapping[str, Any]) -> pd.DataFrame:
    m = len(rec["t"])
    t_max = rec.get("t_max")
    n_valid = np.asarray(rec["n_valid"], dtype=np.int64)
    n_kept = np.asarray(rec["n_kept"], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_hat = np.where(n_valid > 0, n_kept / np.maximum(n_valid, 1), np.nan)
    return pd.DataFrame(
        {
            "t": np.asarray(rec["t"], dtype=float),
            "n_valid": n_valid,
            "n_kept": n_kept,
            "n_failed": np.asarray(rec["n_failed"], dtype=np.int64),
            "p_hat": p_hat,
            "label_counts": [str(s) for s in rec["label_counts"]],
            "reference": [str(rec["reference"])] * m,
            "time_unit": [str(rec["time_unit"])] * m,
            "t_max": [np.nan if t_max is None else float(t_max)] * m,
        }
    )


def _nums(values: Sequence[float | None] | None, m: int, default: float) -> list[float | None]:
    if values is None:
        return [None if math.isnan(default) else default] * m
    return [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]


class RunDir:
    """A run directory (see the module docstring). Create with `RunDir.create`, read with `RunDir.open`.

    `healed` lists what `open` repaired (one line each); `damaged_cases` the cases whose raw data was
    damaged or lost, which a resumed run must compute again.
    """

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = path
        self.config = config
        self._records: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, int] = {}
        self._frames: dict[str, tuple[Any, pd.DataFrame]] = {}
        self.healed: list[str] = []
        self.damaged_cases: set[str] = set()

    # -- creating and opening --------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, experiment: str, config: Mapping[str, Any] | None = None) -> RunDir:
        """Start a run in `path` (created; must be empty or absent) and write config.json."""
        p = Path(path)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise CritwinError(f"--out {p} exists and is not an empty folder; choose a new folder")
        cfg = {
            "critwin_run": FORMAT,
            "experiment": experiment,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **jsonable(dict(config or {})),
        }
        try:
            for sub in (SAMPLES, CASES, Path(CONFIG_COPY).parent):
                (p / sub).mkdir(parents=True, exist_ok=True)
            write_json(p / CONFIG_COPY, cfg)
            write_json(p / CONFIG, cfg)
        except OSError as err:
            raise CritwinError(
                f"--out {p}: cannot write there ({err.strerror}); choose a writable folder"
            ) from err
        run = cls(p, cfg)
        run.sync_derived()
        return run

    @classmethod
    def check_resumable(
        cls,
        path: str | Path,
        experiment: str,
        config: Mapping[str, Any],
        resume_keys: Sequence[str],
        *,
        kind_key: str | None = None,
    ) -> RunDir | None:
        """The existing run in `path` when it is a run of `experiment` (and of the config's `kind_key`)
        whose settings `resume_keys` equal `config`'s (opened, so healed), or None when `path` is new or
        empty and a run can be created there; CritwinError when it cannot be used. Cheap: call it before
        any expensive work, and `create` the run when it returns None."""
        p = Path(path)
        if not check_run_folder(p, experiment, None if kind_key is None else config.get(kind_key)):
            return None
        run = cls.open(p)
        diff = [k for k in resume_keys if jsonable(run.config.get(k)) != jsonable(config.get(k))]
        if diff:
            k = diff[0]
            raise CritwinError(
                f"--out {p} holds a run with other settings ({k}: {run.config.get(k)!r} there, "
                f"{jsonable(config.get(k))!r} now); resume with the same settings or choose a new folder"
            )
        return run

    @classmethod
    def open(cls, path: str | Path, *, full_check: bool = False) -> RunDir:
        """Open an existing run directory and heal it: damaged raw files are moved to damaged/ (their cases
        listed in `damaged_cases`), a damaged config.json is restored from its copy, and derived files that
        are missing, damaged or behind are rebuilt. Sample parts are checked by their footer, or read
        whole with `full_check` (`critwin repair`). CritwinError (one line) when it is missing or foreign."""
        p = Path(path)
        if not p.exists():
            raise CritwinError(f"run directory {p} does not exist; pass the folder a critwin run wrote")
        if not p.is_dir():
            raise CritwinError(f"{p} is a file, not a run directory; pass the folder a critwin run wrote")
        run = cls(p, cls._read_config(p))
        run._heal(full_check)
        return run

    @staticmethod
    def _read_config(p: Path) -> dict[str, Any]:
        def read(f: Path) -> dict[str, Any] | None:
            try:
                cfg = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return None
            return cfg if isinstance(cfg, dict) else None

        main, copy = read(p / CONFIG), read(p / CONFIG_COPY)
        if main is None and copy is None:
            if (p / CONFIG).exists() or (p / CONFIG_COPY).exists():
                raise CritwinError(
                    f"{p / CONFIG} is damaged and has no readable copy; the run's settings are lost, so "
                    "start a new run"
                )
            raise CritwinError(
                f"{p} is not a critwin run directory (no {CONFIG}); pass the folder a run wrote"
            )
        cfg = main if main is not None else copy
        if "critwin_run" not in cfg:
            raise CritwinError(f"{p} is not a critwin run directory ({CONFIG} lacks 'critwin_run')")
        if cfg["critwin_run"] != FORMAT:
            raise CritwinError(
                f"{p} has run format {cfg['critwin_run']!r}; this critwin reads format {FORMAT}; use the "
                "critwin version that wrote it, or re-run"
            )
        if main != copy and os.access(p, os.W_OK):
            # The two copies are written once, together: whichever is readable is the original.
            (p / CONFIG_COPY).parent.mkdir(exist_ok=True)
            write_json(p / CONFIG, cfg)
            write_json(p / CONFIG_COPY, cfg)
        return cfg

    # -- healing -------------------------------------------------------------------------------------------
    def _quarantine(self, f: Path, reason: str) -> None:
        """Move an unreadable file to damaged/ (kept for inspection) and log it."""
        dest_dir = self.path / DAMAGED
        dest_dir.mkdir(exist_ok=True)
        rel = f.relative_to(self.path).as_posix().replace("/", "__")
        dest = dest_dir / rel
        n = 1
        while dest.exists():
            dest = dest_dir / f"{rel}.{n}"
            n += 1
        shutil.move(str(f), dest)
        append_jsonl(dest_dir / "log.jsonl", {"file": f.relative_to(self.path).as_posix(), "moved_to":
                                               dest.name, "reason": reason})
        self.healed.append(f"moved damaged {f.relative_to(self.path).as_posix()} to {DAMAGED}/ ({reason})")

    def _heal(self, full: bool = False) -> None:
        writable = os.access(self.path, os.W_OK)
        for sub in (SAMPLES, CASES):
            if not (self.path / sub).is_dir() and writable:
                if (self.path / sub).exists():
                    self._quarantine(self.path / sub, "not a folder")
                (self.path / sub).mkdir()
        parts_ok: set[str] = set()
        if (self.path / SAMPLES).is_dir():
            for f in sorted((self.path / SAMPLES).glob("part-*.parquet")):
                try:
                    import pyarrow.parquet as pq

                    # The footer catches truncated and overwritten parts; `full` reads every page too.
                    names = pq.read_table(f).column_names if full else pq.read_schema(f).names
                    if not set(SAMPLE_COLUMNS) <= set(names):
                        raise ValueError("missing columns")
                except Exception as err:  # pyarrow raises several types for damaged files
                    if not writable:
                        raise CritwinError(
                            f"{f} is damaged ({type(err).__name__}) and {self.path} is read-only; copy "
                            "the run "
                            "to a writable folder and run `critwin repair` on it"
                        ) from err
                    self._quarantine(f, type(err).__name__)
                    continue
                parts_ok.add(f.name)
        if (self.path / CASES).is_dir():
            for f in sorted((self.path / CASES).glob("*.json")):
                try:
                    rec = json.loads(f.read_text(encoding="utf-8"))
                    if not isinstance(rec, dict) or f.stem != case_key(str(rec["case"])):
                        raise ValueError("not a case record")
                except (OSError, UnicodeDecodeError, ValueError, KeyError) as err:
                    if writable:
                        self._quarantine(f, type(err).__name__)
                    continue
                lost = [n for n in rec.get("parts", []) if n not in parts_ok]
                if lost:
                    self.damaged_cases.add(str(rec["case"]))
                    self.healed.append(
                        f"case {rec['case']!r} lost {len(lost)} sample part(s); it will be redone"
                    )
                    continue
                self._records[str(rec["case"])] = rec
        if writable and not self._derived_ok():
            self.sync_derived()
            self.healed.append(f"rebuilt {CURVES} and {WINDOWS} from the case records")

    def _derived_ok(self) -> bool:
        """Whether curves.parquet and windows.json exist, parse and hold exactly the recorded cases."""
        want_curves = sorted(c for c, r in self._records.items() if r.get("curve") is not None)
        want_windows = sorted(c for c, r in self._records.items() if r.get("windows") is not None)
        try:
            df = pd.read_parquet(self.path / CURVES)
            obj = json.loads((self.path / WINDOWS).read_text(encoding="utf-8"))
            have_curves = sorted(set(df["case"].astype(str)))
            have_windows = sorted(obj["cases"])
            rows = sum(len(self._records[c]["curve"]["t"]) for c in want_curves)
        except Exception:  # any damage or mismatch means: rebuild
            return False
        return have_curves == want_curves and have_windows == want_windows and len(df) == rows

    def sync_derived(self) -> None:
        """Rewrite curves.parquet and windows.json from the case records (atomically)."""
        frames = [self._frame(name) for name in self.case_names() if self._records[name].get("curve")]
        if frames:
            table = pd.concat(frames, ignore_index=True)
        else:
            table = pd.DataFrame({"case": pd.Series(dtype="string")})
        atomic_write(self.path / CURVES, lambda p: table.to_parquet(p, index=False))
        cases = {n: self._records[n]["windows"] for n in self.case_names() if self._records[n].get("windows")}
        write_json(self.path / WINDOWS, {"critwin_run": FORMAT, "cases": cases})

    def _frame(self, name: str) -> pd.DataFrame:
        """The curves.parquet rows of one case (cached until its record changes)."""
        rec = self._records[name]
        cached = self._frames.get(name)
        if cached is not None and cached[0] is rec["curve"]:
            return cached[1]
        df = _curve_frame(rec["curve"])
        m = len(df)
        df.insert(0, "case", name)
        df["exact"] = np.array([np.nan if v is None else v for v in _nums(rec.get("exact"), m, np.nan)],
                               dtype=float)
        df["exact_se"] = np.array([0.0 if v is None else v for v in _nums(rec.get("exact_se"), m, 0.0)],
                                  dtype=float)
        self._frames[name] = (rec["curve"], df)
        return df

    # -- writing -------------------------------------------------------------------------------------------
    def _record(self, case: str, order: Sequence[int] | int | None) -> dict[str, Any]:
        rec = self._records.get(case)
        if rec is None:
            seq = max((r["order"][-1] for r in self._records.values() if r.get("order")), default=-1) + 1
            rec = {"case": case, "order": [seq], "curve": None, "exact": None, "exact_se": None,
                   "windows": None, "parts": []}
            self._records[case] = rec
        if order is not None:
            rec["order"] = [int(order)] if isinstance(order, int | np.integer) else [int(v) for v in order]
        rec["parts"] = sorted(set(rec.get("parts", [])) | set(self._parts_of(case)))
        return rec

    def _save(self, case: str) -> None:
        write_json(self.path / CASES / f"{case_key(case)}.json", self._records[case], indent=None)
        self.sync_derived()

    def _parts_of(self, case: str) -> list[str]:
        return sorted(f.name for f in (self.path / SAMPLES).glob(f"part-{case_key(case)}-*.parquet"))

    def start_case(self, case: str) -> None:
        """Forget everything stored about `case` (its record and sample parts from an unfinished or earlier
        attempt), so that computing it again adds nothing twice."""
        for name in self._parts_of(case):
            (self.path / SAMPLES / name).unlink(missing_ok=True)
        (self.path / CASES / f"{case_key(case)}.json").unlink(missing_ok=True)
        self._frames.pop(case, None)
        if self._records.pop(case, None) is not None:
            self.sync_derived()
        self._calls[case] = 0
        self.damaged_cases.discard(case)

    def is_finished(self, case: str) -> bool:
        """Whether `case` has an intact, complete record: its windows were stored (`write_case`, the last
        write of a case) and none of its sample parts was lost."""
        rec = self._records.get(case)
        return rec is not None and rec.get("windows") is not None and case not in self.damaged_cases

    def draws_writer(self, case: str) -> Callable[[Draws], None]:
        """A callback for `scan(on_draws=...)` that saves the raw draws of `case`."""
        return lambda draws: self.write_draws(case, draws)

    def write_draws(self, case: str, draws: Draws) -> None:
        """Store the raw draws of one scan call of `case` as a new part of samples.parquet."""
        if case not in self._calls:
            self._calls[case] = len(self._parts_of(case))
        call = self._calls[case]
        rows: dict[str, list[Any]] = {k: [] for k in SAMPLE_COLUMNS}
        for i, t in enumerate(draws.ts):
            for j, sample in enumerate(draws.samples[i]):
                label = draws.labels[i][j]
                rows["case"].append(case)
                rows["call"].append(call)
                rows["t"].append(float(t))
                rows["draw"].append(j)
                rows["label"].append(None if label is None else encode_label(label))
                rows["failed"].append(draws.failures[i][j] is not None)
                rows["failure"].append(draws.failures[i][j])
                rows["sample"].append(encode_sample(sample))
        df = pd.DataFrame(rows).astype(_SAMPLE_DTYPES)
        target = self.path / SAMPLES / f"part-{case_key(case)}-{call:05d}.parquet"
        atomic_write(target, lambda p: df.to_parquet(p, index=False))
        self._calls[case] = call + 1
        if case in self._records:
            self._record(case, None)
            self._save(case)

    def write_curve(
        self,
        case: str,
        curve: Curve,
        exact: Sequence[float] | None = None,
        exact_se: Sequence[float] | None = None,
        *,
        order: Sequence[int] | int | None = None,
    ) -> None:
        """Store (or replace) the curve of `case` and its exact values (NaN: unknown). `order`: the case's
        place in the report (default: after the cases stored so far)."""
        m = len(curve)
        ex = None if exact is None else np.asarray(exact, dtype=float)
        se = None if exact_se is None else np.asarray(exact_se, dtype=float)
        if (ex is not None and ex.shape != (m,)) or (se is not None and se.shape != (m,)):
            raise CritwinError(f"exact values for case {case!r}: need one per curve point ({m})")
        rec = self._record(case, order)
        rec["curve"] = _curve_record(curve)
        rec["exact"] = None if ex is None else _nums(ex, m, np.nan)
        rec["exact_se"] = None if se is None else _nums(se, m, 0.0)
        self._save(case)

    def write_case(
        self,
        case: str,
        *,
        detected: Sequence[Window] = (),
        paper: Sequence[Window] = (),
        theory: Sequence[TheoryInterval] = (),
        eps: float | None = None,
        meta: Mapping[str, Any] | None = None,
        order: Sequence[int] | int | None = None,
    ) -> None:
        """Store (or replace) the windows and display metadata of `case`."""
        rec = self._record(case, order)
        rec["windows"] = {
            "detected": [w.to_dict() for w in detected],
            "paper": [w.to_dict() for w in paper],
            "theory": [w.to_dict() for w in theory],
            "eps": eps,
            "meta": jsonable(dict(meta or {})),
        }
        self._save(case)

    # -- experiment record streams -------------------------------------------------------------------------
    def append_record(self, stream: str, row: Mapping[str, Any]) -> None:
        """Append one record to the raw stream `<stream>.jsonl` (flushed to disk before returning)."""
        append_jsonl(self.path / f"{stream}.jsonl", row)

    def records(self, stream: str) -> list[dict[str, Any]]:
        """All readable records of the stream `<stream>.jsonl`, in order (damaged lines skipped)."""
        return read_jsonl(self.path / f"{stream}.jsonl")

    # -- experiment tables in parts --------------------------------------------------------------------------
    def write_part(self, table: str, name: str, df: pd.DataFrame) -> None:
        """Atomically store one raw part `<table>.parquet/part-<name>.parquet` (replacing an earlier one of
        that name, so a unit of work redone after a crash is stored once)."""
        folder = self.path / f"{table}.parquet"
        folder.mkdir(exist_ok=True)
        atomic_write(folder / f"part-{name}.parquet", lambda p: df.to_parquet(p, index=False))

    def read_part(self, table: str, name: str) -> pd.DataFrame | None:
        """One raw part, or None when it is missing or damaged (a damaged one is moved to damaged/)."""
        f = self.path / f"{table}.parquet" / f"part-{name}.parquet"
        if not f.is_file():
            return None
        try:
            return pd.read_parquet(f)
        except Exception as err:  # pyarrow raises several types for damaged files
            self._quarantine(f, type(err).__name__)
            return None

    def part_names(self, table: str) -> list[str]:
        """Names of the stored parts of `table`, sorted."""
        folder = self.path / f"{table}.parquet"
        return sorted(f.name[len("part-") : -len(".parquet")] for f in folder.glob("part-*.parquet"))

    def read_parts(self, table: str) -> pd.DataFrame | None:
        """All readable parts of `table` concatenated in name order (damaged ones moved to damaged/), or
        None when there are none."""
        frames = [df for n in self.part_names(table) if (df := self.read_part(table, n)) is not None]
        return pd.concat(frames, ignore_index=True) if frames else None

    # -- reading -------------------------------------------------------------------------------------------
    def case_names(self) -> list[str]:
        """Cases in report order (their `order`, then name)."""
        return sorted(self._records, key=lambda c: (self._records[c].get("order") or [0], c))

    def case(self, name: str) -> CaseRecord:
        """Everything stored about one case."""
        out = CaseRecord(name)
        rec = self._records.get(name)
        if rec is None:
            return out
        try:
            if rec.get("curve") is not None:
                df = _curve_frame(rec["curve"])
                out.curve = Curve.from_frame(df)
                m = len(df)
                out.exact = np.array([np.nan if v is None else v for v in _nums(rec.get("exact"), m, np.nan)])
                out.exact_se = np.array([0.0 if v is None else v for v in _nums(rec.get("exact_se"), m, 0.0)])
            c = rec.get("windows")
            if c is not None:
                out.detected = [Window.from_dict(w) for w in c.get("detected", [])]
                out.paper = [Window.from_dict(w) for w in c.get("paper", [])]
                out.theory = [TheoryInterval.from_dict(w) for w in c.get("theory", [])]
                out.eps = c.get("eps")
                out.meta = dict(c.get("meta") or {})
        except (AttributeError, TypeError, KeyError, ValueError) as err:
            raise CritwinError(
                f"{self.path / CASES}: case {name!r} is malformed ({type(err).__name__}); run "
                "`critwin repair`"
            ) from err
        return out

    def cases(self) -> list[CaseRecord]:
        """All cases."""
        return [self.case(n) for n in self.case_names()]

    def read_samples(self) -> pd.DataFrame:
        """All raw draws, one row per (case, call, t, draw) (empty frame with the schema's columns if none
        were written)."""
        parts = sorted((self.path / SAMPLES).glob("part-*.parquet"))
        if not parts:
            return pd.DataFrame({k: pd.Series(dtype=v) for k, v in _SAMPLE_DTYPES.items()})
        try:
            df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        except Exception as err:  # damaged since open: say how to heal
            raise CritwinError(
                f"{self.path / SAMPLES} has a damaged part ({type(err).__name__}); run `critwin repair "
                f"{self.path}`"
            ) from err
        return df.drop_duplicates(["case", "call", "t", "draw"], keep="last", ignore_index=True)
