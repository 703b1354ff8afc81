"""The telemetry panel: what the on-device recorder wrote under ``<folder>/telemetry/`` — the latency
sketch, the confidence histogram, the policy's fallback rate over time, and the events.

Only windows and events are read (aggregates; no raw inputs ever reach them). A fleet's thousands of
devices are the fleet commands' business, not this page's: only ``telemetry/`` is read here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from edgeproof.report._collect import Inputs
from edgeproof.report._html import Section, absent_section, badge, esc, fmt, note, source, table
from edgeproof.report._plots import FAIL, PALETTE, plot_html

TELEMETRY_FOLDER = "telemetry"
LATENCY = "edgeproof.inference.duration"
CONFIDENCE = "edgeproof.inference.confidence"
MAX_EVENTS_LISTED = 30


@dataclass(frozen=True)
class Telemetry:
    """Every record read back from one folder of segment files, and the frames that had to be skipped."""

    rel: str
    windows: list
    events: list
    problems: list[str]


def read_telemetry(root: Path) -> list[Telemetry]:
    """Each folder under ``root/telemetry`` that holds segment files (a device's recorder writes one)."""
    from edgeproof.telemetry import read_segments, segment_folders

    base = root / TELEMETRY_FOLDER
    if not base.is_dir():
        return []
    out = []
    for folder in segment_folders(base):
        read = read_segments(folder)
        out.append(Telemetry(folder.relative_to(root).as_posix(), read.windows, read.events, [str(p) for p in read.problems]))
    return out


def _provenance(t: Telemetry) -> str:
    devices = len({w.labels.device_id for w in t.windows})
    return f"measured:telemetry:{devices} device{'s' if devices != 1 else ''}, {len(t.windows)} windows"


def _latency_block(t: Telemetry, i: int) -> str:
    from edgeproof.telemetry import merged_sketch, quantile

    sketch = merged_sketch(m for w in t.windows for m in w.metrics if m.name == LATENCY)
    if not sketch.count:
        return note("No inference latency in these windows.")
    qs = {name: quantile(sketch, q) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}
    row = [fmt(None if v is None else v * 1000, "ms") for v in qs.values()]
    body = table(["p50", "p95", "p99", "inferences", "evidence"], [[*row, f"{int(sketch.count)}", badge(_provenance(t), detail=True)]])
    store = sketch._store
    counts = np.asarray(store.bins, dtype=float)
    keys = np.arange(store.offset, store.offset + len(counts))
    used = counts > 0
    values_ms = np.array([sketch._mapping.value(int(k)) for k in keys[used]]) * 1000.0
    cum = np.cumsum(counts[used]) / counts.sum()
    fig = go.Figure(go.Scatter(x=values_ms, y=cum, mode="lines", line={"shape": "hv", "color": PALETTE[0]}, name="all devices"))
    fig.update_xaxes(title="latency (ms), DDSketch buckets (±1%)", type="log" if values_ms[-1] / values_ms[0] > 20 else "linear")
    fig.update_yaxes(title="share of inferences", range=[0, 1.02])
    fig.update_layout(showlegend=False)
    return body + plot_html(fig, f"plot-telemetry-latency-{i}", height=300, title="Latency distribution (merged window sketches)")


def _confidence_block(t: Telemetry, i: int) -> str:
    from edgeproof.telemetry import merged_histogram

    metrics = [m for w in t.windows for m in w.metrics if m.name == CONFIDENCE]
    bounds, counts = merged_histogram(metrics)
    if not counts or not sum(counts):
        return note("No confidence was sampled (the recorder computes it on a configured share of inferences).")
    edges = [0.0, *bounds, 1.0]
    labels = [f"{lo:.1f}–{hi:.1f}" for lo, hi in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=labels, y=counts, marker={"color": PALETTE[2]}))
    fig.update_xaxes(title="top-1 probability of sampled inferences")
    fig.update_yaxes(title="inferences")
    return plot_html(fig, f"plot-telemetry-confidence-{i}", height=280, title=f"Confidence ({sum(counts)} sampled inferences)")


def _fallback_block(t: Telemetry, i: int) -> str:
    """The policy's fallback rate per window, over time; the provider's (silent CPU) fallback beside it."""
    from edgeproof.telemetry import counter_total

    points = []
    for w in sorted(t.windows, key=lambda w: w.end_unix_ns):
        n = counter_total([w], "edgeproof.inference.count")
        fell = counter_total([w], "edgeproof.fallback.policy")
        if n and fell is not None:
            points.append((w.end_unix_ns, fell / n))
    provider = counter_total(t.windows, "edgeproof.fallback.provider.inferences")
    total = counter_total(t.windows, "edgeproof.inference.count") or 0
    words = []
    if provider is not None and total:
        words.append(f"provider (silent CPU) fallback: {provider / total:.2%} of {int(total)} inferences")
    if not points:
        return note("; ".join(words) or "No fallback policy is configured on these devices.")
    start = points[0][0]
    x = [(p[0] - start) / 1e9 for p in points]
    y = [p[1] * 100 for p in points]
    overall = sum(counter_total([w], "edgeproof.fallback.policy") or 0 for w in t.windows) / max(total, 1)
    words.insert(0, f"policy fallback: {overall:.2%} of inferences over {len(points)} windows")
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers", line={"color": FAIL}, name="policy fallback"))
    fig.update_xaxes(title="seconds since the first window ended")
    fig.update_yaxes(title="fallback %", rangemode="tozero")
    return note("; ".join(words)) + plot_html(fig, f"plot-telemetry-fallback-{i}", height=260, title="Fallback rate per window")


def _events_block(t: Telemetry) -> str:
    if not t.events:
        return note("No events.")
    counts = Counter(e.type for e in t.events)
    body = table(["event", "count"], [[esc(k), str(v)] for k, v in counts.most_common()])
    listed = sorted(t.events, key=lambda e: e.time_unix_ns)[-MAX_EVENTS_LISTED:]
    rows = [
        [esc(e.labels.device_id), esc(e.type), esc(", ".join(f"{k}={v}" for k, v in sorted(e.attributes.items()) if k != "path")[:160])]
        for e in listed
    ]
    return body + f"<details><summary>The last {len(listed)} events</summary>{table(['device', 'event', 'attributes'], rows)}</details>"


def section(inputs: Inputs) -> Section:
    found = read_telemetry(inputs.root)
    if not found:
        return absent_section(
            "telemetry",
            "Telemetry",
            "No telemetry/ folder here: the on-device recorder (edgeproof.telemetry.Recorder) writes its segment files there.",
        )
    body = note(
        "What the on-device recorder wrote: windows of aggregates (a latency sketch, counters, a confidence histogram) "
        "and events; never raw inputs."
    )
    from edgeproof.telemetry import counter_total

    for i, t in enumerate(found):
        devices = sorted({w.labels.device_id for w in t.windows})
        body += f"<h3>{esc(', '.join(devices[:4]) + (' …' if len(devices) > 4 else '') or 'no windows')} {source(t.rel)}</h3>"
        errors = counter_total(t.windows, "edgeproof.inference.errors")
        if errors:
            body += note(f"{int(errors)} inference call(s) raised.")
        if t.problems:
            body += note(f"{len(t.problems)} malformed frame(s) skipped; first: {t.problems[0]}")
        body += _latency_block(t, i) + _confidence_block(t, i) + _fallback_block(t, i) + _events_block(t)
    return Section("telemetry", "Telemetry", body, kinds=frozenset({"measured"}))
