"""Reading user files with one-line errors that say what the path is and how to fix it.

Every loader of user text (problem files, attack cases, detection rows, templates, rubrics, theory specs)
goes through `read_text`, so that a folder passed for a file, a missing or unreadable file and a file that
is not UTF-8 all get the same clear CritwinError naming the flag (or argument) and the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from critwin.errors import CritwinError


def check_file(path: str | Path, what: str, kind: str = "a file") -> Path:
    """`path` as a Path when it is a readable file; otherwise a CritwinError that says what it is instead.

    `what` names the flag or argument ("--cases"); `kind` says what to pass ("a JSONL file").
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CritwinError(f"{what} {p}: no such file; pass {kind}")
    if p.is_dir():
        raise CritwinError(f"{what} {p} is a folder, not a file; pass {kind}")
    if not p.is_file():
        raise CritwinError(f"{what} {p} is not a regular file; pass {kind}")
    if not os.access(p, os.R_OK):
        raise CritwinError(f"{what} {p} cannot be read (permission denied); make it readable or copy it")
    return p


def read_text(path: str | Path, what: str, kind: str = "a UTF-8 text file") -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped), or a one-line CritwinError."""
    p = check_file(path, what, kind)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise CritwinError(f"{what} {p} cannot be read ({err.strerror}); pass {kind}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CritwinError(
            f"{what} {p} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save it as UTF-8"
        ) from None


RUN_CONFIGS = ("config.json", ".critwin/config.json")  # a run's config and the copy it heals from


def check_writable_in(folder: Path, path: Path, flag: str) -> None:
    """Refuse when nothing can be created in `folder`. Probed by making and removing an empty folder there,
    since permission bits say nothing for root or on read-only and virtual file systems."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".critwin-probe-", dir=folder))
    except OSError as err:
        raise CritwinError(
            f"{flag} {path}: cannot write in {folder} ({err.strerror}); choose a writable folder"
        ) from None


def check_writable_parent(path: Path, flag: str) -> None:
    """The nearest existing folder above a path that does not exist yet is a folder we may write in."""
    parent = next((a for a in path.absolute().parents if a.exists()), None)
    if parent is None:
        return
    if not parent.is_dir():
        raise CritwinError(
            f"{flag} {path}: {parent} is a file, so no folder can be made there; choose another path"
        )
    check_writable_in(parent, path, flag)


def check_run_folder(out: Path, experiment: str, kind: str | None = None, flag: str = "--out") -> bool:
    """Whether `out` holds a run to resume (True) or is a place for a new one (False): new in a writable
    folder, or empty. A file, a folder that is not a critwin run, or a run of another `experiment` (or
    config `kind`) is a CritwinError. Reads only the run's config, so it runs before any expensive work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CritwinError(f"{flag} {out} is a file; choose a folder")
    if not out.exists():
        check_writable_parent(out, flag)
        return False
    if not any(out.iterdir()):
        check_writable_in(out, out, flag)
        return False
    configs = [out / name for name in RUN_CONFIGS if (out / name).is_file()]
    if not configs:
        raise CritwinError(f"{flag} {out} exists and is not a critwin run; choose a new or empty folder")
    for cfg_file in configs:
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # a damaged config: the run store heals it from its copy (or says why it cannot)
        if not isinstance(cfg, dict):
            continue
        what = cfg.get("experiment")
        if what != experiment or (kind is not None and cfg.get("kind") not in (None, kind)):
            held = f"{what} {cfg.get('kind')}" if kind is not None and what == experiment else what
            want = f"{experiment} {kind}" if kind is not None else experiment
            raise CritwinError(f"{flag} {out} holds a {held!r} run, not {want!r}; choose a new folder")
        break
    return True
