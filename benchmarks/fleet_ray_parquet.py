"""The silent-fallback alarm's inputs over the store's Parquet partitions: DuckDB and Ray Data on a local Ray cluster agree with the store.

A simulated fleet (the fleet simulator, a fallback fault on one chip revision of the candidate) is
ingested into a DuckDB store and exported as Parquet partitioned by day and chip revision. The
per-stratum counts the fallback alarm judges (devices, windows, inferences, fallback exposure, fallback
inferences, for cohort and control) are computed three ways: from the store (``device_rows``, the
alarm's own inputs), by DuckDB over the Parquet files, and by Ray Data over the same files on a local
``ray.init()`` head. ``equal`` says whether all three are the same, row for row. Seconds are wall clock
(``time.perf_counter``) on this machine; the Ray figure includes its first-query start-up, reported apart
from ``ray.init``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import write_result
from edgeproof.fleet import Fault, FleetSimulator, FleetSpec, FleetStore, Release, Sending
from edgeproof.fleet._alarms import window_bounds
from edgeproof.fleet._parquet_engine import fallback_counts, start_local_ray, store_fallback_counts

DEVICES = 5_000
HOURS = 48
REPEATS = 3


def main() -> None:
    spec = FleetSpec(
        devices=DEVICES,
        seed=11,
        sending=Sending(duplicate_frac=0.1),
        faults=(Fault("provider-fallback", release="candidate", chip_revision="A2", rate=0.05),),
    )
    sim = FleetSimulator(spec)
    sim.set_release(np.arange(0, DEVICES, 2), Release("candidate", "c" * 64, "fw-2"), "canary")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim.write(root / "spool", HOURS)
        with FleetStore(root / "fleet.duckdb") as store:
            store.ingest([root / "spool"])
            since, until = window_bounds(store, "canary", "control", HOURS, None)
            t0 = time.perf_counter()
            from_store = store_fallback_counts(store, "canary", "control", since, until)
            store_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            store.export_parquet(root / "parquet")
            export_s = time.perf_counter() - t0
            windows = store.counts()["windows"]
        parquet_files = len(list((root / "parquet" / "windows").rglob("*.parquet")))
        duckdb_runs = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            by_duckdb = fallback_counts(root / "parquet", "canary", "control", since_ns=since, until_ns=until, engine="duckdb")
            duckdb_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ray = start_local_ray(num_cpus=2)
        ray_init_s = time.perf_counter() - t0
        try:
            ray_runs = []
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                by_ray = fallback_counts(root / "parquet", "canary", "control", since_ns=since, until_ns=until, engine="ray")
                ray_runs.append(time.perf_counter() - t0)
            ray_version = ray.__version__
            nodes = len(ray.nodes())
        finally:
            ray.shutdown()
    equal_duckdb = by_duckdb.equals(from_store)
    equal_ray = by_ray.equals(from_store)
    faulty = [r for r in by_ray.to_pylist() if r["chip_revision"] == "A2" and r["cohort"] == "canary"]
    result = {
        "provenance": "measured:perf_counter on simulated telemetry (edgeproof fleet simulator); counts computed, not sampled",
        "devices": DEVICES,
        "hours": HOURS,
        "window_rows": windows,
        "parquet_files": parquet_files,
        "strata_rows": from_store.num_rows,
        "seconds": {
            "store_device_rows": store_s,
            "export_parquet": export_s,
            "duckdb_parquet_median": statistics.median(duckdb_runs),
            "duckdb_parquet_runs": duckdb_runs,
            "ray_init": ray_init_s,
            "ray_data_parquet_median": statistics.median(ray_runs),
            "ray_data_parquet_runs": ray_runs,
        },
        "ray": {"version": ray_version, "cluster": f"local ray.init() head, {nodes} node, num_cpus=2"},
        "equal_duckdb_parquet_vs_store": equal_duckdb,
        "equal_ray_parquet_vs_store": equal_ray,
        "equal": equal_duckdb and equal_ray,
        "fallback_frac_canary_A2_by_ray": [
            {k: r[k] for k in ("firmware_version", "region", "devices")} | {"fallback_frac": r["fallback_inferences"] / r["fb_exposure"]}
            for r in faulty
            if r["fb_exposure"]
        ],
    }
    print(
        f"fleet over Parquet: {windows:,} windows, {from_store.num_rows} cohort×stratum rows; DuckDB {result['seconds']['duckdb_parquet_median']:.3f} s, "
        f"Ray Data {result['seconds']['ray_data_parquet_median']:.2f} s (+{ray_init_s:.1f} s ray.init), median of {REPEATS} (measured:perf_counter); "
        f"equal to the store's alarm inputs: DuckDB {equal_duckdb}, Ray {equal_ray}"
    )
    write_result("fleet_ray_parquet", result)


if __name__ == "__main__":
    main()
