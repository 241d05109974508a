"""The one JSON codec: plain JSON values from numpy-laden Python objects, and labels to JSON and back.

Two families, because they answer different questions:

- `jsonable` / `dumps`: any record (configs, summaries, --json output, raw samples) as strict JSON values.
  dict keys become strings, tuples and numpy arrays become lists, numpy scalars Python scalars. Non-finite
  floats follow `nonfinite`: "null" (records and summaries: NaN means "no value") or "string" ("nan",
  "inf", "-inf": raw samples, where the value itself is the data). Objects JSON has no form for follow
  `unknown`: "keep" (returned as they are), "describe" (their `to_dict()`, their dataclass fields, else
  their repr: raw samples of any type; `jsonable_or_repr` is that codec) or "error" (a CritwinError
  naming the type; the default of `dumps`).
- `plain_label` / `label_from_plain` / `encode_label` / `decode_label`: labels, which must come back equal
  and hashable. A label is a str, int, float, bool, None or a (nested) tuple of these; tuples become JSON
  arrays and come back as tuples (a list is never a label, so decoding is unambiguous); numpy scalars
  become Python scalars. Anything else, and non-finite floats (NaN is not equal to itself, so it cannot be
  counted), is a CritwinError.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any, Literal

import numpy as np

from critwin.errors import CritwinError

NonFinite = Literal["null", "string"]
Unknown = Literal["keep", "describe", "error"]

_NONFINITE = ("null", "string")
_UNKNOWN = ("keep", "describe", "error")


def _unsupported(obj: Any) -> CritwinError:
    shown = repr(obj)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return CritwinError(
        f"value {shown} of type {type(obj).__name__} cannot be written as JSON; pass str, int, float, bool, "
        "None, lists, tuples, dicts or numpy values (or give the object a to_dict() method)"
    )


def jsonable(obj: Any, *, nonfinite: NonFinite = "null", unknown: Unknown = "keep") -> Any:
    """Plain JSON values: dicts (keys as str), lists (from lists, tuples and arrays), str, int, float,
    bool and None; numpy scalars and arrays become Python values. `nonfinite` and `unknown`: see the
    module docstring."""
    if nonfinite not in _NONFINITE:
        raise CritwinError(f"nonfinite={nonfinite!r}: use one of {', '.join(_NONFINITE)}")
    if unknown not in _UNKNOWN:
        raise CritwinError(f"unknown={unknown!r}: use one of {', '.join(_UNKNOWN)}")
    return _plain(obj, nonfinite, unknown)


def _plain(obj: Any, nonfinite: str, unknown: str) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v, nonfinite, unknown) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v, nonfinite, unknown) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist(), nonfinite, unknown)
    if isinstance(obj, np.generic):
        return _plain(obj.item(), nonfinite, unknown)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return None if nonfinite == "null" else str(obj)
    if isinstance(obj, str | int) or obj is None:  # bool is an int
        return obj
    if unknown == "keep":
        return obj
    if unknown == "error":
        raise _unsupported(obj)
    if callable(getattr(obj, "to_dict", None)):
        return _plain(obj.to_dict(), nonfinite, unknown)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj), nonfinite, unknown)
    return repr(obj)


def jsonable_or_repr(obj: Any) -> Any:
    """`jsonable` for raw samples: non-finite floats as "nan"/"inf"/"-inf", other objects through their
    `to_dict()`, their dataclass fields or their repr (never an error)."""
    return _plain(obj, "string", "describe")


def dumps(
    obj: Any, *, indent: int | None = None, nonfinite: NonFinite = "null", unknown: Unknown = "error"
) -> str:
    """Strict JSON text of `jsonable(obj, nonfinite=..., unknown=...)` (never NaN or Infinity tokens)."""
    return json.dumps(jsonable(obj, nonfinite=nonfinite, unknown=unknown), indent=indent, allow_nan=False)


# ----------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------
def plain_label(label: Any) -> Any:
    """The JSON value of a label: tuples as lists, numpy scalars as Python scalars; CritwinError for
    anything that is not a str, int, finite float, bool, None or a tuple of these."""
    if isinstance(label, bool | str) or label is None:
        return label
    if isinstance(label, np.bool_):
        return bool(label)
    if isinstance(label, numbers.Integral):
        return int(label)
    if isinstance(label, numbers.Real):
        value = float(label)
        if not math.isfinite(value):
            raise CritwinError(
                f"label {label!r} is not a finite number and cannot be counted or saved; make the feature "
                "return None (a failed item) or a str, int, finite float, bool or tuples of these"
            )
        return value
    if isinstance(label, tuple):
        return [plain_label(v) for v in label]
    raise CritwinError(
        f"label {label!r} of type {type(label).__name__} cannot be saved; "
        "make the feature return str, int, float, bool or tuples of these"
    )


def label_from_plain(value: Any) -> Any:
    """Inverse of `plain_label`: JSON arrays back to tuples (recursively)."""
    if isinstance(value, list):
        return tuple(label_from_plain(v) for v in value)
    return value


def encode_label(label: Any) -> str:
    """The JSON text of a label (str, int, float, bool, None or nested tuples of these)."""
    return json.dumps(plain_label(label), allow_nan=False)


def decode_label(text: str) -> Any:
    """Inverse of `encode_label`."""
    return label_from_plain(json.loads(text))
