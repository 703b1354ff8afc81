"""kill -9 at 20 random points: every segment reads back, every acknowledged window is there, nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgeproof.telemetry import read_segments

# The recorder around a trivial callable, with windows of 2 ms so a run acknowledges many of them.
CHILD = """
import sys
from pathlib import Path
from edgeproof.telemetry import Labels, Recorder, TelemetryConfig
config = TelemetryConfig(directory=Path(sys.argv[1]), labels=Labels(device_id="dev-kill"), window_s=0.002, tick_s=0.001,
                         min_free_bytes=0, segment_bytes=16384)
rec = Recorder(config, boot_id="boot-kill", read_power=False,
               on_ack=lambda seqs: print(" ".join(map(str, seqs)), flush=True))
infer = rec.wrap(lambda: None)
rec.enable()
print("ready", flush=True)
while True:
    infer()
"""


def test_kill_9_keeps_every_acknowledged_window_and_counts_nothing_twice(tmp_path):
    rng = random.Random(15)
    directory = tmp_path / "telemetry"
    acked: set[int] = set()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory)], stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        acked.update(int(seq) for line in out.splitlines() for seq in line.split())
    read = read_segments(directory)
    # the last child's torn tail (if it left one) is the only thing allowed to be reported
    assert all("torn tail" in p.what for p in read.problems), read.problems
    assert len(read.problems) <= 1
    seqs = [r.seq for r in read.records]
    assert len(seqs) == len(set(seqs)), "a record was written twice"
    assert acked <= set(seqs), f"acknowledged but lost: {sorted(acked - set(seqs))[:10]}"
    assert len(acked) > 20
    assert sum(w.metric("edgeproof.inference.count").value for w in read.windows) > 0
