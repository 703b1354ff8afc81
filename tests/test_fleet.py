"""Fleet side: idempotent ingest of real segment files, refused rows, retention and deletion, Parquet export, alarms, playbooks, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from edgeproof.cli import app
from edgeproof.contract import load_contract
from edgeproof.fleet import (
    ALARM_NAMES,
    Fault,
    FleetSimulator,
    FleetSpec,
    FleetStore,
    Release,
    evaluate_alarms,
    load_playbook,
    load_scenario,
    write_segment,
)
from edgeproof.fleet._sketch import quantiles
from edgeproof.telemetry import Labels, Recorder, TelemetryConfig
from edgeproof.telemetry._aggregate import add_many, new_sketch, sketch_bytes
from edgeproof.telemetry._segments import ARROW_SCHEMA, _row

LABELS = dict(chip_revision="A1", firmware_version="fw-1", model_sha256="m" * 64, region="eu", cohort="canary")


def _record(directory: Path, device: str, n: int = 200, **labels: str) -> None:
    """A real recorder around a trivial callable: one window of ``n`` inferences and its events, on disk."""
    config = TelemetryConfig(directory=directory, labels=Labels(device_id=device, **{**LABELS, **labels}), min_free_bytes=0)
    rec = Recorder(config, boot_id=f"boot-{device}", read_power=False)
    rec.enable(start_thread=False)
    infer = rec.wrap(lambda x: x)
    for i in range(n):
        infer(i)
    rec.flush()
    rec.close()


def _keys(store: FleetStore) -> list[tuple[str, str, int]]:
    return store.con.execute(
        "SELECT device_id, boot_id, seq FROM windows UNION ALL SELECT device_id, boot_id, seq FROM events ORDER BY ALL"
    ).fetchall()


def test_ingest_counts_each_record_once_whatever_the_order_or_repeats(tmp_path):
    spool = tmp_path / "spool"
    for d in range(3):
        _record(spool / f"dev{d}", f"dev{d}")
    files = sorted(spool.rglob("*.eptseg"))
    with FleetStore(tmp_path / "a.duckdb") as store:
        first = store.ingest([spool])
        assert first.windows >= 3 and first.events >= 3 and first.duplicates == 0 and first.rejected == 0
        expected = _keys(store)
        # the same files again, and copies of them under other names (a device re-sending): nothing new
        again = store.ingest([spool])
        assert again.rows_read == 0
        resent = tmp_path / "resent"
        resent.mkdir()
        for f in files:
            shutil.copy(f, resent / f"copy-{f.name}")
        copied = store.ingest([resent])
        assert copied.rows_read == first.rows_read and copied.duplicates == first.rows_read
        assert _keys(store) == expected
        p95 = store.con.execute("SELECT latency_p95_s, latency_count, inferences FROM windows WHERE inferences > 0").fetchall()
        assert p95 and all(p > 0 and c == n == 200 for p, c, n in p95)
    with FleetStore(tmp_path / "b.duckdb") as store:
        for f in reversed(files):  # out of order
            store.ingest([f])
        assert _keys(store) == expected


def test_ingest_that_fails_mid_way_keeps_what_it_committed_and_a_rerun_finishes(tmp_path):
    import threading

    from edgeproof.fleet import Sending

    spool = tmp_path / "spool"
    sim = FleetSimulator(FleetSpec(devices=300, seed=3, sending=Sending(duplicate_frac=0.3, frame_rows=97)))
    sim.write(spool, 2)
    threads = threading.active_count()
    acked: list[int] = []

    def fail_on_the_second(commit) -> None:
        acked.append(commit.windows + commit.events)
        if len(acked) == 2:
            raise RuntimeError("the receiver went away")

    with FleetStore(tmp_path / "f.duckdb") as store:
        # small batches of small frames: the reading and flattening threads are still busy when it fails
        with pytest.raises(RuntimeError, match="went away"):
            store.ingest([spool], batch_rows=200, on_commit=fail_on_the_second)
        assert threading.active_count() == threads  # every ingest thread stopped
        assert store.counts()["windows"] + store.counts()["events"] == sum(acked) > 0
        rest = store.ingest([spool])
        stored = _keys(store)
    with FleetStore(tmp_path / "once.duckdb") as fresh:
        once = fresh.ingest([spool])
        assert stored == _keys(fresh) and len(stored) == once.windows + once.events
    assert 0 < rest.rows_read < once.rows_read  # the rerun starts where the committed journal left each file


def test_malformed_rows_are_refused_with_device_and_reason_and_ingest_goes_on(tmp_path):
    spool = tmp_path / "spool"
    _record(spool, "good")
    rows = []
    from edgeproof.telemetry import Event, MetricValue, Window

    good = Labels(device_id="x", **LABELS)
    rows.append(
        _row(Window(Labels(device_id="nolabels", cohort="canary"), "b", 0, 0, 10, [MetricValue("edgeproof.inference.count", value=5.0)]))
    )
    rows.append(
        _row(
            Window(
                Labels(**{**good.to_dict(), "device_id": "negative"}), "b", 0, 0, 10, [MetricValue("edgeproof.inference.count", value=-3.0)]
            )
        )
    )
    rows.append(_row(Event(Labels(**{**good.to_dict(), "device_id": "fine"}), "b", 1, 5, "model_load", {})))
    table = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
    old = pa.Table.from_pylist(
        [_row(Event(Labels(**{**good.to_dict(), "device_id": "old"}), "b", 0, 5, "model_load", {}))], schema=ARROW_SCHEMA
    )
    old = old.replace_schema_metadata({"schema": "edgeproof.telemetry/0"})
    write_segment(spool / "bad.eptseg", [table, old])
    (spool / "corrupt.eptseg").write_bytes(b"EPTSEG1\nEPFR\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with FleetStore(tmp_path / "f.duckdb") as store:
        report = store.ingest([spool])
        refused = {(d, r) for d, r, _ in store.rejects_by_reason()}
        stored = {d for (d,) in store.con.execute("SELECT device_id FROM windows UNION SELECT device_id FROM events").fetchall()}
    assert report.rejected == 3
    assert ("nolabels", "missing labels: chip_revision, firmware_version, model_sha256, region") in refused
    assert ("negative", "negative count in edgeproof.inference.count") in refused
    assert ("old", "schema version 'edgeproof.telemetry/0', the fleet reads 'edgeproof.telemetry/1'") in refused
    assert stored == {"good", "fine"}
    assert [p.what for p in report.problems] == ["checksum mismatch; frame skipped"]


def test_sketch_quantiles_read_column_wise_match_the_library(tmp_path):
    rng = np.random.default_rng(0)
    sketches, expected = [], []
    for i in range(60):
        s = new_sketch()
        add_many(s, rng.lognormal(-7 + rng.normal(), rng.uniform(0.01, 0.6), int(rng.integers(1, 2000))))
        if i % 5 == 0:
            s.add(0.0)  # a zero count: another layout, read by the library
        sketches.append(sketch_bytes(s))
        expected.append(s.get_quantile_value(0.95))
    sketches.append(sketch_bytes(new_sketch()))
    column = pa.array(sketches + [None], pa.binary())
    got = quantiles(column, 0.95)
    assert np.allclose(got[:60], expected, rtol=1e-12)
    assert np.isnan(got[60]) and np.isnan(got[61])
    # some rows only, read where they lie (ingest's path), and a column sliced off its buffers' start
    picked = quantiles(column, 0.95, rows=np.array([7, 0, 61, 5]))
    assert np.allclose(picked[[0, 1, 3]], [expected[7], expected[0], expected[5]], rtol=1e-12) and np.isnan(picked[2])
    assert np.allclose(quantiles(column.slice(3, 10), 0.95), expected[3:13], rtol=1e-12)


def test_retention_deletion_and_parquet_export(tmp_path):
    spool = tmp_path / "spool"
    for d in range(2):
        _record(spool / f"d{d}", f"d{d}")
    with FleetStore(tmp_path / "r.duckdb") as store:
        store.ingest([spool])
        assert store.delete_device("d0") > 0
        assert {d for (d,) in store.con.execute("SELECT DISTINCT device_id FROM windows").fetchall()} == {"d1"}
        written = store.export_parquet(tmp_path / "parquet")
        n_windows = store.counts()["windows"]
        newest = store.con.execute("SELECT max(end_ns) FROM windows").fetchone()[0]
        deleted_windows, _ = store.retain(newest + 1)
        assert deleted_windows == n_windows and store.counts()["windows"] == 0
        # rows older than the retention horizon are refused when they come again
        store.con.execute("DELETE FROM ingest_journal")
        store.ingest([spool])
        assert store.counts()["windows"] == 0
    back = (
        duckdb.connect()
        .execute(f"SELECT count(*), min(chip_revision) FROM read_parquet('{written[0]}/**/*.parquet', hive_partitioning = true)")
        .fetchone()
    )
    assert back == (n_windows, "A1")


def _fleet(seed: int, faults: tuple[Fault, ...], devices: int = 2000, hours: float = 4.0) -> FleetStore:
    sim = FleetSimulator(FleetSpec(devices=devices, seed=seed, faults=faults))
    sim.set_release(np.arange(0, devices, 2), Release("candidate", "c" * 64, "fw-1"), "canary")
    store = FleetStore(":memory:")
    from edgeproof.fleet import flatten

    store.ingest_flat([flatten(t, "memory", 0) for t in sim.advance(hours)])
    return store


FALLBACK = (Fault("provider-fallback", release="candidate", chip_revision="A2", rate=0.05),)


def _detects(seed: int) -> tuple[bool, bool]:
    """(fallback fired in every A2 stratum, some alarm fired outside A2) on the fallback fault; then whether the clean release fired anything."""
    with _fleet(seed, FALLBACK) as store:
        report = evaluate_alarms(store, "canary", "control")
    a2 = {tuple(v.stratum.values()) for v in report.verdicts if v.stratum["chip_revision"] == "A2"}
    fired = {tuple(v.stratum.values()) for v in report.firing if v.alarm == "fallback_rate"}
    outside = [v for v in report.firing if v.stratum["chip_revision"] != "A2"]
    return fired == a2 and bool(a2), bool(outside)


def _clean_fires(seed: int) -> bool:
    with _fleet(seed, ()) as store:
        return bool(evaluate_alarms(store, "canary", "control").firing)


def test_fallback_on_one_chip_revision_fires_there_only_and_a_clean_release_fires_nothing():
    detected, outside = _detects(0)
    assert detected and not outside
    assert not _clean_fires(0)


@pytest.mark.slow
def test_detection_over_20_seeds():
    results = [_detects(seed) for seed in range(20)]
    assert sum(d and not o for d, o in results) >= 19
    assert not any(_clean_fires(seed) for seed in range(20))


def test_too_few_devices_is_inconclusive_never_a_pass():
    with _fleet(0, FALLBACK, devices=60, hours=2) as store:
        report = evaluate_alarms(store, "canary", "control")
    assert report.verdicts and {v.verdict for v in report.verdicts} <= {"inconclusive", "nodata"}
    assert report.outcome() == "undecided"
    assert all("too few devices" in v.reason for v in report.verdicts if v.verdict == "inconclusive")


def test_thresholds_come_from_the_contract_rollback_table(tmp_path):
    contract = tmp_path / "c.toml"
    contract.write_text(
        '[budgets]\np95_ms = 5\n[rollback]\nmax_fallback_frac = "10 %"\nmin_devices = 5\nmax_throttle_per_device_hour = 2\n'
    )
    rollback = load_contract(contract).rollback
    with _fleet(1, FALLBACK, devices=600, hours=2) as store:
        report = evaluate_alarms(store, "canary", "control", rollback)
    fallback = [v for v in report.verdicts if v.alarm == "fallback_rate"]
    assert {v.threshold for v in fallback} == {0.1} and {v.threshold_source for v in fallback} == {"[rollback].max_fallback_frac"}
    assert not [v for v in fallback if v.verdict == "fail"]  # 5% is within a 10% limit
    assert "Bonferroni" in report.correction and set(ALARM_NAMES) == {v.alarm for v in report.verdicts}


def test_playbook_and_scenario_mistakes_name_file_line_and_key(tmp_path):
    assert set(load_playbook()) == set(ALARM_NAMES)
    bad = tmp_path / "p.toml"
    bad.write_text('[[playbook]]\nalarm = "fallback_rate"\nowner = "me"\naction = "reboot"\ncorrective = "x"\nrunbook = "y"\n')
    result = CliRunner().invoke(app, ["fleet", "alarms", "--store", str(tmp_path / "none.duckdb"), "--playbook", str(bad)])
    assert result.exit_code == 2 and "p.toml:4: playbook[0].action: 'reboot' is not one of" in result.output
    assert "Traceback" not in result.output
    scenario = tmp_path / "s.toml"
    scenario.write_text('[fleet]\ndevices = 10\n[[fault]]\nkind = "meltdown"\n')
    from edgeproof.errors import DataError

    with pytest.raises(DataError, match=r"fault\[0\].kind: 'meltdown' is not one of"):
        load_scenario(scenario)
    with pytest.raises(DataError, match=r":4: playbook\[0\].action: 'reboot' is not one of"):
        load_playbook(bad)


def test_cli_simulate_ingest_alarms_export(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        '[fleet]\ndevices = 800\nseed = 2\n[[fault]]\nkind = "provider-fallback"\nrelease = "candidate"\nchip_revision = "A2"\nrate = 0.05\n'
    )
    spool, store = tmp_path / "spool", tmp_path / "fleet.duckdb"
    runner = CliRunner()
    result = runner.invoke(app, ["fleet", "simulate", "--out", str(spool), "--scenario", str(scenario), "--hours", "3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["fleet", "ingest", str(spool), "--store", str(store)])
    assert result.exit_code == 0 and "duplicates dropped" in result.output, result.output
    result = runner.invoke(app, ["fleet", "alarms", "--store", str(store), "--json", str(tmp_path / "a.json"), "--window-h", "3"])
    assert result.exit_code == 1, result.output
    assert "FIRING fallback_rate in A2" in result.output and "playbook: rollback-stratum" in result.output
    result = runner.invoke(app, ["fleet", "export", "--store", str(store), "--out", str(tmp_path / "pq")])
    assert result.exit_code == 0 and list((tmp_path / "pq" / "windows").rglob("*.parquet"))


@pytest.mark.slow
def test_each_injected_fault_fires_its_alarm_where_it_was_injected():
    faults = (
        Fault("driver-reset", release="candidate", chip_revision="H8-r1", events_per_h=20),
        Fault("thermal-throttle", release="candidate", region="me-central", rate=0.5, events_per_h=4),
        Fault("telemetry-stop", release="candidate", chip_revision="A1", region="eu-north", after_h=1),
    )
    with _fleet(5, faults, hours=8) as store:
        report = evaluate_alarms(store, "canary", "control", window_h=8)
    fired = {(v.alarm, v.stratum["chip_revision"], v.stratum["region"]) for v in report.firing}
    assert {a for a, chip, _ in fired if a == "crash_rate"} and all(chip == "H8-r1" for a, chip, _ in fired if a == "crash_rate")
    assert {region for a, _, region in fired if a == "throttle_rate"} == {"me-central"}
    assert {(chip, region) for a, chip, region in fired if a == "telemetry_gap"} == {("A1", "eu-north")}
    assert {a for a, _, _ in fired} <= {"crash_rate", "throttle_rate", "p95_drift", "telemetry_gap", "occupancy_drop"}


@pytest.mark.slow
def test_demo_fires_the_injected_fault_and_prints_its_playbook_step(tmp_path, capsys):
    from edgeproof.fleet.demo import run_fleet_demo

    assert run_fleet_demo(tmp_path, devices=3000) == 0
    out = capsys.readouterr().out
    assert "FIRING fallback_rate in A2" in out and "playbook: rollback-stratum" in out


def test_a_shift_needs_enough_devices_for_its_rank_interval():
    from edgeproof.fleet._stats import rank_interval_exists, shift_interval

    # 1 vs 1 device: the only "interval" would be the one difference itself; it must not decide
    assert not rank_interval_exists(1, 1, 0.05)
    assert not rank_interval_exists(6, 6, 0.001)  # 2/924 > 0.001
    assert rank_interval_exists(7, 7, 0.001) and rank_interval_exists(4, 4, 0.05)
    rng = np.random.default_rng(0)
    mid, lo, hi = shift_interval(rng.normal(1.0, 0.1, 40), rng.normal(0.0, 0.1, 40), 0.01)
    assert lo < mid < hi and 0.9 < mid < 1.1 and lo > 0.8 and hi < 1.2
