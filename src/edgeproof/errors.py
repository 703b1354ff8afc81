"""Errors a user can cause and fix: each carries one line that says what is wrong and where."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from edgeproof.outcome import EXIT_BAD_INPUT


class EdgeproofError(Exception):
    """Bad input. The CLI prints ``str(err)`` on one line and exits 2."""

    exit_code = EXIT_BAD_INPUT


class ContractError(EdgeproofError):
    """A budget contract file is malformed or inconsistent."""


class ModelError(EdgeproofError):
    """An ONNX model is missing, malformed or cannot run with the given inputs."""


class DataError(EdgeproofError):
    """A dataset, slice or input file is malformed or does not fit the model."""


class RecordError(EdgeproofError):
    """A run record, verdict or BOM file is malformed, of another schema, or inconsistent."""


class TargetError(EdgeproofError):
    """A board profile, catalog file or firmware profile is malformed or unknown."""


class TelemetryError(EdgeproofError):
    """A telemetry event or batch is malformed."""


class HostUnfitError(EdgeproofError):
    """The host failed its fitness check and --strict was asked for."""


def suggest(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors often run to many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
