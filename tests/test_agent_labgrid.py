"""The labgrid transport for real: labgrid's own environment config names a place whose NetworkService
is the loopback SSH board of test_agent_ssh and whose power is labgrid's ExternalPowerDriver running
commands that switch that board off and on; the board takes a while to boot after power on."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import asyncssh
import pytest

from conftest import DIGITS_MODEL
from edgeproof.agent import AgentError, BoardLost
from edgeproof.agent._labgrid import measure_boot
from edgeproof.farm.inventory import Device, get_device
from edgeproof.records import RuntimeSettings
from edgeproof.runners.agent import AgentRunner
from test_agent import QUICK
from test_agent_ssh import LoopbackBoard

BOOT_S = 1.0
# A power switch as labgrid's ExternalPowerDriver runs it: a command that writes the board's power state.
SWITCH = "import sys, time\nopen(sys.argv[1], 'w').write(sys.argv[2] + ' ' + repr(time.time()))\n"


class PoweredBoard(LoopbackBoard):
    """The loopback board behind a power switch: off, it refuses; BOOT_S after power on, it serves the agent."""

    def __init__(self, root: Path) -> None:
        self.power_file = root / "power"
        self.power_file.write_text(f"on {time.time() - BOOT_S}")
        super().__init__(root)

    async def _agent(self, process: asyncssh.SSHServerProcess) -> None:
        state, since = self.power_file.read_text().split()
        if state == "off" or time.time() - float(since) < BOOT_S:
            process.stderr.write("board is off or still booting\n")
            process.exit(255)
            return
        await super()._agent(process)


def lab_config(board: PoweredBoard, tmp_path: Path, place: str = "bench-a") -> Path:
    """labgrid's environment config: the place's network service, SSH key and power switch."""
    key = tmp_path / "home" / ".ssh" / "id_ed25519"
    script = tmp_path / "power_switch.py"
    script.write_text(SWITCH)
    switch = f"{sys.executable} {script} {board.power_file}"
    config = tmp_path / "lab.yaml"
    config.write_text(
        f"targets:\n  {place}:\n"
        f"    resources:\n      NetworkService:\n        address: 127.0.0.1\n        port: {board.port}\n        username: tester\n"
        f"    drivers:\n      SSHDriver:\n        keyfile: {key}\n"
        f'      ExternalPowerDriver:\n        cmd_on: "{switch} on"\n        cmd_off: "{switch} off"\n        delay: 0.1\n'
    )
    return config


@pytest.fixture
def lab(tmp_path, monkeypatch):
    board = PoweredBoard(tmp_path)
    home = tmp_path / "home"
    board.write_user_ssh_config(home, "unused-alias")
    (home / ".ssh" / "config").unlink()  # only labgrid's config says where the board is
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LG_ENV", str(lab_config(board, tmp_path)))
    boards = tmp_path / "boards.toml"
    boards.write_text('[devices.bench-a]\nboard = "raspberry-pi-5"\ntransport = "labgrid:bench-a"\n')
    monkeypatch.setenv("EDGEPROOF_BOARDS", str(boards))
    yield board
    board.close()


def test_a_labgrid_place_reaches_the_agent_through_its_network_service(lab):
    with AgentRunner("device:bench-a") as runner:
        record = runner.run(runner.prepare(DIGITS_MODEL, QUICK), RuntimeSettings(), QUICK)
    assert lab.commands == ["edgeproof-agent --device-id bench-a"]
    assert record.latency_provenance == "measured:agent:bench-a" and record.latency.n_samples == 20
    assert record.env.extra["transport"] == "labgrid:bench-a" and record.target.board == "raspberry-pi-5"


def test_boot_time_is_power_on_to_hello_with_labgrids_power_driver(lab):
    boot = measure_boot(get_device("device:bench-a"), timeout_s=30)
    assert lab.power_file.read_text().startswith("on ")  # labgrid's driver switched it off and on
    assert boot.boot_s >= BOOT_S and boot.cycle_s >= boot.boot_s + 0.1
    assert boot.boot_s < BOOT_S + 15 and boot.provenance == "measured:labgrid:bench-a:power-on→hello"


def test_a_board_that_never_boots_is_lost_not_timed(lab, tmp_path):
    config = Path(str(lab_config(lab, tmp_path)))
    config.write_text(config.read_text().replace(' on"', ' off"'))  # power on leaves it off
    with pytest.raises(BoardLost, match=r"no hello within 1 s of power on") as lost:
        measure_boot(get_device("device:bench-a"), timeout_s=1)
    assert lost.value.exit_code == 3


def test_labgrid_mistakes_are_one_line(lab, monkeypatch, tmp_path):
    with pytest.raises(AgentError, match=r"labgrid:bench-b: no target 'bench-b' in .*lab.yaml; its targets: bench-a"):
        AgentRunner(Device(id="b", transport="labgrid:bench-b")).open()
    monkeypatch.delenv("LG_ENV")
    with pytest.raises(AgentError, match="set LG_ENV to labgrid's environment config"):
        AgentRunner("device:bench-a").open()
    with pytest.raises(AgentError, match="boot time needs a labgrid:<place> transport"):
        measure_boot(Device(id="plain"))
