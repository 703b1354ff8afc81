"""Self-contained HTML report of an edgeproof output folder: verdicts, latency, Pareto, accuracy, placement, soak, gate, BOM."""

from edgeproof.report._build import build_report, render_report
from edgeproof.report._collect import Inputs, collect

__all__ = ["Inputs", "build_report", "collect", "render_report"]
