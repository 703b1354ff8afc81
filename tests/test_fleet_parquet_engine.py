"""The silent-fallback alarm's inputs from the Parquet export equal the store's own (DuckDB engine; Ray runs in benchmarks/)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeproof.errors import DataError
from edgeproof.fleet import Fault, FleetSimulator, FleetSpec, FleetStore, Release
from edgeproof.fleet._alarms import window_bounds
from edgeproof.fleet._parquet_engine import fallback_counts, store_fallback_counts


def test_parquet_counts_equal_the_stores_alarm_inputs(tmp_path):
    sim = FleetSimulator(
        FleetSpec(devices=200, seed=3, faults=(Fault("provider-fallback", release="candidate", chip_revision="A2", rate=0.05),))
    )
    sim.set_release(np.arange(0, 200, 2), Release("candidate", "c" * 64, "fw-2"), "canary")
    sim.write(tmp_path / "spool", 6)
    with FleetStore(tmp_path / "fleet.duckdb") as store:
        store.ingest([tmp_path / "spool"])
        since, until = window_bounds(store, "canary", "control", 3, None)
        expected = store_fallback_counts(store, "canary", "control", since, until)
        store.export_parquet(tmp_path / "parquet")
    got = fallback_counts(tmp_path / "parquet", "canary", "control", since_ns=since, until_ns=until)
    assert got.equals(expected) and got.num_rows > 4
    rows = got.to_pylist()
    assert {r["cohort"] for r in rows} == {"canary", "control"}
    fallback: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        sums = fallback.setdefault((r["cohort"], r["chip_revision"]), [0.0, 0.0])
        sums[0] += r["fallback_inferences"]
        sums[1] += r["fb_exposure"]
    rate = {key: fb / exposure for key, (fb, exposure) in fallback.items()}
    assert rate[("canary", "A2")] > 5 * rate[("control", "A2")]  # the injected fault is in the counts
    everything = fallback_counts(tmp_path / "parquet", "canary", "control")
    assert sum(everything["windows"].to_pylist()) > sum(got["windows"].to_pylist())  # the time bounds select windows


def test_parquet_engine_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(DataError, match="fleet export"):
        fallback_counts(tmp_path, "canary", "control")
    with pytest.raises(DataError, match="expected one of duckdb, ray"):
        fallback_counts(tmp_path, "canary", "control", engine="spark")
