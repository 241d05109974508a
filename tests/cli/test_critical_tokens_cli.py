"""`critwin critical-tokens` on the bundled reasoning model, whose chains' first wrong steps are known: every
wrong original gets a critical-token search whose verdict follows from its stored counts (checked here
with scipy's exact binomial bounds), P(correct) is what the curve counts, and the report re-draws from the
run directory alone."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from critwin.cli import main
from critwin.experiments import reasoning as R

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct") / "run"
    # The first three bundled problems hold one wrong chain (demo-0002: 25 instead of 35).
    args = ["critical-tokens", "--out", str(out), "--limit", "3", "--threads", "1", "--no-progress", "--json"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)
    return out, args


def test_every_wrong_original_gets_a_search_whose_verdict_its_counts_support(run, capsys):
    out, _ = run
    records = R.read_records(out)
    config = json.loads((out / "config.json").read_text())
    assert (config["outcome"], config["strategy"], config["k"]) == ("correct", "every-prefix", 64)
    wrong = [r for r in records if r["correct"] is False]
    assert wrong and all("critical" in r for r in wrong)
    assert not any("critical" in r for r in records if r["correct"] is not False)
    for r in records:
        c = r["curve"]
        assert c["outcome"] == "correct" and len(c["kept"]) == r["length"] + 1  # every prefix
    for r in wrong:
        search, c = r["critical"], r["curve"]
        crit = search["critical"]
        assert crit is not None, search["reason"]
        by_kept = {k: (s, n) for k, s, n in zip(c["kept"], c["n_kept"], c["n_valid"], strict=True)}
        s, n = by_kept[crit["kept_lo"]]
        assert s > 0 and crit["p_before"] == s / n  # the prefix before it can succeed
        for kept, (s, n) in by_kept.items():
            if kept >= crit["kept_hi"]:  # every longer prefix is shown to fail
                assert stats.binomtest(s, n, alternative="less").proportion_ci(0.95).high <= 0.05
        fe = r["first_error"]
        assert search["at_first_error"] == (crit["kept_lo"] - 3 <= fe["token"] < crit["kept_hi"] + 3)
        assert r["response"][crit["char_lo"]:crit["char_hi"]]
    (d,) = json.loads((out / "summary.json").read_text())["datasets"].values()
    ct = d["critical_tokens"]
    assert ct["n_incorrect"] == len(wrong) and ct["n_with_critical"] == len(wrong)
    assert ct["n_judged"] == len(wrong)
    assert ct["at_first_error_rate"] == sum(r["critical"]["at_first_error"] for r in wrong) / len(wrong)


def test_the_report_shows_the_critical_tokens_and_redraws_without_the_model(run, capsys):
    out, _ = run
    html = (out / "index.html").read_text()
    assert "critical token at the first wrong step" in html and "P(correct) " in html
    (out / "index.html").unlink()
    with pytest.raises(SystemExit) as done:
        main(["report", str(out), "--json"])
    assert done.value.code in (0, None)
    assert (out / "index.html").read_text() == html


def test_a_rerun_with_another_outcome_is_refused_and_loses_nothing(run, capsys):
    out, args = run
    before = R.read_records(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["scan", *args[1:], "-k", "64", "--strategy", "every-prefix"])  # but --outcome same
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "outcome" in err and len(err.strip().splitlines()) == 1
    assert R.read_records(out) == before


def test_the_critical_bisection_finds_the_every_prefix_token_with_fewer_draws(run, tmp_path):
    """--strategy critical on the same problems: the same critical token as every prefix at 64 draws (the
    slip's first wrong token), every longer measured cut certified (59 failed draws), far fewer draws."""
    out, _ = run
    mine = tmp_path / "bisect"
    with pytest.raises(SystemExit) as done:
        main(["critical-tokens", "--out", str(mine), "--limit", "3", "--threads", "1", "--no-progress",
              "--strategy", "critical"])
    assert done.value.code in (0, None)
    dense = {r["case"]: r for r in R.read_records(out)}
    cheap = {r["case"]: r for r in R.read_records(mine)}
    assert json.loads((mine / "config.json").read_text())["strategy"] == "critical"
    for case, r in cheap.items():
        if r["correct"] is not False:
            continue
        crit = r["critical"]["critical"]
        assert crit == dense[case]["critical"]["critical"] | {"p_before": crit["p_before"],
                                                               "upper_after": crit["upper_after"]}
        assert crit["token"] == r["first_error"]["token"]
        c = r["curve"]
        assert all(n >= 59 and k == 0 for m, k, n in zip(c["kept"], c["n_kept"], c["n_valid"], strict=True)
                   if m > crit["kept_lo"])
        assert r["n_draws"] * 4 < dense[case]["n_draws"]
