"""`critwin compare`: positions of each method read from hand-made reasoning records (known answers), their
agreement and rates at the first wrong step with Wilson intervals, and the one-line errors for runs that
cannot be compared."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from critwin.cli import main
from critwin.experiments.compare import agree, compare_runs, positions
from critwin.rundir import RunDir, append_jsonl


def record(
    i, *, correct=False, error=None, window=None, critical=None, pivotal=(), outcome="same", draws=100
):
    return {
        "dataset": "d",
        "id": f"p{i}",
        "case": f"d/p{i}",
        "order": [0, i],
        "status": "ok",
        "response": f"r{i}",
        "correct": correct,
        "first_error": None if error is None else {"token": error},
        "curve": {"outcome": outcome},
        "windows": [] if window is None else [{"kept_lo": window[0], "kept_hi": window[1], "jump": 0.6}],
        "critical": None
        if critical is None
        else {"critical": {"kept_lo": critical[0], "kept_hi": critical[1]}},
        "pivotal": [{"token": t, "delta": d} for t, d in pivotal],
        "n_draws": draws,
    }


def make_run(path, records, model="m"):
    run = RunDir.create(path, "reasoning", {"model": model})
    for r in records:
        append_jsonl(run.path / "problems.jsonl", r)
    return run.path


def test_positions_of_each_method():
    rec = record(
        0, window=(10, 14), critical=(12, 13), pivotal=[(12, -0.5), (20, -0.7), (5, 0.4)], outcome="same"
    )
    assert positions(rec) == {"window": (10, 14), "critical": (12, 13), "pivotal": (20, 21)}
    assert "window" not in positions(record(0, window=(1, 2), outcome="correct"))  # P(correct) windows
    assert positions(record(0, pivotal=[(5, 0.4)])) == {}  # no harmful pivotal token
    assert agree((10, 14), (16, 17)) and not agree((10, 14), (17, 18)) and agree((5, 6), (5, 6), 0)


def test_rates_agreement_and_draws_from_known_records(tmp_path):
    scan = make_run(
        tmp_path / "scan",
        [
            record(0, error=12, window=(11, 13)),
            record(1, error=30, window=(50, 52)),
            record(2, correct=True, window=(5, 9)),
            record(3, error=8),
        ],
    )
    crit = make_run(
        tmp_path / "crit",
        [
            record(0, error=12, critical=(12, 13), outcome="correct", draws=1000),
            record(1, error=30, critical=(30, 31), outcome="correct", draws=1000),
            record(2, correct=True, outcome="correct", draws=1000),
            record(3, error=8, critical=(9, 10), outcome="correct", draws=1000),
        ],
    )
    got = compare_runs([scan, crit])
    assert got["n_problems"] == 4
    w, c = got["methods"]["window"], got["methods"]["critical"]
    assert (w["n_with_position"], c["n_with_position"]) == (3, 3)
    assert w["at_first_error"]["n"] == 2 and w["at_first_error"]["rate"] == 0.5  # correct: not judged
    assert c["at_first_error"]["rate"] == 1.0
    ci = stats.binomtest(1, 2).proportion_ci(0.95, "wilson")
    assert w["at_first_error"]["ci"] == pytest.approx([ci.low, ci.high])
    assert (w["mean_draws"], c["mean_draws"]) == (100, 1000)
    pair = got["agreement"]["window vs critical"]  # p0: 11-13 and 12-13 agree; p1: 50-52 and 30-31 do not
    assert (pair["n"], pair["rate"]) == (2, 0.5)
    assert got["problems"]["d/p0"] == {"window": [11, 13], "critical": [12, 13]}


def test_runs_that_cannot_be_compared_are_one_line_errors(tmp_path, capsys):
    a = make_run(tmp_path / "a", [record(0, window=(1, 2))])
    other_model = make_run(tmp_path / "b", [record(0, window=(1, 2))], model="other")
    other_data = make_run(tmp_path / "c", [record(5, window=(1, 2))])
    other_text = make_run(tmp_path / "d", [{**record(0, window=(1, 2)), "response": "something else"}])
    RunDir.create(tmp_path / "e", "structured", {})
    cases = [
        ([a], "at least two run directories"),
        ([a, other_model], "different models"),
        ([a, other_data], "share no finished problem"),
        ([a, other_text], "different original responses"),
        ([a, tmp_path / "e"], "'structured' run"),
        ([a, tmp_path / "nope"], "compare:"),
    ]
    for runs, message in cases:
        with pytest.raises(SystemExit) as done:
            main(["compare", *map(str, runs), "--json"])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_the_command_prints_one_json_object(tmp_path, capsys):
    a = make_run(tmp_path / "a", [record(0, error=3, window=(2, 4))])
    b = make_run(tmp_path / "b", [record(0, error=3, pivotal=[(3, -0.5)], outcome="correct")])
    forked = {**record(0, error=3, draws=40), "forks": {"n_draws": 500, "top": {"kept_lo": 3, "kept_hi": 4}}}
    assert compare_runs([a, make_run(tmp_path / "f", [forked])])["methods"]["fork"]["mean_draws"] == 540
    with pytest.raises(SystemExit) as done:
        main(["compare", str(a), str(b), "--json"])
    assert done.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["agreement"]["window vs pivotal"]["rate"] == 1.0
