"""Structured output on a real (tiny, trained) transformers model, end to end and through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny_models import STRUCT_PROMPT, STRUCT_TEMPLATE, struct_choice_law, trained_pair

from critwin.experiments import structured as S
from critwin.features.choices import ChoiceTemplate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sampler():
    from critwin.samplers.hf import HFSampler

    _, unaligned = trained_pair()
    return HFSampler.from_pretrained(unaligned, device="cpu", temperature=1.0, top_p=1.0, max_new_tokens=48,
                                     batch_size=200).with_prompt(STRUCT_PROMPT)


def test_staircase_of_a_transformers_model(sampler):
    t = ChoiceTemplate.parse(STRUCT_TEMPLATE)
    outs = S.draw_outputs(sampler, 300, t, batch_size=150, seed=0, decode=sampler.decode)
    a, b = (S.draw_outputs(sampler, 20, t, batch_size=10, seed=7, decode=sampler.decode) for _ in range(2))
    assert [o.text for o in a] == [o.text for o in b]  # same seed, same samples
    res = S.analyze(outs, t, top=4)
    s = res.summary
    # The tiny model misspells some outputs at temperature 1: counted as wrongly filled, never dropped.
    assert s["n_samples"] == 300 and s["n_ok"] >= 0.7 * 300, s["status_counts"]
    assert sum(s["status_counts"].values()) == 300
    # Character-level tokenizer: token positions are character positions.
    top = res.targets[0]
    assert top.staircases["tokens"].deciding == top.staircases["chars"].deciding
    # Every detected step sits at the deciding character of a chosen word, and the model's first choice is
    # sampled at temperature 1 from roughly the trained law (0.6 / 0.4).
    assert s["windows_detected"] > 0 and s["windows_at_deciding_token"] == s["windows_detected"]
    quick = np.mean([o.choices[0] == "quick" for o in outs if o.choices])
    assert 0.45 < quick < 0.75
    # The plateaus, measured on one half of the samples, agree with the product of conditional choice
    # frequencies of the other half: Holm rejects none at family-wise 5%, and the coverage is within 3
    # binomial standard errors of the nominal 95%, counting one independent unit per output (the plateaus
    # of one output share its samples, so they are not independent).
    assert s["check"] == "held_out" and s["n_tested"] > 0 and s["n_rejected"] == 0
    assert s["coverage"] >= s["ci_level"] - 3 * np.sqrt(s["ci_level"] * (1 - s["ci_level"]) / s["n_targets"])
    # Predicting from the very samples measured would agree exactly, by construction: that is no check.
    assert S.analyze(outs, t, top=4, predict_from=outs).summary["max_abs_residual"] == 0.0
    assert s["max_abs_residual"] > 0.0
    law = struct_choice_law()
    assert top.choices in law


def test_cli_structured_and_reanalysis(tmp_path, capsys):
    from critwin.cli import main

    _, unaligned = trained_pair()
    args = ["structured", "--model", str(unaligned), "--template", STRUCT_TEMPLATE, "--prompt", STRUCT_PROMPT,
            "--n", "100", "--batch-size", "100", "--max-new-tokens", "48", "--out", str(tmp_path / "run"),
            "--top", "2", "--json"]
    with pytest.raises(SystemExit) as ex:
        main(args)
    assert ex.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["n_samples"] == 100 and len(out["targets"]) == 2
    assert (tmp_path / "run" / "index.html").exists() and (tmp_path / "run" / "outputs.parquet").exists()
    with pytest.raises(SystemExit) as ex:
        main(["structured", "--from-run", str(tmp_path / "run"), "--out", str(tmp_path / "again"),
              "--top", "2", "--json"])
    again = json.loads(capsys.readouterr().out)
    assert again["summary"] == out["summary"] and again["targets"] == out["targets"]
    with pytest.raises(SystemExit) as ex:
        main(["structured", "--model", str(unaligned), "--template", "no blanks", "--out",
              str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.count("\n") == 1 and "no blanks found" in err
