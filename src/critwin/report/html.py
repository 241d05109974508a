"""Self-contained HTML reports: sections of text, tables and figures (PNG embedded as base64).

A report is a title plus a list of `Section`s; experiments add their own sections (reasoning, structured
output, jailbreaks, …) by building `Section` objects — see `critwin.report.build` for the registry.
Everything is escaped by Jinja2 except `Section.html`, which is trusted markup produced by critwin code.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2


@dataclass(frozen=True)
class Figure:
    """A PNG image with alternative text and an optional caption."""

    png: bytes
    alt: str
    caption: str = ""

    @property
    def data_uri(self) -> str:
        """The image as a data: URI (keeps the report a single file)."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Table:
    """A table: column names and rows of cells (rendered with str; None shows as an em dash)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A titled part of a report: intro text, then tables, then figures, then trusted extra HTML."""

    title: str
    intro: str = ""
    tables: Sequence[Table] = field(default_factory=tuple)
    figures: Sequence[Figure] = field(default_factory=tuple)
    html: str = ""
    anchor: str = ""


_TEMPLATE = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
 body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1f4e9c;color:#fff;padding:18px 32px}
 header h1{margin:0;font-size:24px} header p{margin:6px 0 0;opacity:.9}
 nav{padding:8px 32px;background:#e8edf5;font-size:14px} nav a{margin-right:14px;color:#1f4e9c}
 main{max-width:1000px;margin:0 auto;padding:8px 24px 40px}
 section{background:#fff;border-radius:8px;padding:16px 22px;margin:18px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
 h2{font-size:19px;margin:4px 0 10px} p.intro{margin:4px 0 12px;line-height:1.45}
 table{border-collapse:collapse;margin:8px 0 14px;font-size:13.5px;width:100%}
 th,td{border-bottom:1px solid #dde2ea;padding:5px 8px;text-align:left;vertical-align:top}
 th{background:#f0f3f8} caption{caption-side:bottom;font-size:12.5px;color:#5b6475;text-align:left;padding-top:4px}
 figure{margin:10px 0} figure img{max-width:100%;height:auto;display:block}
 figcaption{font-size:12.5px;color:#5b6475;margin-top:4px}
 .ok{color:#1e7d32;font-weight:600} .bad{color:#b3261e;font-weight:600}
 footer{font-size:12px;color:#6b7280;text-align:center;padding:12px}
</style></head><body>
<header><h1>{{ title }}</h1>{% if subtitle %}<p>{{ subtitle }}</p>{% endif %}</header>
{% if sections|length > 1 %}<nav>{% for s in sections %}<a href="#{{ s.anchor }}">{{ s.title }}</a>{% endfor %}</nav>{% endif %}
<main>
{% for s in sections %}<section id="{{ s.anchor }}">
<h2>{{ s.title }}</h2>
{% if s.intro %}<p class="intro">{{ s.intro }}</p>{% endif %}
{% for t in s.tables %}<table>{% if t.caption %}<caption>{{ t.caption }}</caption>{% endif %}
<thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in t.rows %}<tr>{% for v in r %}<td>{{ "—" if v is none else v }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>{% endfor %}
{% for f in s.figures %}<figure><img src="{{ f.data_uri }}" alt="{{ f.alt }}">
{% if f.caption %}<figcaption>{{ f.caption }}</figcaption>{% endif %}</figure>{% endfor %}
{{ s.html|safe }}
</section>{% endfor %}
</main>
<footer>{{ footer }}</footer>
</body></html>
""",  # noqa: E501
    autoescape=True,
)


def _anchor(title: str, i: int) -> str:
    slug = "".join(ch.lower() if ch.isalnum() else "-" for ch in title).strip("-")
    return f"s{i}-{slug[:40]}"


def render_html(title: str, sections: Sequence[Section], *, subtitle: str = "", footer: str = "") -> str:
    """The whole report as one HTML string (no external resources)."""
    secs = [
        s if s.anchor else Section(s.title, s.intro, s.tables, s.figures, s.html, _anchor(s.title, i))
        for i, s in enumerate(sections)
    ]
    return _TEMPLATE.render(title=title, subtitle=subtitle, sections=secs, footer=footer)
