"""One entry point for the CLI and experiments: a known dataset by name, or a JSONL file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from critwin.data.hub import _spec, load_hub
from critwin.data.jsonl import FieldMap, load_jsonl
from critwin.data.problem import ProblemSet
from critwin.errors import CritwinError


def load_problems(path: str | Path, *, dataset: str | None = None, task: str | None = None,
                  fields: str | Mapping[str, str] | FieldMap | None = None, split: str | None = None,
                  config: str | None = None, strict: bool = False, limit: int | None = None,
                  cache_dir: str | Path | None = None) -> ProblemSet:
    """Problems from `path`: with `dataset` (e.g. "math", "arc-challenge") through its Hub-schema loader,
    otherwise as JSONL with field mapping `fields` and `task` ("math", "mc", "exact"; default "exact").

    `task`, when given with `dataset`, must match the dataset's task.
    """
    if dataset is not None:
        spec = _spec(dataset)
        if task is not None and task != spec.task:
            raise CritwinError(f"task {task!r} does not fit dataset {spec.name!r} (a {spec.task!r} dataset): "
                               f"drop the task or pass --task {spec.task}")
        if fields is not None:
            raise CritwinError(f"a field mapping applies to JSONL files only: drop it for {spec.name!r}")
        return load_hub(spec.name, path, split=split, config=config, strict=strict, limit=limit,
                        cache_dir=cache_dir)
    return load_jsonl(path, task=task or "exact", fields=fields, strict=strict, limit=limit)
