"""`critwin pivotal --export-activations FILE` on the bundled reasoning model: the stored hidden states
equal a plain, unpadded forward pass of the bundled model over each pivotal token's context (the
original's prompt ids and response ids before the token, straight from originals.jsonl), the steering
vectors are mean(delta > 0) − mean(delta < 0) of them, --layers picks the right hidden states, and bad
input fails before any work."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from _cli import cli
from safetensors import safe_open

from critwin.experiments import reasoning as R
from critwin.experiments.activations import pivotal_activations
from critwin.rundir import read_jsonl

pytestmark = pytest.mark.slow

N_BLOCKS = 4  # the bundled model's num_hidden_layers: hidden states 0 (embeddings) .. 4


def read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pivotal-acts")
    out, acts = root / "run", root / "acts.safetensors"
    # The first four bundled problems hold a pivotal token that lowers P(correct) (the wrong chain
    # demo-0002, token 30) and one that raises it (demo-0003), so both sides of the steering vector exist.
    args = ["pivotal", "--out", str(out), "--limit", "4", "--threads", "1", "--no-progress", "--json"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(*args, "--export-activations", str(acts)) == 0
    return out, acts, args, json.loads(printed.getvalue())


@pytest.fixture(scope="module")
def bundled():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(R.BUNDLED_MODEL, dtype=torch.float32, local_files_only=True)
    return model.eval()


def last_states(model, ids: list[int]) -> torch.Tensor:
    """[hidden states, hidden] at the last position of one unpadded sequence."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return torch.stack([h[0, -1] for h in out.hidden_states])


def test_activations_equal_a_plain_forward_pass_over_each_context(run, bundled):
    out, acts, _, printed = run
    tensors, meta = read(acts)
    rows = json.loads(meta["rows"])
    originals = {f"{r['dataset']}/{r['id']}": r for r in read_jsonl(out / R.ORIGINALS)}
    pivots = [(r["case"], p) for r in R.read_records(out) for p in r["pivotal"]]
    assert [(r["case"], r["token"]) for r in rows] == [(c, p["token"]) for c, p in pivots]
    assert [(r["delta"], r["p_before"], r["p_after"]) for r in rows] == [
        (p["delta"], p["p_before"], p["p_after"]) for _, p in pivots
    ]
    assert tensors["activations"].shape == (len(rows), N_BLOCKS + 1, 64)
    assert tensors["activations"].dtype == torch.float32
    assert printed["activations"] == {
        "path": str(acts),
        "n_pivotal": len(rows),
        "n_layers": N_BLOCKS + 1,
        "hidden_size": 64,
        "has_steering": True,
    }
    # Contexts of different lengths shared one batch, so the right padding was exercised.
    assert len({r["n_context"] for r in rows}) > 1
    for row, got in zip(rows, tensors["activations"], strict=True):
        o = originals[row["case"]]
        context = o["prompt_ids"] + o["response_ids"][: row["token"]]
        assert row["n_context"] == len(o["prompt_ids"]) + row["token"]  # the prompt enters once
        assert row["token_id"] == o["response_ids"][row["token"]]
        torch.testing.assert_close(got, last_states(bundled, context), atol=1e-4, rtol=0)
        # One token later is another state (the comparison above can tell positions apart).
        shifted = last_states(bundled, context + [row["token_id"]])
        assert (shifted[1:] - got[1:]).abs().max() > 1e-2


def test_steering_is_mean_over_helpful_minus_mean_over_harmful_tokens(run):
    out, acts, _, _ = run
    tensors, _ = read(acts)
    deltas = torch.tensor([p["delta"] for r in R.read_records(out) for p in r["pivotal"]])
    assert (deltas > 0).any() and (deltas < 0).any()
    a = tensors["activations"].double()
    expected = a[deltas > 0].mean(0) - a[deltas < 0].mean(0)
    assert tensors["steering"].shape == (N_BLOCKS + 1, 64)
    torch.testing.assert_close(tensors["steering"].double(), expected, atol=1e-6, rtol=0)
    assert torch.equal(tensors["layers"], torch.arange(N_BLOCKS + 1))


def test_layers_pick_hidden_states_and_batching_does_not_change_them(run):
    out, acts, args, _ = run
    full, _ = read(acts)
    picked = acts.with_name("picked.safetensors")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(*args, "--export-activations", str(picked), "--layers", "0,2,-1") == 0
    assert json.loads(printed.getvalue())["n_resumed"] == 4  # the export reran, the scan did not
    some, _ = read(picked)
    assert some["layers"].tolist() == [0, 2, N_BLOCKS]
    torch.testing.assert_close(
        some["activations"], full["activations"][:, [0, 2, N_BLOCKS]], atol=1e-6, rtol=0
    )
    torch.testing.assert_close(some["steering"], full["steering"][[0, 2, N_BLOCKS]], atol=1e-6, rtol=0)
    # One original per forward pass (no padding at all) gives the same states as the padded batch.
    alone, _ = pivotal_activations(out, R.BUNDLED_MODEL, [-1, 1], max_batch_tokens=1)
    assert alone["layers"].tolist() == [N_BLOCKS, 1]
    torch.testing.assert_close(alone["activations"], full["activations"][:, [N_BLOCKS, 1]], atol=1e-5, rtol=0)


def test_an_existing_export_is_refused_before_any_work_unless_forced(run, capfd, tmp_path):
    _, acts, args, _ = run
    before, read_before = acts.read_bytes(), read(acts)[0]
    fresh = tmp_path / "new-run"
    capfd.readouterr()
    assert cli("pivotal", "--out", str(fresh), "--export-activations", str(acts)) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and "--export-activations" in err[0] and "exists; pass --force" in err[0]
    assert not fresh.exists() and acts.read_bytes() == before
    assert cli(*args, "--export-activations", str(acts), "--force") == 0  # resumes: nothing redrawn
    again, _ = read(acts)
    assert torch.equal(again["activations"], read_before["activations"])


@pytest.mark.parametrize(
    ("layers", "needle"),
    [
        ("0,x", "give comma-separated whole numbers"),
        ("5", "the model has 4 layers, so hidden states 0..4"),
        ("-6", "choose layers in that range"),
        ("1,-4", "names hidden state 1 twice"),
    ],
)
def test_bad_layers_fail_before_the_scan(capfd, tmp_path, layers, needle):
    fresh, dest = tmp_path / "new-run", tmp_path / "acts.safetensors"
    capfd.readouterr()
    assert cli("pivotal", "--out", str(fresh), "--export-activations", str(dest), "--layers", layers) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not fresh.exists() and not dest.exists()


def test_layers_without_an_activation_export_are_refused(capfd, tmp_path):
    fresh = tmp_path / "new-run"
    capfd.readouterr()
    assert cli("pivotal", "--out", str(fresh), "--layers", "0") == 2
    assert "add --export-activations FILE or drop --layers" in capfd.readouterr().err
    assert not fresh.exists()
