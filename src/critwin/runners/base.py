"""Where work runs. A `Runner` maps a task over items and yields (item, result) pairs as they finish, in
any order; the caller (`critwin.driver.run`) stores them. Runners know nothing of experiments: a task is
any callable, optionally with a `setup()` that a worker calls once before its first item (so that a
remote worker builds its own sampler). The local runner computes items here, one after another; the Ray
runner (`critwin.runners.ray`) ships the task to actors.

A runner whose class sets `remote = True` builds the samplers in its workers: the driver then loads no
model, calls `start(task)` before it writes the run directory (the workers start and check their sampler,
so a cluster that cannot run them leaves nothing behind), `worker_info()` for engines.jsonl, and
`close()` at the end. Such a runner hands a case back through `task.lost(case, reasons)` when its workers
were lost too often, and marks one that finished after a loss with `task.retried(result, reasons)`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")
R = TypeVar("R")


def setup(task: Callable[..., Any]) -> None:
    """Call the task's `setup()` when it has one (once per worker, before its first item)."""
    hook = getattr(task, "setup", None)
    if callable(hook):
        hook()


@runtime_checkable
class Runner(Protocol):
    """Runs `task` on every item and yields (item, task(item)) as each finishes."""

    def map(self, task: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]: ...
