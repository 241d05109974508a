"""Hub-schema loaders on local fixtures (tests/fixtures/data, a few rows per dataset in its real schema).

Nothing here touches the network: the loaders read local files only (HF_DATASETS_OFFLINE=1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critwin.data import DATASETS, load_hub, load_problems
from critwin.errors import CritwinError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hf-cache")


def rows(name):
    lines = (FIX / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_math_gold_from_boxed_solution(cache):
    ps = load_hub("math", FIX / "math_test.jsonl", cache_dir=cache)
    assert [p.gold for p in ps] == [r"\frac{1}{2}", "4", r"5\sqrt{2}"]  # nested braces kept, last box wins
    p = ps[0]
    assert p.task == "math" and p.choices == ()
    assert p.question == rows("math_test.jsonl")[0]["problem"]
    assert p.meta == {"level": "Level 1", "type": "Prealgebra"}
    assert ps.n_rows == 5 and ps.n_skipped == 2
    reasons = sorted(issue.reason for issue in ps.issues)
    assert reasons == ["missing 'solution'", r"no \boxed{} answer in solution"]


def test_math500_answer_column_and_unique_id(cache):
    p = load_hub("math", FIX / "math500_test.jsonl", cache_dir=cache)[0]
    assert (p.id, p.gold, p.meta["subject"]) == ("test/algebra/1.json", r"\{-2,2\}", "Algebra")


def test_arc_hub_schema_with_numeric_labels(cache):
    ps = load_hub("arc-challenge", FIX / "arc_challenge_test.jsonl", cache_dir=cache)
    by_id = {p.id: p for p in ps}
    p = by_id["Mercury_7175875"]
    assert (p.question, p.choices, p.gold, p.task) == (
        "Which unit measures the mass of a small rock?", ("liter", "gram", "meter", "second"), "B", "mc")
    numeric = by_id["NYSEDREGENTS_2015_4_8"]  # labels "1".."4", answerKey "2" -> second choice -> B
    assert numeric.gold == "B" and numeric.choices[1] == "chemical"
    assert numeric.meta["labels"] == ("1", "2", "3", "4")
    assert by_id["Mercury_SC_400987"].letters == "ABC"
    reasons = {issue.id: issue.reason for issue in ps.issues}
    assert reasons == {"MDSA_2009_5_16": "missing 'answerKey'", "MCAS_2004_9_6": "answerKey names no choice"}


def test_arc_original_ai2_jsonl_schema(cache):
    p = load_hub("arc-easy", FIX / "arc_original.jsonl", cache_dir=cache)[0]
    assert (p.id, p.gold) == ("Mercury_SC_415702", "B")
    assert p.question == "Which material conducts electricity best?"
    assert p.choices == ("wood", "copper", "rubber", "glass")


def test_mmlu_index_answer(cache):
    ps = load_hub("mmlu", FIX / "mmlu_test.jsonl", cache_dir=cache)
    assert [(p.gold, p.choices[ord(p.gold) - 65]) for p in ps] == [("B", "2x"), ("C", "heart")]
    assert ps[0].meta["subject"] == "college_mathematics"
    assert sorted(issue.reason for issue in ps.issues) == ["answer names no choice", "missing 'choices'"]
    assert ps.missing_counts == {"choices": 1}


def test_logiqa_both_schemas(cache):
    ps = load_hub("logiqa", FIX / "logiqa_test.jsonl", cache_dir=cache)
    src = rows("logiqa_test.jsonl")[0]
    p = ps[0]
    assert p.question == src["context"] + "\n\n" + src["query"]
    assert p.choices == tuple(src["options"]) and p.gold == "B"
    assert [issue.reason for issue in ps.issues] == ["missing 'context'"]
    e = load_hub("logiqa", FIX / "logiqa_eleuther_test.jsonl", cache_dir=cache)[0]
    assert e.gold == "C" and e.choices[2] == "Tom passed." and e.question.endswith("Which is true?")


def test_truthfulqa_mc1_gold_follows_the_shuffle(cache):
    ps = load_hub("truthfulqa", FIX / "truthfulqa_validation.jsonl", cache_dir=cache)
    src = rows("truthfulqa_validation.jsonl")
    for p, row in zip(ps, src, strict=False):
        right = row["mc1_targets"]["choices"][row["mc1_targets"]["labels"].index(1)]
        assert p.choices[ord(p.gold) - 65] == right
        assert sorted(p.choices) == sorted(row["mc1_targets"]["choices"])
        assert tuple(row["mc1_targets"]["choices"][j] for j in p.meta["hub_order"]) == p.choices
    assert [issue.reason for issue in ps.issues] == ["mc1_targets.labels must mark exactly one choice with 1"]
    again = load_hub("truthfulqa", FIX / "truthfulqa_validation.jsonl", cache_dir=cache)
    assert [p.choices for p in again] == [p.choices for p in ps]  # seeded: same order every run
    hub_order = load_hub("truthfulqa", FIX / "truthfulqa_validation.jsonl", cache_dir=cache,
                         shuffle_seed=None)
    assert all(p.gold == "A" for p in hub_order)  # the Hub lists the right answer first


def test_aqua_rat_option_prefixes_stripped(cache):
    ps = load_hub("aqua-rat", FIX / "aqua_rat_test.jsonl", cache_dir=cache)
    p = ps[0]
    assert p.choices == ("30", "40", "45", "50", "90") and p.gold == "B" and p.letters == "ABCDE"
    assert p.meta["rationale"].endswith("Answer: B")
    assert [issue.reason for issue in ps.issues] == ["missing 'correct'"]


def test_strict_mode_errors(cache):
    with pytest.raises(CritwinError, match=r"2 of 4 rows loaded, 2 skipped.*--strict"):
        load_hub("mmlu", FIX / "mmlu_test.jsonl", strict=True, cache_dir=cache)
    assert len(load_hub("arc-easy", FIX / "arc_original.jsonl", strict=True, cache_dir=cache)) == 1


def test_save_to_disk_folder_with_classlabel_and_splits(tmp_path, cache):
    import datasets

    feats = datasets.Features({
        "question": datasets.Value("string"), "subject": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.ClassLabel(names=["A", "B", "C", "D"]),
    })
    good = [r for r in rows("mmlu_test.jsonl")[:2]]
    dd = datasets.DatasetDict({
        "test": datasets.Dataset.from_list(good, features=feats),
        "dev": datasets.Dataset.from_list(good[:1], features=feats),
    })
    dd.save_to_disk(str(tmp_path / "mmlu_saved"))
    ps = load_hub("mmlu", tmp_path / "mmlu_saved")  # default split: test
    assert [p.gold for p in ps] == ["B", "C"] and "split test" in ps.source
    assert len(load_hub("mmlu", tmp_path / "mmlu_saved", split="dev")) == 1
    with pytest.raises(CritwinError, match=r"split 'train' not in .*available \['test', 'dev'\]"):
        load_hub("mmlu", tmp_path / "mmlu_saved", split="train")
    dd["test"].save_to_disk(str(tmp_path / "one_split"))
    assert len(load_hub("mmlu", tmp_path / "one_split")) == 2


def test_hub_snapshot_folder_with_config_subfolders(tmp_path, cache):
    import pandas as pd

    snap = tmp_path / "ai2_arc"
    for config, src in (("ARC-Challenge", "arc_challenge_test.jsonl"), ("ARC-Easy", "arc_original.jsonl")):
        (snap / config).mkdir(parents=True)
        easy = {"id": "e1", "question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]},
                "answerKey": "A"}
        data = rows(src)[:3] if config == "ARC-Challenge" else [easy]
        pd.DataFrame(data).to_parquet(snap / config / "test-00000-of-00001.parquet")
        pd.DataFrame(data).to_parquet(snap / config / "train-00000-of-00001.parquet")
    ps = load_hub("arc-challenge", snap, config="ARC-Challenge", cache_dir=cache)
    assert [p.gold for p in ps] == ["B", "B", "A"] and "split test" in ps.source
    assert load_hub("arc-easy", snap / "ARC-Easy", cache_dir=cache)[0].id == "e1"


def test_parquet_file(tmp_path, cache):
    import pandas as pd

    pd.DataFrame(rows("aqua_rat_test.jsonl")[:2]).to_parquet(tmp_path / "aqua.parquet")
    assert [p.gold for p in load_hub("aqua-rat", tmp_path / "aqua.parquet", cache_dir=cache)] == ["B", "C"]


def test_limit_and_bad_inputs(tmp_path, cache):
    assert load_hub("mmlu", FIX / "mmlu_test.jsonl", limit=1, cache_dir=cache).n_rows == 1
    with pytest.raises(CritwinError, match="never downloads"):
        load_hub("mmlu", tmp_path / "cais/mmlu")
    with pytest.raises(CritwinError, match="dataset 'gsm9k' unknown"):
        load_hub("gsm9k", FIX / "mmlu_test.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CritwinError, match="unsupported type"):
        load_hub("mmlu", tmp_path / "x.csv")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet")
    with pytest.raises(CritwinError, match="could not read dataset"):
        load_hub("mmlu", tmp_path / "garbage.parquet", cache_dir=cache)
    with pytest.raises(CritwinError, match="limit"):
        load_hub("mmlu", FIX / "mmlu_test.jsonl", limit=0)


def test_load_problems_by_dataset_name(cache):
    ps = load_problems(FIX / "arc_original.jsonl", dataset="ARC_Easy", cache_dir=cache)
    assert ps[0].gold == "B" and ps.name == "arc-easy"
    with pytest.raises(CritwinError, match="does not fit dataset"):
        load_problems(FIX / "arc_original.jsonl", dataset="arc-easy", task="math")
    assert set(DATASETS) == {"math", "arc-easy", "arc-challenge", "mmlu", "logiqa", "truthfulqa", "aqua-rat"}
