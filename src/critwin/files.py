"""Reading user files with one-line errors that say what the path is and how to fix it.

Every loader of user text (problem files, attack cases, detection rows, templates, rubrics, theory specs)
goes through `read_text`, so that a folder passed for a file, a missing or unreadable file and a file that
is not UTF-8 all get the same clear CritwinError naming the flag (or argument) and the file.
"""

from __future__ import annotations

import os
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
