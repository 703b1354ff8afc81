"""`edgeproof agent`: talk to a board's agent: who it is (hello), the phase-1 bring-up checklist, and boot time."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeproof.cli._app import app, console, user_errors

agent_app = typer.Typer(help="A board's agent: hello (fingerprint, busy) and bring-up (the phase-1 checklist).", no_args_is_help=True)
app.add_typer(agent_app, name="agent")

DeviceArg = Annotated[str, typer.Argument(help="device:<id> from boards.toml, or device:local (an agent subprocess here).")]


def _device_target(target: str) -> str:
    return target if target.startswith("device:") else f"device:{target}"


@agent_app.command("hello")
@user_errors
def agent_hello(target: DeviceArg = "device:local") -> None:
    """The agent's protocol, the board's fingerprint and whether another job holds the board."""
    from edgeproof.agent import connect
    from edgeproof.farm.inventory import get_device

    client, hello = connect(get_device(_device_target(target)))
    try:
        client.bye()
    finally:
        client.link.close()
    table = Table(title=f"{_device_target(target)}: protocol {hello.protocol}, {'BUSY' if hello.busy else 'free'}")
    table.add_column("field")
    table.add_column("value")
    for key, value in hello.fingerprint.items():
        table.add_row(key, escape(str(value)))
    if hello.busy:
        table.add_row("busy with", escape(str(hello.busy)))
    console.print(table)


@agent_app.command("bring-up")
@user_errors
def agent_bring_up(target: DeviceArg = "device:local") -> None:
    """Phase-1 checklist: uptime, accelerator providers, kernel errors, telemetry: exit 0 all pass, 1 a check failed."""
    from edgeproof.runners.agent import AgentRunner

    runner = AgentRunner(_device_target(target))
    with runner:
        checks = runner.bring_up()
    from edgeproof.cli.device_cmd import print_checks

    raise typer.Exit(1 if print_checks(_device_target(target), checks) else 0)


@agent_app.command("boot")
@user_errors
def agent_boot(
    target: DeviceArg = "device:local",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for hello after power on.")] = 300.0,
) -> None:
    """Boot time: power-cycle a labgrid:<place> device with its power driver, time power on → hello answered."""
    from edgeproof.agent._labgrid import measure_boot
    from edgeproof.farm.inventory import get_device

    boot = measure_boot(get_device(_device_target(target)), timeout)
    console.print(
        f"{_device_target(target)}: boot {boot.boot_s:.2f} s ({boot.provenance}); whole power cycle {boot.cycle_s:.2f} s, "
        f"{boot.attempts} hello attempt(s)",
        highlight=False,
    )
