"""Jetson rail power from tegrastats: a line parser, log integration, and a meter running the binary."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edgeproof.errors import DataError
from edgeproof.measure.meters._base import EnergyMeter, MeterError, PowerTrace, Probe, integrate_power_j

# "VDD_IN 5123mW/5100mW" (JetPack 5+), "POM_5V_IN 3000/3000" and "GPU 0/0" (JetPack 4): now/average.
# The look-ahead keeps "RAM 3162/7620MB" and "IRAM 0/252kB" out.
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+(?:\.\d+)?)(?:mW)?/(\d+(?:\.\d+)?)(?:mW)?(?![\w.])")
# JetPack 5+ starts each line with local time "MM-DD-YYYY HH:MM:SS"; `ts '%.s'` prefixes unix seconds.
_LOCAL_STAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_UNIX_STAMP = re.compile(r"^\s*(\d{9,}(?:\.\d+)?)\s")

_START_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TegrastatsSample:
    """One tegrastats line: its timestamp (unix seconds, None when the line has none) and rail powers."""

    timestamp_s: float | None
    rails_mw: dict[str, float]


def parse_tegrastats_line(line: str) -> TegrastatsSample:
    """Rail powers (the instantaneous mW value, not the running average) and timestamp of one line."""
    timestamp_s = None
    if match := _LOCAL_STAMP.match(line):
        timestamp_s = datetime.strptime(match.group(1), "%m-%d-%Y %H:%M:%S").timestamp()
    elif match := _UNIX_STAMP.match(line):
        timestamp_s = float(match.group(1))
    rails = {m.group(1): float(m.group(2)) for m in _RAIL.finditer(line)}
    return TegrastatsSample(timestamp_s, rails)


def tegrastats_trace(
    lines: Iterable[str], rail: str, interval_ms: float | None = None, source: str = "<tegrastats log>"
) -> tuple[list[float], list[float]]:
    """Times (s) and watts of ``rail`` from captured tegrastats lines; blank lines are skipped.

    tegrastats stamps whole seconds, so for sub-second intervals pass ``interval_ms``: line i is then
    placed at first-timestamp + i × interval (or at i × interval from 0 when lines carry no timestamp).
    Without it every line needs a timestamp and timestamps must increase.
    """
    times_s: list[float] = []
    power_w: list[float] = []
    first_s: float | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        sample = parse_tegrastats_line(line)
        if rail not in sample.rails_mw:
            found = ", ".join(sample.rails_mw) or "none"
            raise DataError(f"{source}:{number}: no {rail} rail in tegrastats line (rails: {found})")
        if interval_ms is not None:
            if first_s is None:
                first_s = sample.timestamp_s or 0.0
            t_s = first_s + len(times_s) * interval_ms / 1e3
        elif sample.timestamp_s is None:
            raise DataError(f"{source}:{number}: tegrastats line has no timestamp; pass interval_ms")
        elif times_s and sample.timestamp_s <= times_s[-1]:
            raise DataError(f"{source}:{number}: timestamp does not increase (tegrastats stamps whole seconds); pass interval_ms")
        else:
            t_s = sample.timestamp_s
        times_s.append(t_s)
        power_w.append(sample.rails_mw[rail] / 1e3)
    return times_s, power_w


def integrate_tegrastats_log(
    lines: Iterable[str],
    rail: str,
    start_s: float,
    end_s: float,
    interval_ms: float | None = None,
    source: str = "<tegrastats log>",
) -> float:
    """Joules on ``rail`` between ``start_s`` and ``end_s`` (same clock as the log) from captured lines."""
    times_s, power_w = tegrastats_trace(lines, rail, interval_ms, source)
    if len(times_s) < 2 or start_s < times_s[0] or end_s > times_s[-1]:
        covered = f"[{times_s[0]}, {times_s[-1]}]" if times_s else "nothing"
        raise DataError(f"{source}: window [{start_s}, {end_s}] lies outside the log, which covers {covered}")
    return integrate_power_j(times_s, power_w, start_s, end_s)


class TegrastatsMeter(EnergyMeter):
    """Runs ``tegrastats --interval <ms>`` while windows are open and integrates one rail's power.

    A window starts only once a first line has arrived and ends once a line stamped after its end
    has arrived, so every window lies between two real samples.
    """

    def __init__(self, rail: str = "VDD_IN", interval_ms: int = 100, binary: str | Path = "tegrastats") -> None:
        if interval_ms <= 0:
            raise ValueError(f"tegrastats interval must be > 0 ms, got {interval_ms}")
        super().__init__(f"tegrastats:{rail}")
        self.rail = rail
        self.interval_ms = interval_ms
        self.binary = str(binary)
        self._trace = PowerTrace()
        self._arrived = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._error: MeterError | None = None

    def _start(self) -> None:
        try:
            self._process = subprocess.Popen(
                [self.binary, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        except OSError as err:
            raise MeterError(f"cannot run {self.binary}: {err.strerror or err}") from err
        self._error = None
        self._reader = threading.Thread(target=self._read, args=(self._process,), name=f"energy:{self.name}", daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            arrived_s = time.perf_counter()
            rails = parse_tegrastats_line(line).rails_mw
            with self._arrived:
                if self.rail not in rails:
                    self._error = MeterError(f"{self.binary} printed no {self.rail} rail: {line.strip()[:160]!r}")
                    self._arrived.notify_all()
                    return
                self._trace.add(arrived_s, rails[self.rail] / 1e3)
                self._arrived.notify_all()
        with self._arrived:
            if self._error is None:
                self._error = MeterError(f"{self.binary} exited with code {process.wait()}")
            self._arrived.notify_all()

    def _wait_for_sample_after(self, t_s: float) -> None:
        timeout_s = _START_TIMEOUT_S + 10 * self.interval_ms / 1e3
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: self._error is not None or self._has_sample_after(t_s), timeout_s)
            if self._error is not None:
                raise self._error
        if not arrived:
            raise MeterError(f"{self.binary} printed no line for {timeout_s:.1f} s")

    def _has_sample_after(self, t_s: float) -> bool:
        latest_s = self._trace.latest_time()
        return latest_s is not None and latest_s >= t_s

    def _begin(self) -> float:
        if self._process is None:
            self._start()
            try:
                self._wait_for_sample_after(-float("inf"))
            except MeterError:
                self._release()
                raise
        return time.perf_counter()

    def _end(self, start_s: float) -> tuple[float, float]:
        end_s = time.perf_counter()
        try:
            self._wait_for_sample_after(end_s)
            times_s, power_w = self._trace.between(start_s, end_s)
        finally:
            if self._open:
                self._trace.drop_before(min(self._open.values()))
            else:
                self._release()
        return integrate_power_j(times_s, power_w, start_s, end_s), end_s - start_s

    def _release(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._reader is not None:
            self._reader.join()
            self._reader = None
        self._trace.clear()


def find_tegrastats(root: str | Path = "/") -> Path | None:
    """The tegrastats binary under ``root`` (``usr/bin``), or on PATH when ``root`` is ``/``."""
    candidate = Path(root) / "usr/bin/tegrastats"
    if candidate.is_file():
        return candidate
    on_path = shutil.which("tegrastats") if Path(root) == Path("/") else None
    return Path(on_path) if on_path else None


def probe_tegrastats(root: str | Path = "/", rail: str = "VDD_IN", interval_ms: int = 100) -> Probe:
    """A tegrastats meter when the binary exists (it starts only with the first window), or why not."""
    binary = find_tegrastats(root)
    if binary is None:
        return Probe([], "no tegrastats binary")
    return Probe([TegrastatsMeter(rail=rail, interval_ms=interval_ms, binary=binary)])
