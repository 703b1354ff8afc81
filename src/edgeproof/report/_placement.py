"""Op placement per target: nodes on the accelerator vs the CPU fallback, partitions, copies, one inference's timeline."""

from __future__ import annotations

from collections import Counter
from typing import Any

import plotly.graph_objects as go

from edgeproof.records import Placement, RunRecord, TimelinePhase
from edgeproof.report._collect import Found, Inputs
from edgeproof.report._html import Section, absent_section, badge, esc, muted, note, provenance_kind, source, table
from edgeproof.report._labels import precision_override, run_label, simulated, unique_labels
from edgeproof.report._plots import FAIL, GREY, SIM, plot_html, ptext, simulated_name

NOT_RECORDED = "not recorded"
# legends clear of the axis titles: above the node bars, well below a titled phase plot
TOP_LEGEND = {"legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0}}
LOW_LEGEND = {"legend": {"orientation": "h", "yanchor": "top", "y": -0.42, "xanchor": "left", "x": 0}, "margin": {"b": 96}}
MAX_TIMELINES = 6
# Colours of the phases of one simulated inference; CPU kernels are red only where they fell back from an accelerator.
PHASE_COLOUR = {"kernel:accel": "#2b6cb0", "kernel:cpu": "#2b6cb0", "kernel:fallback": FAIL, "copy": "#dd6b20", "launch": GREY}
PHASE_NAME = {
    "kernel:accel": "kernel on the accelerator",
    "kernel:cpu": "kernel on the CPU",
    "kernel:fallback": "kernel on the CPU fallback",
}


def distinct_placements(inputs: Inputs) -> list[Found]:
    """One run per (model, target, provider, placement): repeated runs of one setup place nodes alike."""
    seen: set[tuple[Any, ...]] = set()
    found = []
    for f in inputs.runs:
        rec: RunRecord = f.item
        if rec.placement is None:
            continue
        key = (
            rec.model.sha256,
            rec.target.id,
            rec.target.power_mode,
            precision_override(rec),
            tuple((n.name, n.provider) for n in rec.placement.nodes),
        )
        if key not in seen:
            seen.add(key)
            found.append(f)
    return found


def node_split(placement: Placement) -> tuple[int, int]:
    """(nodes on the primary provider, nodes on a fallback)."""
    on_primary = sum(1 for n in placement.nodes if n.provider == placement.primary_provider)
    return on_primary, len(placement.nodes) - on_primary


def _share(value: float | None) -> str:
    return muted(NOT_RECORDED) if value is None else esc(f"{value:.1%}")


def placement_row(label: str, rel: str, rec: RunRecord) -> list[str]:
    p = rec.placement
    assert p is not None
    primary, fallback = node_split(p)
    parts = rec.simulation.partitions if rec.simulation is not None else None
    if parts is not None:
        segments = esc(str(parts.segment_count))
        copies = esc(f"{parts.bytes_copied:,.0f} B in {parts.copy_ms:.3g} ms")
    else:
        segments = copies = muted(NOT_RECORDED)
    return [
        esc(label),
        source(rel),
        badge(p.provenance),
        esc(p.primary_provider),
        str(primary),
        f'<span class="{"over" if fallback else ""}">{fallback}</span>',
        f"{_share(p.fallback_node_frac)} / {_share(p.fallback_flop_frac)} / {_share(p.fallback_time_frac)}",
        segments,
        copies,
    ]


def split_figure(labels: list[str], records: list[RunRecord]) -> go.Figure:
    names = [simulated_name(ptext(label), simulated(r)) for label, r in zip(labels, records)]
    splits = [node_split(r.placement) for r in records if r.placement is not None]
    providers = [[ptext(r.placement.primary_provider), ptext(r.placement.provenance)] for r in records if r.placement is not None]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            y=names,
            x=[s[0] for s in splits],
            orientation="h",
            name="on the primary provider",
            marker_color="#2b6cb0",
            customdata=providers,
            hovertemplate="%{y}<br>%{x} nodes on %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            y=names,
            x=[s[1] for s in splits],
            orientation="h",
            name="CPU fallback",
            marker_color=FAIL,
            customdata=providers,
            hovertemplate="%{y}<br>%{x} nodes fell back to the CPU<br>%{customdata[1]}<extra></extra>",
        )
    )
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="ONNX nodes")
    fig.update_yaxes(automargin=True, autorange="reversed")
    return fig


def timeline_figure(rec: RunRecord) -> go.Figure | None:
    """One simulated inference as lanes (link, CPU, accelerator) of copies, launches and kernels."""
    sim = rec.simulation
    if sim is None or not sim.timeline:
        return None
    has_accelerator = bool(sim.partitions.accelerator)
    fig = go.Figure()
    groups: dict[str, list[TimelinePhase]] = {}
    for r in sim.timeline:
        key = r.kind
        if key == "kernel":
            key = "kernel:fallback" if has_accelerator and r.device == "cpu" else f"kernel:{r.device}"
        groups.setdefault(key, []).append(r)
    for key, items in groups.items():
        fig.add_trace(
            go.Bar(
                y=[ptext(r.device) for r in items],
                x=[r.duration_us / 1e3 for r in items],
                base=[r.start_us / 1e3 for r in items],
                orientation="h",
                name=PHASE_NAME.get(key, ptext(key)),
                marker_color=PHASE_COLOUR.get(key, SIM),
                marker_line={"width": 0.5, "color": "#ffffff"},
                customdata=[[ptext(r.name), ptext(r.bound or ""), r.power_w] for r in items],
                hovertemplate="%{customdata[0]}<br>%{base:.4g} → +%{x:.4g} ms (%{customdata[1]}-bound)<br>%{customdata[2]:.3g} W<extra></extra>",
            )
        )
    fig.update_layout(barmode="overlay", showlegend=True)
    fig.update_xaxes(title_text="time within one inference (ms) [simulated]")
    return fig


def _fallback_details(rec: RunRecord) -> str:
    fallback = rec.simulation.partitions.fallback if rec.simulation is not None else []
    rows = []
    if fallback:
        rows = [[esc(fb.kernel), esc(fb.op_type), esc(fb.precision or ""), esc(fb.reason)] for fb in fallback]
        headers = ["kernel", "op", "precision", "why it fell back"]
    elif rec.placement is not None:
        p = rec.placement
        rows = [[esc(n.name), esc(n.op_type), esc(n.provider), ""] for n in p.nodes if n.provider != p.primary_provider]
        headers = ["node", "op", "provider", ""]
    if not rows:
        return ""
    return f"<details><summary>{len(rows)} fallback node(s)</summary>{table(headers, rows)}</details>"


def notable(rec: RunRecord) -> bool:
    """A placement worth a chart: some node fell back to the CPU, or the board is simulated (its partitions are a model's claim)."""
    return rec.placement is not None and (simulated(rec) or node_split(rec.placement)[1] > 0)


def all_on_primary(records: list[RunRecord]) -> str:
    """The one sentence that stands for runs where every node ran on the primary provider."""
    providers = Counter(r.placement.primary_provider for r in records if r.placement is not None)
    where = ", ".join(f"{provider} ({n} run{'s' if n != 1 else ''})" for provider, n in providers.most_common())
    kinds = sorted({provenance_kind(r.placement.provenance) for r in records if r.placement is not None})
    return f"{len(records)} run(s) placed every node on their primary provider — {where} — and nothing fell back ({', '.join(kinds)})."


_HEADERS = [
    "run",
    "file",
    "evidence",
    "primary provider",
    "nodes on primary",
    "CPU fallback nodes",
    "fallback share (nodes / FLOPs / time)",
    "partitions",
    "copies",
]


def section(inputs: Inputs) -> Section:
    found = distinct_placements(inputs)
    if not found:
        return absent_section("placement", "Op placement per target", "No per-node placement in this folder's run records.")
    records = [f.item for f in found]
    labels = unique_labels([run_label(r) for r in records], [f.rel for f in found])
    shown = [i for i, r in enumerate(records) if notable(r)]
    quiet = [records[i] for i in range(len(records)) if i not in shown]
    body = note(
        "Where each ONNX node ran: on the target's primary provider (its accelerator, or the CPU on a CPU-only target) "
        "or on the CPU fallback. Only runs where something fell back or the board was simulated are drawn. Fallback shares "
        "are of nodes / FLOPs / time; partitions are the graph segments the accelerator runs, each boundary costing a copy."
    )
    if shown:
        body += plot_html(
            split_figure([labels[i] for i in shown], [records[i] for i in shown]),
            "plot-placement",
            height=max(200, 110 + 34 * len(shown)),
            layout=TOP_LEGEND,
        )
        body += table(_HEADERS, [placement_row(labels[i], found[i].rel, records[i]) for i in shown])
        body += "".join(f"<div><b>{esc(labels[i])}</b>: {d}</div>" for i in shown if (d := _fallback_details(records[i])))
    if quiet:
        body += f"<p>{esc(('The other ' if shown else '') + all_on_primary(quiet))}</p>"
    timelines: list[str] = []
    for i in shown:
        rec = records[i]
        fig = timeline_figure(rec) if simulated(rec) else None
        if fig is None or len(timelines) == MAX_TIMELINES:
            continue
        title = f"One inference on {ptext(rec.target.id)}: {ptext(labels[i])} [simulated]"
        timelines.append(plot_html(fig, f"plot-timeline-{i}", height=270, title=title, layout=LOW_LEGEND))
    if timelines:
        body += f"<details><summary>One simulated inference, phase by phase, on {len(timelines)} board run(s)</summary>{''.join(timelines)}</details>"
    body += f"<details><summary>Placement of all {len(records)} distinct run(s)</summary>"
    body += table(_HEADERS, [placement_row(label, f.rel, f.item) for label, f in zip(labels, found)]) + "</details>"
    kinds = frozenset(provenance_kind(r.placement.provenance) for r in records if r.placement is not None)
    return Section("placement", "Op placement per target", body, kinds)
