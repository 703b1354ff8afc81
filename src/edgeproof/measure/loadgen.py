"""MLPerf LoadGen as the engine for conformant runs: its scheduling, its VALID/INVALID and early stopping."""

from __future__ import annotations

import re
import tempfile
import time
from importlib import metadata
from pathlib import Path

import mlperf_loadgen as lg

from edgeproof.errors import DataError
from edgeproof.measure.scenarios import Feeds, RunFn, Scenario

_SCENARIOS = {"single-stream": lg.TestScenario.SingleStream, "server": lg.TestScenario.Server, "offline": lg.TestScenario.Offline}


def parse_summary(text: str) -> dict:
    """The parts of ``mlperf_log_summary.txt`` a verdict needs: validity, early stopping, percentiles."""
    out: dict = {"early_stopping": [], "percentiles_ns": {}}
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r"Result is\s*:\s*(\w+)", line):
            out["result"] = m.group(1)
        elif m := re.match(r"(Min duration|Min queries|Early stopping) satisfied\s*:\s*(\w+)", line):
            out[m.group(1).lower().replace(" ", "_") + "_satisfied"] = m.group(2) == "Yes"
        elif line.startswith("* "):  # only the early-stopping section lists bullet lines
            out["early_stopping"].append(line[2:])
        elif m := re.match(r"([\d.]+) percentile latency \(ns\)\s*:\s*(\d+)", line):
            out["percentiles_ns"][m.group(1)] = int(m.group(2))
        elif m := re.match(r"QPS w/ loadgen overhead\s*:\s*([\d.]+)", line):
            out["qps_with_loadgen_overhead"] = float(m.group(1))
        elif m := re.match(r"Samples per second\s*:\s*([\d.]+)", line):
            out["samples_per_second"] = float(m.group(1))
    return out


def run_loadgen(
    run: RunFn, feeds: list[Feeds], scenario: Scenario, min_queries: int, min_duration_ms: int, expected_latency_ms: float
) -> tuple[list[float], dict]:
    """Run one LoadGen performance test; returns our per-query service times (ms) and LoadGen's summary."""
    if scenario.name not in _SCENARIOS:
        raise DataError(
            f"--engine loadgen: LoadGen has no {scenario.name} scenario (it has single-stream, server:HZ, offline); use --engine builtin"
        )
    settings = lg.TestSettings()
    settings.scenario = _SCENARIOS[scenario.name]
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_query_count = min_queries
    settings.min_duration_ms = min_duration_ms
    expected_ns = max(int(expected_latency_ms * 1e6), 1000)
    if scenario.name == "single-stream":
        settings.single_stream_expected_latency_ns = expected_ns
    elif scenario.name == "server":
        assert scenario.rate_hz is not None, "a server scenario always has a rate"
        settings.server_target_qps = float(scenario.rate_hz)
        settings.server_target_latency_ns = int((scenario.deadline_ms or 1000.0 / scenario.rate_hz) * 1e6)
    else:
        settings.offline_expected_qps = 1e9 / expected_ns

    clock = time.perf_counter_ns
    k = len(feeds)
    service_ns: list[int] = []

    def issue_queries(query_samples):
        responses = []
        for qs in query_samples:
            t0 = clock()
            run(None, feeds[qs.index % k])
            service_ns.append(clock() - t0)
            responses.append(lg.QuerySampleResponse(qs.id, 0, 0))
        lg.QuerySamplesComplete(responses)

    sut = lg.ConstructSUT(issue_queries, lambda: None)
    qsl = lg.ConstructQSL(k, k, lambda idx: None, lambda idx: None)
    try:
        with tempfile.TemporaryDirectory(prefix="edgeproof-loadgen-") as tmp:
            out = lg.LogOutputSettings()
            out.outdir = tmp
            out.copy_summary_to_stdout = False
            log = lg.LogSettings()
            log.log_output = out
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
            summary = parse_summary((Path(tmp) / "mlperf_log_summary.txt").read_text())
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    summary["loadgen_version"] = metadata.version("mlcommons-loadgen")
    return [ns / 1e6 for ns in service_ns], summary
