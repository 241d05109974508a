"""Hidden-state activations at the pivotal tokens of a reasoning run, and PTS steering vectors
(`critwin pivotal --export-activations FILE`).

For every pivotal token (problems.jsonl, scanned with --outcome correct) the context is the original's
prompt ids followed by its response ids before the token (originals.jsonl; never decoded and
re-tokenized), and the activation is the model's hidden state at the last position of that context: the
state from which the pivotal token is predicted. Layer ℓ is transformers' `hidden_states[ℓ]`
(`output_hidden_states=True`): 0 is the embedding output, ℓ = 1 … L the output of decoder block ℓ, and
negative ℓ counts from the end (−1 is the last). Per layer, the steering vector is, as in PTS, the mean
activation over the pivotal tokens that raise P(correct) (delta > 0) minus the mean over those that lower
it (delta < 0); there is none when one side is empty. Values are in the model's hidden-state units,
computed in float32.

Causal attention makes the state at position i of a sequence depend on tokens 0 … i only, so all pivotal
tokens of one original are read from a single forward pass over its prompt and response up to its last
pivotal token; originals are batched with right padding (pads come after every real token, so no real
position sees them, and position ids stay 0, 1, …).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from critwin.errors import CritwinError
from critwin.experiments.reasoning import ORIGINALS, read_records
from critwin.rundir import RunDir, atomic_write, read_jsonl

#: Tokens per forward pass (batch rows × longest row): bounds the memory the hidden states of all layers
#: take at once (layers × tokens × hidden size × 4 bytes).
MAX_BATCH_TOKENS = 8192


def model_shape(model_dir: str | Path) -> tuple[int, int]:
    """(number of decoder blocks L, hidden size) from the model's config.json, without loading weights;
    the model has L + 1 hidden states (embeddings, then one per block)."""
    from transformers import AutoConfig

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise CritwinError(f"model {path} has no config.json; pass a local Hugging Face model directory")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True).get_text_config()
    except (OSError, ValueError, KeyError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CritwinError(f"model {path}: cannot read config.json ({why}); fix or re-save it") from None
    blocks, hidden = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if not isinstance(blocks, int) or not isinstance(hidden, int):
        raise CritwinError(
            f"model {path}: config.json gives no num_hidden_layers/hidden_size; activations "
            "need a decoder-only transformer"
        )
    return blocks, hidden


def resolve_layers(layers: Sequence[int] | None, n_blocks: int, flag: str = "layers") -> list[int]:
    """The hidden-state indices 0 … n_blocks that `layers` names (negative: from the end; None: all), in the
    order given; out-of-range or repeated layers are a CritwinError."""
    n_states = n_blocks + 1
    if layers is None:
        return list(range(n_states))
    if not layers:
        raise CritwinError(f"{flag}: empty; give at least one layer, or leave it out for all")
    out: list[int] = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise CritwinError(f"{flag} {layer!r}: layers are whole numbers such as 0,3,-1")
        if not -n_states <= layer < n_states:
            raise CritwinError(
                f"{flag} {layer}: the model has {n_blocks} layers, so hidden states 0..{n_blocks} (0 is the "
                f"embeddings; -{n_states}..-1 from the end); choose layers in that range"
            )
        index = layer % n_states
        if index in out:
            raise CritwinError(
                f"{flag}: layer {layer} names hidden state {index} twice; list each layer once"
            )
        out.append(index)
    return out


def _contexts(run_path: str | Path) -> list[dict[str, Any]]:
    """Per original with pivotal tokens: its context ids (prompt + response up to its last pivotal token)
    and one row per pivotal token."""
    RunDir.open(run_path)  # heals the run directory, or a one-line error when it is not one
    originals = {
        f"{r['dataset']}/{r['id']}": r for r in read_jsonl(Path(run_path) / ORIGINALS) if "response_ids" in r
    }
    out = []
    for rec in read_records(run_path):
        pivots, original = rec.get("pivotal") or [], originals.get(rec.get("case", ""))
        if not pivots or original is None:
            continue
        prompt, response = list(original["prompt_ids"]), list(original["response_ids"])
        rows = []
        for p in pivots:
            n_context = len(prompt) + p["token"]
            if n_context < 1:  # nothing to predict the first token from (an empty prompt)
                raise CritwinError(
                    f"{rec['case']}: pivotal token {p['token']} has an empty context; "
                    "activations need a prompt"
                )
            rows.append(
                {
                    "case": rec["case"],
                    "token": p["token"],
                    "token_id": response[p["token"]],
                    "delta": p["delta"],
                    "p_before": p["p_before"],
                    "p_after": p["p_after"],
                    "n_context": n_context,
                }
            )
        out.append({"ids": prompt + response[: max(p["token"] for p in pivots)], "rows": rows})
    return out


def _batches(groups: list[dict[str, Any]], max_tokens: int) -> list[list[dict[str, Any]]]:
    """Groups sorted by length, cut into batches of at most `max_tokens` padded tokens (a longer group
    alone)."""
    batches: list[list[dict[str, Any]]] = []
    for g in sorted(groups, key=lambda g: len(g["ids"])):
        if batches and len(g["ids"]) * (len(batches[-1]) + 1) <= max_tokens:
            batches[-1].append(g)
        else:
            batches.append([g])
    return batches


def pivotal_activations(
    run_path: str | Path,
    model_dir: str | Path | None = None,
    layers: Sequence[int] | None = None,
    device: str = "cpu",
    *,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The hidden states at the run's pivotal tokens (see the module docstring) and their rows.

    `model_dir`: the run's model (config.json "model") unless given; `layers`: hidden-state indices
    (default all). Returns tensors {"activations": float32 [n_pivotal, n_layers, hidden], "steering":
    float32 [n_layers, hidden] or None, "layers": int64 [n_layers]} and per pivotal token a row (case,
    token, token_id, delta, p_before, p_after, n_context = len(prompt ids) + token), in the order of
    the records and of their pivotal tokens."""
    import torch

    if model_dir is None:
        model_dir = RunDir.open(run_path).config.get("model")
        if not model_dir:
            raise CritwinError(f"{run_path}: its config.json names no model; pass the model directory")
    n_blocks, hidden = model_shape(model_dir)
    chosen = resolve_layers(layers, n_blocks)
    groups = _contexts(run_path)
    rows = [r for g in groups for r in g["rows"]]
    found: dict[tuple[str, int], torch.Tensor] = {}
    if groups:  # no pivotal token: no weights to load
        from critwin.samplers.hf import load_causal_lm

        model, _ = load_causal_lm(model_dir, dtype="float32", device=device)
        dev = next(model.parameters()).device
        for batch in _batches(groups, max_batch_tokens):
            width = max(len(g["ids"]) for g in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, g in enumerate(batch):
                ids[i, : len(g["ids"])] = torch.tensor(g["ids"], dtype=torch.long)
                mask[i, : len(g["ids"])] = 1
            with torch.inference_mode():
                out = model(
                    input_ids=ids.to(dev),
                    attention_mask=mask.to(dev),
                    output_hidden_states=True,
                    use_cache=False,
                )
            states = out.hidden_states
            if len(states) != n_blocks + 1:
                raise CritwinError(
                    f"model {model_dir}: returned {len(states)} hidden states, config.json "
                    f"promises {n_blocks + 1}; check the model directory"
                )
            # Read only the pivotal positions: the last context token is at n_context - 1.
            at = [(i, r) for i, g in enumerate(batch) for r in g["rows"]]
            row_i = torch.tensor([i for i, _ in at], device=dev)
            pos_i = torch.tensor([r["n_context"] - 1 for _, r in at], device=dev)
            picked = torch.stack([states[layer][row_i, pos_i] for layer in chosen], dim=1).float().cpu()
            for (_, r), state in zip(at, picked, strict=True):
                found[(r["case"], r["token"])] = state
            hidden = int(picked.shape[-1])
    acts = (
        torch.stack([found[(r["case"], r["token"])] for r in rows])
        if rows
        else torch.zeros((0, len(chosen), hidden), dtype=torch.float32)
    )
    delta = torch.tensor([r["delta"] for r in rows], dtype=torch.float64)
    pos, neg = acts[delta > 0].double(), acts[delta < 0].double()
    steering = (pos.mean(0) - neg.mean(0)).float() if len(pos) and len(neg) else None
    tensors = {
        "activations": acts.contiguous(),
        "steering": steering,
        "layers": torch.tensor(chosen, dtype=torch.int64),
    }
    return tensors, rows


def export_activations(
    run_path: str | Path,
    dest: str | Path,
    model_dir: str | Path | None = None,
    layers: Sequence[int] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write the run's pivotal activations to `dest` (safetensors, atomically): tensors "activations",
    "layers" and, when both sides exist, "steering"; metadata "rows" (JSON list of the rows), "model",
    "layer_index" (what a layer number means). Returns the counts and the path."""
    from safetensors.torch import save_file

    if model_dir is None:
        model_dir = RunDir.open(run_path).config.get("model")
    tensors, rows = pivotal_activations(run_path, model_dir, layers, device)
    saved = {k: v for k, v in tensors.items() if v is not None}
    metadata = {
        "rows": json.dumps(rows, ensure_ascii=False),
        "model": str(model_dir),
        "layer_index": "transformers hidden_states index: 0 = embeddings, l = output of block l",
        "steering": "mean activation over delta > 0 minus mean over delta < 0",
    }
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda p: save_file(saved, str(p), metadata=metadata))
    acts = tensors["activations"]
    return {
        "path": str(dest),
        "n_pivotal": int(acts.shape[0]),
        "n_layers": int(acts.shape[1]),
        "hidden_size": int(acts.shape[2]),
        "has_steering": tensors["steering"] is not None,
    }
