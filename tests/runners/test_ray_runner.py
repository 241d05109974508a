"""`--runner ray` on a real local Ray cluster (`ray start --head`, bound to 127.0.0.1, stopped by its
PID): a reasoning scan of the bundled model on 2 actors gives the local runner's summary.json; killing an
actor mid-run loses and double-counts no case (its cases are retried and say so); killing the driver and
re-running resumes without recomputing; bad input is a one-line error before any work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _servers import free_port

# A Ray cluster's processes and two model-holding actors take both cores: these run with the engine tests,
# one at a time.
pytestmark = [pytest.mark.engine, pytest.mark.slow]

CRITWIN = str(Path(sys.executable).with_name("critwin"))
LIMIT = 8


def scan_args(out: Path, *extra: str) -> list[str]:
    return ["scan", "--out", str(out), "--limit", str(LIMIT), "-k", "4", "--fractions", "0.2,0.5,0.8",
            "--threads", "1", "--no-progress", "--json", *extra]


def critwin(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CRITWIN, *args], capture_output=True, text=True, timeout=timeout, env=env)


def start(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([CRITWIN, *args], stdout=subprocess.PIPE, stderr=log.open("w"), text=True)


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def wait_for(cond, timeout: float = 300, what: str = "") -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray head node on 127.0.0.1 (`ray start --head --block`), its address; stopped by its PID."""
    port = free_port()
    # Ray's socket paths must stay under 107 characters, so its folder is short, not under pytest's tmp.
    tmp = tempfile.mkdtemp(prefix="crw-ray-")
    log = Path(tmp) / "head.log"
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address",
         "127.0.0.1", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir",
         tmp, "--disable-usage-stats"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(lambda: "will now block" in log.read_text() or head.poll() is not None, 180, "ray start")
        assert head.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The same scan on the local runner: the reference every Ray run must reproduce."""
    out = tmp_path_factory.mktemp("local") / "run"
    done = critwin(*scan_args(out))
    assert done.returncode == 0, done.stderr
    return summary(out)


def _worker_pids(out: Path) -> list[int]:
    return [r["pid"] for r in lines(out / "engines.jsonl") if r.get("phase") == "start" and "worker" in r]


def _finished(out: Path) -> list[dict]:
    return [r for r in lines(out / "problems.jsonl") if r.get("status") == "ok"]


def test_a_scan_on_two_ray_workers_gives_the_local_runners_summary(cluster, local, tmp_path):
    out = tmp_path / "ray"
    done = critwin(*scan_args(out, "--runner", "ray", "--ray-address", cluster, "--workers", "2"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["out"] == str(out)
    assert summary(out) == local
    pids = _worker_pids(out)
    assert len(set(pids)) == 2 and os.getpid() not in pids  # two actors, neither of them this process
    ids = [r["case"] for r in lines(out / "problems.jsonl")]
    assert len(ids) == len(set(ids)) == LIMIT


def test_killing_an_actor_mid_run_retries_its_cases_and_counts_each_once(cluster, local, tmp_path):
    out = tmp_path / "ray"
    proc = start(*scan_args(out, "--runner", "ray", "--ray-address", cluster), log=tmp_path / "err")
    try:
        wait_for(lambda: len(_worker_pids(out)) == 2 or proc.poll() is not None, 300, "the workers")
        wait_for(lambda: _finished(out) or proc.poll() is not None, 300, "a finished case")
        assert proc.poll() is None, (tmp_path / "err").read_text()
        victim = _worker_pids(out)[0]
        os.kill(victim, signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 0, err
    assert "ray worker 0 lost" in err
    records = lines(out / "problems.jsonl")
    ids = [r["case"] for r in records]
    assert len(ids) == len(set(ids)) == LIMIT  # none lost, none twice
    retried = [r for r in records if r.get("retried")]
    assert retried and all(r["status"] == "ok" for r in records)
    assert all("worker 0 lost" in reason for r in retried for reason in r["retried"])
    assert summary(out) == local


def test_killing_the_driver_then_rerunning_resumes_without_recomputing(cluster, local, tmp_path):
    out = tmp_path / "ray"
    args = scan_args(out, "--runner", "ray", "--ray-address", cluster)
    proc = start(*args, log=tmp_path / "err")
    try:
        wait_for(lambda: len(_finished(out)) >= 2 or proc.poll() is not None, 300, "two finished cases")
        assert proc.poll() is None, (tmp_path / "err").read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        proc.kill()
    before = {r["case"] for r in _finished(out)}
    assert 2 <= len(before) < LIMIT
    done = critwin(*args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_resumed"] == len(before)
    again = [r["case"] for r in lines(out / "problems.jsonl")]
    assert len(again) == LIMIT  # the finished cases were not computed (nor recorded) twice
    assert summary(out) == local


def _one_line_error(done: subprocess.CompletedProcess, *parts: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("critwin: error:"), done.stderr
    for p in parts:
        assert p in last, last


def test_a_cluster_too_small_is_a_one_line_error_before_any_work(cluster, tmp_path, capfd):
    """(The errors that need no cluster are in tests/cli/test_cli_bad_inputs.py.)"""
    from critwin.cli import main

    out = tmp_path / "run"
    for extra, parts in ((["--gpus-per-worker", "1"], ("2 GPUs", "the Ray cluster has 0")),
                         (["--workers", "3"], ("3 worker(s)", "3 CPUs", "has 2"))):
        capfd.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(scan_args(out, "--runner", "ray", "--ray-address", cluster, *extra))
        got, err = capfd.readouterr()
        assert exc.value.code == 2 and got == ""
        last = err.strip().splitlines()[-1]
        assert last.startswith("critwin: error:") and "Traceback" not in err, err
        assert all(p in last for p in parts), last
    assert not out.exists()  # nothing was started, so nothing was written


def test_a_worker_without_the_engine_is_a_one_line_error_naming_what_is_missing(cluster, tmp_path,
                                                                              monkeypatch):
    """The engine's module exists on the driver only (a folder on this process's sys.path): the workers,
    separate processes, cannot import it, as on a node where the engine is not installed."""
    from critwin.driver import run
    from critwin.errors import CritwinError
    from critwin.experiments import reasoning as R
    from critwin.runners.ray import Ray

    pkg = tmp_path / "driver_only"
    pkg.mkdir()
    (pkg / "driver_only_engine.py").write_text("def load(model, **kw):\n    raise RuntimeError('unused')\n")
    monkeypatch.syspath_prepend(str(pkg))
    import driver_only_engine

    exp = R.demo_experiment()
    factory = R.lm_factory(driver_only_engine.load, R.BUNDLED_MODEL, exp)
    with pytest.raises(CritwinError, match="a worker could not build the sampler: .*driver_only_engine"):
        run(exp, factory=factory, out=tmp_path / "run", runner=Ray(address=cluster, workers=1))
    assert not (tmp_path / "run").exists()


def test_a_run_directory_the_workers_cannot_see_is_a_one_line_error(cluster, tmp_path):
    """The driver writes into a tmpfs mounted in its own mount namespace (`unshare -m`); the cluster's
    workers, outside it, see the empty folder underneath, as on a node without the shared storage."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to give the driver storage the workers cannot see")
    private = tmp_path / "private"
    private.mkdir()
    out = private / "run"
    cmd = " ".join([f"mount -t tmpfs none {private} &&", CRITWIN,
                    *scan_args(out, "--runner", "ray", "--ray-address", cluster, "--workers", "1")])
    done = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, timeout=600)
    _one_line_error(done, f"the run directory {out} is not visible on worker node", "storage every node")


# Last in the file, in a temp folder of its own: twice in fresh clones (never when the file ran alone, five
# times, once under a CPU hog) every test after this one that used the module's cluster failed to create
# its actors ("SchedulingCancelled: Actor creation cancelled"), so a second cluster on this machine is
# started only after the module's cluster has served its tests.
def test_without_an_address_the_runner_starts_and_stops_its_own_cluster(local, tmp_path):
    out = tmp_path / "ray"
    own_tmp = Path(tempfile.mkdtemp(prefix="crw-own-", dir="/tmp"))  # short: Ray's socket paths
    env = {**os.environ, "TMPDIR": str(own_tmp)}
    done = critwin(*scan_args(out, "--runner", "ray", "--workers", "2"), env=env)
    assert done.returncode == 0, done.stderr
    assert summary(out) == local
    for pid in _worker_pids(out):  # its actors went with the cluster
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 60, f"actor {pid} to stop")
    shutil.rmtree(own_tmp, ignore_errors=True)
