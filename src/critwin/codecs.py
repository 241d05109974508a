"""Sample codecs: how each type of sample is stored in a run directory's sample parts.

A codec turns one sample into bytes and back. "npy" stores numpy arrays (images, latents) as npy bytes,
bit-identical with dtype and shape; "npz" dicts of arrays; "bytes" raw bytes; "json" everything else
(JSON text: arrays and tuples as lists, non-finite floats as "nan"/"inf"). A backend registers a codec for
its own sample type with `register_codec` (codecs are tried newest first, "json" last); the codec's name
is stored next to every sample, so a run is read back with the codec that wrote it. This module sits
below the samplers, so any backend may import it.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from critwin.errors import CritwinError
from critwin.serialize import jsonable_or_repr

__all__ = ["Codec", "codec_for", "codecs", "decode_sample", "encode_sample", "encode_value", "register_codec"]


@dataclass(frozen=True)
class Codec:
    """How one type of sample is stored: `can_encode(value)` says whether this codec takes `value`,
    `encode(value) -> bytes` and `decode(bytes) -> value` convert it."""

    name: str
    can_encode: Callable[[Any], bool]
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


_CODECS: dict[str, Codec] = {}
_CODEC_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,63}")


def register_codec(
    name: str,
    can_encode: Callable[[Any], bool],
    encode: Callable[[Any], bytes],
    decode: Callable[[bytes], Any],
) -> Codec:
    """Add a sample codec (or replace the one of that `name`). Codecs are tried newest first, so a
    backend's codec takes its own sample type before the built-in ones; "json" takes whatever no other
    codec takes. The name is stored with every sample, so a run written with a codec is read back in a
    process that registered it too (`decode_sample` says so when it is not)."""
    if not isinstance(name, str) or not _CODEC_NAME.fullmatch(name):
        raise CritwinError(
            f"codec name {name!r} is not allowed; use 1-64 lower-case letters, digits and _ . + - "
            "(starting with a letter or digit)"
        )
    for what, fn in (("can_encode", can_encode), ("encode", encode), ("decode", decode)):
        if not callable(fn):
            raise CritwinError(f"codec {name!r}: {what} is {type(fn).__name__}, not a function; pass one")
    _CODECS.pop(name, None)
    codec = Codec(name, can_encode, encode, decode)
    _CODECS[name] = codec
    return codec


def codecs() -> list[str]:
    """Names of the registered codecs, in the order they are tried."""
    return [n for n in reversed(_CODECS) if n != "json"] + ["json"]


def codec_for(value: Any) -> Codec:
    """The codec that stores `value`: the newest registered one that takes it, else "json"."""
    for codec in reversed(list(_CODECS.values())):
        if codec.name != "json" and codec.can_encode(value):
            return codec
    return _CODECS["json"]


def encode_value(value: Any) -> tuple[str, bytes]:
    """(codec name, bytes) of one sample."""
    codec = codec_for(value)
    data = codec.encode(value)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CritwinError(
            f"sample codec {codec.name!r} returned {type(data).__name__}, not bytes; fix its encode function"
        )
    return codec.name, bytes(data)


def decode_sample(codec: str, data: bytes) -> Any:
    """The sample stored as `data` by `codec` (the two columns of a samples part)."""
    c = _CODECS.get(str(codec))
    if c is None:
        raise CritwinError(
            f"samples stored with codec {codec!r}, which this process has not registered; import the module "
            "that registers it (critwin.codecs.register_codec) before reading them"
        )
    return c.decode(bytes(data))


def encode_sample(sample: Any) -> str:
    """JSON text of a sample (the "json" codec): arrays/tuples as lists, non-finite floats as "nan"/"inf",
    dataclasses as dicts, objects with `to_dict()` through it, anything else as its repr."""
    return json.dumps(jsonable_or_repr(sample), allow_nan=False)


def _is_array(v: Any) -> bool:
    return type(v) is np.ndarray and not v.dtype.hasobject


def _npy_encode(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _npy_decode(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _is_array_map(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(isinstance(k, str) and _is_array(a) for k, a in v.items())


def _npz_encode(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed .npz (one .npy per key, in key order) with fixed time stamps: same arrays, same
    bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for key, a in arrays.items():
            with z.open(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w",
                        force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
    return buf.getvalue()


def _npz_decode(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n[: -len(".npy")]: np.lib.format.read_array(z.open(n), allow_pickle=False)
                for n in z.namelist()}


register_codec("json", lambda v: True, lambda v: encode_sample(v).encode("utf-8"), json.loads)
register_codec("bytes", lambda v: isinstance(v, bytes), bytes, bytes)
register_codec("npz", _is_array_map, _npz_encode, _npz_decode)
register_codec("npy", _is_array, _npy_encode, _npy_decode)
