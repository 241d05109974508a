"""Stump answers (`critwin scan --stump`): at every cut, the answer elicited from the truncated prefix
itself, with no continuation. Checked against the same elicitation built independently (the conversation
written by hand from the decoded kept token ids), at the whole response against the original's elicited
answer; the scan itself is unchanged draw for draw, and the dataset statistics are checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from critwin.cli import main
from critwin.experiments import reasoning as R
from critwin.seeds import case_rng

FRACTIONS = (0.0, 0.4, 0.8, 1.0)


@pytest.fixture(scope="module")
def problems():
    return R.load_reasoning_problems(R.BUNDLED_PROBLEMS, "arith", limit=3)


@pytest.fixture(scope="module")
def sampler():
    from critwin.samplers.registry import load_sampler

    cfg = R.ReasoningConfig.from_flat(max_new_tokens=300)
    return load_sampler("hf", R.BUNDLED_MODEL, device="cpu", **R.ReasoningExperiment(
        [R.load_reasoning_problems(R.BUNDLED_PROBLEMS, "arith", limit=1)], cfg).sampler_settings())


def scanned(problems, sampler, **settings):
    cfg = R.ReasoningConfig.from_flat(max_new_tokens=300, k=4, fractions=FRACTIONS, **settings)
    exp = R.ReasoningExperiment([problems], cfg, str(R.BUNDLED_MODEL))
    return exp, [exp.run_case(sampler, c, case_rng(0, c.id)) for c in exp.cases()]


@pytest.fixture(scope="module")
def with_stumps(problems, sampler):
    return scanned(problems, sampler, stump=True)


def test_each_stump_is_the_answer_elicited_right_after_the_kept_tokens(with_stumps, sampler):
    exp, results = with_stumps
    cfg = exp.cfg
    for case, res in zip(exp.cases(), results, strict=True):
        rec = res.record
        assert rec["status"] == "ok", rec.get("error")
        _, problem = case.data
        (row,) = res.streams[R.ORIGINALS_STREAM]
        ids = row["response_ids"]
        st = rec["stump"]
        assert st["kept"] == rec["curve"]["kept"] and len(st["kept"]) >= 3
        assert 0 in st["kept"] and len(ids) in st["kept"]
        grader = R.grader_for_problem("arith", problem)
        for k, answer, same, correct in zip(st["kept"], st["answer"], st["same"], st["correct"], strict=True):
            conv = [{"role": "user", "content": problem.prompt()},
                    {"role": "assistant", "content": sampler.decode(ids[:k])},
                    {"role": "user", "content": cfg.elicitation()}]
            (reply,) = sampler.generate_responses([conv], seed=0, temperature=0.0,
                                                  max_new_tokens=cfg.cuts.elicit_max_tokens)
            want = grader.extract(reply.response_text)
            assert answer == want, (problem.id, k)
            assert same == (None if want is None else grader.grade(want, rec["answer"]) is True)
            assert correct == (None if want is None else grader.grade(want, problem.gold))
            if k == len(ids):  # the whole response: the original's own elicited answer
                assert answer == rec["answer_elicit"]


def test_stumps_leave_the_scan_unchanged(with_stumps, problems, sampler):
    _, plain = scanned(problems, sampler)
    for a, b in zip(with_stumps[1], plain, strict=True):
        assert "stump" not in b.record
        assert {k: v for k, v in a.record.items() if k != "stump"} == b.record
        np.testing.assert_array_equal(a.curve.n_kept, b.curve.n_kept)


def test_dataset_statistics_of_the_stumps_by_hand():
    recs = [
        {"curve": {"kept": [0, 5, 10], "p_same": [0.25, 0.5, 1.0]},
         "stump": {"kept": [0, 5, 10], "same": [None, False, True], "correct": [None, False, True]}},
        {"curve": {"kept": [0, 8], "p_same": [None, 1.0]},
         "stump": {"kept": [0, 8], "same": [True, True], "correct": [True, True]}},
        {"curve": {"kept": [0, 8], "p_same": [0.5, 1.0]}},  # a record of a run without stumps
    ]
    got = R.stump_stats(recs, 0.9)
    ci = stats.binomtest(3, 5).proportion_ci(0.9, "wilson")
    assert got["n_cuts"] == 5 and got["share_same"] == 3 / 5
    assert got["share_same_ci"] == pytest.approx([ci.low, ci.high])
    assert got["mean_p_same"] == pytest.approx((0.25 + 0.5 + 1.0 + 1.0) / 4)
    assert got["n_graded"] == 4 and got["accuracy"] == 3 / 4
    assert R.stump_stats(recs[2:], 0.9) is None


def test_cli_stumps_reach_the_summary_and_the_redrawn_report(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["scan", "--out", str(out), "--limit", "2", "-k", "2", "--fractions", "0.5,1", "--stump",
            "--threads", "1", "--no-progress", "--json"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)
    (d,) = json.loads(capsys.readouterr().out)["datasets"].values()
    records = R.read_records(out)
    assert d["stump"]["n_cuts"] == sum(len(r["stump"]["kept"]) for r in records) == 4
    html = (out / "index.html").read_text()
    assert "stump answer = original" in html and "stump answers (tokens kept: answer)" in html
    (out / "index.html").unlink()
    with pytest.raises(SystemExit) as done:
        main(["report", str(out), "--json"])
    assert done.value.code in (0, None)
    assert (out / "index.html").read_text() == html
    # A run without stumps is another setting: the same --out is refused, nothing is lost.
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([a for a in args if a != "--stump"])
    assert done.value.code == 2
    assert "stump" in capsys.readouterr().err
    assert R.read_records(out) == records
