"""Ingest killed with SIGKILL at random points: nothing acknowledged is lost, nothing is stored twice, a restart finishes the job."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeproof.fleet import FleetSimulator, FleetSpec, FleetStore, Release, Sending, read_frames
from edgeproof.fleet._frames import Frame
from edgeproof.fleet._simulate import BoardMix, Region

# A zygote imports the fleet package once and forks one ingest per kill point, so a kill point costs a
# fork, not an interpreter start. Each child commits small batches and prints every acknowledged offset.
ZYGOTE = """
import os, sys
import pandas, duckdb, pyarrow
from edgeproof.fleet import FleetStore

def run(spool, store):
    out = lambda line: os.write(1, (line + "\\n").encode())
    with FleetStore(store, threads=1) as fleet:
        out("ready")
        def ack(commit):
            for name, offset in commit.offsets.items():
                out(f"ack {offset} {name}")
        fleet.ingest([spool], batch_rows=40, on_commit=ack)
    out("done")
    os._exit(0)

for line in sys.stdin:
    spool, store = line.split()
    pid = os.fork()
    if pid == 0:
        run(spool, store)
    os.write(1, f"pid {pid}\\n".encode())
    os.waitpid(pid, 0)
    os.write(1, b"reaped\\n")
"""


def _keys_by_frame(spool: Path) -> dict[str, list[tuple[int, set[tuple[str, str, int]]]]]:
    out: dict[str, list[tuple[int, set[tuple[str, str, int]]]]] = {}
    for path in sorted(spool.glob("*.eptseg")):
        frames = []
        for item in read_frames(path):
            assert isinstance(item, Frame)
            t = item.table
            frames.append((item.end, set(zip(t["device_id"].to_pylist(), t["boot_id"].to_pylist(), t["seq"].to_pylist()))))
        out[str(path.resolve())] = frames
    return out


def _stored(store: Path) -> tuple[set[tuple[str, str, int]], int]:
    with FleetStore(store) as fleet:
        rows = fleet.con.execute(
            "SELECT device_id, boot_id, seq FROM windows UNION ALL SELECT device_id, boot_id, seq FROM events"
        ).fetchall()
    return set(rows), len(rows)


@pytest.mark.parametrize("kills", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_kill_9_during_ingest_loses_nothing_acknowledged_and_duplicates_nothing(tmp_path, kills):
    spool, store = tmp_path / "spool", tmp_path / "fleet.duckdb"
    # one board and one region: a single board simulation; the point here is the store, not the statistics
    spec = FleetSpec(
        devices=120,
        seed=3,
        sending=Sending(frame_rows=20),
        boards=(BoardMix("jetson-orin-nano-8gb", ("A1",), 1.0),),
        regions=(Region("eu", 20.0, 1.0),),
    )
    sim = FleetSimulator(spec)
    sim.set_release(np.arange(0, 120, 2), Release("candidate", "c" * 64, "fw-1"), "canary")
    rng = random.Random(16)
    acked: dict[str, int] = {}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert zygote.stdin is not None and zygote.stdout is not None
    pid = None
    finished = 0
    try:
        for _ in range(kills):
            sim.write(spool, 1)  # the spool grows between runs, as a receiver's does, so every kill lands in an ingest
            frames = _keys_by_frame(spool)
            zygote.stdin.write(f"{spool} {store}\n")
            zygote.stdin.flush()
            # a random point: after a random number of acknowledged batches (0-3), then a random pause
            pid, ready, wanted, done = None, False, rng.randint(0, 3), False
            while pid is None or not ready or (wanted > 0 and not done):
                line = zygote.stdout.readline().split()
                if line[0] == "pid":
                    pid = int(line[1])
                elif line[0] == "ready":
                    ready = True
                elif line[0] == "ack":
                    acked[line[2]] = max(acked.get(line[2], 0), int(line[1]))
                    wanted -= 1
                elif line[0] == "done":
                    done = True
                    finished += 1
            time.sleep(rng.uniform(0.0, 0.05))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it finished and was reaped before the kill point
            for raw in iter(zygote.stdout.readline, ""):
                line = raw.split()
                if line[0] == "reaped":
                    pid = None
                    break
                if line[0] == "ack":
                    acked[line[2]] = max(acked.get(line[2], 0), int(line[1]))
                elif line[0] == "done":
                    finished += 1
            keys, n_rows = _stored(store)
            assert n_rows == len(keys), "a row was stored twice"
            promised = {k for name, offset in acked.items() for end, fk in frames[name] if end <= offset for k in fk}
            assert promised <= keys, f"acknowledged but lost: {len(promised - keys)} rows"
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        zygote.kill()
        zygote.wait()
    with FleetStore(store) as fleet:
        fleet.ingest([spool])
    every_key = set().union(*(keys for fs in frames.values() for _, keys in fs))
    keys, n_rows = _stored(store)
    assert n_rows == len(keys) == len(every_key) and keys == every_key
    assert acked, "no batch was acknowledged before any kill: the test exercised nothing"
    assert finished < kills, "every ingest finished before its kill point: the test killed nothing"
