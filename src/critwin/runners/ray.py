"""The Ray runner: the cases of one run on Ray actors, across the GPUs and machines of a Ray cluster.

Each actor builds one sampler (the task's `setup()`, with the task's factory) when it starts and keeps it,
so the model loads once per actor and a case's cuts all go to the actor that holds its prefix cache (one
case is one response, problem or image: all its draws are one item). Each actor has `in_flight` cases
queued so it never waits for the driver. Results come back to the driver, which stores them (the driver
is the only writer of records; a journaled experiment's workers store their draws into the run directory
themselves, so the run directory must be on storage every node mounts).

Faults: an actor that dies (killed, out of memory, its node lost) is replaced, and its in-flight cases go
to another actor; after `retries` such losses a case is handed back as failed, with the reasons
(`task.lost`). A case that came through after a loss is marked (`task.retried`). A case is handed back
once, so none is counted twice.

Without `address` the runner starts a local cluster of `workers` CPUs (and the machine's GPUs) bound to
127.0.0.1, and stops it at the end; with one it joins that cluster (`ray start --head` …) and leaves it
running.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from critwin.errors import CritwinError, first_line
from critwin.runners.base import setup

LOCAL_OBJECT_STORE = 256 * 2**20
"""Object-store bytes of a cluster the runner starts itself: results are small; Ray's default (30% of RAM)
would take memory the models need."""


class _Worker:
    """One actor: holds the task, with its sampler built once, and runs cases on it."""

    def __init__(self, task: Callable[[Any], Any]):
        self.task = task
        setup(task)

    def info(self) -> dict[str, Any]:
        describe = getattr(self.task, "worker_info", None)
        return {
            "pid": os.getpid(),
            "node": socket.gethostname(),
            **(describe() if callable(describe) else {}),
        }

    def check(self) -> None:
        check = getattr(self.task, "check_worker", None)
        if callable(check):
            check()

    def run(self, item: Any) -> Any:
        return self.task(item)


@dataclass
class Ray:
    """Runs cases on `workers` Ray actors, each with `cpus_per_worker` CPUs and `gpus_per_worker` GPUs.

    address: a running cluster ("127.0.0.1:6379", "ray://…", "auto"); None starts a local one. retries: how
    many times a case may lose its actor before it is recorded as failed. in_flight: cases queued per actor.
    `remote` tells the driver to build no sampler itself: each actor builds its own from the task's factory.
    """

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    retries: int = 2
    in_flight: int = 2
    log: Callable[[str], None] | None = None
    remote: ClassVar[bool] = True
    _actors: list[Any] = field(default_factory=list, repr=False)
    _actor_class: Any = field(default=None, repr=False)
    _task: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for flag, v, lo in (
            ("--workers", self.workers, 1),
            ("retries", self.retries, 0),
            ("in_flight", self.in_flight, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise CritwinError(f"{flag} {v!r}: use a whole number >= {lo}")
        for flag, v in (
            ("--gpus-per-worker", self.gpus_per_worker),
            ("cpus_per_worker", self.cpus_per_worker),
        ):
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise CritwinError(f"{flag} {v!r}: use a number >= 0")
        if self.address is not None and self.address != "auto" and _host_port(self.address) is None:
            raise CritwinError(
                f"--ray-address {self.address!r}: use HOST:PORT (e.g. 127.0.0.1:6379), ray://HOST:PORT "
                "or auto"
            )

    # -- start and stop --------------------------------------------------------------------------------
    def start(self, task: Callable[[Any], Any]) -> list[dict[str, Any]]:
        """Connect (or start a local cluster), check that it has the CPUs and GPUs asked for, and start the
        actors; each builds its sampler. Returns each actor's `info()` (pid, node, engine). One-line
        CritwinError when the cluster is unreachable, too small, or a worker cannot build the sampler."""
        ray = _import_ray()
        self._connect(ray)
        try:
            self._check_resources(ray)
            self._actor_class = ray.remote(
                num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker, max_restarts=0
            )(_Worker)
            self._task = task
            self._actors = [self._new_actor() for _ in range(self.workers)]
            try:
                info = ray.get([a.info.remote() for a in self._actors])
            except ray.exceptions.RayActorError as err:
                raise CritwinError(
                    f"--runner ray: a worker could not build the sampler: {_cause(err)}"
                ) from None
            for i, row in enumerate(info):
                self._log(f"ray worker {i}: pid {row['pid']} on {row['node']}")
            return info
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the actors, and the cluster when this runner started it."""
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized():
            return
        for a in self._actors:
            if a is not None:
                _kill(ray, a)
        self._actors = []
        ray.shutdown()  # disconnects from a cluster given by address; stops one started here

    def _log(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():
            ray.shutdown()
        quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address is None:
            ray.init(
                num_cpus=max(1, int(round(self.workers * self.cpus_per_worker))),
                object_store_memory=LOCAL_OBJECT_STORE,
                _node_ip_address="127.0.0.1",
                **quiet,
            )
            return
        _probe(self.address)
        try:
            ray.init(address=self.address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
        except Exception as err:  # ConnectionError, or Ray's own when no GCS answers
            raise _unreachable(self.address, first_line(err)) from None

    def _check_resources(self, ray: Any) -> None:
        total = ray.cluster_resources()
        for what, each, have in (
            ("GPUs", self.gpus_per_worker, float(total.get("GPU", 0))),
            ("CPUs", self.cpus_per_worker, float(total.get("CPU", 0))),
        ):
            need = each * self.workers
            if need > have + 1e-9:
                flag = "--gpus-per-worker" if what == "GPUs" else "--workers"
                raise CritwinError(
                    f"{flag}: {self.workers} worker(s) × {each:g} {what} = {need:g} {what}, but the Ray "
                    f"cluster has {have:g}; use fewer workers or add nodes"
                )

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self._task)

    # -- Runner protocol -------------------------------------------------------------------------------
    def map(self, task: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """Run `task` on every item across the actors, yielding (item, result) as each finishes."""
        ray = _import_ray()
        if not self._actors:
            self.start(task)
        try:
            ray.get([a.check.remote() for a in self._actors])
        except ray.exceptions.RayTaskError as err:
            raise CritwinError(f"--runner ray: {_cause(err)}") from None
        dead = ray.exceptions.RayActorError
        pending = deque(range(len(items)))
        lost: dict[int, list[str]] = {}
        busy: dict[Any, tuple[Any, int, int]] = {}  # result ref -> (actor, its slot, item index)
        load = {id(a): 0 for a in self._actors}
        replacements = self.workers * max(1, self.retries)
        while pending or busy:
            for slot, actor in enumerate(self._actors):
                while actor is not None and pending and load[id(actor)] < self.in_flight:
                    i = pending.popleft()
                    busy[actor.run.remote(items[i])] = (actor, slot, i)
                    load[id(actor)] += 1
            if not busy:  # every actor died and none could replace it
                for i in pending:
                    yield items[i], task.lost(items[i], [*lost.get(i, []), "no Ray worker left"])
                return
            (ref,), _ = ray.wait(list(busy), num_returns=1)
            actor, slot, i = busy.pop(ref)
            load[id(actor)] -= 1
            try:
                result = ray.get(ref)
            except dead as err:
                reason = f"worker {slot} lost ({_cause(err)})"
                lost.setdefault(i, []).append(reason)
                if self._actors[slot] is actor:  # the first of its cases to report the loss replaces it
                    self._log(f"ray {reason}; its cases go to another worker")
                    _kill(ray, actor)
                    self._actors[slot] = None
                    if replacements > 0:
                        replacements -= 1
                        self._actors[slot] = new = self._new_actor()
                        load[id(new)] = 0
                if len(lost[i]) > self.retries:
                    yield items[i], task.lost(items[i], lost[i])
                else:
                    pending.appendleft(i)
                continue
            except ray.exceptions.RayTaskError as err:  # the task itself raised outside the case's guard
                yield items[i], task.lost(items[i], [_cause(err)])
                continue
            yield items[i], task.retried(result, lost[i]) if i in lost else result

    def worker_info(self) -> list[dict[str, Any]]:
        """Each live actor's `info()` now (its engine's counters included)."""
        ray = _import_ray()
        live = [a for a in self._actors if a is not None]
        out = []
        for a in live:
            try:
                out.append(ray.get(a.info.remote()))
            except ray.exceptions.RayActorError:
                pass
        return out


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of "HOST:PORT" or "ray://HOST:PORT"; None for any other form."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if sep and host and port.isdigit() else None


def _probe(address: str) -> None:
    """A one-line error, in seconds, when nothing listens at a HOST:PORT address (ray.init itself retries
    for minutes); "auto" is left to Ray."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=5).close()
    except OSError as err:
        raise _unreachable(address, str(err.strerror or err)) from None


def _unreachable(address: str, why: str) -> CritwinError:
    return CritwinError(
        f"--ray-address {address}: no Ray cluster answers there ({why}); start one with `ray start --head` "
        "or drop --ray-address to start a local one"
    )


def _token_auth() -> None:
    """Send this machine's Ray token when there is one. `ray start` enables token authentication (Ray >=
    2.59), but a driver joining with ray.init(address) sends its token only under RAY_AUTH_MODE=token, and
    otherwise retries for minutes; a cluster without authentication ignores the token."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def _kill(ray: Any, actor: Any) -> None:
    """Stop an actor for good (one only unavailable must not come back and run its cases twice)."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already dead
        pass


def _cause(err: BaseException) -> str:
    """One line for what went wrong inside Ray's error wrappers: the original exception's first line when
    Ray kept it; else the exception line of the remote traceback in Ray's message (an actor whose
    `__init__` raised), else the message's last line (a worker that died: its exit type and detail)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(err)):
        return first_line(cause)
    text = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if ln.strip()]
    raised = [ln for ln in text if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:", ln)]
    line = (raised or text or [type(err).__name__])[-1]
    return line if len(line) <= 300 else line[:297] + "..."


def _import_ray() -> Any:
    _token_auth()  # Ray reads its authentication mode once, when it is first imported
    try:
        import ray
    except ImportError:
        raise CritwinError(
            "--runner ray needs Ray on this machine: pip install 'critwin[ray]' (or pip install ray)"
        ) from None
    return ray
