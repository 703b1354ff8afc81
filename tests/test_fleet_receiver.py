"""The fleet receiver on loopback: real recorder segments and our real OTLP exporter, each device with its own token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeproof.cli import app
from edgeproof.fleet import FleetStore
from edgeproof.fleet._receiver import Receiver
from edgeproof.fleet._tokens import add_token
from edgeproof.telemetry import Labels, Recorder, TelemetryConfig, export_otlp, read_segments

STRATUM = {"chip_revision": "rev-b", "firmware_version": "fw-2", "model_sha256": "ab" * 32, "region": "eu", "cohort": "canary"}


def _record(directory: Path, device_id: str, calls: int) -> Path:
    """A real recorder's segments for ``device_id`` after ``calls`` inferences."""
    rec = Recorder(
        TelemetryConfig(directory=directory, labels=Labels(device_id=device_id, **STRATUM), sample_every=1, min_free_bytes=0),
        read_power=False,
    )
    rec.enable(start_thread=False)
    infer = rec.wrap(lambda x: np.array([[x, 1 - x]]))
    for p in np.linspace(0.5, 1.0, calls):
        infer(float(p))
    rec.close()
    return directory


def _post(url: str, body: bytes, token: str | None, content_type: str = "application/octet-stream") -> tuple[int, dict]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _status(receiver: Receiver) -> dict:
    with urllib.request.urlopen(f"{receiver.url}/v1/status", timeout=10) as response:
        return json.loads(response.read())["counts"]


@pytest.fixture
def fleet(tmp_path):
    tokens = tmp_path / "tokens.json"
    return {
        "tokens": tokens,
        "cam-7": add_token(tokens, "cam-7"),
        "cam-8": add_token(tokens, "cam-8"),
        "store": tmp_path / "fleet.duckdb",
        "spool": tmp_path / "spool",
    }


def test_segments_by_token_count_once_and_refuse_strangers(tmp_path, fleet):
    segments = _record(tmp_path / "cam-7", "cam-7", 30)
    body = b"".join(p.read_bytes() for p in sorted(segments.glob("*.eptseg")))
    recorded = read_segments(segments).windows
    receiver = Receiver(fleet["store"], fleet["spool"], fleet["tokens"], port=0)
    with receiver:
        url = f"{receiver.url}/v1/segments"
        assert _post(url, body, "not-a-token")[0] == 401
        assert _post(url, body, None)[0] == 401
        status, reply = _post(url, body, fleet["cam-8"])  # cam-8 sending cam-7's rows
        assert status == 403 and "cam-7" in reply["error"]
        status, reply = _post(url, body, fleet["cam-7"])
        assert status == 200 and reply["windows"] == len(recorded)
        assert receiver.flush()
        assert _post(url, body, fleet["cam-7"])[0] == 200  # the same windows again
        status, reply = _post(url, b"EPFR garbage that is no frame", fleet["cam-7"])
        assert status == 400 and reply["error"]
        assert _post(url, b"", fleet["cam-7"])[0] == 400
        assert receiver.flush()
        counts = _status(receiver)  # the server is still up after the malformed bodies
        assert list(fleet["spool"].glob("*.eptseg")) == []  # ingested and removed; refused bodies never landed
    assert counts["unauthorized"] == 2 and counts["forbidden"] == 1 and counts["malformed"] == 2
    assert counts["accepted_segment_uploads"] == 2
    assert counts["ingested_windows"] == len(recorded) and counts["ingested_duplicates"] >= len(recorded)
    with FleetStore(fleet["store"]) as store:
        rows = store.con.execute("SELECT device_id, count(*), sum(inferences) FROM windows GROUP BY ALL").fetchall()
    assert rows == [("cam-7", len(recorded), 30.0)]


def test_otlp_from_our_exporter_lands_as_windows(tmp_path, fleet, monkeypatch):
    windows = read_segments(_record(tmp_path / "cam-8", "cam-8", 20)).windows
    receiver = Receiver(fleet["store"], fleet["spool"], fleet["tokens"], port=0)
    with receiver:
        endpoint = f"{receiver.url}/v1/metrics"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", f"Authorization=Bearer%20{fleet['cam-7']}")
        assert not export_otlp(windows, endpoint)  # cam-7's token for cam-8's windows: refused
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", f"Authorization=Bearer%20{fleet['cam-8']}")
        assert export_otlp(windows, endpoint)
        assert export_otlp(windows, endpoint)  # a re-send
        status, reply = _post(endpoint, b"\xff\x00 not protobuf", fleet["cam-8"], "application/x-protobuf")
        assert status == 400 and "OTLP" in reply["error"]
        assert _post(endpoint, b'{"resourceMetrics": [{}]}', fleet["cam-8"], "application/json")[0] == 400
        assert receiver.flush()
        counts = _status(receiver)
    assert counts["forbidden"] == 1 and counts["malformed"] == 2 and counts["accepted_otlp_uploads"] == 2
    with FleetStore(fleet["store"]) as store:
        stored = store.con.execute(
            "SELECT boot_id, seq, start_ns, end_ns, chip_revision, cohort, inferences, latency_count, confidence_count FROM windows ORDER BY seq"
        ).fetchall()
        assert store.counts()["rejects"] == 0
    expected = []
    for w in sorted(windows, key=lambda w: w.seq):
        count, duration, confidence = (
            w.metric(n) for n in ("edgeproof.inference.count", "edgeproof.inference.duration", "edgeproof.inference.confidence")
        )
        expected.append(
            (
                w.boot_id,
                w.seq,
                w.start_unix_ns,
                w.end_unix_ns,
                "rev-b",
                "canary",
                count.value if count else None,
                float(duration.count) if duration else None,
                float(confidence.count) if confidence else None,
            )
        )
    assert stored == expected and sum(r[6] or 0 for r in stored) == 20.0


def test_token_add_keeps_only_the_hash(tmp_path):
    tokens = tmp_path / "tokens.json"
    result = CliRunner().invoke(app, ["fleet", "token", "add", "cam-9", "--tokens", str(tokens)])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[0]
    text = tokens.read_text()
    assert token not in text and json.loads(text)["devices"]["cam-9"].startswith("sha256:")
    assert os.stat(tokens).st_mode & 0o077 == 0
    (tmp_path / "bad.json").write_text('{"devices": {"cam-9": "plaintext"}}')
    result = CliRunner().invoke(app, ["fleet", "serve", "--spool", str(tmp_path / "s"), "--tokens", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "sha256" in result.output


@pytest.mark.slow  # a fresh interpreter importing the CLI
def test_an_acknowledged_upload_survives_kill_9_of_fleet_serve(tmp_path, fleet):
    segments = _record(tmp_path / "cam-7", "cam-7", 10)
    body = b"".join(p.read_bytes() for p in sorted(segments.glob("*.eptseg")))
    command = [sys.executable, "-m", "edgeproof.cli", "fleet", "serve", "--port", "0", "--store", str(fleet["store"])]
    command += ["--spool", str(fleet["spool"]), "--tokens", str(fleet["tokens"]), "--ingest-every-s", "60"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "400"})
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        url = line.split("receiving on ", 1)[1].split()[0]
        status, reply = _post(f"{url}/v1/segments", body, fleet["cam-7"])
        assert status == 200
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    # whatever the killed process had or had not ingested, the next receiver's first pass completes it, once
    with Receiver(fleet["store"], fleet["spool"], fleet["tokens"], port=0) as receiver:
        assert receiver.flush()
    with FleetStore(fleet["store"]) as store:
        assert store.counts()["windows"] == reply["windows"] == len(read_segments(segments).windows)
    assert list(fleet["spool"].glob("*.eptseg")) == []


def test_a_staged_upload_left_by_a_crash_is_cleared_when_the_spool_opens(tmp_path):
    from edgeproof.fleet._receiver import Spool

    spool = Spool(tmp_path / "spool")
    staged = spool.stage(b"never acknowledged")
    kept = spool.commit(spool.stage(b"acknowledged"), "dev-1")
    reopened = Spool(tmp_path / "spool")
    assert reopened.stale_removed == 1 and not staged.exists() and kept.exists()
