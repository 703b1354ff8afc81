"""Plotly figures embedded offline: one shared look, a div plus an inline call per figure, plotly.js once per page."""

from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.json import to_json_plotly
from plotly.offline import get_plotlyjs

from edgeproof.report._html import esc

# Colours keep their meaning across every figure of the report.
PASS = "#1b7f45"
FAIL = "#c0392b"
WARN = "#b7791f"
SIM = "#8a4fbf"
GREY = "#8a94a6"
PALETTE = ("#2b6cb0", "#dd6b20", "#2f855a", "#b83280", "#4c51bf", "#c05621", "#319795", "#744210", "#553c9a", "#9b2c2c")
STATUS_COLOUR = {"pass": PASS, "fail": FAIL, "unverified": WARN, "waived": "#2b6cb0"}

# plotly's white look; applying it in Python deep-copies it into every figure (most of a report's build time)
TEMPLATE, TEMPLATE_VAR = "plotly_white", "EDGEPROOF_TEMPLATE"
_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud", "select2d", "lasso2d"]}
_FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'


def ptext(text: object) -> str:
    """Record text for a plotly label: plotly reads a few HTML tags in labels, so escape them (it decodes entities)."""
    return html.escape(str(text), quote=False)


# Past this spread between the smallest and largest value a linear axis squashes the small ones into a line.
LOG_AXIS_SPREAD = 20.0


def wants_log_axis(low: float, high: float) -> bool:
    return low > 0 and high / low > LOG_AXIS_SPREAD


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def simulated_name(name: str, simulated: bool) -> str:
    """A trace name that says it is simulated wherever the trace appears (legend and hover)."""
    return f"{name} [simulated]" if simulated else name


def styled(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    """The report's look: readable fonts, legend below the plot area (the white template is set once per page, see ``plotly_script``)."""
    fig.update_layout(
        height=height,
        margin={"l": 70, "r": 30, "t": 56 if title else 24, "b": 60},
        font={"family": _FONT, "size": 13, "color": "#1d2430"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0},
        hoverlabel={"font": {"family": _FONT}},
    )
    if title:
        fig.update_layout(title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}})
    return fig


def plot_html(
    fig: go.Figure, plot_id: str, height: int = 420, title: str | None = None, layout: dict[str, Any] | None = None, modebar: bool = True
) -> str:
    """A figure as a sized div and the inline script that draws it (plotly.js must already be on the page).

    ``layout`` changes the report's look for this figure (a compact plot's margins and legend); a plot
    too narrow for plotly's toolbar goes without it (``modebar``).
    """
    styled(fig, height, title)
    if layout:
        fig.update_layout(layout)
    figure = fig.to_plotly_json()
    figure["layout"].pop("template", None)
    # to_json_plotly escapes < and >, so no text from a record can close the script element
    payload = to_json_plotly(figure)
    config = _CONFIG if modebar else {**_CONFIG, "displayModeBar": False}
    return (
        f'<div id="{esc(plot_id)}" class="plot" style="height:{height}px"></div>'
        f"<script>(function(){{var f={payload};f.layout.template={TEMPLATE_VAR};"
        f"Plotly.newPlot({json.dumps(plot_id)},f.data,f.layout,{json.dumps(config)});}})();</script>"
    )


def plotly_script() -> str:
    """plotly.js itself, inline, so the page needs no network, and the report's plot template, once for every plot."""
    template = to_json_plotly(pio.templates[TEMPLATE].to_plotly_json())
    return f'<script type="text/javascript">{get_plotlyjs()}</script><script>var {TEMPLATE_VAR}={template};</script>'
