"""Figures drawn once: a report re-drawn from unchanged data reuses the PNGs it drew before.

Drawing is most of what a report costs (a resumed study with thousands of finished cases, `critwin report`
and `critwin repair` re-draw every figure). Inside `figure_cache(folder)`, a figure function decorated
with `@cached` looks its PNG up under a key that hashes the function's name, the figure code (the source
of the report package, critwin's and matplotlib's versions) and its arguments. A stored file is used only
when the hash of its bytes matches the one in its name, so a damaged cache file is redrawn, never shown.
When the outermost block ends, the files this build did not use are deleted: the folder holds one build's
figures. Outside a block the functions just draw.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import ParamSpec

from critwin.rundir import atomic_write
from critwin.serialize import jsonable

P = ParamSpec("P")
FOLDER = ".critwin/figures"  # inside a run directory
_HASH = 16  # hex digits of each hash in a file name


class _Cache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()

    def get(self, key: str) -> bytes | None:
        for f in self.folder.glob(f"{key}-*.png"):
            try:
                png = f.read_bytes()
            except OSError:
                continue
            if f.stem == f"{key}-{_digest(png)}":
                self.used.add(f.name)
                return png
        return None

    def put(self, key: str, png: bytes) -> None:
        name = f"{key}-{_digest(png)}.png"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / name, lambda p: p.write_bytes(png))
        except OSError:
            return  # a read-only run still gets its report; it just draws again next time
        self.used.add(name)

    def prune(self) -> None:
        try:
            for f in self.folder.glob("*.png"):
                if f.name not in self.used:
                    f.unlink(missing_ok=True)
        except OSError:
            pass  # read-only run directory


_ACTIVE: ContextVar[_Cache | None] = ContextVar("critwin_figure_cache", default=None)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_HASH]


@functools.cache
def _code_version() -> str:
    import matplotlib

    import critwin

    h = hashlib.sha256(f"{critwin.__version__} {matplotlib.__version__}".encode())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.read_bytes())
    return h.hexdigest()


def _key(name: str, args: tuple, kwargs: dict) -> str:
    # Non-finite floats as strings and objects by their fields: equal inputs give equal keys, and a NaN
    # never collides with a missing value.
    plain = jsonable([args, kwargs], nonfinite="string", unknown="describe")
    text = json.dumps([_code_version(), name, plain], sort_keys=True, default=repr)
    return _digest(text.encode())


def cached(draw: Callable[P, bytes]) -> Callable[P, bytes]:
    """Decorator for a function that returns a figure's PNG bytes (or None: nothing to draw) from its
    arguments alone."""
    name = f"{draw.__module__}.{draw.__qualname__}"

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> bytes:
        cache = _ACTIVE.get()
        if cache is None:
            return draw(*args, **kwargs)
        key = _key(name, args, kwargs)
        png = cache.get(key)
        if png is None:
            png = draw(*args, **kwargs)
            if png is not None:  # a function may have nothing to draw for some inputs
                cache.put(key, png)
        return png

    return wrapper


@contextmanager
def figure_cache(run_path: Path) -> Iterator[None]:
    """Reuse and store the figures drawn inside this block in `run_path`/.critwin/figures (a nested block
    on the same run shares the outer one's cache)."""
    outer = _ACTIVE.get()
    folder = Path(run_path) / FOLDER
    if outer is not None and outer.folder == folder:
        yield
        return
    cache = _Cache(folder)
    token = _ACTIVE.set(cache)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
    cache.prune()  # only after a build that finished: a failed one keeps what the last good one drew

