"""What an experiment is, as data (in the spirit of inspect_ai's Task): cases, one case → a typed result,
and a summary of the results.

An experiment never owns the run loop, the run directory or the report: `critwin.driver.run` does, for
every experiment, through a `Runner` (local, later Ray). Because a case's random stream derives from the
run's seed and the case's id only (`critwin.seeds.case_rng`), results do not depend on the order, the
chunking or the number of workers that compute the cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from critwin.curves import Curve, Draws
from critwin.errors import first_line
from critwin.seeds import case_rng
from critwin.windows import Window


@dataclass(frozen=True)
class Case:
    """One unit of work: `id` is unique within the run (it names the case on disk and seeds it);
    `order` is its place in reports (cases are listed by it, whatever order they finished in);
    `data` is the experiment's own payload (a problem, an attack prompt, a mixture sample …);
    `fields` are JSON values that name the case in its record (e.g. dataset and problem id), also when it
    fails; `seed_key`, when given, is what the case's random stream derives from instead of `id` (the id
    in another form, e.g. the batch number of case "3" as the int 3, so that `case_rng(seed, 3)` keeps the
    numbers of a loop that seeded unit b with `default_rng([seed, b])`); like ids, seed keys must differ."""

    id: str
    order: tuple[int, ...]
    data: Any = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    seed_key: str | int | None = None


@dataclass(frozen=True)
class CaseResult:
    """What one case produced, handed by a worker to the driver, which stores it.

    record: the case's JSON-able record (always with "status": "ok" or "failed", and "error" when failed);
    draws: the raw draws of each scan call (stored as sample parts); curve / detected / paper / meta: the
    case's curve, windows and display metadata (None / empty for cases without a curve); streams: extra
    records to append, by stream name (e.g. the original response of a reasoning problem); parts: tables
    (pandas DataFrames) stored as this case's part of the named run table (`RunDir.write_part`); exact /
    exact_se / theory / eps: known truth drawn next to the curve (exact testbeds).
    """

    case: str
    record: Mapping[str, Any]
    draws: tuple[Draws, ...] = ()
    curve: Curve | None = None
    detected: tuple[Window, ...] = ()
    paper: tuple[Window, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    streams: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    parts: Mapping[str, Any] = field(default_factory=dict)
    exact: tuple[float, ...] | None = None
    exact_se: tuple[float, ...] | None = None
    theory: tuple[Any, ...] = ()
    eps: float | None = None

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


@runtime_checkable
class Experiment(Protocol):
    """An experiment: a name (the run directory's kind), its settings, its cases, one case → a result.

    `config()` is stored as config.json; a rerun resumes the directory when the `resume_keys` of the two
    configs agree. `check(sampler)` refuses a sampler that cannot run this experiment (one-line
    CritwinError) before the run directory is made. `run_case` must not raise for a case-level problem:
    it returns a failed record (the driver also turns an exception into one).
    """

    name: str
    resume_keys: tuple[str, ...]

    def config(self) -> dict[str, Any]: ...

    def cases(self) -> Sequence[Case]: ...

    def check(self, sampler: Any) -> None: ...

    def run_case(self, sampler: Any, case: Case, rng: np.random.Generator) -> CaseResult: ...


@dataclass
class CaseJournal:
    """A case's `critwin.curves.Journal`: the draws an earlier attempt at the case stored (by call
    number) and a writer that stores new ones at once, so a killed run resumes a case's search without
    redrawing. `prepare` maps draws before they are stored (e.g. to slim the samples); `mapped(fn)` adds
    such a step. Replayed draws come back as stored (prepared). `observe`, when set, sees every call's draws
    as stored, replayed or new (`observed(fn)`), for a case that needs them after its scan."""

    stored: Mapping[int, Draws]
    write: Callable[[int, Draws], None]
    drop_from: Callable[[int], None] = lambda _call: None
    prepare: Callable[[Draws], Draws] | None = None
    observe: Callable[[Draws], None] | None = None

    def mapped(self, fn: Callable[[Draws], Draws]) -> CaseJournal:
        """This journal, storing fn(draws) instead of the draws."""
        prev = self.prepare
        return replace(self, prepare=fn if prev is None else (lambda d: fn(prev(d))))

    def observed(self, fn: Callable[[Draws], None]) -> CaseJournal:
        """This journal, handing fn every call's draws (as stored) whether replayed or new."""
        return replace(self, observe=fn)

    def replay(self, call: int, ts: tuple[float, ...], n: int) -> Draws | None:
        got = self.stored.get(call)
        if got is None:
            return None
        same = tuple(float(t) for t in got.ts) == tuple(float(t) for t in ts) and all(
            len(row) == n for row in got.labels
        )
        if not same:  # an earlier attempt took another path (other settings): its draws from here are void
            self.drop_from(call)
            self.stored = {c: d for c, d in self.stored.items() if c < call}
            return None
        if self.observe is not None:
            self.observe(got)
        return got

    def record(self, call: int, draws: Draws) -> None:
        kept = draws if self.prepare is None else self.prepare(draws)
        self.write(call, kept)
        if self.observe is not None:
            self.observe(kept)


def journaled(experiment: Any) -> bool:
    """Whether `experiment` stores its draws while a case runs (class attribute `journaled = True`): its
    `run_case` takes `journal=` (a `CaseJournal`, passed on to `scan`) and returns no draws of its own."""
    return bool(getattr(experiment, "journaled", False))


def failed(case: Case, error: str, **fields: Any) -> CaseResult:
    """The result of a case that could not be measured (never counted as an outcome)."""
    return CaseResult(case.id, {**case.fields, **fields, "case": case.id, "status": "failed", "error": error})


@dataclass
class CaseTask:
    """One experiment with its sampler and seed, as the callable a `Runner` maps over cases. `sampler` is a
    built sampler, or None with a zero-argument `factory` that `setup()` calls once in the process that
    runs the cases (a remote worker builds its own, and checks it with the experiment's `check`). A case's
    generator is `case_rng(seed, case.id)` (or `case_rng(seed, case.seed_key)` when the case has one).
    `lost` and `retried` are what a runner that can lose a worker (Ray) reports a case with."""

    experiment: Experiment
    sampler: Any
    seed: int
    factory: Callable[[], Any] | None = None
    journal_for: Callable[[Case], CaseJournal] | None = None

    def setup(self) -> None:
        if self.sampler is None and self.factory is not None:
            self.sampler = self.factory()
            self.experiment.check(self.sampler)

    def check_worker(self) -> None:
        """Raise CritwinError when this worker cannot reach what it writes to (its journals' run folder)."""
        check = getattr(self.journal_for, "check", None)
        if callable(check):
            check()

    def worker_info(self) -> dict[str, Any]:
        """What draws this worker's samples (`critwin.samplers.lm.engine_info_of`), with its counters."""
        from critwin.samplers.lm import engine_info_of

        return engine_info_of(self.sampler) if self.sampler is not None else {}

    def lost(self, case: Case, reasons: Sequence[str]) -> CaseResult:
        """A case whose worker was lost too often: failed, with each loss's reason."""
        error = f"lost its worker {len(reasons)} time(s): " + "; ".join(reasons)
        return failed(case, error, retried=list(reasons))

    def retried(self, result: CaseResult, reasons: Sequence[str]) -> CaseResult:
        """A case that finished after losing its worker: its record lists the losses under "retried"."""
        return replace(result, record={**result.record, "retried": list(reasons)})

    def __call__(self, case: Case) -> CaseResult:
        try:
            key = case.id if case.seed_key is None else case.seed_key
            rng = case_rng(self.seed, key)
            if self.journal_for is not None and journaled(self.experiment):
                return self.experiment.run_case(self.sampler, case, rng, journal=self.journal_for(case))
            return self.experiment.run_case(self.sampler, case, rng)
        except Exception as err:  # one broken case must not cost the finished ones
            return failed(case, first_line(err))
