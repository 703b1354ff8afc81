"""The runner life cycle every target shares: open → prepare a model → run (or run an A/B) → meters → close.

Public methods check where in the life cycle the runner is and delegate to ``_open``, ``_prepare``,
``_run``, ``_run_ab``, ``_meters`` and ``_close``, so an implementation (the host, the board
simulator, a remote agent) only says how, never when.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from edgeproof.measure.interleaved import ArmSettings, Decided, InterleaveOptions
from edgeproof.measure.runner import Prepared, ProfileOptions
from edgeproof.model import Model
from edgeproof.records import RunRecord, RuntimeSettings

Progress = Callable[[str, float], None]


def _silent(message: str, fraction: float) -> None:
    """The progress callback when the caller gives none."""


class Runner(ABC):
    """Measures (or simulates) prepared models on one target and returns RunRecords.

    Use it as a context manager, or call ``open()`` and ``close()``; a runner is opened once and
    serves any number of runs, so per-target set-up (host fitness, energy meters, a board's
    profile, an agent's connection) happens once, not per candidate.
    """

    kind: ClassVar[Literal["measured", "simulated"]]

    def __init__(self, target_id: str) -> None:
        self.target_id = target_id
        self._state: Literal["new", "open", "closed"] = "new"

    def _require_open(self, what: str) -> None:
        if self._state != "open":
            raise RuntimeError(f"{type(self).__name__}.{what}() needs an open runner (it is {self._state}); call open() first")

    def open(self) -> Runner:
        """Set up the target once (idempotent while open)."""
        if self._state == "closed":
            raise RuntimeError(f"{type(self).__name__} is closed; make a new runner")
        if self._state == "new":
            self._open()
            self._state = "open"
        return self

    def prepare(self, model: Model | str | Path, options: ProfileOptions | None = None) -> Prepared:
        """Load and check a model once (a path is loaded here) and build what its runs feed it."""
        self._require_open("prepare")
        return self._prepare(model, options or ProfileOptions())

    def run(
        self,
        prepared: Prepared,
        settings: RuntimeSettings | None = None,
        options: ProfileOptions | None = None,
        progress: Progress | None = None,
    ) -> RunRecord:
        """One run of a prepared model under ``options``' scenario; the record says measured or simulated."""
        self._require_open("run")
        return self._run(prepared, settings or RuntimeSettings(), options or ProfileOptions(), progress or _silent)

    def run_ab(
        self,
        a: Prepared,
        b: Prepared,
        settings: ArmSettings | None = None,
        options: ProfileOptions | None = None,
        ab: InterleaveOptions | None = None,
        decided: Decided | None = None,
        progress: Progress | None = None,
    ) -> tuple[RunRecord, RunRecord]:
        """A (baseline) and B (candidate) interleaved in session pairs; each record names the other
        as its partner, so a gate can pair their blocks. ``decided`` may extend an open comparison.
        ``settings`` may be a pair, one per arm (A, B)."""
        self._require_open("run_ab")
        return self._run_ab(
            a, b, settings or RuntimeSettings(), options or ProfileOptions(), ab or InterleaveOptions(), decided, progress or _silent
        )

    def meters(self) -> dict[str, str]:
        """Where each figure comes from on this target: a provenance, or ``unavailable:<why>``."""
        self._require_open("meters")
        return self._meters()

    def close(self) -> None:
        """Release what ``open`` set up (meters, connections); idempotent."""
        if self._state == "open":
            self._close()
        self._state = "closed"

    def __enter__(self) -> Runner:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _prepare(self, model: Model | str | Path, options: ProfileOptions) -> Prepared: ...

    @abstractmethod
    def _run(self, prepared: Prepared, settings: RuntimeSettings, options: ProfileOptions, progress: Progress) -> RunRecord: ...

    @abstractmethod
    def _run_ab(
        self,
        a: Prepared,
        b: Prepared,
        settings: ArmSettings,
        options: ProfileOptions,
        ab: InterleaveOptions,
        decided: Decided | None,
        progress: Progress,
    ) -> tuple[RunRecord, RunRecord]: ...

    @abstractmethod
    def _meters(self) -> dict[str, str]: ...

    def _close(self) -> None:  # noqa: B027  (a hook: a runner may hold nothing to release)
        """Nothing to release by default."""
