"""Where an ingest's time goes: wall-clock and CPU seconds per phase, summed over every call."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Phases:
    """Seconds per phase: ``wall_s`` by ``time.perf_counter``, ``cpu_s`` by the working thread's CPU clock.

    On a loaded machine the wall clock of a phase includes waiting for a core; its CPU seconds do not,
    so the two together tell the work from the wait. Phases run by two threads overlap in wall time.
    """

    wall_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            with self._lock:  # several threads add to one phase
                self.wall_s[name] = self.wall_s.get(name, 0.0) + wall
                self.cpu_s[name] = self.cpu_s.get(name, 0.0) + cpu
