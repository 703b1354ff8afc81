"""Command-line entry point: thin commands over the library, one module per area."""

from __future__ import annotations

from edgeproof.cli._app import app

# Each module registers its commands on `app` when imported.
from edgeproof.cli import core  # noqa: E402,F401
from edgeproof.cli import contract_cmd  # noqa: E402,F401
from edgeproof.cli import gate_cmd  # noqa: E402,F401
from edgeproof.cli import optimize_cmd  # noqa: E402,F401
from edgeproof.cli import bom_cmd  # noqa: E402,F401
from edgeproof.cli import simulate  # noqa: E402,F401
from edgeproof.cli import report_cmd  # noqa: E402,F401
from edgeproof.cli import inspect_cmd  # noqa: E402,F401


def main() -> None:
    app()
