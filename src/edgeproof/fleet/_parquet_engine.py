"""The silent-fallback alarm's inputs per stratum, computed from the store's Parquet export by DuckDB or on a Ray cluster (Ray Data).

When one machine is not enough, ``FleetStore.export_parquet`` writes windows partitioned by day and
chip revision, and any engine that reads Parquet can compute what the alarms judge. This module computes
the silent-fallback rate's inputs — per cohort and stratum (chip revision × firmware × model × region):
devices, windows, inferences, inferences where fallback was reported, fallback inferences — with the
same window rule as ``evaluate_alarms`` (a window counts when it overlaps ``(since_ns, until_ns)``), so
the engines can be checked against each other and against the store.

::

    rows = fallback_counts("export/", "canary", "control", engine="ray")   # a local Ray head unless one runs
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from edgeproof.errors import DataError

STRATUM = ("chip_revision", "firmware_version", "model_sha256", "region")
GROUP = ("cohort", *STRATUM)
COUNTS = ("devices", "windows", "inferences", "fb_exposure", "fallback_inferences")
ENGINES = ("duckdb", "ray")
RESULT_SCHEMA = pa.schema(
    [(name, pa.string()) for name in GROUP] + [(name, pa.int64()) for name in COUNTS[:2]] + [(name, pa.float64()) for name in COUNTS[2:]]
)
_WINDOW_COLUMNS = (
    "device_id",
    "cohort",
    "firmware_version",
    "model_sha256",
    "region",
    "start_ns",
    "end_ns",
    "inferences",
    "provider_fallback_inferences",
)
# Far enough out that every window overlaps when no bounds are given.
_NO_BOUND = 1 << 62


def _windows_dir(directory: str | Path) -> Path:
    windows = Path(directory) / "windows"
    if not windows.is_dir() or not any(windows.rglob("*.parquet")):
        raise DataError(f"{directory}: no windows/**/*.parquet here; write them with `edgeproof fleet export --out {directory}`")
    return windows


def _sorted(table: pa.Table) -> pa.Table:
    table = table.select(list(RESULT_SCHEMA.names)).cast(RESULT_SCHEMA)
    return table.sort_by([(name, "ascending") for name in GROUP])


def _duckdb(windows: Path, cohort: str, control: str, since_ns: int, until_ns: int) -> pa.Table:
    import duckdb

    glob = str(windows / "**" / "*.parquet").replace("'", "''")
    con = duckdb.connect()
    try:
        return con.sql(
            f"""
            WITH w AS (
              SELECT cohort, chip_revision, firmware_version, model_sha256, region, device_id,
                count(*) AS windows,
                sum(coalesce(inferences, 0)) AS inferences,
                sum(CASE WHEN provider_fallback_inferences IS NOT NULL THEN coalesce(inferences, 0) ELSE 0 END) AS fb_exposure,
                sum(coalesce(provider_fallback_inferences, 0)) AS fallback_inferences
              FROM read_parquet('{glob}', hive_partitioning = true, hive_types_autocast = false)
              WHERE cohort IN ($cohort, $control) AND end_ns > $since AND start_ns < $until
              GROUP BY ALL)
            SELECT cohort, chip_revision, firmware_version, model_sha256, region,
              count(*) AS devices, sum(windows) AS windows, sum(inferences) AS inferences,
              sum(fb_exposure) AS fb_exposure, sum(fallback_inferences) AS fallback_inferences
            FROM w GROUP BY ALL
            """,
            params={"cohort": cohort, "control": control, "since": since_ns, "until": until_ns},
        ).to_arrow_table()
    finally:
        con.close()


def start_local_ray(num_cpus: int | None = None, object_store_mib: int = 256, temp_dir: str = "/tmp/edgeproof-ray") -> Any:
    """``ray`` with a local, offline head started (no dashboard, a small object store), unless one is already running."""
    from edgeproof.farm.ray_farm import ray_environment

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.update(ray_environment())
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DataError("the Ray engine needs Ray Data: pip install 'edgeproof[farm]' (or use engine='duckdb')") from None
    if not ray.is_initialized():
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=object_store_mib << 20,
            _temp_dir=temp_dir,
            log_to_driver=False,
            configure_logging=False,
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


_SUMMED = ("inferences", "fb_exposure", "fallback_inferences")


def _merge(partials: pa.Table, keys: tuple[str, ...], counted: str, count_name: str, summed: tuple[str, ...]) -> pa.Table:
    """``partials`` grouped by ``keys``: rows counted (``counted="rows"``) or the column ``counted`` summed, as ``count_name``; each of ``summed`` summed."""
    count: tuple[Any, str] = ([], "count_all") if counted == "rows" else (counted, "sum")
    grouped = partials.group_by(list(keys)).aggregate([count, *((c, "sum") for c in summed)])
    names = {"count_all" if counted == "rows" else f"{counted}_sum": count_name, **{f"{c}_sum": c for c in summed}}
    return grouped.rename_columns([names.get(c, c) for c in grouped.column_names])


def _ray(windows: Path, cohort: str, control: str, since_ns: int, until_ns: int) -> pa.Table:
    ray = start_local_ray()

    def partial(block: pa.Table) -> pa.Table:
        """One block's windows of the two cohorts in the time range, summed per (cohort, stratum, device)."""
        keep = pc.and_(
            pc.is_in(block["cohort"], pa.array([cohort, control])),
            pc.and_(pc.greater(block["end_ns"], since_ns), pc.less(block["start_ns"], until_ns)),
        )
        block = block.filter(pc.fill_null(keep, False))
        inferences = pc.fill_null(block["inferences"], 0.0)
        fallback = block["provider_fallback_inferences"]
        rows = pa.table(
            {
                **{name: block[name] for name in (*GROUP, "device_id")},
                "inferences": inferences,
                "fb_exposure": pc.if_else(pc.is_valid(fallback), inferences, 0.0),
                "fallback_inferences": pc.fill_null(fallback, 0.0),
            }
        )
        return _merge(rows, (*GROUP, "device_id"), "rows", "windows", _SUMMED)

    # The scan, filter and per-device sums run on the cluster, block by block; what comes back is one
    # row per (block, stratum, device) — thousands, not millions — so the last merge runs here instead
    # of through two Ray shuffles, which cost a minute of task overhead on a small cluster.
    ds = ray.data.read_parquet(str(windows), partitioning=ray.data.datasource.Partitioning("hive"))
    blocks = ray.get(ds.map_batches(partial, batch_format="pyarrow", batch_size=None).to_arrow_refs())
    partials = pa.concat_tables([b for b in blocks if b.num_rows]) if any(b.num_rows for b in blocks) else None
    if partials is None:
        return RESULT_SCHEMA.empty_table()
    per_device = _merge(partials, (*GROUP, "device_id"), "windows", "windows", _SUMMED)
    return _merge(per_device, GROUP, "rows", "devices", ("windows", *_SUMMED))


def fallback_counts(
    directory: str | Path,
    cohort: str,
    control: str,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    engine: str = "duckdb",
) -> pa.Table:
    """Per cohort and stratum of ``cohort`` and ``control``: devices, windows, inferences, fallback exposure and fallback inferences.

    ``directory``: what ``FleetStore.export_parquet`` wrote (its ``windows/`` partitions). ``engine``:
    ``duckdb`` (in process) or ``ray`` (Ray Data on the running cluster, or a local head it starts).
    A window counts when it overlaps ``(since_ns, until_ns)`` (all windows by default). Rows sorted by cohort and stratum.
    """
    if engine not in ENGINES:
        raise DataError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    windows = _windows_dir(directory)
    since = -_NO_BOUND if since_ns is None else since_ns
    until = _NO_BOUND if until_ns is None else until_ns
    table = _duckdb(windows, cohort, control, since, until) if engine == "duckdb" else _ray(windows, cohort, control, since, until)
    return _sorted(table)


def store_fallback_counts(store: Any, cohort: str, control: str, since_ns: int, until_ns: int) -> pa.Table:
    """The same counts from the alarm's own inputs (``device_rows`` of the store), for checking an engine against the store."""
    from edgeproof.fleet._alarms import device_rows

    rows = device_rows(store, cohort, control, since_ns, until_ns)
    table = pa.table({name: pa.array(rows[name]) for name in (*GROUP, "device_id", "windows", "inferences", "fb_exposure", "fb")})
    filled = {
        name: pc.fill_null(pc.if_else(pc.is_nan(table[name]), None, table[name]), 0.0) for name in ("inferences", "fb_exposure", "fb")
    }
    table = pa.table({**{name: table[name] for name in (*GROUP, "device_id", "windows")}, **filled})
    renamed = _merge(
        table.rename_columns([{"fb": "fallback_inferences"}.get(c, c) for c in table.column_names]),
        GROUP,
        "rows",
        "devices",
        ("windows", *_SUMMED),
    )
    return _sorted(renamed)
