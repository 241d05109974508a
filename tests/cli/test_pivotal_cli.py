"""`critwin pivotal --export-dpo FILE` on the bundled reasoning model: pivotal tokens from PTS bisection of
P(correct), and DPO pairs that round-trip through `datasets`, keep the original's token ids and contrast the
trace's token with one actually drawn at that position; an existing export file is refused unless --force,
before any work."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from _cli import cli

from critwin.experiments import reasoning as R
from critwin.experiments.dpo import dpo_rows
from critwin.rundir import RunDir, read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pivotal")
    out, dpo = root / "run", root / "pairs.jsonl"
    # The first six bundled problems hold one wrong chain (demo-0002, first wrong token 30).
    args = ["pivotal", "--out", str(out), "--limit", "6", "--threads", "1", "--no-progress", "--json"]
    assert cli(*args, "--export-dpo", str(dpo)) == 0
    return out, dpo, args


def test_pivotal_records_follow_from_the_stored_counts(run):
    out, _, _ = run
    config = json.loads((out / "config.json").read_text())
    assert (config["outcome"], config["strategy"], config["k"]) == ("correct", "bisect", 16)
    records = R.read_records(out)
    assert any(r["pivotal"] for r in records)
    for r in records:
        c = r["curve"]
        by_kept = {k: (s, n) for k, s, n in zip(c["kept"], c["n_kept"], c["n_valid"], strict=True)}
        for p in r["pivotal"]:
            (s0, n0), (s1, n1) = by_kept[p["token"]], by_kept[p["token"] + 1]
            assert (p["p_before"], p["p_after"]) == (s0 / n0, s1 / n1)
            assert abs(s1 / n1 - s0 / n0) >= 0.2
            assert r["response"][p["char_lo"]:p["char_hi"]]
    (d,) = json.loads((out / "summary.json").read_text())["datasets"].values()
    assert d["pivotal_tokens"]["n_pivotal"] == sum(len(r["pivotal"]) for r in records)


def test_dpo_pairs_round_trip_through_datasets_and_keep_the_token_ids(run):
    import datasets

    out, dpo, _ = run
    rows = [json.loads(s) for s in dpo.read_text().splitlines()]
    assert rows, "the wrong chain's first wrong step is pivotal and has a drawn alternative"
    loaded = datasets.load_dataset("json", data_files=str(dpo), split="train")
    assert loaded.num_rows == len(rows)
    assert {"prompt", "chosen", "rejected"} <= set(loaded.column_names)
    assert loaded[0]["prompt"] == rows[0]["prompt"] and loaded[0]["chosen"] == rows[0]["chosen"]
    originals = {f"{r['dataset']}/{r['id']}": r for r in read_jsonl(out / R.ORIGINALS)}
    samples = RunDir.open(out).read_samples(decode=True)
    for row in rows:
        o = originals[row["case"]]
        ids, token = o["response_ids"], row["token"]
        assert row["prompt_ids"] == o["prompt_ids"] + ids[:token]  # never re-tokenized
        assert row["prompt"].endswith(o["response_text"][: len(row["prompt"]) - len(o["prompt_text"])])
        assert ids[token] in (row["chosen_ids"][0], row["rejected_ids"][0])
        other = row["rejected_ids"][0] if row["chosen_ids"][0] == ids[token] else row["chosen_ids"][0]
        at_cut = samples[(samples["case"] == row["case"]) & (samples["t"] == float(len(ids) - token))]
        firsts = pd.Series([s.get("first_id") for s in at_cut["sample"]])
        assert (firsts == other).sum() == row["alternative"]["draws"]  # drawn there, this often
    wrong = [r for r in rows if r["case"].endswith("demo-0002")]
    assert wrong and wrong[0]["token"] == 30 and wrong[0]["rejected"] == "0"  # "07+8=05" is the slip


def test_the_export_is_made_from_the_run_directory_alone(run):
    out, dpo, _ = run
    rows, counts = dpo_rows(out)
    assert [json.loads(s) for s in dpo.read_text().splitlines()] == rows
    assert counts["n_pairs"] == len(rows)


def test_an_existing_export_is_refused_before_any_work_unless_forced(run, capsys, tmp_path):
    out, dpo, args = run
    before = dpo.read_bytes()
    fresh = tmp_path / "new-run"
    assert cli("pivotal", "--out", str(fresh), "--export-dpo", str(dpo)) == 2
    err = capsys.readouterr().err
    assert "exists; pass --force" in err and not fresh.exists()
    assert dpo.read_bytes() == before
    assert cli(*args, "--export-dpo", str(dpo), "--force") == 0  # resumes: nothing redrawn
    assert json.loads(capsys.readouterr().out)["n_resumed"] == 6
    assert dpo.read_bytes() == before
