"""Command-line entry point: thin commands over the library, one module per area."""

# isort: skip_file  (the import order registers the commands, and so orders --help)

from __future__ import annotations

# Each module registers its commands on `app` when imported.
from edgeproof.cli import (
    agent_cmd,  # noqa: E402,F401
    bom_cmd,  # noqa: E402,F401
    contract_cmd,  # noqa: E402,F401
    core,  # noqa: E402,F401
    farm_cmd,  # noqa: E402,F401
    fleet_cmd,  # noqa: E402,F401
    gate_cmd,  # noqa: E402,F401
    inspect_cmd,  # noqa: E402,F401
    optimize_cmd,  # noqa: E402,F401
    report_cmd,  # noqa: E402,F401
    rollout_cmd,  # noqa: E402,F401
    simulate,  # noqa: E402,F401
    telemetry_cmd,  # noqa: E402,F401
)
from edgeproof.cli._app import app


def main() -> None:
    app()
