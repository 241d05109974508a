"""Griffe extension for the API reference: render critwin's prose docstrings literally.

critwin's docstrings are prose that states the maths: they write indices like `out[i][j]`, relations like
`x_<j` and `j >= 1`, outside code spans. Markdown would read `[i][j]` as a reference link (an unresolved
cross-reference, which fails `mkdocs build --strict`) and `<j ... >` as an HTML tag (which swallows the
text). Outside code spans and fenced blocks this escapes `][` (so `a[i][j]` stays text) and `<` (so no
text is taken for HTML). Docstrings themselves are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# Fenced blocks, then inline code spans (any run of backticks, closed by the same run).
_CODE = re.compile(r"(^[ \t]*```.*?^[ \t]*```[ \t]*$|(`+).+?(?<!`)\2(?!`))", re.DOTALL | re.MULTILINE)


def escape_prose(text: str) -> str:
    """`text` with `][` and `<` escaped outside fenced blocks and code spans."""
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(_escape(text[pos : m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_escape(text[pos:]))
    return "".join(out)


def _escape(prose: str) -> str:
    return prose.replace("][", "]\\[").replace("<", "&lt;")


class ProseDocstrings(griffe.Extension):
    """Escape Markdown-active characters in every docstring as it is loaded."""

    def on_object(self, *, obj: griffe.Object, loader: Any = None, **kwargs: Any) -> None:
        if obj.docstring is not None and not getattr(obj.docstring, "_critwin_escaped", False):
            obj.docstring.value = escape_prose(obj.docstring.value)
            obj.docstring._critwin_escaped = True  # type: ignore[attr-defined]
