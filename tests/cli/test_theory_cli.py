"""`critwin theory` end to end: --json contract, known answers, YAML/JSON specs, flags, plot and demo page."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from scipy import integrate, special, stats

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "theory"


def _argv(*args: str) -> list[str]:
    """CLI arguments for the theory command.

    typer collapses an app with a single command and no callback into that command, so the sub-command name
    is only needed once the app is a group.
    """
    from critwin.cli import commands  # noqa: F401  (registers the commands)
    from critwin.cli.app import app

    single = (
        len(app.registered_commands) == 1 and not app.registered_groups and app.registered_callback is None
    )
    return list(args) if single else ["theory", *args]


def run_cli(*args: str, cwd: Path | None = None, fresh: bool = False) -> subprocess.CompletedProcess:
    """Run `critwin theory ARGS` through `critwin.cli.main`: in-process (fast), or in a fresh interpreter."""
    if fresh:
        code = f"import sys; from critwin.cli import main; main({_argv(*args)!r})"
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300
        )
    from critwin.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(_argv(*args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_json_contract_and_known_answers(tmp_path):
    # A fresh interpreter, exactly as a user runs it: stdout holds one JSON line and nothing else.
    res = run_cli(
        str(FIXTURES / "issue_example.json"), "--json", "--out", str(tmp_path / "p.png"), fresh=True
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert list(obj) == ["results"]
    (r,) = obj["results"]
    assert {"targ", "init", "eps", "t_before", "t_after", "bound"} <= set(r)
    assert r["targ"] == [0] and r["init"] == [0, 1] and r["eps"] == 0.1
    # T_before: TV(p^{0}_t, p^{0,1}_t) = ½ erf(e^{-t}/(2√2)) = ε.
    assert r["t_before"] == pytest.approx(math.log(1 / (2 * math.sqrt(2) * special.erfinv(0.2))), abs=1e-6)
    # T_after: TV(p^{0,1}_t, p^{2}_t) = 1 − ε², checked by 1-D quadrature (the means are collinear).
    t = r["t_after"]
    s = math.exp(-t)

    def p(x):
        return 0.5 * stats.norm.pdf(x, 0, 1) + 0.5 * stats.norm.pdf(x, s, 1)

    tv = 0.5 * integrate.quad(lambda x: abs(p(x) - stats.norm.pdf(x, 20 * s, 1)), -40, 60, limit=400)[0]
    assert tv == pytest.approx(0.99, abs=1e-6)
    assert r["bound"] == pytest.approx(0.1 * (1 + math.sqrt(0.5 / (2 * 0.5))))
    assert r["t_before_alpha_bar"] == pytest.approx(math.exp(-2 * r["t_before"]))  # DDPM view: ᾱ = e^{-2t}
    img = mpimg.imread(tmp_path / "p.png")
    assert img.shape[0] > 300 and img.shape[1] > 500


def test_yaml_spec_with_labels_chain_and_null_edges(tmp_path):
    res = run_cli(str(FIXTURES / "hierarchy.yaml"), "--json", "--no-plot", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)["results"]
    assert [r["targ"] for r in results] == [[0], [0, 1], [0]]
    assert [r["init"] for r in results] == [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3]]
    fine, coarse, _ = results
    assert fine["t_before"] == pytest.approx(math.log(8 / (2 * math.sqrt(2) * special.erfinv(0.2))), abs=1e-6)
    assert coarse["t_after"] is None and coarse["rest_empty"]  # S_init = Θ: nothing to separate from
    lo, hi = coarse["t_before_interval"]
    assert lo < coarse["t_before"] < hi
    assert fine["window"][1] < coarse["window"][0] or fine["window"][1] < coarse["t_before_interval"][0]
    assert not list(tmp_path.iterdir())  # --no-plot wrote nothing


def test_discrete_truncation_spec_known_answer():
    res = run_cli(str(FIXTURES / "truncation_token2.json"), "--json", "--no-plot")
    assert res.returncode == 0, res.stderr
    (r,) = json.loads(res.stdout)["results"]
    # The feature is token 2 of 5: visible for t ≤ 2 tokens removed, gone from t = 3.
    assert (r["t_before"], r["window"]) == (3, [2, 3])
    assert r["t_after"] == 4 and r["width"] == 1
    assert r["t_before_fraction_kept"] == pytest.approx(1 - 3 / 5)  # LLM view: fraction of the sequence kept


def test_flags_match_spec_file():
    a = run_cli(
        "--means",
        "0,0; 1,0; 20,0",
        "--variances",
        "1,1,1",
        "--weights",
        "0.25,0.25,0.5",
        "--pair",
        "0:0,1",
        "--eps",
        "0.1",
        "--json",
        "--no-plot",
    )
    b = run_cli(str(FIXTURES / "issue_example.json"), "--json", "--no-plot")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_human_table_and_plot(tmp_path):
    res = run_cli(str(FIXTURES / "hierarchy.yaml"), "--out", str(tmp_path / "w.svg"))
    assert res.returncode == 0, res.stderr
    assert "{A1}" in res.stdout and "staircase step 2" in res.stdout
    svg = (tmp_path / "w.svg").read_text()
    assert "OU time t" in svg or "<svg" in svg


def test_demo_page(tmp_path):
    out = tmp_path / "demo.html"
    res = run_cli("demo", "--out", str(out))
    assert res.returncode == 0, res.stderr
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 1
    for label in ("A1", "A2", "B1", "B2"):
        assert f"<td>{label}</td>" in page
    # Exact fine-window end ln(8 / (2√2 erfinv(0.2))) appears in the table.
    assert f"{math.log(8 / (2 * math.sqrt(2) * special.erfinv(0.2))):.3f}" in page


def test_demo_json_is_the_contract():
    res = run_cli("demo", "--json", "--out", "/dev/null")
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert len(obj["results"]) == 2 and obj["results"][0]["targ_labels"] == ["A1"]
