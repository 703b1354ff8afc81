"""The second bundled example (free spatial dims, normalised inputs, two outputs, a pipeline) end to end."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, run_cli

GLYPHS = ROOT / "examples" / "glyphs"


def test_the_example_is_small_and_its_model_matches_model_json():
    import hashlib

    total = sum(p.stat().st_size for p in GLYPHS.iterdir() if p.is_file())
    assert total < 2 * 2**20
    facts = json.loads((GLYPHS / "model.json").read_text())
    assert hashlib.sha256((GLYPHS / "model.onnx").read_bytes()).hexdigest() == facts["sha256"]
    assert facts["test_top1"] > 0.8 and facts["test_ink_mse"] < facts["ink_variance"] / 2


@pytest.mark.slow
def test_optimize_and_check_run_end_to_end_with_no_hand_written_slice(tmp_path):
    model, contract = str(GLYPHS / "model.onnx"), str(GLYPHS / "edgeproof.toml")
    res = run_cli(
        "optimize", model, "--contract", contract, "--max-candidates", "4", "--time-budget", "60",
        "--out", str(tmp_path / "opt"), "--json", str(tmp_path / "search.json"), timeout=900,
    )  # fmt: skip
    assert res.returncode in (0, 1, 3), res.stderr
    search = json.loads((tmp_path / "search.json").read_text())
    assert len(search["variants"]) >= 2 and search["candidates"]
    res = run_cli("check", model, "--contract", contract, "--sessions", "1", "--samples", "50", "--json", str(tmp_path / "run.json"))
    assert res.returncode in (0, 1, 3), res.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["stages"]["total"]["p95_ms"] > 0 and record["evaluation"]["metric"] == "logits:top1, ink:mse"
    assert {"nominal", "noise", "low_light", "occlusion"} <= set(record["evaluation"]["slices"])
