"""`critwin scan` end to end on the bundled model: summary.json contract, per-problem records checked
against independent truth, resume, failed items, the elicitation turn, bad input and the demo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from critwin.cli import main
from critwin.demo import run_reasoning_demo
from critwin.driver import run
from critwin.experiments import arith
from critwin.experiments import reasoning as R

DATASET_KEYS = {"n_problems", "share_with_window", "accuracy_with_window", "accuracy_without_window"}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / R.PROBLEMS).read_text().splitlines()]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Three bundled problems, k = 6, the paper's six cuts (runs once for the module)."""
    out = tmp_path_factory.mktemp("scan") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["scan", "--out", str(out), "--limit", "3", "-k", "6", "--json", "--no-progress"])
    finally:
        torch.set_num_threads(before)
    assert exc.value.code == 0
    return out


def test_summary_json_contract(small_run):
    summary = json.loads((small_run / "summary.json").read_text())
    (name,) = summary["datasets"]
    d = summary["datasets"][name]
    assert DATASET_KEYS <= set(d)
    assert {f"{k}_ci" for k in DATASET_KEYS - {"n_problems"}} <= set(d)
    assert d["n_problems"] == 3 and d["n_failed"] == 0
    assert DATASET_KEYS <= set(d["paper_rule"])
    assert {"window_at_first_error_rate", "n_with_window", "error_tolerance_tokens"} <= set(d)
    assert len(summary["cases"]) == 3
    # Independent recomputation from the per-problem records.
    recs = _records(small_run)
    with_w = [r for r in recs if r["has_window"]]
    assert d["share_with_window"] == pytest.approx(len(with_w) / 3)
    if with_w:
        assert d["accuracy_with_window"] == pytest.approx(sum(r["correct"] for r in with_w) / len(with_w))
    html = (small_run / "index.html").read_text()
    assert 'class="cot"' in html and "Reasoning: windows and accuracy" in html


def test_report_redraw_keeps_the_dataset_summary(small_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(small_run, run)
    before = json.loads((run / "summary.json").read_text())
    code, out, err = _cli(capsys, "report", str(run), "--json")
    assert code == 0, err
    after = json.loads((run / "summary.json").read_text())
    assert after["datasets"] == before["datasets"]
    assert [c["name"] for c in after["cases"]] == [c["name"] for c in before["cases"]]
    assert json.loads(out)["cases"] == after["cases"]


def test_problem_records_agree_with_independent_truth(small_run):
    gold = {json.loads(line)["id"]: json.loads(line) for line in R.BUNDLED_PROBLEMS.read_text().splitlines()}
    recs = _records(small_run)
    assert [r["id"] for r in recs] == list(gold)[:3]
    for r in recs:
        assert r["status"] == "ok"
        text = r["response"]
        stated = arith.extract_answer(text)
        assert r["answer"] == stated == r["answer_continuation"]
        assert r["correct"] == (stated == gold[r["id"]]["answer"])
        err = arith.first_wrong_step(gold[r["id"]]["question"], text)
        assert (err is None) == (r["first_error"] is None)
        if err is not None:
            # Character-level tokenizer: the first wrong token is the first wrong character.
            assert r["first_error"]["token"] == r["first_error"]["char"] == err.char
        assert r["correct"] == (err is None)
        # The paper's cuts, as numbers of response tokens kept, and k draws at each.
        assert r["curve"]["kept"] == sorted((int(f * r["length"]) for f in R.PAPER_FRACTIONS), reverse=True)
        assert all(v + f == 6 for v, f in zip(r["curve"]["n_valid"], r["curve"]["n_failed"], strict=True))
        c = r["curve"]
        for k, n, p, lo, hi in zip(
            c["n_kept"], c["n_valid"], c["p_same"], c["ci_lo"], c["ci_hi"], strict=True
        ):
            assert p == pytest.approx(k / n) and lo <= p <= hi
        assert c["fraction_kept"] == pytest.approx([kept / r["length"] for kept in c["kept"]])
        for w in r["windows"] + r["paper_windows"]:
            assert 0 <= w["kept_lo"] < w["kept_hi"] <= r["length"]
            assert (w["char_lo"], w["char_hi"]) == (w["kept_lo"], w["kept_hi"])
            assert w["kept_lo"] in r["curve"]["kept"] and w["kept_hi"] in r["curve"]["kept"]


def test_rerun_resumes_and_a_lost_record_is_redone_identically(small_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    args = ["scan", "--out", str(run), "--limit", "3", "-k", "6", "--json", "--no-progress"]
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and json.loads(out)["n_resumed"] == 3
    assert len(_records(run)) == 3
    # As if the run had stopped before writing the last problem (plus a torn half line).
    lines = (run / R.PROBLEMS).read_text().splitlines()
    (run / R.PROBLEMS).write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and json.loads(out)["n_resumed"] == 2
    again = R.read_records(run)
    before = json.loads(lines[2])
    assert again[2]["id"] == before["id"]
    assert again[2]["curve"] == before["curve"] and again[2]["windows"] == before["windows"]
    # Other settings: refused with one line, nothing touched.
    code, _, err = _cli(capsys, "scan", "--out", str(run), "--limit", "3", "-k", "5")
    assert code == 2 and err.count("\n") == 1 and "k: 6 there, 5 now" in err


def test_a_failing_problem_is_recorded_and_retried(tmp_path, monkeypatch):
    ps = R.load_reasoning_problems(R.BUNDLED_PROBLEMS, "arith", limit=2)
    cfg = R.ReasoningConfig.from_flat(k=2, fractions=(0.5,), max_new_tokens=300)
    real = R.scan_problem

    def flaky(sampler, problem, *args, **kwargs):
        if problem.id == ps[0].id:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(sampler, problem, *args, **kwargs)

    experiment = R.ReasoningExperiment([ps], cfg, str(R.BUNDLED_MODEL))
    factory = R.lm_factory("hf", R.BUNDLED_MODEL, experiment, device="cpu")
    monkeypatch.setattr(R, "scan_problem", flaky)
    res = run(experiment, factory=factory, out=tmp_path / "r")
    recs = {r["id"]: r for r in R.read_records(res.out)}
    assert recs[ps[0].id]["status"] == "failed" and "out of memory" in recs[ps[0].id]["error"]
    assert recs[ps[1].id]["status"] == "ok"
    d = next(iter(res.summary["datasets"].values()))
    assert d["n_failed"] == 1 and d["n_problems"] == 1
    monkeypatch.setattr(R, "scan_problem", real)
    res = run(experiment, factory=factory, out=tmp_path / "r")
    assert res.n_resumed == 1 and res.n_computed == 1
    assert all(r["status"] == "ok" for r in R.read_records(res.out))


def test_unanswered_originals_are_failed_items(tmp_path, capsys):
    out = tmp_path / "r"
    code, stdout, _ = _cli(
        capsys, "scan", "--out", str(out), "--limit", "2", "-k", "2", "--max-new-tokens", "15", "--json"
    )
    assert code == 0
    d = next(iter(json.loads(stdout)["datasets"].values()))
    assert d["n_problems"] == 0 and d["n_failed"] == 2 and d["share_with_window"] is None
    assert all(r["status"] == "failed" and "no answer" in r["error"] for r in _records(out))


def test_elicitation_turn(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, _ = _cli(
        capsys,
        "scan",
        "--out",
        str(out),
        "--limit",
        "2",
        "-k",
        "3",
        "--fractions",
        "0.3,0.8",
        "--answer-from",
        "elicit",
        "--json",
    )
    assert code == 0
    for r in _records(out):
        assert r["answer"] == r["answer_elicit"]
        # The model was trained to repeat its chain's answer when asked (99% agreement in training).
        assert r["answer_elicit"] == r["answer_continuation"]
        assert sum(r["curve"]["n_valid"]) + sum(r["curve"]["n_failed"]) == 6


def test_bad_input_gives_one_line_errors(tmp_path, capsys):
    no_template = tmp_path / "no_template"
    shutil.copytree(R.BUNDLED_MODEL, no_template)
    (no_template / "chat_template.jinja").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "Add up a=1, b=2.", "answer": "3"}\n{"question": "Add up a=1, b=2."}\n')
    out = str(tmp_path / "out")
    cases = [
        (["--model", str(tmp_path / "missing")], "does not exist"),
        (["--model", str(empty)], "config.json"),
        (["--model", str(no_template), "--chat", "on"], "chat template"),
        (["--chat", "off", "--answer-from", "elicit"], "chat template"),
        (["--data", str(rows), "--task", "arith", "--strict"], "missing 'gold'"),
        (["--data", str(tmp_path / "nope.jsonl")], "no such file"),
        (["--fractions", "0.2,1.5"], "out of range"),
        (["--fractions", "0.5", "--dense"], "not both"),
        (["--dense", "--dense-step", "0"], "--dense-step"),
        (["-k", "0"], "-k"),
        (["--task", "poetry"], "--task"),
        (["--threads", "0"], "--threads"),
    ]
    for extra, match in cases:
        code, stdout, err = _cli(capsys, "scan", "--out", out, *extra)
        assert code == 2, (extra, err)
        assert err.startswith("critwin: error:") and err.count("\n") == 1 and match in err, (extra, err)
        assert stdout == ""
    assert not (tmp_path / "out").exists()  # no half-made run directory


@pytest.mark.slow
def test_demo_reports_window_at_first_error(tmp_path):
    res = run_reasoning_demo(tmp_path / "demo", seed=0)
    assert res["n_problems"] == 20
    recs = R.read_records(tmp_path / "demo")
    with_w = [r for r in recs if r["windows"]]
    assert res["n_problems_with_window"] == len(with_w) > 0
    # Recompute the rate from the stored chains alone: the main window (largest jump) must bracket the
    # first character that departs from the correct chain (one token per character), ± 3 tokens.
    hits = 0
    for r in with_w:
        err = arith.first_wrong_step(r["question"], r["response"])
        w = max(r["windows"], key=lambda w: (w["jump"], -w["kept_lo"]))
        hits += err is not None and w["kept_lo"] - 3 <= err.char < w["kept_hi"] + 3
    assert res["window_at_first_error_rate"] == pytest.approx(hits / len(with_w))
    assert res["error_tolerance_tokens"] == 3
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert DATASET_KEYS <= set(next(iter(summary["datasets"].values())))


def test_bundled_heldout_problems_default_to_the_arith_task(tmp_path, capsys):
    """The held-out running-sum file shipped with critwin gets task arith (and so the first-wrong-step
    analysis) when passed as --data, like the default problems; other files default to exact."""
    from critwin.cli.scan import _bundled

    heldout = R.ASSETS / "reasoning_problems_heldout.jsonl"
    assert _bundled(heldout) and _bundled(R.BUNDLED_PROBLEMS)
    copy = tmp_path / "reasoning_problems_heldout.jsonl"
    shutil.copy(heldout, copy)
    assert not _bundled(copy)  # a user's file of the same name is not assumed to be running sums
    out = tmp_path / "run"
    code, _, err = _cli(capsys, "scan", "--data", str(heldout), "--out", str(out), "--limit", "1", "-k", "2",
                        "--fractions", "0.5", "--no-progress", "--json")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["task"] == "arith"
    (rec,) = _records(out)
    assert "wrong_steps" in rec  # the first-wrong-step analysis ran (only task arith records the steps)
