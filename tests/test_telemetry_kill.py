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

# A zygote process imports the recorder once, then forks one recorder per kill point (each around a
# trivial callable that releases the GIL, as ONNX Runtime's run does, with windows of 2 ms), so 20 kill points cost 20 forks, not 20 interpreter starts.
# pyarrow imports pandas (when installed) on first use: the zygote pays that once, too.
ZYGOTE = """
import os, sys, time
import pandas, edgeproof.measure.thermal
from pathlib import Path
from edgeproof.telemetry import Labels, Recorder, TelemetryConfig

def run(directory):
    config = TelemetryConfig(directory=Path(directory), labels=Labels(device_id="dev-kill"), window_s=0.002, tick_s=0.001,
                             min_free_bytes=0, segment_bytes=16384)
    out = lambda line: os.write(1, (line + "\\n").encode())
    rec = Recorder(config, boot_id="boot-kill", read_power=False, on_ack=lambda seqs: out("ack " + " ".join(map(str, seqs))))
    infer = rec.wrap(lambda: time.sleep(0))  # like a runtime's run, it lets the writer thread have the GIL
    rec.enable()
    out("ready")
    while True:
        infer()

for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        run(line.strip())
    os.write(1, f"pid {pid}\\n".encode())
    os.waitpid(pid, 0)
    os.write(1, b"reaped\\n")
"""


def test_kill_9_keeps_every_acknowledged_window_and_counts_nothing_twice(tmp_path):
    rng = random.Random(15)
    directory = tmp_path / "telemetry"
    acked: set[int] = set()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert zygote.stdin is not None and zygote.stdout is not None
    pid = None
    try:
        for _ in range(20):
            zygote.stdin.write(f"{directory}\n")
            zygote.stdin.flush()
            pid, ready = None, False
            while pid is None or not ready:
                line = zygote.stdout.readline().split()
                if line[0] == "pid":
                    pid = int(line[1])
                elif line[0] == "ready":
                    ready = True
                elif line[0] == "ack":
                    acked.update(map(int, line[1:]))
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(pid, signal.SIGKILL)
            for raw in iter(zygote.stdout.readline, ""):
                line = raw.split()
                if line[0] == "reaped":
                    pid = None
                    break
                if line[0] == "ack":
                    acked.update(map(int, line[1:]))
    finally:
        if pid is not None:  # the loop stopped before this recorder was killed and reaped
            os.kill(pid, signal.SIGKILL)
        zygote.kill()
        zygote.wait()
    read = read_segments(directory)
    # the last child's torn tail (if it left one) is the only thing allowed to be reported
    assert all("torn tail" in p.what for p in read.problems), read.problems
    assert len(read.problems) <= 1
    seqs = [r.seq for r in read.records]
    assert len(seqs) == len(set(seqs)), "a record was written twice"
    assert acked <= set(seqs), f"acknowledged but lost: {sorted(acked - set(seqs))[:10]}"
    # how many windows a child acknowledges before its kill depends on the machine's load; that some were is what matters
    assert acked, "no window was acknowledged before any kill: the test exercised nothing"
    assert sum(w.metric("edgeproof.inference.count").value for w in read.windows) > 0
