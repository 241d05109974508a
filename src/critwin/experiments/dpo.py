"""DPO preference pairs at the pivotal tokens of a reasoning run (`critwin pivotal --export-dpo FILE`).

Read from the run directory alone (no model): each problem's pivotal tokens (problems.jsonl, scanned
with --outcome correct), its original (originals.jsonl: prompt and response token ids and texts) and the
endings drawn at the cut before each pivotal token (samples.parquet: their first token and verdict).
`critwin.methods.pivotal.preference_pair` picks the pair. One JSON object per line in the format TRL's
`DPOTrainer` reads (`prompt`, `chosen`, `rejected`; `datasets.load_dataset("json", data_files=FILE)`
loads it), with the token ids kept beside the text (`prompt_ids` = the original's prompt ids and the
response ids before the pivotal token, never re-tokenized; `chosen_ids`, `rejected_ids`) and where
each pair came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from critwin.experiments.reasoning import ORIGINALS, read_records
from critwin.methods.pivotal import PivotalToken, alternatives, preference_pair
from critwin.rundir import RunDir, atomic_write, read_jsonl


def _verdict(label: Any) -> bool | None:
    value = json.loads(label) if isinstance(label, str) else None
    return value if isinstance(value, bool) else None


def dpo_rows(run_path: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The preference pairs of a run (see the module docstring) and counts: pivotal tokens, pairs, and
    pivotal tokens without a drawn alternative on the other side."""
    run = RunDir.open(run_path)
    originals = {f"{r['dataset']}/{r['id']}": r for r in read_jsonl(Path(run_path) / ORIGINALS)
                 if "response_ids" in r}
    samples = run.read_samples(decode=True)
    rows: list[dict[str, Any]] = []
    counts = {"n_pivotal": 0, "n_pairs": 0, "n_without_alternative": 0}
    for rec in read_records(run_path):
        pivots, original = rec.get("pivotal") or [], originals.get(rec.get("case", ""))
        if not pivots or original is None:
            continue
        mine = samples[samples["case"] == rec["case"]]
        ids, text = original["response_ids"], original["response_text"]
        for p in pivots:
            counts["n_pivotal"] += 1
            at_cut = mine[mine["t"] == float(len(ids) - p["token"])]
            drawn = [(s.get("first_id") if isinstance(s, dict) else None, _verdict(lab))
                     for s, lab in zip(at_cut["sample"], at_cut["label"], strict=True)]
            first_text = {s["first_id"]: s.get("first_text") for s in at_cut["sample"]
                          if isinstance(s, dict) and s.get("first_id") is not None}
            pivot = PivotalToken(p["token"], p["p_before"], p["p_after"], p["n_before"], p["n_after"])
            pair = preference_pair(pivot, ids[p["token"]], alternatives(drawn, ids[p["token"]]))
            if pair is None:
                counts["n_without_alternative"] += 1
                continue
            texts = {**first_text, ids[p["token"]]: text[p["char_lo"] : p["char_hi"]]}

            rows.append({
                "prompt": original["prompt_text"] + text[: p["char_lo"]],
                "chosen": texts[pair["chosen_id"]],
                "rejected": texts[pair["rejected_id"]],
                "prompt_ids": list(original["prompt_ids"]) + list(ids[: p["token"]]),
                "chosen_ids": [pair["chosen_id"]],
                "rejected_ids": [pair["rejected_id"]],
                "case": rec["case"],
                "token": p["token"],
                "p_before": p["p_before"],
                "p_after": p["p_after"],
                "alternative": pair["alternative"],
            })
            counts["n_pairs"] += 1
    return rows, counts


def export_dpo(run_path: str | Path, dest: str | Path) -> dict[str, Any]:
    """Write the run's preference pairs to `dest` (JSONL, atomically); returns the counts and the path."""
    rows, counts = dpo_rows(run_path)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write(Path(dest), lambda p: p.write_text(text, encoding="utf-8"))
    return {"path": str(dest), **counts}
