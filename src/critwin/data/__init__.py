"""Dataset loading (JSONL and `datasets`) with field mappings and validation.

`load_problems` is the one entry point: a known dataset by name (`load_hub`, local copies only, never
downloads) or a JSONL file with a field mapping (`load_jsonl`). Both return a `ProblemSet` whose
`issues` count every unusable row; ``strict=True`` turns any such row into a CritwinError.
"""

from critwin.data.hub import DATASETS, load_hub, read_local
from critwin.data.jsonl import FieldMap, load_jsonl
from critwin.data.load import load_problems
from critwin.data.problem import Problem, ProblemSet, RowIssue

__all__ = [
    "DATASETS",
    "FieldMap",
    "Problem",
    "ProblemSet",
    "RowIssue",
    "load_hub",
    "load_jsonl",
    "load_problems",
    "read_local",
]
