"""Assemble the report page: header with the verdict banner, table of contents, sections, sources; write it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import edgeproof
from edgeproof.errors import RecordError
from edgeproof.records import write_atomic
from edgeproof.report import (
    _accuracy,
    _decision,
    _fleet,
    _gate,
    _latency,
    _pareto,
    _placement,
    _release,
    _rollout,
    _telemetry,
    _thermal,
    _verdicts,
)
from edgeproof.report._collect import Inputs, collect
from edgeproof.report._html import CSS, Section, esc, kind_badges, render_section, source, table
from edgeproof.report._plots import plotly_script

# The order a release board reads in: the decision first, the evidence behind it next, the paperwork last.
# A section that returns None has nothing to show unless the report is given its input (a fleet store, a rollout).
SECTIONS: tuple[Callable[[Inputs], Section | None], ...] = (
    _decision.section,
    _verdicts.section,
    _latency.section,
    _pareto.section,
    _accuracy.section,
    _placement.section,
    _thermal.section,
    _telemetry.section,
    _fleet.section,
    _rollout.section,
    _gate.section,
    _release.bom_section,
    _release.change_section,
)


# plotly sizes a plot drawn inside a closed <details> for a guessed width; fit it when the reader opens it
RESIZE_OPENED_PLOTS = (
    "document.querySelectorAll('details').forEach(function(d){d.addEventListener('toggle',function(){"
    "if(d.open){d.querySelectorAll('.js-plotly-plot').forEach(function(p){Plotly.Plots.resize(p);});}});});"
)


def subject_model(inputs: Inputs) -> tuple[str, str] | None:
    """(name, sha256) of the model the folder is about: the searched one, else the one most runs measured."""
    primary = _decision.primary_search(inputs)
    if primary is not None:
        model = primary.item.model
        return model.name, model.sha256
    if inputs.boms:
        facts = inputs.boms[0].item
        return facts.model_name, facts.model_sha256
    counts = Counter((f.item.model.name, f.item.model.sha256) for f in inputs.runs)
    return counts.most_common(1)[0][0] if counts else None


def header_html(inputs: Inputs, generated_at: str) -> str:
    model = subject_model(inputs)
    others = len({f.item.model.sha256 for f in inputs.runs} - ({model[1]} if model else set()))
    title = f"edgeproof report — {esc(model[0])}" if model else "edgeproof report"
    sha = f'model sha256 <code title="{esc(model[1])}">{esc(model[1][:16])}…</code>' if model else "no model named in this folder"
    more = f" · {others} other model file(s) (variants) in the runs" if others else ""
    return (
        '<header class="top"><div class="wrap head-grid"><div>'
        f"<h1>{title}</h1>"
        f'<div class="meta">{sha}{more}</div>'
        f'<div class="meta">folder <code>{esc(inputs.root.resolve())}</code> · {len(inputs.read)} record file(s) · '
        f"generated {esc(generated_at)} by edgeproof {esc(edgeproof.__version__)}</div></div>"
        f"{_verdicts.banner(inputs)}"
        "</div></header>"
    )


def toc_html(sections: list[Section]) -> str:
    items = "".join(
        f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a> '
        + ('<span class="muted">(none in this folder)</span>' if s.empty else kind_badges(s.kinds - {"unavailable"}))
        + "</li>"
        for s in sections
    )
    return f'<nav class="toc" id="toc"><b>Contents</b><ol>{items}<li><a href="#sources">Sources</a></li></ol></nav>'


def sources_section(inputs: Inputs) -> Section:
    """Every file the report read, and every file it could not, with why: nothing is left out silently."""
    body = table(["file", "read as"], [[source(rel), esc(kind)] for rel, kind in inputs.read])
    if inputs.skipped:
        body += "<h3>Not read</h3>" + table(["file", "why"], [[source(rel), esc(why)] for rel, why in inputs.skipped])
    if inputs.ignored:
        body += f'<p class="note">{len(inputs.ignored)} other JSON file(s) are not edgeproof records: {esc(", ".join(inputs.ignored))}</p>'
    return Section("sources", "Sources", body)


def render_report(inputs: Inputs, generated_at: str | None = None) -> str:
    """The whole report as one HTML document: plotly.js and every figure inline, no network needed."""
    generated_at = generated_at or datetime.now(UTC).isoformat(timespec="seconds")
    sections = [s for s in (build(inputs) for build in SECTIONS) if s is not None]
    model = subject_model(inputs)
    title = f"edgeproof report — {model[0]}" if model else "edgeproof report"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}{_fleet.CSS}</style>{plotly_script()}</head><body>"
        f"{header_html(inputs, generated_at)}"
        '<main class="wrap">'
        + render_section(sections[0])
        + toc_html(sections)
        + "".join(render_section(s) for s in [*sections[1:], sources_section(inputs)])
        + "</main>"
        '<footer class="wrap">Badges: <span class="badge b-measured">measured</span> on real hardware, '
        '<span class="badge b-simulated">simulated</span> from a board model, <span class="badge b-estimated">estimated</span> '
        "from an analytic model; a figure with no meter reads <i>unavailable</i>, never zero.</footer>"
        f"<script>{RESIZE_OPENED_PLOTS}</script></body></html>\n"
    )


def build_report(outdir: str | Path, out_html: str | Path, fleet: str | Path | None = None, rollout: str | Path | None = None) -> Path:
    """Read every record under ``outdir`` and write the self-contained HTML report to ``out_html``.

    ``fleet`` (a fleet store) and ``rollout`` (a rollout's journal folder) add the fleet page and the rollout
    section; by default they are looked for in ``outdir`` (see ``_collect.FLEET_STORE_PLACES``, ``ROLLOUT_PLACE``).
    Raises RecordError when ``outdir`` is not a folder or holds no edgeproof record at all.
    """
    inputs = collect(outdir, fleet, rollout)
    if inputs.empty:
        skipped = (
            f"; {len(inputs.skipped)} file(s) could not be read, first: {inputs.skipped[0][0]}: {inputs.skipped[0][1]}"
            if inputs.skipped
            else ""
        )
        raise RecordError(f"{outdir}: no edgeproof records found (run records, verdicts, gate/search results, BOMs){skipped}")
    return write_atomic(out_html, render_report(inputs))
