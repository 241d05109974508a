"""`critwin demo`: the built-in run end to end, its summary.json contract, determinism and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from critwin.demo import run_demo
from critwin.windows import window_agreement

# A diffusion scan of one digit on a coarse grid: the demo's third part, kept quick in tests.
TINY_DIFFUSION = {"cases_n": 1, "n": 8, "levels": 3, "clones": 2, "steps": 10}

CRITWIN = str(Path(sys.executable).parent / "critwin")


@pytest.mark.slow
def test_demo_default_run(tmp_path):
    # Without the diffusion part: at its defaults (four digits) it took most of this test's 8 minutes on a
    # busy two-core machine. The demo's diffusion section is run (at small settings) by the tests below and
    # the report screens; the digit model's scan by tests/experiments/test_diffusion_experiment.py.
    out = tmp_path / "demo"
    proc = subprocess.run(
        [CRITWIN, "demo", "--out", str(out), "--json", "--no-diffusion"],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["out"] == str(out) and Path(result["index"]).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == result["cases"]
    names = [c["name"] for c in summary["cases"]]
    assert any(n.startswith("gaussian/") for n in names) and any(n.startswith("language/") for n in names)
    for case in summary["cases"]:
        assert set(case) >= {"name", "theory_windows", "detected_windows", "coverage"}
        assert case["coverage"] >= 0.9
        tol = 1.0 if case["name"].startswith("language/") else 0.2
        ag = window_agreement(
            [tuple(w) for w in case["theory_windows"]], [tuple(w) for w in case["detected_windows"]]
        )
        assert ag.agrees(tol), (case["name"], ag)
    html = (out / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(names) + 1
    assert "%|" in proc.stderr  # the progress bar goes to stderr
    # The reasoning scan of the bundled model: its own run directory, linked, numbers in summary.json.
    r = summary["reasoning"]
    assert r == result["reasoning"] and r["n_problems"] == 20
    sub = json.loads((out / r["out"] / "summary.json").read_text())
    (d,) = sub["datasets"].values()
    assert r["window_at_first_error_rate"] == d["window_at_first_error_rate"]
    assert r["n_problems_with_window"] == round(d["share_with_window"] * d["n_problems"])
    assert 'href="reasoning/index.html"' in html and (out / "reasoning" / "index.html").is_file()
    assert "diffusion" not in summary and not (out / "diffusion").exists()


def test_same_seed_gives_identical_run_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_demo(a, seed=5, n=15, n_language=30, progress=False, diffusion=TINY_DIFFUSION)
    run_demo(b, seed=5, n=15, n_language=30, progress=False, diffusion=TINY_DIFFUSION)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) >= 8
    for rel in files_a:
        if rel.name == "config.json":
            ca, cb = (json.loads((root / rel).read_text()) for root in (a, b))
            ca.pop("created"), cb.pop("created")
            assert ca == cb
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--n", "0"], "--n 0"), (["--seed", "-1"], "--seed -1"), (["--n-language", "0"], "--n-language 0")],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, match):
    proc = subprocess.run(
        [CRITWIN, "demo", "--out", str(tmp_path / "d"), *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.startswith("critwin: error")]
    assert len(err) == 1 and match in err[0]


def test_out_must_be_new_or_empty(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("x")
    proc = subprocess.run(
        [CRITWIN, "demo", "--out", str(tmp_path / "d")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and "not an empty folder" in proc.stderr
    assert (tmp_path / "d" / "keep.txt").read_text() == "x"
