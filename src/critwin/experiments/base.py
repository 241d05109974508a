"""What an experiment is, as data (in the spirit of inspect_ai's Task): cases, one case → a typed result,
and a summary of the results.

An experiment never owns the run loop, the run directory or the report: `critwin.driver.run` does, for
every experiment, through a `Runner` (local, later Ray). Because a case's random stream derives from the
run's seed and the case's id only (`critwin.seeds.case_rng`), results do not depend on the order, the
chunking or the number of workers that compute the cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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


def failed(case: Case, error: str, **fields: Any) -> CaseResult:
    """The result of a case that could not be measured (never counted as an outcome)."""
    return CaseResult(case.id, {**case.fields, **fields, "case": case.id, "status": "failed", "error": error})


@dataclass
class CaseTask:
    """One experiment with its sampler and seed, as the callable a `Runner` maps over cases. `sampler` is a
    built sampler, or None with a zero-argument `factory` that `setup()` calls once in the process that
    runs the cases (a remote worker builds its own). A case's generator is `case_rng(seed, case.id)` (or
    `case_rng(seed, case.seed_key)` when the case has one)."""

    experiment: Experiment
    sampler: Any
    seed: int
    factory: Callable[[], Any] | None = None

    def setup(self) -> None:
        if self.sampler is None and self.factory is not None:
            self.sampler = self.factory()

    def __call__(self, case: Case) -> CaseResult:
        try:
            key = case.id if case.seed_key is None else case.seed_key
            return self.experiment.run_case(self.sampler, case, case_rng(self.seed, key))
        except Exception as err:  # one broken case must not cost the finished ones
            return failed(case, first_line(err))
