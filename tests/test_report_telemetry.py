"""The report's telemetry panel, from a real recorded burst of the digits model with a confidence policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.report._build import render_report
from edgeproof.report._collect import Inputs
from edgeproof.report._telemetry import section
from edgeproof.telemetry import Labels, read_segments, record_burst

MODEL = Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.onnx"


def test_burst_then_panel_shows_latency_confidence_fallback_and_events(tmp_path):
    rows = np.random.default_rng(0).random((120, 1, 32, 32), dtype=np.float32)  # noise: the classifier is unsure
    burst = record_burst(MODEL, rows, tmp_path / "telemetry" / "cam-1", Labels(device_id="cam-1", cohort="demo"), fallback=MODEL)
    read = read_segments(tmp_path / "telemetry" / "cam-1")
    assert read.problems == [] and burst.windows == len(read.windows) >= 4
    assert sum(m.value for w in read.windows for m in w.metrics if m.name == "edgeproof.inference.count") == 120
    assert 0 < burst.policy_fallbacks <= 120
    html = section(Inputs(root=tmp_path)).body
    assert "measured:telemetry:1 device" in html
    assert "plot-telemetry-latency-0" in html and "plot-telemetry-confidence-0" in html and "plot-telemetry-fallback-0" in html
    assert "policy fallback:" in html and "model_load" in html and "provider_placement" in html
    page = render_report(Inputs(root=tmp_path))
    assert 'id="telemetry"' in page


def test_no_telemetry_folder_says_which_component_writes_one(tmp_path):
    s = section(Inputs(root=tmp_path))
    assert s.empty and "telemetry/" in s.body
