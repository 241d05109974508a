"""--strategy, --budget, --n-min and --n-max on `critwin scan` and `critwin jailbreak windows`: bad values
are one line, exit 2, before any model loads and with nothing written; good ones run, are recorded, and
the default gives the curves of an explicit --strategy fixed."""

from __future__ import annotations

import json

import pytest

from critwin.cli import main
from critwin.cli.checks import STRATEGIES
from critwin.experiments import reasoning as R
from critwin.strategies import STRATEGY_NAMES

SCAN = ["scan", "--limit", "2", "--no-progress"]
JW = ["jailbreak", "windows", "--model", str(R.BUNDLED_MODEL), "--prompt", "Add up a=1, b=2.",
      "--prefill", "a=1, b=2", "--step", "2"]  # 8 characters: cuts at 0, 2, 4, 6, 8 kept

BAD = [
    (["--strategy", "sideways"], "--strategy 'sideways'", "use one of fixed, adaptive, bisect, every-prefix"),
    (["--strategy", "adaptive", "--n-min", "10", "--n-max", "5"], "--n-min 10 > --n-max 5",
     "use --n-min <= --n-max"),
    (["--n-min", "4"], "--n-min/--n-max set the draws per point of --strategy adaptive", "--strategy fixed"),
    (["--strategy", "bisect", "--n-max", "4"], "--n-min/--n-max", "--strategy bisect"),
    (["--budget", "0"], "--budget 0", "whole number >= 1"),
    (["--strategy", "adaptive", "--n-min", "0"], "--n-min 0", "whole number >= 1"),
    (["--strategy", "bisect", "--budget", "1"], "--budget 1 is smaller than one draw per initial point",
     "--budget"),
]
SCAN_BAD = [
    *BAD,
    (["--budget", "2"], "--budget 2 is smaller than one draw per initial point (6 points)",
     "use --budget 96 or more"),
    (["--strategy", "adaptive", "--budget", "4", "--fractions", "0.1,0.5,0.9,0.95,0.99,0.5"],
     "(5 points)", "use --budget 40 or more"),
]
JW_BAD = [
    *BAD,
    (["--budget", "4"], "--budget 4 is smaller than one draw per initial point (5 points)", "--budget 80"),
    (["--strategy", "every-prefix", "--budget", "8"], "(9 points)", "--budget 144 or more"),
]


def _cli(capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def no_run(monkeypatch):
    """Fail loudly if a command gets as far as the run (where the model loads)."""
    import critwin.driver

    def refuse(*_a, **_k):
        raise AssertionError("the run started: the error came too late")

    monkeypatch.setattr(critwin.driver, "run", refuse)


@pytest.mark.parametrize(("cmd", "extra", "problem", "fix"),
                         [("scan", *c) for c in SCAN_BAD] + [("jailbreak windows", *c) for c in JW_BAD],
                         ids=[f"scan {' '.join(c[0])}" for c in SCAN_BAD]
                         + [f"jailbreak {' '.join(c[0])}" for c in JW_BAD])
def test_bad_values_are_one_line_exit_2_before_any_model_loads(cmd, extra, problem, fix, tmp_path, capsys,
                                                               monkeypatch, no_run):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    base = SCAN if cmd == "scan" else JW
    code, stdout, err = _cli(capsys, [*base, "--out", str(out), *extra])
    assert code == 2, err
    assert err.startswith("critwin: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert problem in err and fix in err, err
    assert stdout == "" and not out.exists() and list(tmp_path.iterdir()) == []


def test_help_lists_the_four_strategies(capsys, monkeypatch):
    assert STRATEGIES == STRATEGY_NAMES
    monkeypatch.setenv("COLUMNS", "80")
    for cmd in (["scan"], ["jailbreak", "windows"]):
        code, text, _ = _cli(capsys, [*cmd, "--help"])
        assert code == 0
        flat = " ".join(text.split())
        assert all(f"--{o}" in flat for o in ("strategy", "budget", "n-min", "n-max"))
        assert all(name in flat for name in STRATEGY_NAMES)


def _records(run):
    return [json.loads(line) for line in (run / R.PROBLEMS).read_text().splitlines()]


def test_scan_strategies_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    small = [*SCAN, "-k", "4", "--fractions", "0.3,0.6,0.9", "--json"]
    runs = {}
    for name, extra in (("default", []), ("fixed", ["--strategy", "fixed"]),
                        ("adaptive", ["--strategy", "adaptive", "--n-min", "2", "--n-max", "4"])):
        out = tmp_path / name
        code, stdout, err = _cli(capsys, [*small, "--out", str(out), *extra])
        assert code == 0, err
        summary = json.loads(stdout)
        assert {"out", "index", "summary", "seconds", "n_resumed", "engine", "datasets"} <= set(summary)
        assert summary["strategy"] == (name if name != "default" else "fixed")
        runs[name] = _records(out)
    # The default is --strategy fixed, curve for curve.
    assert [r["curve"] for r in runs["default"]] == [r["curve"] for r in runs["fixed"]]
    for r in runs["adaptive"]:
        assert r["strategy"] == "adaptive" and r["curve"]["ci_method"] == "confidence_sequence"
        assert all(2 <= n <= 4 for n in r["curve"]["n_draws"])
    cfg = json.loads((tmp_path / "adaptive" / "config.json").read_text())
    assert (cfg["strategy"], cfg["n_min"], cfg["n_max"]) == ("adaptive", 2, 4)
    assert "confidence sequence" in (tmp_path / "adaptive" / "index.html").read_text()
    # A rerun with another strategy is refused by the resume check, one line.
    code, _, err = _cli(capsys, [*small, "--out", str(tmp_path / "adaptive"), "--strategy", "bisect"])
    assert code == 2 and err.count("\n") == 1 and "strategy: 'adaptive' there, 'bisect' now" in err


def test_jailbreak_windows_with_bisect(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "w"
    code, stdout, err = _cli(capsys, [*JW, "--k", "3", "--max-new-tokens", "6", "--strategy", "bisect",
                                      "--out", str(out), "--json"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["strategy"] == "bisect" and summary["n_cases"] == 1
    assert summary["n_draws"] % 3 == 0 and summary["n_draws"] >= 6  # both ends first, 3 draws each
    assert json.loads((out / "config.json").read_text())["strategy"] == "bisect"
    assert "Prefill attack" in (out / "index.html").read_text()
