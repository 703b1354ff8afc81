"""HTML building blocks of the report: escaping, provenance badges, status chips, tables, sections."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

PROVENANCE_KINDS = ("measured", "simulated", "estimated", "unavailable")
_SHORT_DETAIL = 36


@dataclass(frozen=True)
class Section:
    """One report section: its anchor id, title, body HTML and the kinds of evidence it shows."""

    id: str
    title: str
    body: str
    kinds: frozenset[str] = frozenset()
    empty: bool = False


def esc(value: object) -> str:
    """Text from a record, safe inside HTML text and attributes."""
    return html.escape(str(value), quote=True)


def provenance_kind(provenance: str) -> str:
    kind = provenance.split(":", 1)[0]
    return kind if kind in PROVENANCE_KINDS else "unavailable"


def badge(provenance: str, detail: bool = False) -> str:
    """A coloured badge naming the kind of evidence (measured / simulated / estimated / unavailable).

    The full provenance is in the tooltip; ``detail`` also prints its start after the kind.
    """
    kind = provenance_kind(provenance)
    text = kind
    rest = provenance.split(":", 1)[1] if ":" in provenance else ""
    if detail and rest:
        short = rest if len(rest) <= _SHORT_DETAIL else rest[: _SHORT_DETAIL - 1] + "…"
        text = f"{kind} · {short}"
    return f'<span class="badge b-{kind}{" detail" if detail else ""}" title="{esc(provenance)}">{esc(text)}</span>'


def provenance_label(provenance: str, limit: int = 48) -> str:
    """The kind as a badge and what produced the figure as plain text beside it (whole in the tooltip)."""
    rest = provenance.split(":", 1)[1] if ":" in provenance else ""
    short = rest if len(rest) <= limit else rest[: limit - 1] + "…"
    return badge(provenance) + (f' <span class="prov" title="{esc(provenance)}">{esc(short)}</span>' if short else "")


def kind_badges(kinds: Iterable[str]) -> str:
    """One badge per kind of evidence present, in a fixed order."""
    present = set(kinds)
    return "".join(f'<span class="badge b-{k}">{k}</span>' for k in PROVENANCE_KINDS if k in present)


def chip(status: str) -> str:
    """A pass / fail / unverified / waived chip."""
    return f'<span class="chip c-{esc(status.lower())}">{esc(status)}</span>'


def fmt(value: float | None, unit: str = "", digits: int = 4, missing: str = "—") -> str:
    """A number with its unit to ``digits`` significant digits; ``missing`` when there is none."""
    if value is None:
        return missing
    return f"{value:.{digits}g} {unit}".strip()


def muted(text: str) -> str:
    return f'<span class="muted">{esc(text)}</span>'


def unavailable(why: str = "") -> str:
    """How the report shows a figure it does not have: the word, never a zero; the reason in the tooltip."""
    return f'<span class="unavail" title="{esc(why)}">unavailable</span>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table; headers are plain text (escaped here), cells are HTML built by the caller."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def absent(text: str) -> str:
    """The line a section shows when the folder holds nothing for it."""
    return f'<p class="absent">{esc(text)}</p>'


def absent_section(section_id: str, title: str, text: str) -> Section:
    """A section for which the folder holds nothing: it says so, and says which command would fill it."""
    return Section(section_id, title, absent(text), empty=True)


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def bullet_list(items: Iterable[str]) -> str:
    """A list of HTML items built by the caller."""
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def card(title_html: str, body: str, cls: str = "") -> str:
    return f'<div class="card {cls}"><h3>{title_html}</h3>{body}</div>'


def source(rel: str) -> str:
    """Which file a block comes from."""
    return f'<span class="src" title="file in the report folder">{esc(rel)}</span>'


def render_section(section: Section) -> str:
    badges = kind_badges(section.kinds - {"unavailable"})
    return f'<section id="{esc(section.id)}"><h2>{esc(section.title)} {badges}</h2>{section.body}</section>'


CSS = """
:root { --fg:#1d2430; --muted:#5b6676; --line:#e3e7ee; --bg:#f6f7fb; --card:#fff;
  --pass:#1b7f45; --fail:#c0392b; --warn:#b7791f; --waived:#2b6cb0; --sim:#8a4fbf; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header.top { background:#18202e; color:#eef2f8; padding:14px 0 14px; }
.wrap { max-width:1240px; margin:0 auto; padding:0 24px; }
header.top h1 { margin:0 0 2px; font-size:22px; font-weight:650; }
header.top .meta { color:#b9c3d3; font-size:13px; }
header.top code { color:#eef2f8; }
.head-grid { display:grid; grid-template-columns:minmax(0, 3fr) minmax(0, 2fr); gap:20px; align-items:center; }
header.top .meta { overflow-wrap:anywhere; }
.banner { margin:0; padding:8px 16px; border-radius:8px; font-size:17px; font-weight:600; }
.banner small { display:block; font-size:13px; font-weight:400; opacity:.9; margin-top:2px; }
.banner.pass { background:#e3f5ea; color:var(--pass); border:1px solid #b9e4c8; }
.banner.fail { background:#fdecea; color:var(--fail); border:1px solid #f4c2bc; }
.banner.undecided { background:#fdf3e1; color:var(--warn); border:1px solid #f3dcae; }
.banner.none { background:#eef0f4; color:var(--muted); border:1px solid var(--line); }
nav.toc { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 18px; margin:20px 0; }
nav.toc ol { margin:6px 0 0; padding-left:20px; columns:2; }
nav.toc a { color:#234e8c; text-decoration:none; }
nav.toc a:hover { text-decoration:underline; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 22px 20px; margin:0 0 20px; }
section h2 { margin:0 0 10px; font-size:20px; }
.card { border:1px solid var(--line); border-radius:6px; padding:10px 14px; margin:12px 0; }
.card h3 { margin:0 0 8px; font-size:16px; font-weight:600; }
.table-wrap { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:13px; margin:6px 0 10px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f1f3f8; font-weight:600; white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.badge { display:inline-block; font-size:11px; font-weight:600; padding:1px 7px; border-radius:10px; margin:0 3px;
  vertical-align:middle; white-space:nowrap; }
.badge.detail { white-space:normal; overflow-wrap:break-word; max-width:19em; }
td:first-child { min-width:9em; }
.b-measured { background:#e3f5ea; color:var(--pass); border:1px solid #b9e4c8; }
.b-simulated { background:#f3e8fb; color:var(--sim); border:1px solid #dcc4ef; }
.b-estimated { background:#e6eefa; color:var(--waived); border:1px solid #c3d5f0; }
.b-unavailable { background:#eef0f4; color:var(--muted); border:1px solid var(--line); }
.chip { display:inline-block; font-size:12px; font-weight:700; padding:0 8px; border-radius:4px; text-transform:uppercase; }
.c-pass { background:#e3f5ea; color:var(--pass); }
.c-fail { background:#fdecea; color:var(--fail); }
.c-unverified, .c-undecided { background:#fdf3e1; color:var(--warn); }
.c-waived { background:#e6eefa; color:var(--waived); }
.muted, .src { color:var(--muted); }
.src { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12px; }
.unavail { color:var(--muted); font-style:italic; }
.absent { color:var(--muted); font-style:italic; background:#f7f8fa; border:1px dashed var(--line); border-radius:6px;
  padding:10px 14px; }
.note { color:var(--muted); font-size:13px; margin:4px 0 8px; }
.plot { width:100%; margin:6px 0 10px; }
.over { color:var(--fail); font-weight:600; }
details summary { cursor:pointer; color:#234e8c; }
section#decision { border:2px solid #c9d3e3; margin-top:14px; padding-top:12px; }
.decision-head { font-size:13px; margin:0 0 2px; }
p.headline { font-size:17px; margin:4px 0 2px; }
p.vs { margin:0 0 8px; font-size:14px; }
.decision-grid { display:grid; grid-template-columns:minmax(0, 2fr) minmax(0, 1fr); gap:16px; align-items:start; }
table.decision td { vertical-align:middle; }
table.decision th { white-space:normal; }
.fig { white-space:nowrap; font-variant-numeric:tabular-nums; }
.ci { display:block; color:var(--muted); font-size:12px; white-space:nowrap; }
.evidence { margin-top:2px; font-size:12px; }
.prov { color:var(--muted); font-size:12px; }
table.verdicts td { padding:4px 8px; }
h3.verdicts { margin:10px 0 2px; font-size:16px; }
p.also { margin:2px 0; font-size:14px; }
.decision-card + .decision-card, table.verdicts + .decision-card, .table-wrap + .decision-card { margin-top:18px; border-top:1px solid var(--line); padding-top:10px; }
.role { display:inline-block; font-size:11px; font-weight:700; padding:1px 6px; border-radius:4px; margin:1px 2px 1px 0; white-space:nowrap; }
.r-chosen { background:#fbf0d3; color:#8a6116; border:1px solid #ecd395; }
.r-fp32 { background:#e4e7ec; color:#1d2430; border:1px solid #c7ccd6; }
.r-pareto { background:#e3f5ea; color:var(--pass); border:1px solid #b9e4c8; }
footer { color:var(--muted); font-size:12px; padding:10px 0 40px; }
"""
