"""`critwin forks` on the bundled reasoning model: at every position the forced tokens are exactly those
with next-token probability >= the threshold under the model's own law (computed here by a plain
transformers forward pass at the sampling temperature, not critwin's prefix cache), each branch gets K
endings, and the per-position numbers follow from the branch counts."""

from __future__ import annotations

import json

import pytest
import torch

from critwin.cli import main
from critwin.experiments import reasoning as R
from critwin.rundir import read_jsonl

pytestmark = pytest.mark.slow
K = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("forks") / "run"
    with pytest.raises(SystemExit) as done:
        main(["forks", "--out", str(out), "--limit", "2", "-k", str(K), "--fractions", "0.5", "--threads",
              "1", "--no-progress", "--json"])
    assert done.value.code in (0, None)
    return out


def test_the_forced_tokens_are_the_models_own_likely_tokens(run):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(R.BUNDLED_MODEL).eval()
    originals = {f"{r['dataset']}/{r['id']}": r for r in read_jsonl(run / R.ORIGINALS)}
    for rec in R.read_records(run):
        o, forks = originals[rec["case"]], rec["forks"]
        ids = o["prompt_ids"] + o["response_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        probs = torch.softmax(logits / 0.6, dim=-1)
        assert len(forks["positions"]) == len(o["response_ids"])
        for pos in forks["positions"]:
            row = probs[len(o["prompt_ids"]) + pos["token"] - 1]
            want = {int(t) for t in torch.nonzero(row >= 0.05).flatten()} - {int(t) for t in _eos()}
            assert {b["token_id"] for b in pos["branches"]} == want, pos["token"]
            for b in pos["branches"]:
                assert b["prob"] == pytest.approx(float(row[b["token_id"]]), abs=1e-4)
                assert b["n"] == sum(b["counts"].values()) <= K
            live = [b for b in pos["branches"] if b["n"]]
            mass = sum(b["prob"] for b in live)
            assert pos["p_same"] == pytest.approx(sum(b["prob"] * b["same"] for b in live) / mass)
        s = forks["survival"]
        assert s[0] == 1.0 and all(a >= b for a, b in zip(s, s[1:], strict=False))
        assert forks["n_draws"] == sum(b["n"] for p in forks["positions"] for b in p["branches"])
    (d,) = json.loads((run / "summary.json").read_text())["datasets"].values()
    assert d["forks"]["n_problems"] == 2


def _eos():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(R.BUNDLED_MODEL)
    return [tok.eos_token_id] if tok.eos_token_id is not None else []


def test_fork_positions_fork_only_there_with_the_same_forced_tokens(run, tmp_path):
    """--fork-positions 0,30,250: the chosen positions get the branches the every-position run gives them
    (same tokens and probabilities); 250 lies past both responses' ends and is recorded as such."""
    out = tmp_path / "chosen"
    with pytest.raises(SystemExit) as done:
        main(["forks", "--out", str(out), "--limit", "2", "-k", str(K), "--fractions", "0.5", "--threads",
              "1", "--no-progress", "--json", "--fork-positions", "250,30,0"])
    assert done.value.code in (0, None)
    every = {r["case"]: {p["token"]: p for p in r["forks"]["positions"]} for r in R.read_records(run)}
    for rec in R.read_records(out):
        forks = rec["forks"]
        assert [p["token"] for p in forks["positions"]] == [0, 30] and rec["length"] < 250
        assert (forks["positions_chosen"], forks["positions_past_end"]) == ([0, 30, 250], [250])
        for pos in forks["positions"]:
            full = every[rec["case"]][pos["token"]]
            assert [b["token_id"] for b in pos["branches"]] == [b["token_id"] for b in full["branches"]]
            probs = [b["prob"] for b in full["branches"]]
            assert [b["prob"] for b in pos["branches"]] == pytest.approx(probs)
        assert forks["n_draws"] == sum(b["n"] for p in forks["positions"] for b in p["branches"])
