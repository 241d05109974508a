"""`critwin revise` on the bundled reasoning model: each response with a window is re-prompted right after
its main window and at a control position away from it; the stored endings regrade to the stored counts
(the answer read by a regex here, not by critwin's grader), the dataset means follow from the records, the
same seed gives the same draws, and the report shows it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from _cli import cli

from critwin.experiments import reasoning as R
from critwin.methods.revise import REVISE_PROMPT

pytestmark = pytest.mark.slow
ARGS = ["revise", "--limit", "6", "--threads", "1", "--no-progress", "--json"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("revise") / "run"
    assert cli(*ARGS, "--out", str(out)) == 0
    return out


def _correct(text: str, gold: str) -> bool | None:
    found = re.findall(r"The answer is (-?\d+)", text)
    return None if not found else found[-1] == gold


def test_endings_regrade_to_the_stored_counts_at_the_window_and_the_control(run):
    config = json.loads((run / "config.json").read_text())
    assert config["revise"] is True and config.get("revise_prompt", REVISE_PROMPT) == REVISE_PROMPT
    records = R.read_records(run)
    revised = [r for r in records if "arms" in r["revise"]]
    assert revised and all(r["has_window"] for r in revised)
    assert all(r["revise"]["skipped"].startswith("no window") for r in records if not r["has_window"])
    for r in revised:
        rv, text = r["revise"], r["response"]
        assert rv["window"]["kept"] == R.main_window(r["windows"])["kept_hi"]
        lo, hi = R.main_window(r["windows"])["kept_lo"], rv["window"]["kept"]
        if rv["control"] is not None:
            assert not lo - 3 <= rv["control"]["kept"] <= hi + 3 and 1 <= rv["control"]["kept"] <= r["length"]
        for name, (k, n) in rv["arms"].items():
            where = rv[name.split("_")[1]]
            prefix = text[: where["char"]] + (REVISE_PROMPT if name.startswith("revised") else "")
            endings = [e for e in rv["endings"][name] if "text" in e]
            assert len(rv["endings"][name]) == 16
            verdicts = [_correct(prefix + e["text"], r["gold"]) for e in endings]
            assert verdicts == [e["correct"] for e in endings]
            assert (k, n) == (sum(v is True for v in verdicts), sum(v is not None for v in verdicts))


def test_the_dataset_means_follow_from_the_records(run):
    records = R.read_records(run)
    (d,) = json.loads((run / "summary.json").read_text())["datasets"].values()
    rv = d["revise"]
    effects = [r["revise"]["window_effect"]["effect"] for r in records if "arms" in r["revise"]]
    assert rv["n_problems"] == len(effects) and rv["n_skipped"] == len(records) - len(effects)
    graded = [e for e in effects if e is not None]
    assert rv["window_effect"]["n"] == len(graded)
    if graded:
        assert rv["window_effect"]["mean"] == pytest.approx(np.mean(graded))
    assert rv["n_draws"] == 64 * len(effects) - 32 * sum(
        r["revise"]["control"] is None for r in records if "arms" in r["revise"]
    )
    page = (run / "index.html").read_text()
    assert "Revise at the window" in page
    (run / "index.html").unlink()
    assert cli("report", str(run)) == 0  # from the run directory alone, no model
    assert (run / "index.html").read_text() == page


def test_the_same_seed_gives_the_same_revisions_and_a_rerun_resumes(run, tmp_path, capsys):
    assert cli(*ARGS, "--out", str(tmp_path / "again")) == 0
    first = {r["case"]: r["revise"] for r in R.read_records(run)}
    assert {r["case"]: r["revise"] for r in R.read_records(tmp_path / "again")} == first
    capsys.readouterr()
    assert cli(*ARGS, "--out", str(run)) == 0
    assert json.loads(capsys.readouterr().out)["n_resumed"] == 6
    assert {r["case"]: r["revise"] for r in R.read_records(run)} == first
