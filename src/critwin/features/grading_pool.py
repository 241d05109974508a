"""A pool of grader subprocesses with a hard time-out per item.

math-verify can hang on huge expressions and its own time-out relies on SIGALRM, which only works on
the main thread (DESIGN.md §5). So grading runs in separate processes: each item gets a hard
wall-clock limit; a worker that overruns it is killed and replaced, and a worker that dies is
replaced too. Either way the item comes back as a `Failure` — a failed item, never an outcome — and
the caller never sees an exception or a hang.

Workers start with the "forkserver" method where the platform has it (the server imports
math-verify once, so a replacement worker is up in milliseconds) and "spawn" elsewhere; never plain
"fork", which is unsafe in a process that holds torch threads. Both methods run the main script
again in every worker (as module ``__mp_main__``), so a script that grades at import time must guard
its entry point with ``if __name__ == "__main__":``. Without the guard the worker would start graders
of its own while it boots and dies; the pool tells that case apart from a slow or broken start and
raises a `CritwinError` that names the script and the fix.
"""

from __future__ import annotations

import atexit
import collections
import importlib
import logging
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from critwin.errors import CritwinError
from critwin.types import Failure

DEFAULT_PRELOAD: tuple[str, ...] = ("critwin.features.grading", "math_verify")
_BOOTED = "booted"  # the worker runs: multiprocessing has re-imported the main module without error
_READY = "ready"  # ... and it has imported (and warmed up) `preload`
_STARTED = "started"
_EOF = object()


def _worker_main(conn: mpc.Connection, preload: tuple[str, ...]) -> None:
    """Worker loop: receive (fn, args), send (True, result) or (False, error text); stop on None/EOF."""
    conn.send(_BOOTED)
    # Ctrl-C goes to the whole process group: let the parent decide, it kills workers on close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # math-verify warns once that its own SIGALRM time-out is off: the pool's hard limit replaces it.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    for name in preload:  # no-op under forkserver (already imported), needed under spawn
        module = importlib.import_module(name)
        # A module may warm the worker up (math-verify's LaTeX parser builds its tables on first use,
        # about a second): done here, it is start-up time, not charged to the first item's time-out.
        warm_up = getattr(module, "warm_up_grader_worker", None)
        if callable(warm_up):
            try:
                warm_up()
            except Exception:  # a failed warm-up only costs speed; the items report real errors
                pass
    conn.send(_READY)
    while True:
        try:
            msg = conn.recv()  # unpickling may import the function's module: not part of its time
        except (EOFError, OSError):
            return
        except Exception as exc:
            conn.send((False, f"could not load the grader call: {type(exc).__name__}: {exc}"))
            continue
        if msg is None:
            return
        fn, args = msg
        conn.send(_STARTED)  # the per-item clock starts now
        try:
            out: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # every error is reported as a failed item, nothing escapes
            out = (False, f"{type(exc).__name__}: {exc}")
        try:
            conn.send(out)
        except Exception as exc:  # e.g. an unpicklable result
            conn.send((False, f"result could not be sent back: {type(exc).__name__}: {exc}"))


def _main_script() -> str | None:
    """The file of the ``__main__`` module (which spawn / forkserver workers import again), or None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return str(path) if path else None


def _guard_hint(script: str | None) -> str:
    where = f"your script {script}" if script else "the main module"
    return (
        f"multiprocessing runs {where} again in each grader subprocess, so code at its top level that "
        "grades (or scans) runs there too; put it under `if __name__ == \"__main__\":`"
    )


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, preload: tuple[str, ...], startup_timeout_s: float) -> None:
        if getattr(mp.current_process(), "_inheriting", False):
            # We are a worker that is still importing the main script, and that script grades at import
            # time: starting a process now cannot work (multiprocessing would raise a RuntimeError).
            raise CritwinError(
                "a grader subprocess tried to start graders of its own while importing the main module; "
                + _guard_hint(_main_script())
            )
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child_conn, preload), daemon=True,
                                   name="critwin-grader")
        self.process.start()
        child_conn.close()
        self.conn = parent_conn
        deadline = time.monotonic() + startup_timeout_s
        booted = False
        for expected in (_BOOTED, _READY):
            got = self._wait_for(deadline)
            if got == expected:
                booted = booted or got == _BOOTED
                continue
            self._fail_start(got, booted, preload, startup_timeout_s)

    def _wait_for(self, deadline: float) -> Any:
        """The worker's next message; `_EOF` when it died first, None when `deadline` passed."""
        mpc.wait([self.conn, self.process.sentinel], timeout=max(0.0, deadline - time.monotonic()))
        try:
            if self.conn.poll(0):
                return self.conn.recv()
        except (EOFError, OSError):
            return _EOF
        return _EOF if not self.process.is_alive() else None

    def _fail_start(self, got: Any, booted: bool, preload: tuple[str, ...], startup_timeout_s: float) -> None:
        """Kill the worker and raise the `CritwinError` that says why it did not start."""
        if got is _EOF:
            self.process.join(timeout=5.0)
        code = self.process.exitcode
        self.kill()
        if got is None:
            raise CritwinError(
                f"grader subprocess did not start within {startup_timeout_s:g} s; the machine may be "
                f"overloaded, or importing {list(preload)} hangs: raise startup_timeout_s or check them"
            )
        if not booted:
            raise CritwinError(
                f"grader subprocess exited (code {code}) while importing the main module, before it could "
                f"run; {_guard_hint(_main_script())} (its error is printed above)"
            )
        raise CritwinError(
            f"grader subprocess exited (code {code}) while importing {list(preload)}; check that they "
            "import cleanly in a fresh Python (its error is printed above)"
        )

    def kill(self) -> None:
        """Kill the process (SIGKILL: a hung sympy call ignores gentler signals) and close the pipe."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5.0)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=1.0)
        self.kill()


class GradingPool:
    """Runs a function on many argument tuples in subprocesses, with a hard time-out per item.

    `run(fn, args_list)` returns one entry per item in input order: the function's result, or a
    `Failure` when the item timed out, raised, or crashed its worker. Hung or dead workers are
    killed and replaced, so the pool keeps working. `fn` must be picklable (a module-level function
    or a builtin). The per-item clock starts when the worker begins the call, so importing `fn`'s
    module in a fresh worker is not charged to the item (that step has `startup_timeout_s`).
    Thread-safe; usable as a context manager; `close()` stops the workers.
    """

    def __init__(self, n_workers: int | None = None, timeout_s: float = 10.0, *,
                 start_method: str | None = None, preload: Sequence[str] = DEFAULT_PRELOAD,
                 startup_timeout_s: float = 120.0) -> None:
        if n_workers is None:
            n_workers = max(1, min(2, os.cpu_count() or 1))
        if n_workers < 1:
            raise CritwinError(f"n_workers={n_workers} invalid: the grading pool needs at least 1 worker")
        if not timeout_s > 0:
            raise CritwinError(f"timeout_s={timeout_s} invalid: the per-item time-out must be > 0 seconds")
        methods = mp.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method not in methods:
            raise CritwinError(f"start_method {start_method!r} unavailable here: use one of {methods}")
        self.n_workers = n_workers
        self.timeout_s = float(timeout_s)
        self.start_method = start_method
        self.preload = tuple(preload)
        self.startup_timeout_s = startup_timeout_s
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # Only takes effect if the forkserver is not running yet; workers import `preload` anyway.
            self._ctx.set_forkserver_preload(list(self.preload))
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.n_timeouts = 0
        self.n_crashes = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop all workers; the pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            for w in self._workers:
                w.stop()
            self._workers = []

    def __del__(self) -> None:  # best effort; daemonic workers also die with the parent
        try:
            for w in self._workers:
                w.kill()
        except Exception:
            pass

    # -- work ----------------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.preload, self.startup_timeout_s)

    def run(self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]],
            timeout_s: float | None = None) -> list[Any]:
        """`fn(*args)` for every tuple in `args_list`, each under a hard limit of `timeout_s` seconds.

        Returns results in input order; a time-out, an exception or a worker crash gives a `Failure`
        (reason says which) in that slot. Never raises for a bad item.
        """
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        if not limit > 0:
            raise CritwinError(f"timeout_s={timeout_s} invalid: the per-item time-out must be > 0 seconds")
        n = len(args_list)
        if n == 0:
            return []
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise CritwinError(
                f"grader function {fn!r} cannot be sent to a subprocess ({type(exc).__name__}): define it "
                "at module level, or grade in-process (isolate=False)"
            ) from None
        with self._lock:
            if self._closed:
                raise CritwinError("grading pool is closed: create a new GradingPool")
            try:
                return self._run_locked(fn, args_list, limit)
            except BaseException:
                # Interrupted (Ctrl-C, a failed restart): busy workers may still send stale replies,
                # so drop them all; the next run starts fresh ones.
                for w in self._workers:
                    w.kill()
                self._workers = []
                raise

    def _run_locked(self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]],
                    limit: float) -> list[Any]:
        n = len(args_list)
        results: list[Any] = [None] * n
        pending = collections.deque(range(n))
        # worker slot -> [item index, deadline, started]; until the worker says it started the call,
        # the deadline is the generous start-up limit (loading the function may import modules).
        busy: dict[int, list[Any]] = {}
        while len(self._workers) < min(self.n_workers, n):
            self._workers.append(self._spawn())

        while pending or busy:
            for slot in range(len(self._workers)):
                if slot in busy or not pending:
                    continue
                i = pending.popleft()
                try:
                    self._workers[slot].conn.send((fn, tuple(args_list[i])))
                except (pickle.PicklingError, TypeError, AttributeError) as exc:
                    results[i] = Failure(f"grader input could not be sent: {type(exc).__name__}: {exc}")
                    continue
                except (OSError, ValueError):  # the worker died while idle: replace it, retry the item
                    self._replace(slot)
                    pending.appendleft(i)
                    continue
                busy[slot] = [i, time.monotonic() + self.startup_timeout_s, False]
            if not busy:
                continue

            now = time.monotonic()
            wait_s = max(0.0, min(state[1] for state in busy.values()) - now)
            handles: list[Any] = []
            for slot in busy:
                handles += [self._workers[slot].conn, self._workers[slot].process.sentinel]
            mpc.wait(handles, timeout=wait_s)

            for slot, state in list(busy.items()):
                w = self._workers[slot]
                got = self._poll(w)
                while got == _STARTED:
                    state[1], state[2] = time.monotonic() + limit, True
                    got = self._poll(w)
                i, deadline, started = state
                if got is _EOF or (got is None and not w.process.is_alive()):
                    w.process.join(timeout=5.0)
                    self.n_crashes += 1
                    results[i] = Failure(f"grader process crashed (exit code {w.process.exitcode})")
                    self._replace(slot)
                elif got is not None:
                    ok, value = got
                    results[i] = value if ok else Failure(f"grader error: {value}")
                elif time.monotonic() >= deadline:
                    self.n_timeouts += 1
                    results[i] = Failure(f"grader time-out after {limit:g} s" if started else
                                         f"grader call not started within {self.startup_timeout_s:g} s")
                    self._replace(slot)
                else:
                    continue
                del busy[slot]
        return results

    @staticmethod
    def _poll(w: _Worker) -> Any:
        """The worker's next message ((ok, value) or `_STARTED`) if one is waiting, `_EOF` if its pipe
        is closed, else None."""
        try:
            if w.conn.poll(0):
                return w.conn.recv()
        except (EOFError, OSError):
            return _EOF
        return None

    def _replace(self, slot: int) -> None:
        self._workers[slot].kill()
        self._workers[slot] = self._spawn()


_default_pool: GradingPool | None = None
_default_lock = threading.Lock()


def default_pool() -> GradingPool:
    """The process-wide grading pool (created on first use, closed at exit)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = GradingPool()
            atexit.register(_default_pool.close)
        return _default_pool
