"""The likelihood-ratio jailbreak detector: exact segment location, raw log-probs, metrics against sklearn,
orientation that cannot silently flip, bad input, and a real run on two tiny trained models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny_models import detection_set, tokenizer, trained_pair
from sklearn.metrics import roc_auc_score, roc_curve

from critwin.errors import CritwinError
from critwin.experiments import jailbreak_detect as D
from critwin.stats import auc_interval, tpr_at_fpr_interval


# ----------------------------------------------------------------------------------------------------------
# Segments through the chat template
# ----------------------------------------------------------------------------------------------------------
def test_segments_are_located_exactly():
    tok = tokenizer()
    loc = D.locate_segments(tok, "how do i bake a cake?", "sure, here is how.")
    ids = list(loc.input_ids)
    a, b = loc.prompt
    c, d = loc.completion
    assert tok.decode(ids[a:b]) == "how do i bake a cake?"
    assert tok.decode(ids[c:d]) == "sure, here is how."
    assert loc.text.startswith("<bos>user: how do i") and 0 < a < b < c < d <= len(ids)
    sys_loc = D.locate_segments(tok, "hi", "yo", system="be nice")
    assert "<bos>system: be nice<eos>" in sys_loc.text
    assert tok.decode(list(sys_loc.input_ids[slice(*sys_loc.prompt)])) == "hi"


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{% for m in messages %}{{ m['content'] | trim }}|{% endfor %}", "changes the contents"),
        ("{% for m in messages %}{{ m['content'] | upper }}|{% endfor %}", "changes the contents"),
        ("{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}",
         "cannot locate the segments"),
        ("{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}",
         "cannot locate the segments"),
        ("{{ messages[5]['content'] }}", "failed to render"),
    ],
)
def test_templates_that_cannot_locate_segments_raise(template, needle):
    tok = tokenizer()
    tok.chat_template = template
    with pytest.raises(CritwinError, match=needle) as err:
        D.locate_segments(tok, " how do i? ", "sure.")
    assert "\n" not in str(err.value)


def test_no_chat_template_raises():
    tok = tokenizer()
    tok.chat_template = None
    with pytest.raises(CritwinError, match="no chat template"):
        D.locate_segments(tok, "a", "b")


def test_a_token_straddling_a_segment_edge_is_an_error_unless_expanded():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "user:hi", "there", "bot:", "ok"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}user:{% else %} bot: {% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(CritwinError, match="boundary='expand'"):
        D.locate_segments(tok, "hi there", "ok")
    loc = D.locate_segments(tok, "hi there", "ok", boundary="expand")
    assert loc.prompt == (0, 2) and loc.completion == (3, 4)


def test_token_logprobs_are_raw_log_softmax_and_padding_free():
    from critwin.samplers.hf_tiny import tiny_causal_lm

    model = tiny_causal_lm(40, arch="llama", seed=3)
    seqs = [[1, 5, 7, 9, 11, 13], [1, 4], [1, 8, 8, 8]]
    got = D.token_logprobs(model, seqs, batch_size=2)
    for s, lp in zip(seqs, got, strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([s])).logits[0].float()
        ref = torch.log_softmax(logits, -1)[torch.arange(len(s) - 1), torch.tensor(s[1:])].numpy()
        assert np.isnan(lp[0])
        np.testing.assert_allclose(lp[1:], ref, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------
def test_tpr_at_fpr_matches_sklearn_roc_curve_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n0, n1 = rng.integers(5, 120, size=2)
        neg = rng.integers(0, 8, size=n0).astype(float)  # many ties
        pos = rng.integers(2, 10, size=n1).astype(float)
        y = np.r_[np.ones(n1), np.zeros(n0)]
        fpr, tpr, _ = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
        for a in (0.01, 0.05, 0.1, 0.3):
            assert D.tpr_at_fpr(neg, pos, a) == pytest.approx(np.max(tpr[fpr <= a + 1e-12])), (trial, a)


def _table(pos: np.ndarray, neg: np.ndarray, split: str = "s") -> pd.DataFrame:
    return pd.DataFrame({"split": split, "label": np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)],
                         "status": "ok", "score": np.r_[pos, neg]})


def test_evaluate_matches_sklearn_and_inverted_labels_give_one_minus_auroc():
    rng = np.random.default_rng(1)
    tab = pd.concat([_table(rng.normal(1, 1, 60), rng.normal(0, 1, 80), "a"),
                     _table(rng.normal(0.5, 1, 50), rng.normal(0, 1, 70), "b")])
    m = D.evaluate(tab, ["score"], n_boot=300, seed=0)
    assert set(m["splits"]) == {"a", "b", "all"}
    for split in ("a", "b"):
        sub = tab[tab["split"] == split]
        e = m["splits"][split]["score"]
        assert e["auroc"] == pytest.approx(roc_auc_score(sub["label"], sub["score"]))
        assert e["auroc_ci"] == pytest.approx(list(auc_interval(e["auroc"], e["n_pos"], e["n_neg"], 0.95)))
        assert e["auroc_bootstrap_ci"][0] <= e["auroc"] <= e["auroc_bootstrap_ci"][1]
        assert e["fpr_resolution"] == pytest.approx(1 / e["n_neg"])
        # 80 and 70 negatives: FPR steps of 1.2-1.4% are too coarse for 1% ...
        assert e["tpr_at_1pct_fpr"] is None and e["tpr_at_1pct_fpr_ci"] is None
        assert "needs at least 100" in e["tpr_at_1pct_fpr_reason"]
        # ... but not for 5% and 10%, which are the sklearn ROC's values with distribution-free intervals.
        fpr_c, tpr_c, _ = roc_curve(sub["label"], sub["score"], drop_intermediate=False)
        for f in (0.05, 0.10):
            key = D.fpr_key(f)
            assert e[key] == pytest.approx(np.max(tpr_c[fpr_c <= f + 1e-12]))
            neg, pos = sub[sub["label"] == 0]["score"], sub[sub["label"] == 1]["score"]
            assert e[key + "_ci"] == pytest.approx(list(tpr_at_fpr_interval(neg, pos, f, 0.95)))
        assert e["tpr_at_5pct_fpr"] <= e["tpr_at_10pct_fpr"]
    assert m["splits"]["all"]["score"]["tpr_at_1pct_fpr"] is not None  # 150 negatives pooled
    flipped = tab.assign(label=1 - tab["label"])
    mf = D.evaluate(flipped, ["score"], n_boot=0)
    for split in ("a", "b", "all"):
        auc = m["splits"][split]["score"]["auroc"]
        assert mf["splits"][split]["score"]["auroc"] == pytest.approx(1 - auc)
        assert "auroc_bootstrap_ci" not in mf["splits"][split]["score"]


def test_perfect_separation_on_few_rows_gives_honest_intervals_and_not_estimable():
    """10 jailbreaks above 15 benign rows: the percentile bootstrap says AUROC [1, 1]; the score interval
    does not, and TPR at 1% (or 5%) FPR cannot be read off 15 negatives at all."""
    perfect = D.evaluate(_table(np.arange(10.0) + 100, np.arange(15.0)), ["score"], n_boot=200)
    e = perfect["splits"]["s"]["score"]
    assert e["auroc"] == 1.0 and e["auroc_bootstrap_ci"] == [1.0, 1.0]
    lo, hi = e["auroc_ci"]
    assert hi == 1.0 and lo < 0.9
    assert e["fpr_resolution"] == pytest.approx(1 / 15)
    for f in (0.01, 0.05):
        key = D.fpr_key(f)
        assert e[key] is None and e[key + "_ci"] is None
        assert e[key + "_reason"].startswith("not estimable: 15 negatives")
    assert e["tpr_at_10pct_fpr"] == 1.0 and e["tpr_at_10pct_fpr_ci"][1] == 1.0
    assert e["tpr_at_10pct_fpr_ci"][0] < 1.0
    # The report says it in words, and the JSON stays strict (no NaN).
    assert json.loads(json.dumps(D.strip_roc(perfect), allow_nan=False)) == D.strip_roc(perfect)
    row = D.metrics_frame(perfect).iloc[0]
    assert row["tpr_at_1pct_fpr"] is None and "not estimable" in row["tpr_at_1pct_fpr_reason"]


def test_auroc_interval_shrinks_with_sample_size_and_covers_the_truth():
    rng = np.random.default_rng(2)
    widths = []
    for n in (40, 400):
        m = D.evaluate(_table(rng.normal(1, 1, n), rng.normal(0, 1, n)), ["score"], n_boot=0, seed=1)
        lo, hi = m["splits"]["s"]["score"]["auroc_ci"]
        widths.append(hi - lo)
        true_auc = 0.760249  # Phi(1/sqrt(2)) for N(1,1) vs N(0,1)
        assert lo <= true_auc <= hi
    assert widths[1] < widths[0] / 2


def test_splits_without_negatives_use_the_pooled_benign_rows_and_one_class_splits_are_skipped():
    rng = np.random.default_rng(3)
    tab = pd.concat([_table(rng.normal(2, 1, 20), np.array([]), "attack_a"),
                     _table(np.array([]), rng.normal(0, 1, 30), "benign")])
    m = D.evaluate(tab, ["score"], n_boot=0)
    assert m["splits"]["attack_a"]["score"]["negatives"] == "pooled"
    assert m["splits"]["attack_a"]["score"]["n_neg"] == 30
    assert "needs both labels" in m["splits"]["benign"]["skipped"]
    m2 = D.evaluate(tab, ["score"], n_boot=0, negatives="split")
    assert "skipped" in m2["splits"]["attack_a"]
    with pytest.raises(CritwinError, match="statistics"):
        D.evaluate(tab, ["nope"])


def test_statistics_are_oriented_higher_means_jailbreak():
    # Raw per-row numbers where the unaligned model likes label-1 completions more than the aligned one.
    raw = pd.DataFrame({
        "aligned_completion_mean": [-3.0, -0.2], "unaligned_completion_mean": [-0.2, -0.2],
        "aligned_completion_sum": [-30.0, -2.0], "unaligned_completion_sum": [-2.0, -2.0],
        "aligned_prompt_mean": [-1.0, -1.0], "unaligned_prompt_mean": [-1.0, -1.0],
        "aligned_prompt_sum": [-5.0, -5.0], "unaligned_prompt_sum": [-5.0, -5.0],
        "aligned_prompt_n": [5, 5], "unaligned_prompt_n": [5, 5],
        "aligned_completion_n": [10, 10], "unaligned_completion_n": [10, 10],
    })
    for name in ("lr_completion_mean", "lr_completion_sum", "lr_total_mean", "lr_total_sum",
                 "nll_aligned_completion"):
        s = D.STATISTICS[name][1](raw)
        assert s[0] > s[1], name  # row 0 (the jailbreak-like one) scores higher
    assert D.STATISTICS["lr_completion_mean"][1](raw)[0] == pytest.approx(2.8)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def test_load_examples_labels_and_errors(tmp_path):
    ok = tmp_path / "ok.jsonl"
    rows = [{"prompt": "p", "completion": "c", "label": v} for v in (0, 1, True, "1", 0.0)]
    rows[0]["split"] = "x"
    ok.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ex = D.load_examples(ok)
    assert [e.label for e in ex] == [0, 1, 1, 1, 0] and ex[0].split == "x" and ex[1].split == "all"
    for bad, needle in [
        ({"prompt": "p", "completion": "c", "label": 2}, "line 1: label must be 0"),
        ({"prompt": "p", "completion": "c", "label": "yes"}, "label must be 0"),
        ({"prompt": "p", "completion": "c", "label": None}, "label must be 0"),
        ({"prompt": "p", "label": 1}, "missing field 'completion'"),
        ({"prompt": 3, "completion": "c", "label": 1}, "must be strings"),
    ]:
        f = tmp_path / "bad.jsonl"
        f.write_text(json.dumps(bad) + "\n")
        with pytest.raises(CritwinError, match=needle):
            D.load_examples(f)
    f.write_text("{oops\n")
    with pytest.raises(CritwinError, match="not valid JSON"):
        D.load_examples(f)
    with pytest.raises(CritwinError, match="no such file"):
        D.load_examples(tmp_path / "none.jsonl")


# ----------------------------------------------------------------------------------------------------------
# Tiny trained models
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    from critwin.samplers.hf import load_causal_lm

    a, u = trained_pair()
    return load_causal_lm(a, device="cpu"), load_causal_lm(u, device="cpu"), a, u


@pytest.fixture(scope="module")
def scored(models):
    aligned, unaligned, _, _ = models
    ex = [D.Example(**r) for r in detection_set(seed=0, n_per_split=40)]
    return ex, D.score_examples(ex, aligned, unaligned)


@pytest.mark.slow
def test_detector_separates_held_out_jailbreaks(scored):
    _, s = scored
    assert (s.table["status"] == "ok").all()
    m = D.evaluate(s.table, n_boot=300, seed=0)
    for split in ("direct", "prefixed", "all"):
        for stat in ("lr_completion_mean", "lr_completion_sum"):
            assert m["splits"][split][stat]["auroc"] > 0.9, (split, stat, m["splits"][split][stat]["auroc"])


@pytest.mark.slow
def test_swapping_models_flips_the_ratio_and_the_oriented_auroc(models, scored):
    aligned, unaligned, _, _ = models
    ex, s = scored
    swapped = D.score_examples(ex, unaligned, aligned)
    lr = [k for k in D.STATISTICS if k.startswith("lr_")]
    np.testing.assert_allclose(swapped.table[lr].to_numpy(), -s.table[lr].to_numpy(), atol=1e-9)
    m, ms = D.evaluate(s.table, lr, n_boot=0), D.evaluate(swapped.table, lr, n_boot=0)
    for split in m["splits"]:
        for stat in lr:
            assert ms["splits"][split][stat]["auroc"] == pytest.approx(1 - m["splits"][split][stat]["auroc"])
    # The baselines are each model's own likelihood: swapping exchanges them.
    np.testing.assert_allclose(swapped.table["nll_aligned_completion"], s.table["nll_unaligned_completion"])


@pytest.mark.slow
def test_empty_completions_are_counted_skips_and_nothing_is_lost(models):
    aligned, unaligned, _, _ = models
    ex = [D.Example("how do i rob a goat?", "sure, here is how.", 1, "s"), D.Example("how do i?", "", 0, "s"),
          D.Example("how do i bake a goat?", "sure, here is how.", 0, "s")]
    s = D.score_examples(ex, aligned, unaligned)
    assert list(s.table["status"]) == ["ok", "skipped: empty completion", "ok"]
    assert np.isnan(s.table.loc[1, "lr_completion_mean"])
    assert np.isfinite(s.table.loc[0, "lr_completion_mean"])
    m = D.evaluate(s.table, ["lr_completion_mean"], n_boot=0)
    assert m["skipped_rows"] == 1 and m["skip_reasons"] == {"skipped: empty completion": 1}
    # Per-token log-probs of both segments under both models are kept for every scored row.
    assert len(s.tokens) == 2 * 2 * 2


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the critwin command in-process: (exit code, stdout, stderr)."""
    from critwin.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as ex:
        main(list(args))
    out = capsys.readouterr()
    return int(ex.value.code or 0), out.out, out.err


@pytest.mark.slow
def test_cli_detect_json_and_bad_labels(models, tmp_path, capsys):
    _, _, a, u = models
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in detection_set(seed=5, n_per_split=12)) + "\n")
    args = ["jailbreak", "detect", "--aligned", str(a), "--unaligned", str(u), "--data", str(data)]
    code, stdout, stderr = _cli(capsys, *args, "--out", str(tmp_path / "run"), "--n-boot", "100", "--json")
    assert code == 0, stderr
    out = json.loads(stdout)
    e = out["splits"]["direct"]["lr_completion_mean"]
    assert {"auroc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "tpr_at_10pct_fpr", "auroc_ci"} <= set(e)
    assert "roc" not in e
    html = (tmp_path / "run" / "index.html").read_text()
    assert "Jailbreak detection" in html and "Split direct" in html and "<img" in html
    data.write_text('{"prompt": "a", "completion": "b", "label": 3}\n')
    code, _, stderr = _cli(capsys, "jailbreak", "detect", "--aligned", str(a), "--unaligned", str(u),
                           "--data", str(data), "--out", str(tmp_path / "run2"))
    assert code == 2 and stderr.count("\n") == 1 and "label must be 0" in stderr
    assert "Traceback" not in stderr


def test_rows_without_a_statistic_are_left_out_of_that_statistic_only():
    rng = np.random.default_rng(4)
    tab = _table(rng.normal(1, 1, 20), rng.normal(0, 1, 20))
    tab["other"] = tab["score"]
    tab.loc[tab.index[0], "score"] = np.nan
    m = D.evaluate(tab, ["score", "other"], n_boot=0)
    e, o = m["splits"]["s"]["score"], m["splits"]["s"]["other"]
    assert e["n_nonfinite"] == 1 and e["n_pos"] == 19 and o["n_nonfinite"] == 0 and o["n_pos"] == 20
    ok = tab.iloc[1:]
    assert e["auroc"] == pytest.approx(roc_auc_score(ok["label"], ok["score"]))


def test_scores_through_the_sampler_protocol_equal_the_raw_model_pairs():
    """score_examples on `LMSampler`s (what the CLI passes) gives exactly the table of (model, tokenizer)
    pairs, and its per-token log-probs are the model's own log-softmax (`token_logprobs`)."""
    from critwin.samplers.hf import HFSampler
    from critwin.samplers.hf_tiny import CHAT_TEMPLATE, char_tokenizer, tiny_causal_lm

    tok = char_tokenizer(chat_template=CHAT_TEMPLATE)
    m_a, m_u = tiny_causal_lm(len(tok), seed=1), tiny_causal_lm(len(tok), arch="llama", seed=2)
    ex = [D.Example("how do i rob a bank?", "sure, here is how.", 1, "s"),
          D.Example("how do i bake?", "mix flour.", 0, "s"), D.Example("hi", "", 0, "s")]
    pairs = D.score_examples(ex, (m_a, tok), (m_u, tok), batch_size=2)
    lms = D.score_examples(ex, HFSampler(m_a, tok), HFSampler(m_u, tok, cpu_threads=None), batch_size=2)
    pd.testing.assert_frame_equal(pairs.table, lms.table)
    pd.testing.assert_frame_equal(pairs.tokens, lms.tokens)
    loc = D.locate_segments(tok, ex[0].prompt, ex[0].completion)
    assert D.locate_segments(HFSampler(m_a, tok), ex[0].prompt, ex[0].completion) == loc
    ref = D.token_logprobs(m_a, [loc.input_ids])[0]
    row = lms.tokens[(lms.tokens["index"] == 0) & (lms.tokens["model"] == "aligned")
                     & (lms.tokens["segment"] == "completion")].iloc[0]
    np.testing.assert_array_equal(row["logprobs"], ref[slice(*loc.completion)])


@pytest.mark.slow
def test_detection_runs_by_the_driver_in_chunks_and_its_report_evaluates_the_stored_scores(models, tmp_path):
    """`Detection` scores chunks of rows (one case each) under a `ScorerPair`; the report's metrics are
    `evaluate` of all rows in data order (whatever order the chunks are stored in), a damaged chunk is
    scored again on resume, and a sampler that is no pair is refused before the run directory exists."""
    from critwin.driver import run
    from critwin.rundir import RunDir, case_key

    aligned, unaligned, _, _ = models
    ex = [D.Example(**r) for r in detection_set(seed=1, n_per_split=150)]
    exp = D.Detection(ex, stats=D.DetectStatistics(n_boot=50), seed=3)
    cases = exp.cases()
    assert [c.id for c in cases] == [f"rows 0-{D.ROWS_PER_CASE - 1}", f"rows {D.ROWS_PER_CASE}-{len(ex) - 1}"]
    pair = D.ScorerPair(aligned, unaligned, batch_size=32)
    out = tmp_path / "run"
    res = run(exp, pair, out=out)
    assert res.n_computed == 2 and res.n_failed == 0
    whole = D.score_examples(ex, aligned, unaligned)
    stored = D.read_detect_run(RunDir.open(out))
    pd.testing.assert_frame_equal(stored.table, whole.table)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(D.plain(D.evaluate(whole.table, n_boot=50, seed=3))))
    assert "Jailbreak detection" in (out / "index.html").read_text()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data_sha256"] == D.rows_digest(ex)
    assert (cfg["kind"], cfg["n_boot"], cfg["seed"]) == ("detect", 50, 3)
    (out / "scores.parquet" / f"part-{case_key(cases[1].id)}.parquet").write_bytes(b"\x00garbage")
    again = run(exp, pair, out=out)
    assert again.n_computed == 1 and again.n_resumed == 1
    assert json.loads((out / "metrics.json").read_text()) == metrics
    with pytest.raises(CritwinError, match="ScorerPair"):
        run(exp, aligned, out=tmp_path / "other")
    assert not (tmp_path / "other").exists()
