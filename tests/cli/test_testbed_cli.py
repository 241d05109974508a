"""`critwin testbed SPEC` end to end: the --json contract, theory windows equal to the staircase's, detected
windows against them on the fixtures, bad input (one line, exit 2), a spec with no window, --out and
`critwin report`."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from critwin.theory import staircase
from critwin.theory.spec import load_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "theory"
HIERARCHY = str(FIXTURES / "hierarchy.yaml")
ISSUE = str(FIXTURES / "issue_example.json")
TRUNCATION = str(FIXTURES / "truncation_token2.json")
KEYS = ["theory_windows", "detected_windows", "draws", "coverage", "strategy"]
EXTRAS = {"time_unit", "level", "min_jump", "points", "recall", "false_windows", "note"}


def run_cli(*args: str, fresh: bool = False) -> subprocess.CompletedProcess:
    """`critwin ARGS` through `critwin.cli.main`: in-process (fast), or in a fresh interpreter."""
    if fresh:
        code = f"import sys; from critwin.cli import main; main({list(args)!r})"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    from critwin.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def json_of(*args: str) -> dict:
    res = run_cli("testbed", *args, "--json")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    return json.loads(lines[0])


def same_windows(got, want) -> bool:
    """Equal window lists, edges to 1e-9 (None for an open edge on both sides)."""
    return len(got) == len(want) and all(
        (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 1e-9)
        for g, w in zip(got, want, strict=True) for a, b in zip(g, w, strict=True))


def staircase_pairs(path, chain=None) -> list[list[float | None]]:
    """The theory's windows by an independent call, in the JSON form (None for an open edge); path: a
    spec file, or a parsed spec."""
    spec = load_spec(path) if isinstance(path, str) else path
    windows = staircase(spec.mixture, spec.eps, chain or spec.chain, seed=spec.seed, se_target=spec.se_target)

    def edge(e):
        return None if e is None or math.isinf(e.t) else e.t

    return [[edge(w.lo), edge(w.hi)] for w in windows]


def inside(detected, theory, tol) -> bool:
    """Every detected window within `tol` of a theory window, and every theory window hit."""
    def within(d, w):
        lo = -math.inf if w[0] is None else w[0]
        hi = math.inf if w[1] is None else w[1]
        return d[0] >= lo - tol and d[1] <= hi + tol

    def overlaps(d, w):
        return d[0] <= (math.inf if w[1] is None else w[1]) + tol and d[1] >= (
            -math.inf if w[0] is None else w[0]) - tol

    return all(any(within(d, w) for w in theory) for d in detected) and all(
        any(overlaps(d, w) for d in detected) for w in theory)


def test_json_contract_in_a_fresh_interpreter():
    res = run_cli("testbed", TRUNCATION, "--json", fresh=True)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert list(obj)[:5] == KEYS and EXTRAS <= set(obj)
    assert all(isinstance(w, list) and len(w) == 2 for w in obj["theory_windows"] + obj["detected_windows"])
    assert isinstance(obj["draws"], int) and obj["draws"] > 0
    assert isinstance(obj["coverage"], float) and 0 <= obj["coverage"] <= 1
    assert obj["strategy"] == "adaptive" and obj["time_unit"] == "tokens"
    assert obj["draws"] == sum(p["n"] for p in obj["points"])  # the exact testbed never fails a draw
    assert set(obj["points"][0]) >= {"t", "n", "kept", "p_hat", "ci_lo", "ci_hi", "exact"}


@pytest.mark.parametrize("strategy", ["fixed", "adaptive", "bisect", "every-prefix"])
def test_truncation_window_is_found_by_every_strategy(strategy):
    obj = json_of(TRUNCATION, "--strategy", strategy)
    chain = [["x"], ["x", "y"], ["x", "y", "z"]]  # the first pair plus everything
    assert obj["chain"] == chain
    assert obj["theory_windows"] == staircase_pairs(TRUNCATION, chain)
    # The feature is decided at the third token: t = 2 -> 3 tokens removed from the end of 5. The second
    # step ({x, y} inside everything) has crossing edges at this ε: nothing to find there, and the note
    # says so.
    assert obj["theory_windows"][0] == [2.0, 3.0]
    assert obj["detected_windows"] == [[2.0, 3.0]]
    assert (obj["recall"], obj["false_windows"]) == (1.0, 0)
    assert obj["coverage"] >= 0.8
    assert "window 2" in obj["note"] and "cross" in obj["note"]
    if strategy in ("fixed", "every-prefix"):
        assert obj["draws"] == 6 * 64 and [p["t"] for p in obj["points"]] == [0, 1, 2, 3, 4, 5]


def test_gaussian_hierarchy_fixed_with_enough_draws_finds_both_windows():
    obj = json_of(HIERARCHY, "--strategy", "fixed", "-n", "128", "--n-mc", "4000")
    assert same_windows(obj["theory_windows"], staircase_pairs(HIERARCHY))
    assert obj["draws"] == 101 * 128 and len(obj["points"]) == 101
    assert obj["exact_method"] == "monte carlo" and all(p["exact_se"] > 0 for p in obj["points"][1:])
    assert len(obj["detected_windows"]) == 2
    assert inside(obj["detected_windows"], obj["theory_windows"], 0.1)
    assert (obj["recall"], obj["false_windows"]) == (1.0, 0)
    assert obj["coverage"] >= 0.9 and obj["interval"] == "Wilson"


def test_gaussian_hierarchy_adaptive_finds_windows_with_fewer_draws():
    obj = json_of(HIERARCHY, "--n-mc", "4000")
    assert same_windows(obj["theory_windows"], staircase_pairs(HIERARCHY))
    assert obj["strategy"] == "adaptive" and obj["interval"] == "confidence sequence"
    assert obj["draws"] < 101 * 64
    assert obj["detected_windows"] and obj["recall"] >= 0.5
    assert obj["coverage"] >= 0.9


@pytest.mark.xfail(
    reason="known gap of issue 13: hierarchy.yaml's second step is a slow ramp (0.5 -> 0.25 over 2.3 OU "
    "time) next to a plateau under 1 OU time wide; at --n-max 128 the adaptive search does not confirm it, "
    "at 256 it merges both steps (dense n = 128 finds both: the test above). Seeded, so this fails every run",
    strict=True,
)
def test_gaussian_hierarchy_adaptive_matches_the_theory_within_tolerance():
    obj = json_of(HIERARCHY, "--n-mc", "4000")
    assert (obj["recall"], obj["false_windows"]) == (1.0, 0)


def test_issue_example_has_exact_quadrature_and_both_windows_hit():
    obj = json_of(ISSUE, "--strategy", "fixed", "--t-max", "5")
    chain = [[0], [0, 1], [0, 1, 2]]
    assert same_windows(obj["theory_windows"], staircase_pairs(ISSUE, chain))
    assert obj["theory_windows"][0][0] is None  # {0} is not separated from the rest even at t = 0
    # Collinear means with equal variances: the exact curve is 1-D quadrature, not Monte Carlo.
    assert obj["exact_method"] == "quadrature" and all(p["exact_se"] == 0 for p in obj["points"])
    assert obj["recall"] == 1.0 and obj["coverage"] >= 0.9
    assert obj["draws"] == 51 * 64 and obj["t_max"] == 5.0


def test_masking_and_ddpm_run(tmp_path):
    spec = {"mixture": {"kind": "discrete", "weights": [0.5, 0.5], "labels": ["x", "y"], "components": [
        {"product": [[1, 0], [0.5, 0.5], [0.5, 0.5]]}, {"product": [[0, 1], [0.5, 0.5], [0.5, 0.5]]}]},
        "process": "masking", "eps": 0.1, "pairs": [{"targ": ["x"], "init": ["x", "y"]}]}
    path = tmp_path / "mask.json"
    path.write_text(json.dumps(spec))
    obj = json_of(str(path), "--strategy", "fixed", "-n", "200", "--t-max", "4")
    assert obj["time_unit"] == "mask" and obj["t_max"] == 4.0 and len(obj["points"]) == 41
    # TV(p^x_t, p^{x,y}_t) = ½ e^{-t}: T_before = ln 5; T_after(x) = −ln(1 − ε²) (DESIGN §1).
    (w,) = obj["theory_windows"]
    assert w == pytest.approx([-math.log(0.99), math.log(5.0)], abs=1e-9)
    # P(kept) = e^{-t} + (1 − e^{-t}) / 2 exactly.
    assert all(p["exact"] == pytest.approx(0.5 + 0.5 * math.exp(-p["t"]), abs=1e-12) for p in obj["points"])
    assert obj["recall"] == 1.0 and obj["coverage"] >= 0.9
    ddpm = json_of(ISSUE, "--sampler", "ddpm", "--strategy", "fixed", "-n", "8", "--t-max", "1")
    assert ddpm["sampler"] == "ddpm" and ddpm["draws"] == 11 * 8


def test_demo_spec_is_the_bundled_hierarchy():
    obj = json_of("demo", "--strategy", "fixed", "-n", "2", "--n-mc", "500", "--t-max", "1")
    from critwin.theory.demo import demo_spec

    assert obj["chain"] == [["A1"], ["A1", "A2"], ["A1", "A2", "B1", "B2"]]
    assert same_windows(obj["theory_windows"], staircase_pairs(demo_spec()))


def test_spec_with_no_window_to_find_says_so_and_exits_0(tmp_path):
    spec = tmp_path / "flat.json"
    mix = {"kind": "gaussian", "means": [[0], [0.01]], "weights": [0.5, 0.5]}
    spec.write_text(json.dumps({"mixture": mix, "eps": 0.1, "pairs": [{"targ": [0], "init": [0, 1]}]}))
    res = run_cli("testbed", str(spec), "--strategy", "fixed", "-n", "4", "--t-max", "2", "--json")
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert obj["note"].startswith("the spec has no window to find") and "t = 0" in obj["note"]
    assert obj["recall"] is None and obj["theory_windows"] == [[None, 0.0]]
    assert "no window to find" in res.stderr
    human = run_cli("testbed", str(spec), "--strategy", "fixed", "-n", "4", "--t-max", "2")
    assert human.returncode == 0 and "no window to find" in human.stdout


def test_human_summary():
    res = run_cli("testbed", TRUNCATION)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "theory windows:   [2, 3], [4, 0]" in text and "detected windows: [2, 3]" in text
    assert "recall 1.00, false windows 0" in text and "draws at 6 points" in text


def test_out_stores_a_resumable_run_that_critwin_report_redraws(tmp_path):
    out = tmp_path / "run"
    first = json_of(TRUNCATION, "--out", str(out))
    assert Path(first["index"]).is_file() and first["run_dir"] == str(out)
    again = run_cli("testbed", TRUNCATION, "--out", str(out), "--json")
    assert again.returncode == 0 and "resuming" in again.stderr
    assert json.loads(again.stdout) == first
    report = run_cli("report", str(out), "--json")
    assert report.returncode == 0, report.stderr
    (case,) = json.loads(report.stdout)["cases"]
    assert case["detected_windows"] == first["detected_windows"]
    assert case["theory_windows"] == first["theory_windows"]
    other = run_cli("testbed", TRUNCATION, "--out", str(out), "--strategy", "fixed")
    assert other.returncode == 2 and "other settings" in other.stderr


BAD = [
    (["--strategy", "sequential"], "--strategy 'sequential'"),
    (["--strategy", "adaptive", "--n-min", "10", "--n-max", "5"], "--n-min 10 > --n-max 5"),
    (["--budget", "3"], "smaller than one draw per initial point"),
    (["--budget", "0"], "--budget"),
    (["--n-min", "4", "--strategy", "fixed"], "--n-min"),
    (["-n", "0"], "--draws 0"),
    (["--level", "1.5"], "--level"),
    (["--min-jump", "2"], "--min-jump"),
    (["--t-max", "-1"], "--t-max"),
    (["--sampler", "euler"], "--sampler 'euler'"),
    (["--seed", "-3"], "--seed"),
]


@pytest.mark.parametrize(("args", "text"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_are_one_line_errors(args, text):
    res = run_cli("testbed", HIERARCHY, *args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert res.stdout == ""


def test_discrete_spec_refuses_ddpm_and_t_max():
    for args, text in ((["--sampler", "ddpm"], "Gaussian mixtures only"), (["--t-max", "3"], "drop --t-max")):
        res = run_cli("testbed", TRUNCATION, *args)
        assert res.returncode == 2 and text in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_spec_errors_are_those_of_critwin_theory(tmp_path):
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(json.loads(Path(ISSUE).read_text()) | {"colour": "red"}))
    broken = tmp_path / "broken.yaml"
    broken.write_text("mixture: [1, 2\n")
    bad_weights = tmp_path / "weights.json"
    bad_weights.write_text(Path(ISSUE).read_text().replace("0.5]", "0.6]"))
    for path in (unknown, broken, bad_weights, tmp_path / "missing.json"):
        mine = run_cli("testbed", str(path))
        theirs = run_cli("theory", str(path), "--no-plot")
        assert mine.returncode == theirs.returncode == 2
        assert mine.stderr == theirs.stderr and len(mine.stderr.strip().splitlines()) == 1, mine.stderr
    assert "unknown field(s) ['colour']" in run_cli("testbed", str(unknown)).stderr
    missing = run_cli("testbed")
    assert missing.returncode == 2 and "SPEC: missing" in missing.stderr
