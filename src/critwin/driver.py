"""`run`: one experiment, one sampler, one run directory — for every experiment.

The driver owns what experiments must not: the run directory (created only after the settings and the
sampler check out, resumed when it holds the same run), the loop over cases (through a `Runner`), storing
each case's result as it arrives, resume, Ctrl-C, and the report. Each case is computed from
`case_rng(seed, case.id)` only, so a run split into shards (`shard=(i, m)`), run in any order or on any
number of workers, gives the same records, summary and report as one run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critwin.errors import CritwinError, RunInterrupted
from critwin.experiments.base import Case, CaseJournal, CaseResult, CaseTask, Experiment, journaled
from critwin.rundir import ENGINES, RunDir, append_jsonl, case_key, writer_id
from critwin.runners import Local, Runner
from critwin.samplers.lm import engine_info_of

RECORDS = "records"  # default record stream: one JSON line per finished (or failed) case


@dataclass
class RunResult:
    """What `run` returns: the run directory, the summary the report wrote, and run facts."""

    out: Path
    summary: dict[str, Any]
    n_cases: int = 0
    n_resumed: int = 0
    n_computed: int = 0
    n_failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def records_stream(experiment: Experiment) -> str:
    """The record stream an experiment's case records go to (its `records_stream`, default "records")."""
    return str(getattr(experiment, "records_stream", RECORDS))


def latest_records(run: RunDir, stream: str) -> dict[str, dict[str, Any]]:
    """The latest record of each case in `stream` (a case computed twice counts once: its last try)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in run.records(stream):
        if "case" in row:
            latest[row["case"]] = row
    return latest


def shard_of(cases: Sequence[Case], shard: tuple[int, int] | None) -> list[Case]:
    """Shard i of m: every m-th case from the i-th, in the experiment's order (None: all cases)."""
    if shard is None:
        return list(cases)
    i, m = shard
    if isinstance(m, bool) or not isinstance(m, int) or m < 1 or not isinstance(i, int) or not 0 <= i < m:
        raise CritwinError(f"--shard {i}/{m}: use I/M with 0 <= I < M, e.g. 0/3 for the first of three")
    return list(cases)[i::m]


def case_journal(run: RunDir, case: Case) -> CaseJournal:
    """The journal of one case in `run`: the draws an earlier attempt stored, and writers into the run."""
    return CaseJournal(
        run.case_draws(case.id),
        lambda call, draws: run.write_draws(case.id, draws, call=call),
        lambda call: run.drop_draws(case.id, call),
    )


@dataclass(frozen=True)
class WorkerJournals:
    """`CaseTask.journal_for` for a remote worker: the journals of the run directory at `path`, opened in the
    worker's own process (each process writes through its own RunDir; the run directory must be on storage
    the worker mounts)."""

    path: Path

    def check(self) -> None:
        import socket

        if not (self.path / "config.json").is_file():
            raise CritwinError(
                f"the run directory {self.path} is not visible on worker node {socket.gethostname()}; put "
                "it on storage every node mounts (or let the driver write: a run that is not journaled)"
            )

    def __call__(self, case: Case) -> CaseJournal:
        return case_journal(RunDir(self.path, RunDir._read_config(self.path)), case)


def _store(run: RunDir, stream: str, case: Case, res: CaseResult, *, keep_draws: bool = False) -> None:
    """Write one case's result; its record goes last, so a record on disk means the case is complete.
    keep_draws: the case stored its draws while it ran (a journal); keep them."""
    run.start_case(case.id, keep_draws=keep_draws)
    for draws in res.draws:
        run.write_draws(case.id, draws)
    for table, frame in res.parts.items():
        run.write_part(table, case_key(case.id), frame)
    record = {**case.fields, **res.record, "case": case.id, "order": list(case.order)}
    if res.parts:
        record["stored_tables"] = sorted(res.parts)
    if res.curve is not None:
        run.write_curve(case.id, res.curve, res.exact, res.exact_se, order=case.order)
        run.write_case(
            case.id, detected=res.detected, paper=res.paper, theory=res.theory, eps=res.eps, meta=res.meta,
            order=case.order,
        )
        record["stored_curve"] = True
    for name, rows in res.streams.items():
        for row in rows:
            run.append_record(name, row)
    run.append_record(stream, record)


def _finished(run: RunDir, rec: Mapping[str, Any] | None) -> bool:
    """Whether a case's latest record says it is done and what it stored is intact: its curve and samples
    (`is_finished`) and its parts of the run tables (a damaged one is moved aside, and the case redone)."""
    if rec is None or rec.get("status") != "ok":
        return False
    if rec.get("stored_curve") and not run.is_finished(rec["case"]):
        return False
    key = case_key(rec["case"])
    return all(run.read_part(table, key) is not None for table in rec.get("stored_tables", ()))


def run(
    experiment: Experiment,
    sampler: Any = None,
    *,
    out: str | Path,
    factory: Callable[[], Any] | None = None,
    seed: int | None = None,
    runner: Runner | None = None,
    shard: tuple[int, int] | None = None,
    report: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Run `experiment` with `sampler` (or the sampler `factory()` builds, only once the run directory is
    known to be usable) into the run directory `out`, resuming it when it holds the same run.

    seed: the run's seed (default: the experiment config's "seed", else 0); case c draws from
    `case_rng(seed, c.id)`. runner: where cases run (default `Local()`). shard=(i, m): compute only
    every m-th case from the i-th (several shards, in any order or at once, fill one run directory).
    report: write the report and summary.json at the end (from everything in the directory).
    Finished cases of an earlier attempt are skipped; failed ones are tried again. Ctrl-C raises
    `RunInterrupted` after saving what finished.
    """
    start = time.perf_counter()
    log = log or (lambda _m: None)
    config = experiment.config()
    cases = list(experiment.cases())
    for what, keys in (("case id", [c.id for c in cases]),
                       ("seed key", [c.id if c.seed_key is None else c.seed_key for c in cases])):
        seen: set[Any] = set()
        dup = next((k for k in keys if k in seen or seen.add(k)), None)
        if dup is not None:
            raise CritwinError(f"{what} {dup!r} appears twice; give every case its own")
    todo_cases = shard_of(cases, shard)
    # Experiments of one name that come in kinds (jailbreak windows / repeat / detect) name it in "kind".
    kind = config.get("kind")
    existing = RunDir.check_resumable(
        out, experiment.name, config, experiment.resume_keys, kind_key="kind" if kind is not None else None
    )
    seed = int(config.get("seed", 0) if seed is None else seed)
    keep = journaled(experiment)
    remote = bool(getattr(runner, "remote", False))
    if remote:
        # Each worker builds (and checks) its own sampler from the factory; the driver loads no model. The
        # workers start before the run directory is made, so a cluster that cannot run them leaves none.
        if sampler is None and factory is None:
            raise CritwinError("a remote runner needs a sampler factory (run(..., factory=...))")
        task = CaseTask(experiment, sampler, seed, factory=None if sampler is not None else factory)
        if keep:
            task.journal_for = WorkerJournals(Path(out).resolve())
        runner.start(task)  # type: ignore[union-attr]
    else:
        if sampler is None and factory is not None:
            sampler = factory()
        experiment.check(sampler)
        task = CaseTask(experiment, sampler, seed)
    try:
        rundir = existing or RunDir.create(out, experiment.name, config)
        for line in rundir.healed:
            log(f"repaired {rundir.path}: {line}")
        stream = records_stream(experiment)
        for name, rows in getattr(experiment, "start_records", lambda: {})().items():
            for row in rows:
                rundir.append_record(name, row)
        latest = latest_records(rundir, stream)
        todo = [c for c in todo_cases if not _finished(rundir, latest.get(c.id))]
        n_resumed = len(todo_cases) - len(todo)
        if existing is not None:
            log(f"resuming {rundir.path}: {n_resumed} case(s) already finished")
        def record_engines(phase: str) -> None:
            if remote:
                _record_workers(rundir, runner, phase)
            else:
                _record_engine(rundir, sampler, phase)

        record_engines("start")
        if keep and not remote:
            task.journal_for = lambda case: case_journal(rundir, case)
        failures: list[str] = []
        try:
            results: Iterable[tuple[Case, CaseResult]] = (runner or Local()).map(task, todo)
            if progress:
                from tqdm import tqdm

                results = tqdm(results, total=len(todo), desc=f"critwin {experiment.name}", unit="case",
                               file=sys.stderr)
            for case, res in results:
                _store(rundir, stream, case, res, keep_draws=keep)
                if not res.ok:
                    failures.append(f"{case.id}: {res.record.get('error', '')}")
                    log(f"case {case.id} failed: {res.record.get('error', '')}")
            record_engines("end")
            summary: dict[str, Any] = {}
            if report:
                from critwin.report import writer_for

                write = writer_for(experiment.name, kind)
                summary = write(rundir) if write is not None else {}
        except KeyboardInterrupt:
            # Counted from what is on disk: the interrupt may land between a record's write and its
            # bookkeeping.
            saved = sum(_finished(rundir, r) for r in latest_records(rundir, stream).values())
            raise RunInterrupted(saved, len(cases), rundir.path) from None
    finally:
        if remote:
            runner.close()  # type: ignore[union-attr]
    return RunResult(
        rundir.path, summary, len(todo_cases), n_resumed, len(todo), len(failures),
        time.perf_counter() - start, failures,
    )


def _record_workers(rundir: RunDir, runner: Any, phase: str) -> None:
    """engines.jsonl rows for a remote runner's workers: pid, node and engine of each (`Ray.worker_info`)."""
    for i, info in enumerate(runner.worker_info()):
        append_jsonl(rundir.path / ENGINES, {"phase": phase, "writer": writer_id(), "worker": i, **info})


def _record_engine(rundir: RunDir, sampler: Any, phase: str) -> None:
    """Append what draws this attempt's samples (`critwin.samplers.lm.engine_info_of`) to engines.jsonl:
    at "start", and at "end" with the engine's counters."""
    if sampler is not None:
        row = {"phase": phase, "writer": writer_id(), **engine_info_of(sampler)}
        append_jsonl(rundir.path / ENGINES, row)
