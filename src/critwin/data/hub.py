"""Loaders for the paper's reasoning datasets, read offline through the `datasets` library.

critwin never downloads: every loader takes a **local path** and runs with HF_DATASETS_OFFLINE=1.
The path can be

* a folder written by ``datasets`` ``save_to_disk`` (a ``DatasetDict`` — pick the split with
  `split` — or a single ``Dataset``);
* a local snapshot of the Hub repository (a folder of Parquet / JSON / JSONL data files, as
  ``hf download allenai/ai2_arc --repo-type dataset --local-dir ai2_arc`` leaves it; `config` picks a
  subset folder such as "ARC-Challenge");
* one Parquet, JSON or JSONL file in the dataset's own schema.

To get the real data, on a machine with network access (Python, ``pip install datasets``)::

    from datasets import load_dataset
    load_dataset("allenai/ai2_arc", "ARC-Challenge").save_to_disk("arc_challenge")
    # then: critwin.data.load_hub("arc-challenge", "arc_challenge")   (split "test" by default)

Repositories that only hold a loading script (lucasmccabe/logiqa, EleutherAI/hendrycks_math, older
copies of others) cannot be read by ``datasets`` 5.x; take the Hub's Parquet conversion instead:
``hf download lucasmccabe/logiqa --repo-type dataset --revision refs/convert/parquet --local-dir logiqa``
and pass the folder holding the split's Parquet file (or the file itself).

Datasets, their Hub ids (config) and the fields each loader reads (checked against the real schemas):

============== ======================================== ==============================================
name           Hub id (config), default split           fields → Problem
============== ======================================== ==============================================
math           EleutherAI/hendrycks_math (one subject   problem → question; gold = last ``\\boxed{}``
               per config) or HuggingFaceH4/MATH-500;   of solution (or the ``answer`` column where
               originally hendrycks/competition_math;   present, as in MATH-500); level, type/subject
               test                                     → meta; unique_id → id when present
arc-easy       allenai/ai2_arc (ARC-Easy); test         question, choices{text,label}, answerKey, id
arc-challenge  allenai/ai2_arc (ARC-Challenge); test    same; labels "1"–"4" become letters A–D; also
                                                        AI2's original JSONL (question{stem,choices})
mmlu           cais/mmlu (all, or one subject); test    question, choices, answer (0-based index /
                                                        ClassLabel); subject → meta
logiqa         lucasmccabe/logiqa; test                 context + query → question, options,
                                                        correct_option (0-based); EleutherAI/logiqa's
                                                        question/options/label ("a"–"d") also read
truthfulqa     truthfulqa/truthful_qa (multiple_choice);  question, mc1_targets{choices,labels}: the one
               validation                               choice labelled 1 is gold. The Hub lists the
                                                        right answer first, so choices are shuffled
                                                        (seeded by `shuffle_seed` and the row; None
                                                        keeps the Hub order)
aqua-rat       deepmind/aqua_rat (raw); test            question, options ("A)21" → "21"), correct
                                                        (letter); rationale → meta
============== ======================================== ==============================================

Rows that lack a field, or whose gold names no choice, are counted in the returned `ProblemSet`
(`issues`, `report()`); ``strict=True`` makes any such row a CritwinError.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from critwin.data.problem import Problem, ProblemSet, RowIssue, finish, gold_letter, missing
from critwin.errors import CritwinError, first_line
from critwin.features.answers import last_boxed

Converter = Callable[[Mapping[str, Any], int, str, dict[str, Any]], "Problem | RowIssue"]


def _text(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _row_id(row: Mapping[str, Any], key: str, fallback: str) -> str:
    return _text(row, key) or fallback


# --------------------------------------------------------------------------------------------------
# converters: one row of the dataset's real schema -> Problem | RowIssue
# --------------------------------------------------------------------------------------------------


def _math(row: Mapping[str, Any], i: int, prefix: str, opts: dict[str, Any]) -> Problem | RowIssue:
    pid = _row_id(row, "unique_id", f"{prefix}-{i}")
    question = _text(row, "problem")
    gold = _text(row, "answer")
    solution = _text(row, "solution")
    lacking = [] if question else ["problem"]
    if gold is None and solution is None:
        lacking.append("solution")
    if lacking:
        return RowIssue(i, pid, missing(*lacking), tuple(lacking))
    if gold is None:
        gold = last_boxed(solution or "")
        if gold is None:
            return RowIssue(i, pid, "no \\boxed{} answer in solution", ("gold",))
    meta = {k: row[k] for k in ("level", "type", "subject") if row.get(k) is not None}
    return Problem(id=pid, question=question or "", gold=gold, task="math", meta=meta)


def _mc(pid: str, i: int, question: str | None, texts: Any, gold: Any, labels: tuple[str, ...] = (),
        meta: dict[str, Any] | None = None, question_field: str = "question",
        choices_field: str = "choices", gold_field: str = "answer") -> Problem | RowIssue:
    lacking = []
    if not question:
        lacking.append(question_field)
    if not isinstance(texts, (list, tuple)) or not texts:
        lacking.append(choices_field)
    if gold is None or (isinstance(gold, str) and not gold.strip()):
        lacking.append(gold_field)
    if lacking:
        return RowIssue(i, pid, missing(*lacking), tuple(lacking))
    choice_texts = tuple(str(t).strip() for t in texts)
    if not 2 <= len(choice_texts) <= 26:
        return RowIssue(i, pid, "number of choices not in 2..26")
    letter = gold_letter(gold, len(choice_texts), choice_texts, labels)
    if letter is None:
        return RowIssue(i, pid, f"{gold_field} names no choice")
    return Problem(id=pid, question=question or "", gold=letter, choices=choice_texts, task="mc",
                   meta=meta or {})


def _arc(row: Mapping[str, Any], i: int, prefix: str, opts: dict[str, Any]) -> Problem | RowIssue:
    pid = _row_id(row, "id", f"{prefix}-{i}")
    q = row.get("question")
    choices: Any = row.get("choices")
    if isinstance(q, Mapping):  # AI2's original JSONL: question{stem, choices[{text, label}]}
        choices = q.get("choices")
        q = q.get("stem")
    texts: Any = None
    labels: tuple[str, ...] = ()
    if isinstance(choices, Mapping):  # Hub schema: choices{text: [...], label: [...]}
        texts = choices.get("text")
        labels = tuple(str(x).strip() for x in (choices.get("label") or ()))
    elif isinstance(choices, list) and all(isinstance(c, Mapping) for c in choices):
        texts = [c.get("text") for c in choices]
        labels = tuple(str(c.get("label", "")).strip() for c in choices)
    if texts is not None and labels and len(labels) != len(texts):
        return RowIssue(i, pid, "choices.text and choices.label differ in length")
    question = str(q).strip() if q is not None and str(q).strip() else None
    meta = {"labels": labels} if labels else {}
    return _mc(pid, i, question, texts, row.get("answerKey"), labels, meta, gold_field="answerKey")


def _mmlu(row: Mapping[str, Any], i: int, prefix: str, opts: dict[str, Any]) -> Problem | RowIssue:
    pid = _row_id(row, "id", f"{prefix}-{i}")
    meta = {"subject": row["subject"]} if row.get("subject") else {}
    return _mc(pid, i, _text(row, "question"), row.get("choices"), row.get("answer"), meta=meta)


def _logiqa(row: Mapping[str, Any], i: int, prefix: str, opts: dict[str, Any]) -> Problem | RowIssue:
    pid = _row_id(row, "id", f"{prefix}-{i}")
    context = _text(row, "context")
    qkey = "query" if "query" in row else "question"
    query = _text(row, qkey)
    gkey = "correct_option" if "correct_option" in row else "label"
    question = f"{context}\n\n{query}" if context and query else None
    lacking = [k for k, v in (("context", context), (qkey, query)) if not v]
    if lacking:
        return RowIssue(i, pid, missing(*lacking), tuple(lacking))
    return _mc(pid, i, question, row.get("options"), row.get(gkey), choices_field="options", gold_field=gkey)


def _truthfulqa(row: Mapping[str, Any], i: int, prefix: str, opts: dict[str, Any]) -> Problem | RowIssue:
    pid = _row_id(row, "id", f"{prefix}-{i}")
    targets = row.get("mc1_targets")
    if not isinstance(targets, Mapping) or not targets.get("choices") or targets.get("labels") is None:
        return RowIssue(i, pid, missing("mc1_targets"), ("mc1_targets",))
    texts = list(targets["choices"])
    flags = [int(x) for x in targets["labels"]]
    if len(flags) != len(texts) or flags.count(1) != 1:
        return RowIssue(i, pid, "mc1_targets.labels must mark exactly one choice with 1")
    order = list(range(len(texts)))
    seed = opts.get("shuffle_seed")
    if seed is not None:
        # Seeded by the seed and the row id only: the same problem gets the same order in every run.
        random.Random(f"{seed}:{pid}").shuffle(order)
    gold = order.index(flags.index(1))
    meta = {"hub_order": tuple(order)}
    return _mc(pid, i, _text(row, "question"), [texts[j] for j in order], gold, meta=meta,
               choices_field="mc1_targets.choices", gold_field="mc1_targets.labels")


_AQUA_OPTION_RE = re.compile(r"^\s*\(?([A-Z])\s*\)\s*")


def _aqua(row: Mapping[str, Any], i: int, prefix: str, opts: dict[str, Any]) -> Problem | RowIssue:
    pid = _row_id(row, "id", f"{prefix}-{i}")
    options = row.get("options")
    texts = None
    labels: tuple[str, ...] = ()
    if isinstance(options, (list, tuple)):
        texts, found = [], []
        for opt in options:
            m = _AQUA_OPTION_RE.match(str(opt))
            found.append(m.group(1) if m else "")
            texts.append(str(opt)[m.end():] if m else str(opt))
        labels = tuple(found) if all(found) else ()
    meta = {"rationale": row["rationale"]} if row.get("rationale") else {}
    return _mc(pid, i, _text(row, "question"), texts, _text(row, "correct"), labels, meta,
               choices_field="options", gold_field="correct")


@dataclass(frozen=True)
class HubSpec:
    """Where a dataset lives on the Hub and how its rows become Problems."""

    name: str
    hub_id: str
    config: str | None
    split: str
    task: str
    convert: Converter


DATASETS: dict[str, HubSpec] = {
    s.name: s
    for s in (
        HubSpec("math", "EleutherAI/hendrycks_math", None, "test", "math", _math),
        HubSpec("arc-easy", "allenai/ai2_arc", "ARC-Easy", "test", "mc", _arc),
        HubSpec("arc-challenge", "allenai/ai2_arc", "ARC-Challenge", "test", "mc", _arc),
        HubSpec("mmlu", "cais/mmlu", "all", "test", "mc", _mmlu),
        HubSpec("logiqa", "lucasmccabe/logiqa", None, "test", "mc", _logiqa),
        HubSpec("truthfulqa", "truthfulqa/truthful_qa", "multiple_choice", "validation", "mc", _truthfulqa),
        HubSpec("aqua-rat", "deepmind/aqua_rat", "raw", "test", "mc", _aqua),
    )
}
_ALIASES = {"arc_easy": "arc-easy", "arc_challenge": "arc-challenge", "aqua_rat": "aqua-rat",
            "aqua": "aqua-rat", "truthful_qa": "truthfulqa", "hendrycks_math": "math"}


def _spec(name: str) -> HubSpec:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise CritwinError(f"dataset {name!r} unknown: use one of {sorted(DATASETS)}, or a JSONL file")
    return DATASETS[key]


# --------------------------------------------------------------------------------------------------
# reading local copies with `datasets`
# --------------------------------------------------------------------------------------------------

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _datasets_offline():
    """Import `datasets` with every Hub access switched off."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # read by `datasets` at import time
    import datasets

    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.utils.logging.disable_progress_bar()
    return datasets


def _pick_split(dd: Mapping[str, Any], split: str | None, default: str, where: str) -> tuple[Any, str]:
    names = list(dd.keys())
    if split is not None:
        if split not in dd:
            raise CritwinError(f"split {split!r} not in {where}: available {names}; pass one of them")
        return dd[split], split
    if default in dd:
        return dd[default], default
    if len(names) == 1:
        return dd[names[0]], names[0]
    raise CritwinError(f"{where} has splits {names} and no {default!r}: pass the split to use")


def read_local(path: str | Path, *, split: str | None = None, config: str | None = None,
               default_split: str = "test", cache_dir: str | Path | None = None) -> tuple[Any, str]:
    """A `datasets.Dataset` from a local copy (save_to_disk folder, Hub snapshot folder, or one data
    file) and the split it came from. Never touches the network."""
    ds_lib = _datasets_offline()
    p = Path(path).expanduser()
    where = repr(str(p))
    if not p.exists():
        raise CritwinError(f"dataset path {where} not found: critwin never downloads, save the dataset "
                           "locally (datasets save_to_disk or a Hub snapshot) and pass that path")
    cache = str(cache_dir) if cache_dir is not None else None
    try:
        if p.is_file():
            builder = _FILE_BUILDERS.get(p.suffix.lower())
            if builder is None:
                raise CritwinError(f"data file {where} has unsupported type {p.suffix!r}: "
                                   f"use one of {sorted(_FILE_BUILDERS)} or a save_to_disk folder")
            ds = ds_lib.load_dataset(builder, data_files=str(p), split="train", cache_dir=cache)
            return ds, split or p.stem
        if (p / "dataset_dict.json").is_file():
            return _pick_split(ds_lib.load_from_disk(str(p)), split, default_split, where)
        if (p / "state.json").is_file():
            return ds_lib.load_from_disk(str(p)), split or "saved"
        sub = p / config if config and (p / config).is_dir() else p
        kwargs = {"name": config} if config and sub is p else {}
        dd = ds_lib.load_dataset(str(sub), cache_dir=cache, **kwargs)
        return _pick_split(dd, split, default_split, where)
    except CritwinError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs one line, not a traceback
        raise CritwinError(
            f"could not read dataset at {where} ({first_line(exc)[:240]}); pass a "
            "save_to_disk folder, a Hub snapshot folder or a Parquet/JSON/JSONL file"
        ) from None


def load_hub(name: str, path: str | Path, *, split: str | None = None, config: str | None = None,
             strict: bool = False, limit: int | None = None, cache_dir: str | Path | None = None,
             shuffle_seed: int | None = 0) -> ProblemSet:
    """Problems of dataset `name` ("math", "arc-easy", "arc-challenge", "mmlu", "logiqa", "truthfulqa",
    "aqua-rat") from the local copy at `path` (see the module docstring), in the Hub schema.

    `split` defaults to the dataset's evaluation split; `config` picks a subset folder of a snapshot;
    `limit` keeps the first rows; `shuffle_seed` orders TruthfulQA's choices (None keeps the Hub
    order, where the right answer is always first). Unusable rows are counted in the result's
    `issues`; with `strict` they raise CritwinError.
    """
    spec = _spec(name)
    if limit is not None and limit < 1:
        raise CritwinError(f"limit={limit} invalid: pass a positive number of rows or none")
    ds, used_split = read_local(path, split=split, config=config, default_split=spec.split,
                                cache_dir=cache_dir)
    n_rows = len(ds) if limit is None else min(len(ds), limit)
    if n_rows < len(ds):
        ds = ds.select(range(n_rows))
    opts = {"shuffle_seed": shuffle_seed}
    prefix = f"{spec.name}-{used_split}"
    rows: list[tuple[int, Problem]] = []
    issues: list[RowIssue] = []
    for i, row in enumerate(ds):
        got = spec.convert(row, i, prefix, opts)
        if isinstance(got, RowIssue):
            issues.append(got)
        else:
            rows.append((i, got))
    return finish(rows, issues, n_rows, f"{spec.name} ({Path(path).expanduser()}, split {used_split})",
                  strict=strict, name=spec.name)
