"""The grading subprocess pool: hard time-outs, crashes and errors are failed items and the pool recovers."""

from __future__ import annotations

import operator
import os
import time

import pytest

from critwin.errors import CritwinError
from critwin.features.grading import CallableGrader, MathGrader
from critwin.features.grading_pool import GradingPool
from critwin.types import Failure

# A per-item limit far below the sleeps below: if the kill did not work, the pytest-timeout
# marker stops the test (it would otherwise sleep for an hour) rather than a wall-clock assert.
LIMIT_S = 0.5
HANG_S = 3600


def hanging_grader(answer: str, gold: str) -> bool:
    """A user grader that hangs on the answer "hang" (module level so it pickles by reference)."""
    if answer == "hang":
        time.sleep(HANG_S)
    return answer == gold


@pytest.fixture(scope="module")
def pool():
    with GradingPool(n_workers=2, timeout_s=LIMIT_S) as p:
        yield p


@pytest.mark.timeout(60)
def test_hanging_item_times_out_and_pool_keeps_working(pool):
    timeouts_before = pool.n_timeouts
    out = pool.run(time.sleep, [(0,), (HANG_S,), (0,), (HANG_S,), (0,)])
    assert out[0] is None and out[2] is None and out[4] is None  # time.sleep returns None
    for i in (1, 3):
        assert isinstance(out[i], Failure) and "time-out" in out[i].reason
    assert pool.n_timeouts - timeouts_before == 2
    # the hung workers were replaced: the same pool still computes
    assert pool.run(operator.add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]


@pytest.mark.timeout(60)
def test_crash_and_exception_are_failed_items(pool):
    crashes_before = pool.n_crashes
    crashed = pool.run(os._exit, [(3,)])[0]
    assert isinstance(crashed, Failure) and "crashed" in crashed.reason and "3" in crashed.reason
    assert pool.n_crashes - crashes_before == 1
    out = pool.run(operator.truediv, [(1, 0), (1, 4)])
    assert isinstance(out[0], Failure) and "ZeroDivisionError" in out[0].reason
    assert out[1] == 0.25


@pytest.mark.timeout(60)
def test_per_call_timeout_overrides_default(pool):
    out = pool.run(time.sleep, [(0.05,)], timeout_s=5.0)
    assert out == [None]
    with pytest.raises(CritwinError, match="timeout_s"):
        pool.run(time.sleep, [(0,)], timeout_s=0)


def test_unpicklable_function_is_a_critwin_error(pool):
    with pytest.raises(CritwinError, match="module level"):
        pool.run(lambda x: x, [(1,)])
    assert pool.run(operator.neg, []) == []


@pytest.mark.timeout(60)
def test_isolated_user_grader_times_out_per_item(pool):
    g = CallableGrader(hanging_grader, isolate=True, pool=pool, timeout_s=LIMIT_S)
    verdicts = g.grade_many([("a", "a"), ("hang", "a"), ("b", "a")])
    assert verdicts[0] is True and verdicts[2] is False
    assert isinstance(verdicts[1], Failure) and "time-out" in verdicts[1].reason


@pytest.mark.timeout(60)
def test_math_grader_uses_the_pool_and_survives_a_hung_neighbour(pool):
    pool.run(time.sleep, [(HANG_S,)])  # leaves a freshly replaced worker behind
    g = MathGrader(pool=pool, timeout_s=20.0)
    assert g.grade_many([("0.5", r"\frac{1}{2}"), ("2", "3")]) == [True, False]


def test_closed_pool_and_bad_settings_are_critwin_errors():
    p = GradingPool(n_workers=1, timeout_s=1.0)
    p.close()
    with pytest.raises(CritwinError, match="closed"):
        p.run(operator.neg, [(1,)])
    with pytest.raises(CritwinError, match="n_workers"):
        GradingPool(n_workers=0)
    with pytest.raises(CritwinError, match="timeout_s"):
        GradingPool(timeout_s=-1)
    with pytest.raises(CritwinError, match="start_method"):
        GradingPool(start_method="teleport")


@pytest.mark.timeout(60)
def test_interrupted_run_leaves_no_stale_replies(monkeypatch):
    import multiprocessing.connection as mpc

    with GradingPool(n_workers=1, timeout_s=30.0) as p:
        real_wait = mpc.wait

        def interrupted_wait(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(mpc, "wait", interrupted_wait)
        with pytest.raises(KeyboardInterrupt):
            p.run(operator.add, [(1, 1)])
        monkeypatch.setattr(mpc, "wait", real_wait)
        # a stale reply (2) from the interrupted item must not be read as this item's result
        assert p.run(operator.add, [(10, 10)]) == [20]


@pytest.mark.timeout(60)
def test_function_the_worker_cannot_load_is_a_failed_item(tmp_path, monkeypatch):
    import importlib
    import multiprocessing as mp
    import sys

    if "forkserver" not in mp.get_all_start_methods():
        pytest.skip("needs the forkserver start method (POSIX)")
    with GradingPool(n_workers=1, timeout_s=5.0, start_method="forkserver") as p:
        assert p.run(operator.neg, [(1,)]) == [-1]  # the forkserver is up with the old sys.path
        (tmp_path / "critwin_unloadable_mod.py").write_text("def f(x):\n    return x\n")
        monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
        mod = importlib.import_module("critwin_unloadable_mod")
        out = p.run(mod.f, [(1,), (2,)])
        assert all(isinstance(o, Failure) and "could not load" in o.reason for o in out)
        assert p.run(operator.neg, [(2,)]) == [-2]  # still in sync after the failed loads


NO_GUARD = """\
from critwin.features.grading import MathGrader

print("verdict", MathGrader(timeout_s=20.0).grade("1/2", "0.5"))
"""
GUARDED = """\
from critwin.features.grading import MathGrader

if __name__ == "__main__":
    print("verdict", MathGrader(timeout_s=20.0).grade("1/2", "0.5"))
"""


def _run_script(path):
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=150,
                          cwd=path.parent, env=env)


@pytest.mark.timeout(300)
def test_script_without_main_guard_says_what_happened_and_how_to_fix_it(tmp_path):
    script = tmp_path / "grade_it.py"
    script.write_text(NO_GUARD)
    proc = _run_script(script)
    assert proc.returncode == 1 and "verdict" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("critwin.errors.CritwinError: grader subprocess exited")
    assert str(script) in last and 'if __name__ == "__main__":' in last
    # the worker itself stopped at once, saying why (not multiprocessing's bootstrapping RuntimeError)
    assert "tried to start graders of its own while importing the main module" in proc.stderr
    assert "did not start within" not in proc.stderr
    # the fix the message names works
    script.write_text(GUARDED)
    proc = _run_script(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "verdict True"


@pytest.mark.timeout(120)
def test_worker_that_cannot_import_its_preload_is_named(tmp_path, monkeypatch):
    import sys

    (tmp_path / "critwin_broken_preload.py").write_text("raise ImportError('broken on purpose')\n")
    (tmp_path / "critwin_slow_preload.py").write_text("import time\ntime.sleep(3600)\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    with GradingPool(n_workers=1, start_method="spawn", preload=("critwin_broken_preload",)) as p:
        with pytest.raises(CritwinError, match=r"exited \(code 1\) while importing \['critwin_broken_pre"):
            p.run(operator.neg, [(1,)])
    with GradingPool(n_workers=1, start_method="spawn", preload=("critwin_slow_preload",),
                     startup_timeout_s=3.0) as p:
        with pytest.raises(CritwinError, match="did not start within 3 s"):
            p.run(operator.neg, [(1,)])


# A real answer that math-verify takes about 10 s to parse (2000 fractions, ~5 ms each), far above 1 s.
_FRACTIONS = "+".join(f"\\frac{{{i}}}{{{i + 1}}}" for i in range(1, 2000))
SLOW_TO_PARSE = f"So the sum is $\\boxed{{{_FRACTIONS}}}$."


@pytest.mark.timeout(120)
def test_reading_a_math_answer_is_bounded_by_the_hard_time_out(pool):
    g = MathGrader(pool=pool, timeout_s=1.0)
    read = g.read_many([SLOW_TO_PARSE, r"so $\boxed{7}$"])
    assert isinstance(read[0], Failure) and "time-out" in read[0].reason and read[1] == "7"
    assert g.extract_many([SLOW_TO_PARSE]) == [None]  # no answer read: a failed item
    assert g.n_extract_failures == 2  # failures are not cached: the second call tried again
    assert g.grade(g.extract(r"so $\boxed{\frac12}$"), "0.5") is True  # the pool recovered
