"""The cheap checks that run before any weights load, against independent truth: safetensors headers,
context lengths from config.json, characters a tokenizer cannot encode, problems that do not fit the
context, output folders, the memory bound, and user judges loaded from a file."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from critwin.cli import checks
from critwin.errors import CritwinError
from critwin.experiments import reasoning as R
from critwin.samplers.hf import (
    check_weight_files,
    context_length,
    inspect_model,
    load_causal_lm,
    unknown_chars,
)
from critwin.samplers.hf_tiny import char_tokenizer, save_tiny_model


def _safetensors(path: Path, n_bytes: int, *, declared: int | None = None) -> None:
    """A safetensors file with one uint8 tensor of `declared` bytes and `n_bytes` of data actually written."""
    declared = n_bytes if declared is None else declared
    header = json.dumps({"w": {"dtype": "U8", "shape": [declared], "data_offsets": [0, declared]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * n_bytes)


def test_weight_headers_catch_truncated_corrupt_and_missing_files(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    with pytest.raises(CritwinError, match="has no weights"):
        check_weight_files(d)
    _safetensors(d / "model.safetensors", 100)
    check_weight_files(d)  # intact: size = 8 + header + data
    _safetensors(d / "model.safetensors", 60, declared=100)
    with pytest.raises(CritwinError, match=r"holds \d+ bytes but its header describes \d+"):
        check_weight_files(d)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(CritwinError, match="header is not valid JSON"):
        check_weight_files(d)
    (d / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CritwinError, match="too short"):
        check_weight_files(d)
    (d / "model.safetensors").unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "part-1.safetensors"}}))
    with pytest.raises(CritwinError, match=r"lacks weight shard\(s\) \['part-1.safetensors'\]"):
        check_weight_files(d)
    _safetensors(d / "part-1.safetensors", 8)
    check_weight_files(d)


def test_a_truncated_model_is_one_error_from_loading_too(tmp_path):
    d = save_tiny_model(tmp_path / "m", arch="llama", max_positions=32)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(CritwinError, match="is damaged") as e:
        load_causal_lm(d, device="cpu")
    assert "\n" not in str(e.value)


def test_context_length_from_config():
    assert context_length({"max_position_embeddings": 512}) == 512
    assert context_length({"n_positions": 1024, "n_ctx": 1024}) == 1024  # GPT-2
    assert context_length({"text_config": {"max_position_embeddings": 4096}}) == 4096
    assert context_length({"model_type": "mamba"}) is None
    info = inspect_model(R.BUNDLED_MODEL)
    config = json.loads((R.BUNDLED_MODEL / "config.json").read_text())
    assert info.context == config["max_position_embeddings"]
    assert info.has_chat_template


def test_unknown_characters_of_declared_and_hidden_unknown_tokens():
    tok = char_tokenizer("abc ")  # declares <unk>
    assert unknown_chars(tok, "a b c") == []
    assert unknown_chars(tok, "abé✓é") == ["é", "✓"]
    assert unknown_chars(tok, "a <unk>") == []  # the unknown token written out is that token, not a loss
    # The bundled tokenizer maps unknown characters to "?" without declaring an unk_token.
    bundled = inspect_model(R.BUNDLED_MODEL).tokenizer
    assert bundled.unk_token is None
    assert unknown_chars(bundled, "Add up a=1? b=2.") == []
    assert unknown_chars(bundled, "Add up é=1, ü=2.") == ["é", "ü"]


def _problem_set(tmp_path: Path, questions: list[str]):
    rows = [{"id": f"p{i}", "question": q, "answer": "1"} for i, q in enumerate(questions)]
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return R.load_reasoning_problems(f, "exact")


def test_scan_skips_and_counts_problems_the_model_cannot_hold(tmp_path):
    from critwin.cli.scan import _fit_to_model
    from critwin.samplers.hf import encode_prompt

    info = inspect_model(R.BUNDLED_MODEL)
    long_q = "Add up " + ", ".join(f"a={i % 10}" for i in range(60)) + "."
    ps = _problem_set(tmp_path, ["Add up a=1, b=2.", "Add up é=1.", long_q])
    n_long = len(encode_prompt(info.tokenizer, long_q, chat=True)[0])
    n_short = len(encode_prompt(info.tokenizer, "Add up a=1, b=2.", chat=True)[0])
    assert n_long + 300 > info.context > n_long  # the long one fits alone, not with 300 new tokens
    (fit,), max_new = _fit_to_model([ps], info, True, 300, 300, False)
    assert max_new == 300 and [p.id for p in fit] == ["p0"]
    reasons = {i.id: i.reason for i in fit.issues}
    assert "cannot encode 'é'" in reasons["p1"] and f"prompt of {n_long} tokens" in reasons["p2"]
    with pytest.raises(CritwinError, match="drop --strict"):
        _fit_to_model([ps], info, True, 300, 300, True)
    # The default response budget shrinks to what the longest prompt leaves; an explicit one that not even
    # the shortest prompt fits next to is refused with the limit.
    (fit,), max_new = _fit_to_model([ps], info, True, None, 2048, False)
    assert max_new == info.context - n_long and len(fit) == 2
    with pytest.raises(CritwinError, match=f"use --max-new-tokens {info.context - n_long} or less"):
        _fit_to_model([ps], info, True, info.context - n_short + 1, 300, False)


def test_out_dir_accepts_new_empty_and_same_command_runs_only(tmp_path):
    checks.out_dir(tmp_path / "new" / "run", "structured")
    (tmp_path / "empty").mkdir()
    checks.out_dir(tmp_path / "empty", "structured")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "jailbreak", "kind": "prefill"}))
    checks.out_dir(run, "jailbreak", "prefill")  # resumed (or refused for its settings) by the run itself
    with pytest.raises(CritwinError, match="holds a 'jailbreak prefill' run, not 'jailbreak detect'"):
        checks.out_dir(run, "jailbreak", "detect")
    (run / "config.json").write_text("{damaged")
    (run / ".critwin").mkdir()
    (run / ".critwin" / "config.json").write_text(json.dumps({"experiment": "reasoning"}))
    with pytest.raises(CritwinError, match="holds a 'reasoning' run"):  # read from the healing copy
        checks.out_dir(run, "jailbreak", "prefill")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run"]  # the probes left nothing


def test_memory_bound_names_the_largest_setting_that_fits(monkeypatch):
    monkeypatch.setattr(checks, "available_memory", lambda: 10 * 2**30)
    per = 6 * 300 * checks.BYTES_PER_TOKEN
    checks.memory(6 * 1000, 300, "-k 1000", "-k", 6)
    with pytest.raises(CritwinError) as e:
        checks.memory(6 * 10**9, 300, "-k 1000000000", "-k", 6)
    assert f"use -k {10 * 2**30 // per} or less" in str(e.value) and "10 GB is available" in str(e.value)


def test_user_judge_from_a_file_and_its_failures(tmp_path, monkeypatch):
    from critwin.cli.jailbreak import _user_function

    monkeypatch.chdir(tmp_path)
    (tmp_path / "myjudge.py").write_text("def judge(prompt, response):\n    return 'sure' in response\n")
    fn = _user_function("./myjudge.py:judge")
    assert fn("p", "sure thing") is True and fn("p", "no") is False
    assert not (tmp_path / "__pycache__").exists()  # nothing written next to the user's file
    assert "myjudge" not in sys.modules  # the file did not shadow a module of that name
    with pytest.raises(CritwinError, match="pass --judge ./myjudge.py:judge or add this folder to PYTHON"):
        _user_function("myjudge:judge")
    (tmp_path / "boom.py").write_text("raise RuntimeError('at import')\n")
    with pytest.raises(CritwinError, match="importing boom.py raised RuntimeError: at import"):
        _user_function("./boom.py:judge")
    with pytest.raises(CritwinError, match="write module:function"):
        _user_function("./myjudge.py:")
