"""Reasoning experiment pieces without a model: bootstrap summaries, window coordinates, error alignment,
settings validation, problem loading and the highlighted chain of thought."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from critwin.errors import CritwinError
from critwin.experiments import reasoning as R
from critwin.report.reasoning import highlighted_chain
from critwin.stats import newcombe_interval, percentile_interval
from critwin.windows import Window


def test_window_stats_point_values_and_intervals():
    has_w = [True, True, False, False, False, True, False, False]
    correct = [False, True, True, True, True, False, True, False]
    s = R.window_stats(has_w, correct, level=0.95)
    assert s["n_problems"] == 8 and s["n_with_window"] == 3 and s["n_without_window"] == 5
    assert s["share_with_window"] == pytest.approx(3 / 8)
    assert s["accuracy_with_window"] == pytest.approx(1 / 3)
    assert s["accuracy_without_window"] == pytest.approx(4 / 5)
    assert s["accuracy"] == pytest.approx(5 / 8)
    assert s["accuracy_gap"] == pytest.approx(4 / 5 - 1 / 3)
    # Proportions: Wilson intervals, the same numbers as scipy's binomtest.
    for key, (k, n) in {"share_with_window": (3, 8), "accuracy_with_window": (1, 3),
                        "accuracy_without_window": (4, 5), "accuracy": (5, 8)}.items():
        ref = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert s[f"{key}_ci"] == pytest.approx([ref.low, ref.high]), key
    # The gap: Newcombe's hybrid score interval of 4/5 - 1/3.
    assert s["accuracy_gap_ci"] == pytest.approx(list(newcombe_interval(4, 5, 1, 3, 0.95)))
    assert "Wilson" in s["ci_method"] and "Newcombe" in s["ci_method"] and s["ci_level"] == 0.95


def test_all_correct_on_twelve_problems_is_not_a_point_interval():
    """12 of 12 right: a percentile bootstrap gives [1, 1]; Wilson gives [n / (n + z²), 1] = [0.76, 1]."""
    s = R.window_stats([False] * 12, [True] * 12, level=0.95)
    z2 = stats.norm.ppf(0.975) ** 2
    assert s["accuracy"] == 1.0 and s["accuracy_ci"] == pytest.approx([12 / (12 + z2), 1.0])
    assert s["share_with_window"] == 0.0 and s["share_with_window_ci"] == pytest.approx([0.0, z2 / (12 + z2)])
    rng = np.random.default_rng(0)
    boot = np.ones(12)[rng.integers(0, 12, size=(2000, 12))].mean(axis=1)
    assert percentile_interval(boot, 0.95) == (1.0, 1.0)  # what the old summary printed


def test_window_stats_empty_groups_give_none():
    s = R.window_stats([False, False], [True, False])
    assert s["accuracy_with_window"] is None and s["accuracy_with_window_ci"] is None
    assert s["accuracy_gap"] is None and s["accuracy_gap_ci"] is None
    assert s["accuracy_without_window"] == 0.5 and s["share_with_window"] == 0.0
    e = R.window_stats([], [])
    assert e["n_problems"] == 0 and e["share_with_window"] is None and e["share_with_window_ci"] is None
    with pytest.raises(CritwinError, match="one per problem"):
        R.window_stats([True], [True, False])


def _window(t_lo: float, t_hi: float, jump: float = 0.5) -> Window:
    return Window(t_lo, t_hi, 0.9, 0.9 - jump, jump, (0.1, 0.8), 0.001)


def test_window_record_coordinates_and_error_tolerance():
    text = "abcdefghijklmnopqrst"  # 20 one-character tokens
    offsets = list(range(21))
    w = R.window_record(_window(5, 9), 20, offsets)
    # t = tokens removed: the curve moves between keeping 11 and keeping 15 tokens, i.e. in tokens 11..14.
    assert (w["kept_lo"], w["kept_hi"]) == (11, 15)
    assert (w["fraction_lo"], w["fraction_hi"]) == (0.55, 0.75)
    assert text[w["char_lo"] : w["char_hi"]] == "lmno"
    assert [R.window_at_error(w, p, 0) for p in (10, 11, 14, 15)] == [False, True, True, False]
    assert [R.window_at_error(w, p, 1) for p in (9, 10, 15, 16)] == [False, True, True, False]


def test_error_alignment_main_window_and_later_slips():
    offsets = list(range(101))
    wins = [
        R.window_record(_window(60, 70, 0.3), 100, offsets),
        R.window_record(_window(20, 25, 0.7), 100, offsets),
    ]
    rec = {
        "windows": wins,  # main window (largest jump) keeps 75..80 tokens; the other 30..40
        "paper_windows": [],
        "first_error": {"token": 33},
        "wrong_steps": [{"token": 33}, {"token": 77}],
    }
    got = R.error_alignment(rec, tolerance=0)
    assert got["window_at_first_error"] is False  # the main window sits at the second slip ...
    assert got["window_at_wrong_step"] is True
    assert got["any_window_at_first_error"] is True  # ... and another window at the first one
    assert got["paper_window_at_first_error"] is None  # no window of the paper's rule
    stats = R.first_error_stats(
        [{**rec, **got, "has_window": True}, {"has_window": False, "first_error": {"token": 3}}], 0
    )
    assert stats["window_at_first_error_rate"] == 0.0 and stats["window_at_wrong_step_rate"] == 1.0
    assert stats["first_error_window_recall"] == 0.5 and stats["n_chains_with_wrong_step"] == 2
    assert stats["paper_rule_errors"]["window_at_first_error_rate"] is None


def test_config_validation_and_cuts():
    cuts = R.CutSettings(fractions=(0.5, 0.1, 0.1, 0.0))
    assert cuts.kept_positions(10) == [0, 1, 5]  # ascending, repeats merged
    assert R.CutSettings(dense_step=3).kept_positions(7) == [0, 3, 6]
    assert R.ReasoningConfig().cuts.kept_positions(100) == [5, 10, 30, 50, 70, 90]
    for kwargs, match in [
        ({"fractions": (0.2, 1.2)}, "out of range"),
        ({"fractions": ()}, "empty"),
        ({"k": 0}, "-k"),
        ({"task": "code"}, "--task"),
        ({"answer_from": "both"}, "--answer-from"),
        ({"dense_step": 0}, "--dense-step"),
        ({"top_p": 0.0}, "--top-p"),
        ({"seed": -1}, "--seed"),
        ({"levle": 0.9}, "unknown"),
    ]:
        with pytest.raises(CritwinError, match=match):
            R.ReasoningConfig.from_flat(**kwargs)
    cfg = R.ReasoningConfig.from_flat(k=3, level=0.9, ci_level=0.8, temperature=0.2)
    assert (cfg.cuts.k, cfg.windows.level, cfg.stats.ci_level, cfg.sampling.temperature) == (3, 0.9, 0.8, 0.2)
    flat = cfg.to_dict()
    assert R.ReasoningConfig.from_flat(**flat) == cfg  # config.json's flat form reads back
    assert (flat["k"], flat["level"], flat["ci_level"], flat["temperature"]) == (3, 0.9, 0.8, 0.2)


def test_load_arith_problems_counts_bad_rows(tmp_path):
    rows = [
        {"id": "ok", "question": "Add up a=1, b=2.", "answer": "3"},
        {"id": "sum", "question": "Add up a=1, b=2.", "answer": "4"},
        {"id": "text", "question": "What is 1+2?", "answer": "3"},
        {"id": "nogold", "question": "Add up a=1, b=2."},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ps = R.load_reasoning_problems(path, "arith")
    assert [p.id for p in ps] == ["ok"] and ps.n_rows == 4 and ps.n_skipped == 3
    with pytest.raises(CritwinError, match="--strict"):
        R.load_reasoning_problems(path, "arith", strict=True)
    path.write_text(json.dumps(rows[2]) + "\n")
    with pytest.raises(CritwinError, match="no usable"):
        R.load_reasoning_problems(path, "arith")


def test_summarize_counts_failed_and_ungraded_apart():
    cfg = R.ReasoningConfig(task="exact")
    recs = [
        {
            "dataset": "d",
            "id": "1",
            "status": "ok",
            "correct": True,
            "has_window": False,
            "has_paper_window": False,
        },
        {
            "dataset": "d",
            "id": "2",
            "status": "ok",
            "correct": False,
            "has_window": True,
            "has_paper_window": True,
        },
        {
            "dataset": "d",
            "id": "3",
            "status": "ok",
            "correct": None,
            "has_window": True,
            "has_paper_window": False,
        },
        {"dataset": "d", "id": "4", "status": "failed", "error": "no answer"},
    ]
    d = R.summarize(recs, cfg)["d"]
    assert d["n_problems"] == 2 and d["n_failed"] == 1 and d["n_ungraded"] == 1
    assert d["accuracy_with_window"] == 0.0 and d["accuracy_without_window"] == 1.0
    assert d["paper_rule"]["share_with_window"] == 0.5 and d["failures"] == ["no answer"]


def test_highlighted_chain_escapes_and_marks_spans():
    text = "a<b\nc&d"
    html = highlighted_chain(text, [{"char_lo": 1, "char_hi": 3}], [{"char_lo": 2, "char_hi": 5}], 6)
    assert html == (
        '<div class="cot">a<span class="win">&lt;</span><span class="pap win">b</span>'
        '<span class="pap">\nc</span>&amp;<span class="err">d</span></div>'
    )
