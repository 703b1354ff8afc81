"""The labgrid transport (the ``labgrid`` extra): a place is the target of that name in labgrid's
environment config (``$LG_ENV``, labgrid's own convention). Its ``NetworkService`` says where the
agent answers over SSH (with the ``SSHDriver``'s key, if one is configured), and its power driver
power-cycles the board for a boot-time measurement: power on → the agent's ``hello`` answered."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from edgeproof.agent._errors import AgentError, BoardLost
from edgeproof.errors import first_line

ENV_VAR = "LG_ENV"
_RETRY_S = 0.2
# how long a board stays off in a power cycle when its driver does not say (labgrid's own default)
_OFF_S = 2.0


@dataclass
class Place:
    """One labgrid target: where its agent answers over SSH, and the target itself (for its drivers)."""

    name: str
    config: str
    host: str
    port: int
    user: str
    password: str | None
    keyfile: str | None
    target: Any
    environment: Any

    def power(self) -> Any:
        """The place's power driver (labgrid's ``PowerProtocol``), activated."""
        try:
            return self.target.get_driver("PowerProtocol")
        except Exception as exc:  # labgrid's NoDriverFoundError and binding errors share no base we can name
            raise AgentError(f"labgrid:{self.name}: no power driver in {self.config} ({first_line(exc)}); boot time needs one") from None

    def close(self) -> None:
        self.environment.cleanup()


def open_place(name: str, config: str | None = None) -> Place:
    """The place ``name`` from labgrid's environment config (``config``, else ``$LG_ENV``)."""
    try:
        from labgrid import Environment
        from labgrid.driver import SSHDriver
        from labgrid.resource import NetworkService
    except ImportError:
        raise AgentError(f"labgrid:{name}: the labgrid transport needs labgrid: pip install 'edgeproof[labgrid]'") from None
    config = config or os.environ.get(ENV_VAR)
    if not config:
        raise AgentError(f"labgrid:{name}: set {ENV_VAR} to labgrid's environment config that has a target named {name!r}")
    try:
        environment = Environment(config_file=config)
        target = environment.get_target(name)
    except Exception as exc:  # labgrid raises its own config errors (NoConfigFoundError, InvalidConfigError, YAML errors)
        raise AgentError(f"{config}: labgrid cannot read it ({first_line(exc) or type(exc).__name__})") from None
    if target is None:
        known = ", ".join(sorted(environment.config.get_targets())) or "none"
        raise AgentError(f"labgrid:{name}: no target {name!r} in {config}; its targets: {known}")
    try:
        service = target.get_resource(NetworkService)
    except Exception:  # NoResourceFoundError
        environment.cleanup()
        raise AgentError(f"labgrid:{name}: {config} gives the target no NetworkService (where its agent answers over SSH)") from None
    try:
        keyfile = target.get_driver(SSHDriver, activate=False).keyfile or None
    except Exception:  # no SSHDriver configured: the user's SSH config and agent supply the key
        keyfile = None
    return Place(name, config, service.address, service.port, service.username, service.password, keyfile, target, environment)


@dataclass
class BootTime:
    """A measured boot: power on → the agent's hello answered, and the whole power cycle."""

    place: str
    boot_s: float
    cycle_s: float
    attempts: int

    @property
    def provenance(self) -> str:
        return f"measured:labgrid:{self.place}:power-on→hello"


def measure_boot(device: Any, timeout_s: float = 300.0) -> BootTime:
    """Power-cycle ``device``'s place with its power driver (off, its delay, on) and time from the
    power-on command to the agent's answered hello.

    A board whose agent does not answer within ``timeout_s`` is lost (exit 3), never a boot time."""
    from edgeproof.agent import connect

    name = device.labgrid_place
    if name is None:
        raise AgentError(f"{device.target_id}: boot time needs a labgrid:<place> transport (its power driver), not {device.transport}")
    place = open_place(name)
    try:
        power = place.power()
        started = time.monotonic()
        power.off()
        time.sleep(float(getattr(power, "delay", _OFF_S)))  # the driver's own off time, where it has one
        powered = time.monotonic()
        power.on()
        attempts = 0
        while True:
            attempts += 1
            try:
                client, _ = connect(device)
            except AgentError as exc:
                if "protocol mismatch" in str(exc):
                    raise
                if time.monotonic() - powered > timeout_s:
                    raise BoardLost(f"{device.target_id}: no hello within {timeout_s:g} s of power on ({exc})") from None
                time.sleep(_RETRY_S)
                continue
            answered = time.monotonic()
            client.bye()
            client.link.close()
            return BootTime(name, answered - powered, answered - started, attempts)
    finally:
        place.close()
