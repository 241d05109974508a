"""The one JSON codec (critwin.serialize): records, raw samples and labels, against hand-written JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from critwin.errors import CritwinError
from critwin.serialize import (
    decode_label,
    dumps,
    encode_label,
    jsonable,
    jsonable_or_repr,
    label_from_plain,
    plain_label,
)


@dataclass(frozen=True)
class _Point:
    x: int
    y: float


class _WithToDict:
    def to_dict(self) -> dict:
        return {"kind": "custom", "values": (1, 2)}


def test_records_become_strict_json_with_nan_as_null():
    record = {
        "n": np.int64(3),
        "p": np.float32(0.5),
        "ok": np.bool_(True),
        "t": (1, 2.5),
        "grid": np.array([[1, 2], [3, 4]]),
        "missing": float("nan"),
        "big": np.float64("inf"),
        "arr": np.array([0.25, np.nan]),
        7: "int key",
        "none": None,
    }
    assert dumps(record) == (
        '{"n": 3, "p": 0.5, "ok": true, "t": [1, 2.5], "grid": [[1, 2], [3, 4]], "missing": null, '
        '"big": null, "arr": [0.25, null], "7": "int key", "none": null}'
    )
    assert dumps({"a": [1, {"b": (None,)}]}, indent=1) == (
        '{\n "a": [\n  1,\n  {\n   "b": [\n    null\n   ]\n  }\n ]\n}'
    )


def test_jsonable_returns_python_values_not_numpy():
    got = jsonable({"x": np.arange(3), "y": np.float64(1.5)})
    assert got == {"x": [0, 1, 2], "y": 1.5}
    assert type(got["x"][0]) is int and type(got["y"]) is float


def test_unknown_objects_are_kept_described_or_refused():
    path = Path("/tmp/x")
    assert jsonable({"p": path}) == {"p": path}  # "keep": json.dumps decides
    assert jsonable([path], unknown="describe") == ["PosixPath('/tmp/x')"]
    with pytest.raises(CritwinError, match=r"value PosixPath\('/tmp/x'\) of type PosixPath cannot be"):
        jsonable({"p": path}, unknown="error")
    with pytest.raises(CritwinError, match="of type object cannot be written as JSON"):
        dumps({"o": object()})
    with pytest.raises(CritwinError, match="nonfinite='zero'"):
        jsonable(1.0, nonfinite="zero")  # type: ignore[arg-type]


def test_samples_keep_nonfinite_values_as_strings_and_describe_objects():
    sample = {"v": [float("nan"), float("inf"), -np.inf, 1.0], "pt": _Point(1, 2.0), "c": _WithToDict()}
    assert json.dumps(jsonable_or_repr(sample), allow_nan=False) == (
        '{"v": ["nan", "inf", "-inf", 1.0], "pt": {"x": 1, "y": 2.0}, '
        '"c": {"kind": "custom", "values": [1, 2]}}'
    )
    assert jsonable_or_repr(np.array([1.5, 2.0])) == [1.5, 2.0]
    assert jsonable_or_repr(float("nan")) == "nan"
    assert jsonable_or_repr((1, 2)) == [1, 2]


def test_labels_round_trip_with_tuples_as_arrays():
    cases = [
        ("yes", '"yes"'),
        (3, "3"),
        (2.5, "2.5"),
        (True, "true"),
        (None, "null"),
        ((1, ("u", True), 2.5), '[1, ["u", true], 2.5]'),
        ((), "[]"),
        (np.int32(4), "4"),
        (np.float64(0.25), "0.25"),
        (np.bool_(False), "false"),
    ]
    for label, text in cases:
        assert encode_label(label) == text
        back = decode_label(text)
        assert back == label and hash(back) == hash(label)
    assert plain_label(("a", (np.int8(1),))) == ["a", [1]]
    assert label_from_plain(["a", [1, [2]]]) == ("a", (1, (2,)))
    assert type(decode_label("[1, 2]")) is tuple


def test_unsavable_labels_are_one_line_errors():
    with pytest.raises(CritwinError) as err:
        encode_label([1, 2])
    assert str(err.value) == (
        "label [1, 2] of type list cannot be saved; make the feature return str, int, float, bool or tuples "
        "of these"
    )
    with pytest.raises(CritwinError, match="label nan is not a finite number"):
        encode_label(float("nan"))
    with pytest.raises(CritwinError, match="label inf is not a finite number"):
        plain_label(("a", float("inf")))
    with pytest.raises(CritwinError, match="of type dict cannot be saved"):
        plain_label({"a": 1})
