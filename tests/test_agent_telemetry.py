"""The device agent's ``--telemetry DIR``: a profile job measured on a real agent subprocess leaves one
``edgeproof.telemetry/1`` window of its samples and its events; without edgeproof.telemetry the agent
still runs and says why it records nothing; a failure to write never fails the job."""

from __future__ import annotations

import sys
from pathlib import Path

import jsonschema
import numpy as np

from conftest import DIGITS_MODEL
from edgeproof.agent import connect
from edgeproof.farm.inventory import Device
from edgeproof.measure.runner import ProfileOptions
from edgeproof.records import RuntimeSettings
from edgeproof.runners.agent import AgentRunner
from edgeproof.telemetry import load_json_schema, merged_sketch, quantile, read_segments

# enough samples that the median is not one jittery sample; the digits model runs them in well under a second
OPTIONS = ProfileOptions(
    min_sessions=1, max_sessions=1, samples_per_session=200, warmup=5, time_budget_s=5, cold_start_repeats=0, profile_nodes=False
)
AGENT_SRC = str(Path(__file__).resolve().parents[1] / "agent" / "src")


def test_a_profile_job_writes_one_window_of_its_samples_and_its_events(tmp_path):
    directory = tmp_path / "telemetry"
    device = Device(id="recording", extra_args=("--telemetry", str(directory)))
    with AgentRunner(device) as runner:
        assert runner._client is not None
        hello = runner._client.request("hello")
        assert hello["telemetry"] == {"recording": True, "directory": str(directory), "schema": "edgeproof.telemetry/1"}
        prep = runner.prepare(DIGITS_MODEL, OPTIONS)
        record = runner.run(prep, RuntimeSettings(), OPTIONS)

    read = read_segments(directory)
    assert read.problems == []
    schema = load_json_schema()
    for item in read.records:
        jsonschema.validate(item.to_dict(), schema)
    assert len(read.windows) == 1  # the cold-start-only job that closes the run timed nothing: no window
    window = read.windows[0]
    model_sha = window.labels.model_sha256
    assert window.labels.device_id == "recording" and window.labels.accelerator == "CPUExecutionProvider"
    assert len(model_sha) == 64
    duration = window.metric("edgeproof.inference.duration")
    assert duration is not None and duration.count == record.latency.n_samples
    assert window.metric("edgeproof.inference.count").value == record.latency.n_samples
    assert window.metric("edgeproof.inference.errors").value == 0
    p50_ms = quantile(merged_sketch([duration]), 0.5) * 1000.0
    assert abs(p50_ms - record.latency.p50_ms) <= 0.02 * record.latency.p50_ms
    assert duration.min * 1000.0 == record.latency.min_ms and duration.max * 1000.0 == record.latency.max_ms
    events = {e.type: e for e in read.events}
    assert events["model_load"].attributes == {"model_sha256": model_sha}
    assert events["provider_placement"].attributes == {"requested": ["CPUExecutionProvider"], "active": ["CPUExecutionProvider"]}
    seqs = sorted(r.seq for r in read.records)
    assert seqs == list(range(len(seqs)))  # one per-boot sequence across windows and events


def test_without_the_option_or_without_edgeproof_telemetry_hello_says_why_nothing_is_recorded(tmp_path):
    client, _ = connect(Device(id="plain"))
    try:
        assert client.request("hello")["telemetry"] == {
            "recording": False,
            "reason": "not asked for (start the agent with --telemetry DIR)",
        }
    finally:
        client.link.close()
    # a board without edgeproof installed: the agent runs all the same
    script = tmp_path / "bare_board.py"
    script.write_text(
        "import sys\nsys.modules['edgeproof.telemetry'] = None  # not installed\n"
        "from edgeproof_agent.__main__ import main\nsys.exit(main())\n"
    )
    device = Device(id="bare", agent=f"{sys.executable} {script}", extra_args=("--telemetry", str(tmp_path / "t")))
    client, _ = connect(device)
    try:
        status = client.request("hello")["telemetry"]
    finally:
        client.link.close()
    assert status["recording"] is False
    assert status["reason"].startswith("edgeproof.telemetry is not installed on the board")


def test_a_failure_to_write_is_a_warning_not_a_failed_job(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(AGENT_SRC)
    from edgeproof_agent._telemetry import JobTelemetry

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the telemetry folder should be")
    sessions = [{"samples_ms": list(np.linspace(1.0, 2.0, 20)), "providers": ["CPUExecutionProvider"]}]
    warnings = JobTelemetry(blocked).write_job("cam-1", None, ["CPUExecutionProvider"], [("ab" * 32, sessions)], 0)
    assert len(warnings) == 1 and warnings[0].startswith(f"telemetry not written to {blocked}: ")


def test_a_board_that_cannot_write_its_telemetry_says_so_in_the_record(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with AgentRunner(Device(id="full-disk", extra_args=("--telemetry", str(blocked)))) as runner:
        record = runner.run(runner.prepare(DIGITS_MODEL, OPTIONS), RuntimeSettings(), OPTIONS)
    assert record.latency.n_samples == 200  # the job still measured
    assert any(w.startswith("agent full-disk: telemetry not written to") for w in record.warnings), record.warnings
