"""Run directories: everything a run produced, enough to re-draw its report without any model.

Layout (format version `FORMAT` = 3). Raw records are written once, each file atomically (written aside
under a name no other process uses, then renamed), so a crash at any moment leaves every file either absent
or whole. Derived files are projections of the raw records, rebuilt when asked (`RunDir.sync_derived`,
`RunDir.cases` at report time, `RunDir.open` when they are damaged or behind, `critwin repair RUN`):

```
RUN_DIR/
  config.json        raw  {"critwin_run": FORMAT, "experiment": str, "created": ISO time, ...run settings};
                          published once, exclusively (two runs started into one folder cannot both win)
  .critwin/config.json    raw  a copy of config.json, restored from when config.json is damaged or gone
  samples.parquet/   raw  one part-<case key>-<call>-<writer>.parquet per scan call (read the folder with
                       pandas.read_parquet): case (str), call (int64: the case's scan call), t (float64),
                       draw (int64), label (str, JSON of the label; null when failed), failed (bool),
                       failure (str; reason, null when valid), codec (str: the sample codec's name),
                       sample (binary: the codec's bytes; `decode_sample(codec, sample)` reads it back)
  cases/             raw  one <case key>.json per case: its curve, exact values, windows, display metadata,
                       its place in the report and the sample parts it was computed from; replaced
                       atomically by the one writer computing that case
  <stream>.jsonl     raw  append-only record streams of an experiment (e.g. problems.jsonl), shared by all
                       writers; a torn last line (a crash mid-append) is ignored and closed by the next append
  engines.jsonl      raw  one line when each run attempt starts and one when it ends: the engine that drew
                       its samples (the sampler's `engine_info()`: engine, version, model, settings,
                       engine counters such as the prefix-cache hit rate) and the attempt's writer id
  <table>.parquet/   raw  experiment tables stored in named units of work, part-<name>.parquet each
  curves.parquet     derived  one row per (case, t): case (str), then `Curve.to_frame()` columns
                       t, n_valid, n_kept, n_failed, p_hat, label_counts, reference, time_unit, t_max,
                       then exact (float64, exact P(kept) or NaN), exact_se (float64; 0 when exact);
                       schema metadata critwin_source: the digest of the case records it was built from
  windows.json       derived  {"critwin_run": FORMAT, "source": digest, "cases": {case: {
                         "detected": [Window.to_dict()...], "paper": [...],
                         "theory": [{"lo": t, "hi": t, "lo_interval": [a, b], "hi_interval": [a, b],
                                     "label": str}...], "eps": float | null, "meta": {...}}}}
  index.html, summary.json   derived: the report (`critwin report RUN_DIR` rewrites them)
  .critwin/figures/  derived  the report's figures, reused when it is re-drawn (`critwin.report.figcache`)
  damaged/           files that could not be read, moved aside (never deleted) with damaged/log.jsonl
```

A damaged raw file costs only the case it belongs to: `RunDir.open` moves it to damaged/, and the case is
listed in `damaged_cases` so that a resumed run computes it again. Rows are deduplicated on read by
(case, call, t, draw). Times are forward times t (t grows with degradation) in each curve's `time_unit`.
Only config.json carries a time stamp, so the same seed gives the same files otherwise (sample part names
carry the writer id, the only other thing that differs between runs).

Many writers, one directory (processes on one machine, or on several sharing a POSIX file system):

- Each process has a writer id (`writer_id()`: 8 hex digits of its pid and 8 random ones, drawn again after a
  fork). Temporary files and sample parts carry it, so no two processes ever write the same file name; no
  file shared between cases is rewritten as cases are stored (curves.parquet and windows.json are derived).
- A case is computed by one writer at a time (a runner hands each case to one worker); its record file is
  replaced atomically as it grows. Other writers see it through `refresh()`, `case_names()`, `cases()` and
  `is_finished()`, which re-read only the record files that changed (one stat each). `start_case` removes
  the record before the parts, and `read_samples` keeps, for a case with a record, just the parts that
  record lists, so parts left by an abandoned attempt (a killed worker) never mix into a case redone
  elsewhere.
- Record streams are single files appended with O_APPEND under an exclusive `flock` of the file, one whole
  line per append. Chosen over one shard per writer (streams/<name>/<writer>.jsonl) because a stream stays
  one plain JSONL file in the order its records were written across writers (readers such as
  `critwin.experiments.reasoning.read_records(path)` and `wc -l` keep working, and reading needs no
  listing of shards), and the lock costs microseconds per record. The lock also makes the torn-line check
  and the append one step: a line torn by a killed writer is closed by the next append, and two writers'
  lines never interleave. It needs a file system where flock works (local ones, NFSv4); elsewhere give each
  writer its own run directory.
- Derived files are rebuilt under an exclusive flock of the run directory itself (no lock file to damage),
  from the case records as they are on disk then; their content is a function of those records alone (the
  digest stamped in both files), so a rebuild is idempotent, a rebuild of unchanged records writes nothing,
  and a rebuild racing a writer leaves files that are whole and merely behind (rebuilt at the next sync).

Samples are stored through a codec (`critwin.codecs`): "npy" for numpy arrays (images, latents: npy
bytes that read back bit-identical with dtype and shape), "npz" for dicts of arrays, "bytes" for bytes,
and "json" for everything else. A backend registers its own codec for its sample type
(`critwin.codecs.register_codec`) without editing this module; codecs are tried newest first, "json" last.

Format 2 (critwin before the multi-writer store: samples as JSON text without a codec column, parts named
part-<case key>-<call>.parquet, no digest in the derived files) still opens: read-only it is read as it is;
writable, `RunDir.open` (and so `critwin repair`, `critwin report` and resuming a run) upgrades it in place
once, under the directory lock: each sample part is rewritten with codec "json" under its own name, then
the derived files, then the config (critwin_run 3, "upgraded_from": 2). A crash part-way leaves a format-2
directory that the next open finishes upgrading.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from critwin.codecs import decode_sample, encode_value
from critwin.curves import Curve, Draws, decode_label, encode_label
from critwin.errors import CritwinError
from critwin.files import RUN_CONFIGS, check_run_folder
from critwin.serialize import jsonable
from critwin.windows import Window

try:  # POSIX; without it (Windows) appends and derived rebuilds are not locked: use one writer there
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms critwin runs on
    fcntl = None  # type: ignore[assignment]

FORMAT = 3
READABLE_FORMATS = (2, 3)  # 2 is upgraded in place when opened writable
CONFIG, CONFIG_COPY = RUN_CONFIGS
SAMPLES = "samples.parquet"
CASES = "cases"
CURVES = "curves.parquet"
WINDOWS = "windows.json"
ENGINES = "engines.jsonl"
DAMAGED = "damaged"
SAMPLE_COLUMNS = ("case", "call", "t", "draw", "label", "failed", "failure", "codec", "sample")
_V2_COLUMNS = ("case", "call", "t", "draw", "label", "failed", "failure", "sample")
_SAMPLE_DTYPES = {
    "case": "string",
    "call": "int64",
    "t": "float64",
    "draw": "int64",
    "label": "string",
    "failed": "bool",
    "failure": "string",
    "codec": "string",
    "sample": object,
}
_SOURCE = b"critwin_source"  # curves.parquet schema metadata: digest of the case records it was built from
_PART = re.compile(r"part-([0-9a-f]{16})-(\d{5,})(?:-([0-9a-f]{16}))?\.parquet")
_TEMP = re.compile(r"\..+\.tmp\d*")  # this module's temporary files (and format 2's .<name>.tmp<pid>)
STALE_TEMP_S = 3600.0  # temporary files older than this are left by killed writers: removed on open
_STREAM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


# ------------------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------------------
_WRITER: tuple[int, str] | None = None
_SEQ = itertools.count()


def writer_id() -> str:
    """16 hex digits naming this process among all writers of a run directory: its pid (8 digits) and a
    random token (8), drawn again in a forked child."""
    global _WRITER
    pid = os.getpid()
    if _WRITER is None or _WRITER[0] != pid:
        _WRITER = (pid, f"{pid & 0xFFFFFFFF:08x}{secrets.token_hex(4)}")
    return _WRITER[1]


# ------------------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a hidden temporary file named by this writer and a rename: readers see the old
    file or the new one, never a torn one, and concurrent writers never share a temporary file (pyarrow
    and pandas skip the dot-files of a dataset folder)."""
    tmp = path.with_name(f".{path.name}.{writer_id()}-{next(_SEQ)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _publish_new(path: Path, text: str) -> bool:
    """Create `path` with `text` unless it exists (atomically: a hard link of a finished temporary file
    never replaces an existing one); False when another writer created it first."""
    tmp = path.with_name(f".{path.name}.{writer_id()}-{next(_SEQ)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    """Atomically write strict JSON (numpy values made plain; non-finite floats are an error)."""
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=indent, allow_nan=False) + "\n"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL record stream; lines that do not parse (a torn last line after a crash, a line
    another writer is appending right now, damage) are skipped, and so cost only the records they held."""
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
    """Append one record as one line and flush it to disk, safe with other writers appending to the same
    file: under an exclusive flock of the file, a torn last line left by a killed writer is closed first
    (so the new record stays whole), then the line is written with O_APPEND (see the module docstring)."""
    line = (json.dumps(jsonable(dict(row)), allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def _sig(st: os.stat_result) -> tuple[int, int, int]:
    """What identifies one version of a file: a rename gives a new inode, a rewrite a new time or size."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _sample_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("case", pa.string()), ("call", pa.int64()), ("t", pa.float64()), ("draw", pa.int64()),
                      ("label", pa.string()), ("failed", pa.bool_()), ("failure", pa.string()),
                      ("codec", pa.string()), ("sample", pa.large_binary())])


def _write_samples(path: Path, df: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(df, schema=_sample_schema(), preserve_index=False), path)


def _empty_samples() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=v) for k, v in _SAMPLE_DTYPES.items()})


def _read_samples_part(path: Path) -> pd.DataFrame:
    """One sample part as format-3 columns (a format-2 part's JSON text becomes codec "json" bytes)."""
    df = pd.read_parquet(path)
    if "codec" not in df.columns:
        df["codec"] = pd.Series(["json"] * len(df), dtype="string", index=df.index)
        df["sample"] = [s.encode("utf-8") if isinstance(s, str) else b"null" for s in df["sample"]]
    return df.loc[:, list(SAMPLE_COLUMNS)].astype(_SAMPLE_DTYPES)


def _draws_frame(case: str, call: int, draws: Draws) -> pd.DataFrame:
    rows: dict[str, list[Any]] = {k: [] for k in SAMPLE_COLUMNS}
    for i, t in enumerate(draws.ts):
        for j, sample in enumerate(draws.samples[i]):
            label = draws.labels[i][j]
            codec, data = encode_value(sample)
            rows["case"].append(case)
            rows["call"].append(call)
            rows["t"].append(float(t))
            rows["draw"].append(j)
            rows["label"].append(None if label is None else encode_label(label))
            rows["failed"].append(draws.failures[i][j] is not None)
            rows["failure"].append(draws.failures[i][j])
            rows["codec"].append(codec)
            rows["sample"].append(data)
    return pd.DataFrame(rows).astype(_SAMPLE_DTYPES)


def _check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not _STREAM.fullmatch(name):
        raise CritwinError(
            f"{what} name {name!r} is not a plain file name; use letters, digits and _ . - (no '/')"
        )
    return name


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


def case_key(case: str) -> str:
    """File-name-safe key of a case name (case names hold '/', spaces, quotes …)."""
    return hashlib.sha1(case.encode("utf-8")).hexdigest()[:16]


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
    damaged or lost, which a resumed run must compute again. Several processes may write one run directory
    at once, each through its own RunDir, as long as each case is computed by one of them at a time.
    """

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = path
        self.config = config
        self._records: dict[str, dict[str, Any]] = {}  # case name -> its record, as stored
        self._names: dict[str, str] = {}  # case key -> case name, for the records held
        self._sigs: dict[str, tuple[int, int, int]] = {}  # case key -> `_sig` of the record file last read
        self._parts: dict[str, set[str]] = {}  # case key -> names of its sample parts known to be on disk
        self._calls: dict[str, int] = {}
        self._frames: dict[str, tuple[Any, pd.DataFrame]] = {}
        self._lock_depth = 0
        self.healed: list[str] = []
        self.damaged_cases: set[str] = set()

    @property
    def writer(self) -> str:
        """This process's writer id (in the names of the sample parts it writes)."""
        return writer_id()

    # -- creating and opening --------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, experiment: str, config: Mapping[str, Any] | None = None) -> RunDir:
        """Start a run in `path` (created; must be empty or absent) and write config.json. When another
        process creates a run there at the same moment, the first config wins: the same settings join that
        run, other settings are a CritwinError (nothing of the other run is touched)."""
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
            if not _publish_new(p / CONFIG, json.dumps(cfg, indent=2, allow_nan=False) + "\n"):
                theirs = cls._read_config(p)
                same = {k: v for k, v in theirs.items() if k != "created"} == {
                    k: v for k, v in cfg.items() if k != "created"
                }
                if not same:
                    raise CritwinError(
                        f"--out {p}: another run with other settings was started there at the same moment; "
                        "choose a new folder"
                    )
                return cls.open(p)
            write_json(p / CONFIG_COPY, cfg)
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
        empty and a run can be created there; CritwinError when it cannot be used (checked from the config
        alone, before anything in the folder is touched). Cheap: call it before any expensive work, and
        `create` the run when it returns None."""
        p = Path(path)
        if not check_run_folder(p, experiment, None if kind_key is None else config.get(kind_key)):
            return None
        held = cls._read_config(p)
        diff = [k for k in resume_keys if jsonable(held.get(k)) != jsonable(config.get(k))]
        if diff:
            k = diff[0]
            raise CritwinError(
                f"--out {p} holds a run with other settings ({k}: {held.get(k)!r} there, "
                f"{jsonable(config.get(k))!r} now); resume with the same settings or choose a new folder"
            )
        return cls.open(p)

    @classmethod
    def open(cls, path: str | Path, *, full_check: bool = False) -> RunDir:
        """Open an existing run directory and heal it: damaged raw files are moved to damaged/ (their cases
        listed in `damaged_cases`), a damaged config.json is restored from its copy, a format-2 directory is
        upgraded, and derived files that are missing, damaged or behind are rebuilt. Sample parts are
        checked by their footer, or read whole with `full_check` (`critwin repair`). CritwinError (one
        line) when it is missing or foreign."""
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
        if cfg["critwin_run"] not in READABLE_FORMATS:
            raise CritwinError(
                f"{p} has run format {cfg['critwin_run']!r}; this critwin reads formats "
                f"{', '.join(map(str, READABLE_FORMATS))}; use the critwin version that wrote it, or re-run"
            )
        if main != copy and os.access(p, os.W_OK):
            # The two copies are written once, together: whichever is readable is the original.
            (p / CONFIG_COPY).parent.mkdir(exist_ok=True)
            write_json(p / CONFIG, cfg)
            write_json(p / CONFIG_COPY, cfg)
        return cfg

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive flock of the run directory (re-entrant within this RunDir): healing,
        upgrading and rebuilding the derived files happen one process at a time."""
        fd = None
        if self._lock_depth == 0 and fcntl is not None:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                raise
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if fd is not None:
                os.close(fd)

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
        try:
            shutil.move(str(f), dest)
        except FileNotFoundError:  # another process moved (or replaced) it first
            return
        append_jsonl(dest_dir / "log.jsonl", {"file": f.relative_to(self.path).as_posix(), "moved_to":
                                               dest.name, "reason": reason})
        self.healed.append(f"moved damaged {f.relative_to(self.path).as_posix()} to {DAMAGED}/ ({reason})")

    def _heal(self, full: bool = False) -> None:
        writable = os.access(self.path, os.W_OK)
        with self._locked():
            for sub in (SAMPLES, CASES):
                if not (self.path / sub).is_dir() and writable:
                    if (self.path / sub).exists():
                        self._quarantine(self.path / sub, "not a folder")
                    (self.path / sub).mkdir()
            if writable:
                self._sweep_temps()
            if (self.path / SAMPLES).is_dir():
                for f in sorted((self.path / SAMPLES).glob("part-*.parquet")):
                    try:
                        import pyarrow.parquet as pq

                        # The footer catches truncated and overwritten parts; `full` reads every page too.
                        names = set(pq.read_table(f).column_names if full else pq.read_schema(f).names)
                        if not (set(SAMPLE_COLUMNS) <= names or set(_V2_COLUMNS) <= names):
                            raise ValueError("missing columns")
                    except FileNotFoundError:  # removed by a writer redoing its case
                        continue
                    except Exception as err:  # pyarrow raises several types for damaged files
                        if not writable:
                            raise CritwinError(
                                f"{f} is damaged ({type(err).__name__}) and {self.path} is read-only; copy "
                                "the run to a writable folder and run `critwin repair` on it"
                            ) from err
                        self._quarantine(f, type(err).__name__)
                        continue
                    self._know_part(f.name)
            if (self.path / CASES).is_dir():
                for f in sorted((self.path / CASES).glob("*.json")):
                    self._load_case(f, opening=True)
            if writable:
                self._drop_abandoned()
            if writable and self.config.get("critwin_run") != FORMAT:
                self._upgrade()
            if writable:
                self._sync(full, report_damage=True)

    def _sweep_temps(self) -> None:
        """Remove temporary files that killed writers left behind (older than `STALE_TEMP_S`)."""
        cutoff = time.time() - STALE_TEMP_S
        folders = [self.path, self.path / SAMPLES, self.path / CASES, (self.path / CONFIG_COPY).parent]
        folders += [d for d in self.path.glob("*.parquet") if d.is_dir() and d.name != SAMPLES]
        for folder in folders:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                try:
                    if _TEMP.fullmatch(e.name) and e.is_file() and e.stat().st_mtime < cutoff:
                        os.unlink(e.path)
                except OSError:
                    continue

    def _drop_abandoned(self) -> None:
        """Remove the sample parts of a stored case that its record does not list, once they are older than
        `STALE_TEMP_S`: left by an attempt at the case that was abandoned (a killed worker) and then redone
        by another writer. (Younger ones may belong to a writer between a part and its record.)"""
        cutoff = time.time() - STALE_TEMP_S
        n = 0
        for key, names in self._parts.items():
            case = self._names.get(key)
            if case is None:
                continue
            for part in sorted(names - set(self._records[case].get("parts", []))):
                f = self.path / SAMPLES / part
                try:
                    if f.stat().st_mtime >= cutoff:
                        continue
                    f.unlink()
                except FileNotFoundError:
                    pass
                names.discard(part)
                n += 1
        if n:
            self.healed.append(f"removed {n} sample part(s) left by abandoned attempts at cases stored since")

    def _know_part(self, name: str) -> None:
        m = _PART.fullmatch(name)
        self._parts.setdefault(m.group(1) if m else "", set()).add(name)

    def _forget(self, key: str) -> None:
        name = self._names.pop(key, None)
        if name is not None:
            self._records.pop(name, None)
            self._frames.pop(name, None)

    def _load_case(self, f: Path, *, opening: bool = False) -> None:
        """(Re-)read one case record file. `opening`: at `open`, where a damaged record is moved to
        damaged/ (when the run is writable) and lost parts are reported in `healed`."""
        key = f.stem
        try:
            with open(f, "rb") as fh:
                sig = _sig(os.fstat(fh.fileno()))
                rec = json.loads(fh.read().decode("utf-8"))
            if not isinstance(rec, dict) or key != case_key(str(rec["case"])):
                raise ValueError("not a case record")
            parts = rec.get("parts", [])
            if not isinstance(parts, list) or not all(isinstance(n, str) for n in parts):
                raise ValueError("malformed parts list")
        except FileNotFoundError:  # removed meanwhile (the case is being redone)
            self._forget(key)
            self._sigs.pop(key, None)
            return
        except (OSError, UnicodeDecodeError, ValueError, KeyError) as err:
            self._forget(key)
            if opening and os.access(self.path, os.W_OK):
                self._quarantine(f, type(err).__name__)
            else:
                self._sigs[key] = _sig(f.stat()) if f.exists() else (0, 0, 0)
            return
        name = str(rec["case"])
        self._sigs[key] = sig
        known = self._parts.get(key, set())
        lost = [n for n in rec.get("parts", []) if n not in known and not (self.path / SAMPLES / n).is_file()]
        if lost:
            self._forget(key)
            if name not in self.damaged_cases and opening:
                self.healed.append(f"case {name!r} lost {len(lost)} sample part(s); it will be redone")
            self.damaged_cases.add(name)
            return
        self._records[name] = rec
        self._names[key] = name
        self._parts.setdefault(key, set()).update(rec.get("parts", []))
        self.damaged_cases.discard(name)

    def _refresh_case(self, case: str) -> None:
        """Catch up with one case's record file (one stat when it has not changed)."""
        key = case_key(case)
        f = self.path / CASES / f"{key}.json"
        try:
            sig = _sig(f.stat())
        except FileNotFoundError:
            self._forget(key)
            self._sigs.pop(key, None)
            return
        if self._sigs.get(key) != sig:
            self._load_case(f)

    def refresh(self) -> None:
        """Catch up with what other writers stored since this RunDir last looked: re-read the case records
        whose files changed (one stat per record) and forget those that were removed."""
        seen: set[str] = set()
        try:
            entries = [e for e in os.scandir(self.path / CASES) if e.name.endswith(".json")]
        except OSError:
            entries = []
        for e in entries:
            key = e.name[: -len(".json")]
            try:
                sig = _sig(e.stat())
            except FileNotFoundError:
                continue
            seen.add(key)
            if self._sigs.get(key) != sig:
                self._load_case(Path(e.path))
        for key in set(self._sigs) - seen:
            self._forget(key)
            self._sigs.pop(key, None)

    def _upgrade(self) -> None:
        """Upgrade a format-2 directory in place (see the module docstring); call with the lock held."""
        import pyarrow.parquet as pq

        cfg = self._read_config(self.path)
        if cfg.get("critwin_run") == FORMAT:  # another process upgraded it meanwhile
            self.config = cfg
            return
        old = cfg.get("critwin_run")
        for f in sorted((self.path / SAMPLES).glob("part-*.parquet")):
            try:
                if "codec" in pq.read_schema(f).names:
                    continue
                df = _read_samples_part(f)
            except FileNotFoundError:
                continue
            except Exception as err:  # damaged beyond its footer: its case is redone
                self._quarantine(f, type(err).__name__)
                self._lost_part(f.name)
                continue
            atomic_write(f, lambda p, df=df: _write_samples(p, df))
        self._write_derived(self._digest())
        cfg = {**cfg, "critwin_run": FORMAT, "upgraded_from": old}
        write_json(self.path / CONFIG_COPY, cfg)
        write_json(self.path / CONFIG, cfg)
        self.config = cfg
        self.healed.append(
            f"upgraded the run directory from format {old} to {FORMAT} (sample parts got a codec column)"
        )

    def _lost_part(self, part: str) -> None:
        for name, rec in list(self._records.items()):
            if part in rec.get("parts", []):
                self._forget(case_key(name))
                self.damaged_cases.add(name)
                self.healed.append(f"case {name!r} lost 1 sample part(s); it will be redone")

    # -- derived files -------------------------------------------------------------------------------------
    def _digest(self) -> str:
        """Digest of everything the derived files are built from: the case records (but not their part
        lists, which carry writer ids), in report order."""
        h = hashlib.sha256()
        for name in self._ordered():
            rec = self._records[name]
            row = [name, rec.get("order"), rec.get("curve"), rec.get("exact"), rec.get("exact_se"),
                   rec.get("windows")]
            h.update(json.dumps(row, sort_keys=True).encode("utf-8") + b"\n")
        return h.hexdigest()[:32]

    def _derived_state(self, digest: str, full: bool = False) -> str:
        """"ok" (built from exactly these records), "behind" (whole, built from other records) or
        "damaged" (missing, unreadable or not written by this format)."""
        try:
            import pyarrow.parquet as pq

            obj = json.loads((self.path / WINDOWS).read_text(encoding="utf-8"))
            curves = self.path / CURVES
            schema = pq.read_table(curves).schema if full else pq.read_schema(curves)
            source = (schema.metadata or {}).get(_SOURCE)
        except Exception:  # any damage means: rebuild
            return "damaged"
        if (
            not isinstance(obj, dict)
            or obj.get("critwin_run") != FORMAT
            or not isinstance(obj.get("cases"), dict)
            or not isinstance(obj.get("source"), str)
            or source is None
        ):
            return "damaged"
        return "ok" if obj["source"] == digest and source == digest.encode() else "behind"

    def _sync(self, full: bool = False, report_damage: bool = False) -> bool:
        digest = self._digest()
        state = self._derived_state(digest, full)
        if state == "ok":
            return False
        self._write_derived(digest)
        if state == "damaged" and report_damage:
            self.healed.append(f"rebuilt {CURVES} and {WINDOWS} from the case records")
        return True

    def sync_derived(self) -> bool:
        """Rebuild curves.parquet and windows.json from the case records of all writers as they are on disk
        now, atomically and under the directory lock; nothing is written when they already hold exactly
        these records. True when they were rewritten."""
        try:
            with self._locked():
                self.refresh()
                return self._sync()
        except OSError as err:
            raise CritwinError(
                f"{self.path}: cannot rebuild {CURVES} and {WINDOWS} ({err.strerror}); copy the run to a "
                "writable folder"
            ) from err

    def _write_derived(self, digest: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = self._ordered()
        frames = [self._frame(name) for name in names if self._records[name].get("curve")]
        if frames:
            df = pd.concat(frames, ignore_index=True)
        else:
            df = pd.DataFrame({"case": pd.Series(dtype="string")})
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _SOURCE: digest.encode()})
        atomic_write(self.path / CURVES, lambda p: pq.write_table(table, p))
        cases = {n: self._records[n]["windows"] for n in names if self._records[n].get("windows")}
        write_json(self.path / WINDOWS, {"critwin_run": FORMAT, "source": digest, "cases": cases})

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
            self._names[case_key(case)] = case
        if order is not None:
            rec["order"] = [int(order)] if isinstance(order, int | np.integer) else [int(v) for v in order]
        rec["parts"] = sorted(set(rec.get("parts", [])) | self._parts.get(case_key(case), set()))
        return rec

    def _save(self, case: str) -> None:
        key = case_key(case)
        f = self.path / CASES / f"{key}.json"
        write_json(f, self._records[case], indent=None)
        with contextlib.suppress(FileNotFoundError):
            self._sigs[key] = _sig(f.stat())

    def start_case(self, case: str, *, keep_draws: bool = False) -> None:
        """Forget everything stored about `case` (its record and sample parts from an unfinished or earlier
        attempt), so that computing it again adds nothing twice. The record goes first, so no reader sees
        a record whose parts are gone. keep_draws: forget only the record; the sample parts stay (they
        were written during the case through its journal, `case_draws` / `write_draws(call=...)`)."""
        key = case_key(case)
        f = self.path / CASES / f"{key}.json"
        if keep_draws:
            f.unlink(missing_ok=True)
            self._forget(key)
            self._sigs.pop(key, None)
            self.damaged_cases.discard(case)
            return
        try:
            listed = json.loads(f.read_text(encoding="utf-8")).get("parts", [])
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            listed = []
        f.unlink(missing_ok=True)
        names = set(self._parts.pop(key, set()))
        names |= {n for n in listed if isinstance(n, str)}
        for name in names:
            m = _PART.fullmatch(name)
            if m and m.group(1) == key:
                (self.path / SAMPLES / name).unlink(missing_ok=True)
        self._forget(key)
        self._sigs.pop(key, None)
        self._calls[case] = 0
        self.damaged_cases.discard(case)

    def is_finished(self, case: str) -> bool:
        """Whether `case` has an intact, complete record: its windows were stored (`write_case`, the last
        write of a case) and none of its sample parts was lost. Read from disk when the record file changed
        (one stat otherwise), so a case another process finished counts."""
        self._refresh_case(case)
        rec = self._records.get(case)
        return rec is not None and rec.get("windows") is not None and case not in self.damaged_cases

    def draws_writer(self, case: str) -> Callable[[Draws], None]:
        """A callback for `scan(on_draws=...)` that saves the raw draws of `case`."""
        return lambda draws: self.write_draws(case, draws)

    def _case_parts(self, case: str) -> list[tuple[int, str]]:
        """(call, part name) of every sample part of `case` on disk, by call."""
        key = case_key(case)
        try:
            names = [n for n in os.listdir(self.path / SAMPLES) if n.startswith(f"part-{key}-")]
        except OSError:
            names = []
        found = [(int(m.group(2)), n) for n in names if (m := _PART.fullmatch(n)) and m.group(1) == key]
        self._parts.setdefault(key, set()).update(n for _, n in found)
        return sorted(found)

    def case_draws(self, case: str) -> dict[int, Draws]:
        """The raw draws stored for `case`, by scan call (0, 1, …): what a resumed case replays. Times in
        the order they were drawn, samples decoded, labels and failure reasons as stored (reference None)."""
        out: dict[int, Draws] = {}
        for call, name in self._case_parts(case):
            try:
                df = _read_samples_part(self.path / SAMPLES / name)
            except Exception:  # a damaged or vanished part: that call is drawn again
                continue
            ts: list[float] = []
            rows: dict[float, list[Any]] = {}
            for t, label, failure, codec, data in zip(df["t"], df["label"], df["failure"], df["codec"],
                                                      df["sample"], strict=True):
                t = float(t)
                if t not in rows:
                    ts.append(t)
                    rows[t] = [[], [], []]
                r = rows[t]
                r[0].append(decode_sample(codec, data))
                r[1].append(None if label is None or pd.isna(label) else decode_label(label))
                r[2].append(None if failure is None or pd.isna(failure) else str(failure))
            out[call] = Draws(tuple(ts), [rows[t][0] for t in ts], [rows[t][1] for t in ts],
                              [rows[t][2] for t in ts], None)
        return out

    def drop_draws(self, case: str, from_call: int) -> None:
        """Remove the sample parts of `case` from scan call `from_call` on (a resumed case that took
        another path draws them again)."""
        for call, name in self._case_parts(case):
            if call >= from_call:
                (self.path / SAMPLES / name).unlink(missing_ok=True)
                self._parts.get(case_key(case), set()).discard(name)
        self._calls[case] = from_call

    def write_draws(self, case: str, draws: Draws, *, call: int | None = None) -> None:
        """Store the raw draws of one scan call of `case` as a new part of samples.parquet, each sample
        through its codec. call: its number within the case (default: after the parts stored so far)."""
        key = case_key(case)
        if call is None and case not in self._calls:
            calls = [int(m.group(2)) for n in self._parts.get(key, ()) if (m := _PART.fullmatch(n))]
            self._calls[case] = max(calls, default=-1) + 1
        call = self._calls[case] if call is None else int(call)
        df = _draws_frame(case, call, draws)
        name = f"part-{key}-{call:05d}-{writer_id()}.parquet"
        atomic_write(self.path / SAMPLES / name, lambda p: _write_samples(p, df))
        self._calls[case] = call + 1
        self._parts.setdefault(key, set()).add(name)
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
        """Store (or replace) the windows and display metadata of `case` (the last write of a case: it is
        finished once this returns)."""
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
        """Append one record to the raw stream `<stream>.jsonl` (flushed to disk before returning; safe
        with other processes appending to the same stream)."""
        append_jsonl(self.path / f"{_check_name('record stream', stream)}.jsonl", row)

    def records(self, stream: str) -> list[dict[str, Any]]:
        """All readable records of the stream `<stream>.jsonl`, in order (damaged lines skipped)."""
        return read_jsonl(self.path / f"{_check_name('record stream', stream)}.jsonl")

    # -- experiment tables in parts --------------------------------------------------------------------------
    def write_part(self, table: str, name: str, df: pd.DataFrame) -> None:
        """Atomically store one raw part `<table>.parquet/part-<name>.parquet` (replacing an earlier one of
        that name, so a unit of work redone after a crash is stored once; units of work of different
        names may be written by different processes at once)."""
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
        except FileNotFoundError:
            return None
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
    def _ordered(self) -> list[str]:
        return sorted(self._records, key=lambda c: (self._records[c].get("order") or [0], c))

    def case_names(self) -> list[str]:
        """Cases in report order (their `order`, then name), of all writers."""
        self.refresh()
        return self._ordered()

    def case(self, name: str) -> CaseRecord:
        """Everything stored about one case."""
        self._refresh_case(name)
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
        """All cases, of all writers. This is the report's read, so it also brings the derived files up to
        date (`sync_derived`) when the run directory is writable."""
        if os.access(self.path, os.W_OK):
            self.sync_derived()
        return [self.case(n) for n in self.case_names()]

    def read_samples(self, *, decode: bool = False) -> pd.DataFrame:
        """All raw draws, one row per (case, call, t, draw) (empty frame with the schema's columns if none
        were written). For a case with a record, only the parts its record lists. `decode`: the sample
        column holds the samples themselves (`decode_sample`) instead of their stored bytes."""
        self.refresh()
        folder = self.path / SAMPLES
        try:
            names = sorted(n for n in os.listdir(folder) if n.startswith("part-") and n.endswith(".parquet"))
        except OSError:
            names = []
        listed = {case_key(c): set(r.get("parts", [])) for c, r in self._records.items()}
        frames = []
        for n in names:
            m = _PART.fullmatch(n)
            key = m.group(1) if m else ""
            if key in listed and n not in listed[key]:
                continue  # left by an abandoned attempt at a case stored since
            try:
                frames.append(_read_samples_part(folder / n))
            except FileNotFoundError:  # removed meanwhile by a writer redoing its case
                continue
            except Exception as err:  # damaged since open: say how to heal
                raise CritwinError(
                    f"{folder} has a damaged part ({type(err).__name__}); run `critwin repair {self.path}`"
                ) from err
        if not frames:
            return _empty_samples()
        df = pd.concat(frames, ignore_index=True)
        df = df.drop_duplicates(["case", "call", "t", "draw"], keep="last", ignore_index=True)
        if decode:
            df["sample"] = pd.Series([decode_sample(c, d) for c, d in zip(df["codec"], df["sample"],
                                                                          strict=True)], dtype=object)
        return df
