"""Thermal soak curves: temperature and latency over time with the governor's throttle events."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from edgeproof.records import RunRecord, SoakTrace
from edgeproof.report._collect import Found, Inputs
from edgeproof.report._html import Section, absent_section, badge, esc, note, provenance_kind, source, table
from edgeproof.report._labels import precision_override, run_label, simulated
from edgeproof.report._plots import FAIL, PASS, SIM, plot_html

MAX_EVENT_LINES = 24
# Every simulated board run carries the simulator's default soak; past a few, their curves only repeat the table.
MAX_DEFAULT_SOAK_PLOTS = 2


def soaks(inputs: Inputs) -> list[tuple[Found, SoakTrace]]:
    """Runs that carry a soak time series, the soaks a user asked for first; identical soaks once."""
    seen: set[tuple[Any, ...]] = set()
    found = []
    for f in inputs.runs:
        rec: RunRecord = f.item
        soak = rec.simulation.soak if rec.simulation is not None else None
        if soak is None or not (soak.t_s and soak.temperature_c and soak.latency_ms):
            continue
        key = (
            rec.model.sha256,
            rec.target.id,
            rec.target.power_mode,
            precision_override(rec),
            soak.duration_s,
            soak.ambient_c,
            soak.rate_hz,
        )
        if key not in seen:
            seen.add(key)
            found.append((f, soak))
    return sorted(found, key=lambda pair: not pair[1].requested)


def governor_of(rec: RunRecord) -> dict[str, Any]:
    firmware = rec.target.firmware or {}
    governor = firmware.get("governor")
    return governor if isinstance(governor, dict) else {}


def soak_figure(rec: RunRecord, soak: SoakTrace) -> go.Figure:
    t = np.asarray(soak.t_s)
    tag = " [simulated]" if simulated(rec) else ""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.55, 0.45])
    fig.add_trace(
        go.Scatter(
            x=t,
            y=np.asarray(soak.temperature_c),
            mode="lines",
            name=f"temperature{tag}",
            line={"color": FAIL, "width": 2},
            hovertemplate="%{x:.0f} s: %{y:.1f} °C<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=t,
            y=np.asarray(soak.latency_ms),
            mode="lines",
            name=f"latency{tag}",
            line={"color": SIM, "width": 2, "shape": "hv"},
            hovertemplate="%{x:.0f} s: %{y:.4g} ms<extra></extra>",
        ),
        row=2,
        col=1,
    )
    governor = governor_of(rec)
    for key, label in (("trip_c", "trip"), ("clear_c", "clear")):
        if isinstance(governor.get(key), (int, float)):
            fig.add_hline(
                y=governor[key],
                row=1,
                col=1,
                line={"color": "#8a94a6", "width": 1, "dash": "dot"},
                annotation_text=f"{label} {governor[key]:g} °C",
                annotation_position="bottom right",
            )
    events = soak.throttle_events
    for kind, colour, symbol in (("trip", FAIL, "triangle-down"), ("clear", PASS, "triangle-up")):
        hits = [e for e in events if e.event == kind]
        if hits:
            fig.add_trace(
                go.Scatter(
                    x=[e.t_s for e in hits],
                    y=[e.temperature_c for e in hits],
                    mode="markers",
                    name=f"throttle {kind}{tag}",
                    marker={"symbol": symbol, "size": 11, "color": colour, "line": {"width": 1, "color": "#ffffff"}},
                    hovertemplate=f"{kind} at %{{x:.0f}} s (%{{y:.1f}} °C)<extra></extra>",
                ),
                row=1,
                col=1,
            )
    for e in events[:MAX_EVENT_LINES]:
        fig.add_vline(x=e.t_s, line={"color": FAIL if e.event == "trip" else PASS, "width": 1, "dash": "dot"})
    fig.update_yaxes(title_text="temperature (°C)", row=1, col=1)
    fig.update_yaxes(title_text="latency (ms)", row=2, col=1)
    fig.update_xaxes(title_text="time under sustained load (s)", row=2, col=1)
    return fig


def _summary(soak: SoakTrace) -> str:
    parts = [f"{soak.duration_s:.0f} s at {soak.ambient_c:g} °C ambient"]
    parts.append(f"at {soak.rate_hz:g} inferences/s" if soak.rate_hz else "back to back")
    parts.append(f"peak {soak.peak_temperature_c:.1f} °C")
    parts.append(f"sustained {soak.sustained_w:.2f} W")
    if soak.first_trip_s is None:
        parts.append("no throttling")
    else:
        before, after = soak.mean_latency_before_trip_ms, soak.mean_latency_after_trip_ms
        parts.append(f"first throttle at {soak.first_trip_s:.0f} s, {len(soak.throttle_events)} governor events")
        if before is not None and after is not None:
            parts.append(f"mean latency {before:.4g} → {after:.4g} ms")
    return ", ".join(parts)


def _row(f: Found, soak: SoakTrace) -> list[str]:
    rec: RunRecord = f.item
    return [
        esc(run_label(rec)),
        source(f.rel),
        badge(rec.latency_provenance),
        "asked for" if soak.requested else "simulator default",
        esc(f"{soak.duration_s:.0f} s"),
        esc(f"{soak.ambient_c:g} °C"),
        esc(f"{soak.peak_temperature_c:.1f} °C"),
        esc(f"{soak.sustained_w:.2f} W"),
        esc(f"{soak.first_trip_s:.0f} s") if soak.first_trip_s is not None else "none",
    ]


def section(inputs: Inputs) -> Section:
    found = soaks(inputs)
    if not found:
        return absent_section("thermal", "Thermal soak", "No soak ran in this folder: `edgeproof simulate --soak 10m` runs one.")
    body = note(
        "Temperature and latency over time under sustained load, from the board's thermal model and its firmware's governor: "
        "when the temperature reaches the trip point the governor lowers the clocks and latency rises until it cools to the clear point."
    )
    body += table(
        ["run", "file", "evidence", "soak", "duration", "ambient", "peak", "sustained power", "first throttle"],
        [_row(f, s) for f, s in found],
    )
    asked, defaults = "", list[str]()
    for i, (f, soak) in enumerate(found):
        rec: RunRecord = f.item
        if not soak.requested and len(defaults) == MAX_DEFAULT_SOAK_PLOTS:
            continue
        why = "" if soak.requested else " The simulator's default soak (no --soak given), from which it takes sustained power."
        block = f"<h3>{esc(run_label(rec))} {badge(rec.latency_provenance, detail=True)} {source(f.rel)}</h3>"
        block += f'<p class="note">{esc(_summary(soak))}.{esc(why)}</p>'
        block += plot_html(soak_figure(rec, soak), f"plot-soak-{i}", height=460)
        if soak.requested:
            asked += block
        else:
            defaults.append(block)
    body += asked
    if defaults:
        unplotted = sum(1 for _, s in found if not s.requested) - len(defaults)
        more = f" ({unplotted} more only in the table)" if unplotted else ""
        body += f"<details><summary>Curves of {len(defaults)} default soak(s){more}</summary>{''.join(defaults)}</details>"
    kinds = frozenset(provenance_kind(f.item.latency_provenance) for f, _ in found)
    return Section("thermal", "Thermal soak", body, kinds)
