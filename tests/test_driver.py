"""The driver: results depend on the run's seed and the case ids only — not on order, shards or resume."""

from __future__ import annotations

import json

import pytest

from critwin.driver import run, shard_of
from critwin.errors import CritwinError
from critwin.experiments import reasoning as R
from critwin.experiments.base import Case, CaseResult
from critwin.experiments.demo import DemoExperiment


def _reasoning(limit: int = 6) -> R.ReasoningExperiment:
    ps = R.load_reasoning_problems(R.BUNDLED_PROBLEMS, "arith", limit=limit)
    cfg = R.ReasoningConfig.from_flat(k=3, fractions=(0.2, 0.5, 0.8), max_new_tokens=300, seed=4)
    return R.ReasoningExperiment([ps], cfg, str(R.BUNDLED_MODEL.resolve()))


@pytest.fixture(scope="module")
def sampler():
    experiment = _reasoning()
    return R.lm_factory("hf", R.BUNDLED_MODEL, experiment, device="cpu")()


def test_three_shards_in_any_order_give_the_one_worker_summary(sampler, tmp_path):
    experiment = _reasoning()
    whole = run(experiment, sampler, out=tmp_path / "whole")
    for i in (2, 0, 1):
        run(experiment, sampler, out=tmp_path / "shards", shard=(i, 3))
    one = (tmp_path / "whole" / R.SUMMARY).read_text()
    three = (tmp_path / "shards" / R.SUMMARY).read_text()
    assert json.loads(three) == json.loads(one)
    assert three == one  # byte for byte, case order included
    assert whole.n_computed == 6 and whole.summary["datasets"]
    # The per-case records agree too (draws are seeded by the case id alone).
    key = lambda r: {k: v for k, v in r.items() if k != "order"}  # noqa: E731
    assert [key(r) for r in R.read_records(tmp_path / "whole")] == [
        key(r) for r in R.read_records(tmp_path / "shards")
    ]


def test_shards_cover_every_case_once():
    cases = [Case(str(i), (i,)) for i in range(10)]
    got = sorted(c.id for i in range(3) for c in shard_of(cases, (i, 3)))
    assert got == sorted(c.id for c in cases)
    for bad in ((3, 3), (-1, 2), (0, 0)):
        with pytest.raises(CritwinError, match="--shard"):
            shard_of(cases, bad)


class _Raises(DemoExperiment):
    """The demo with one case whose user code raises: a failed case, the others measured."""

    def run_case(self, sampler, case, rng) -> CaseResult:
        if case.id == self.cases()[1].id:
            raise RuntimeError("feature broke")
        return super().run_case(sampler, case, rng)


def test_a_raising_case_is_a_failed_record_and_is_retried(tmp_path):
    exp = _Raises(seed=1, n=5, n_language=5)
    res = run(exp, out=tmp_path / "d")
    assert res.n_failed == 1 and "RuntimeError: feature broke" in res.failures[0]
    again = run(DemoExperiment(seed=1, n=5, n_language=5), out=tmp_path / "d")
    assert again.n_resumed == len(exp.cases()) - 1 and again.n_computed == 1 and again.n_failed == 0


def test_duplicate_case_ids_are_refused(tmp_path):
    class Twice(DemoExperiment):
        def cases(self):
            c = super().cases()
            return [c[0], c[0]]

    with pytest.raises(CritwinError, match="appears twice"):
        run(Twice(n=2, n_language=2), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


_SHARD = """
import sys
from critwin.driver import run
from critwin.experiments.demo import DemoExperiment
i = int(sys.argv[2])
run(DemoExperiment(seed=3, n=40, n_language=40), out=sys.argv[1], shard=(i, 2), report=False)
"""


def test_two_processes_filling_one_run_at_once_lose_nothing(tmp_path):
    """Two real processes compute the two halves of the cases into one run directory at the same time; the
    result equals one process computing all of them (every case once, every draw, identical curves)."""
    import subprocess
    import sys

    from critwin.rundir import RunDir

    exp = DemoExperiment(seed=3, n=40, n_language=40)
    run(exp, out=tmp_path / "one", report=False)
    # The run directory must exist before the shards race to create it (their configs are equal, so the
    # second creator joins; see the run store's tests for that race).
    RunDir.create(tmp_path / "two", exp.name, exp.config())
    procs = [
        subprocess.Popen([sys.executable, "-c", _SHARD, str(tmp_path / "two"), str(i)],
                         stderr=subprocess.PIPE)
        for i in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    one, two = RunDir.open(tmp_path / "one"), RunDir.open(tmp_path / "two")
    names = [c.id for c in exp.cases()]
    assert sorted(one.case_names()) == sorted(two.case_names()) == sorted(names)
    for name in names:
        a, b = one.case(name), two.case(name)
        assert a.curve.to_frame().equals(b.curve.to_frame()), name
    sa, sb = one.read_samples(), two.read_samples()
    assert len(sa) == len(sb) == 40 * sum(len(one.case(n).curve.t) for n in names)  # n = 40 per t
    key = ["case", "t", "draw"]
    rows_a, rows_b = (s.sort_values(key).reset_index(drop=True)[[*key, "label", "failed"]] for s in (sa, sb))
    assert rows_a.equals(rows_b) and not rows_b.duplicated(key).any()
    assert sorted(r["case"] for r in two.records("records")) == sorted(names)  # each case recorded once
