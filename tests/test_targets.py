"""Board catalog and firmware profiles: every number sourced, all simulated, clear errors for bad files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import run_cli
from edgeproof.errors import TargetError
from edgeproof.targets import get_target, load_catalog, load_firmware, load_target_file, resolve_firmware
from edgeproof.targets.catalog import CATALOG_DIR

BOARDS = {"jetson-orin-nano-8gb", "raspberry-pi-5", "coral-usb-rpi5", "hailo-8-rpi5", "nxp-imx8mp", "cortex-m55-ethos-u55"}


def _board_text(board: str = "raspberry-pi-5") -> str:
    return (CATALOG_DIR / f"{board}.toml").read_text()


def _write(tmp_path: Path, text: str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_catalog_has_the_six_boards_all_simulated_and_sourced():
    catalog = load_catalog()
    assert set(catalog) == BOARDS
    for target in catalog.values():
        assert target.simulated
        assert target.sources
        for key, text in target.sources.items():
            assert text.startswith(("assumed:", "derived:")) or "http" in text, (target.id, key)
        resolve_firmware(target, None)  # every board ships a stock firmware profile


def test_reference_specs_from_the_design():
    c = load_catalog()
    orin = c["jetson-orin-nano-8gb"]
    assert orin.accelerator.peak_tops["int8"] == 20.0  # 40 sparse TOPS = 20 dense
    assert orin.memory.bandwidth_gbs == 68.0 and set(orin.power_modes) == {"7W", "15W"}
    pi = c["raspberry-pi-5"]
    assert (pi.cpu.name, pi.cpu.cores, pi.cpu.max_clock_ghz) == ("Cortex-A76", 4, 2.4) and pi.accelerator is None
    coral = c["coral-usb-rpi5"].accelerator
    assert set(coral.peak_tops) == {"int8"} and coral.peak_tops["int8"] == 4.0 and coral.single_segment
    assert c["hailo-8-rpi5"].accelerator.peak_tops["int8"] == 26.0
    assert c["nxp-imx8mp"].accelerator.peak_tops["int8"] == 2.3
    assert c["cortex-m55-ethos-u55"].accelerator.peak_tops["int8"] <= 0.5


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(TargetError, match=r"unknown target 'pi6'; known targets: .*raspberry-pi-5"):
        get_target("pi6")


def test_a_unique_prefix_names_a_board_and_an_ambiguous_one_is_refused(tmp_path):
    assert get_target("jetson-orin-nano").id == "jetson-orin-nano-8gb"
    src = (CATALOG_DIR / "jetson-orin-nano-8gb.toml").read_text()
    (tmp_path / "jetson-orin-nano-4gb.toml").write_text(src.replace('id = "jetson-orin-nano-8gb"', 'id = "jetson-orin-nano-4gb"', 1))
    with pytest.raises(TargetError, match="ambiguous: it could be jetson-orin-nano-4gb, jetson-orin-nano-8gb"):
        get_target("jetson-orin-nano", [tmp_path])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('"cpu.op_overhead_us" = ', '"unused" = '), r"sources: no source for cpu\.op_overhead_us"),
        (lambda t: t.replace("cores = 4\n", 'cores = "four"\n', 1), r"cpu\.cores: .*integer"),
        (
            lambda t: t.replace('default_power_mode = "default"', 'default_power_mode = "turbo"'),
            r"default_power_mode 'turbo' is not one of",
        ),
        (lambda t: t.replace("[memory]", "[memory\n"), r"not valid TOML"),
        (lambda t: t.replace('"jitter" = "assumed:', '"jitter" = "trust me:'), r"sources\.jitter: give a URL"),
        (lambda t: t.replace("bandwidth_gbs = 17.07\n", "bandwidth_gbs = 17.07\nbandwith = 3\n"), r"memory\.bandwith: Extra inputs"),
        (lambda t: t.split("[sources]")[0], r"missing \[sources\] table"),
    ],
)
def test_catalog_errors_name_the_file_and_field(tmp_path, edit, message):
    path = _write(tmp_path, edit(_board_text()))
    with pytest.raises(TargetError, match=message) as info:
        load_target_file(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_duplicate_id_across_catalog_dirs_names_both_files(tmp_path):
    _write(tmp_path, _board_text(), "copy.toml")
    with pytest.raises(TargetError, match=r"copy\.toml: id 'raspberry-pi-5' is already defined in .*raspberry-pi-5\.toml"):
        load_catalog([tmp_path])


def test_an_extra_catalog_dir_adds_boards(tmp_path):
    _write(tmp_path, _board_text().replace('id = "raspberry-pi-5"', 'id = "pi5-lab"'), "lab.toml")
    assert "pi5-lab" in load_catalog([tmp_path])


def test_firmware_errors(tmp_path):
    target = get_target("raspberry-pi-5")
    stock = (Path(CATALOG_DIR).parent / "firmware" / "raspberry-pi-5.toml").read_text()
    wrong_board = _write(tmp_path, stock.replace('board = "raspberry-pi-5"', 'board = "hailo-8-rpi5"'), "fw1.toml")
    with pytest.raises(TargetError, match=r"fw1\.toml: board 'hailo-8-rpi5' does not match target 'raspberry-pi-5'"):
        resolve_firmware(target, wrong_board)
    no_hysteresis = _write(tmp_path, stock.replace("clear_c = 75.0", "clear_c = 85.0"), "fw2.toml")
    with pytest.raises(TargetError, match=r"fw2\.toml: governor: clear_c \(85\.0\) must be below trip_c"):
        load_firmware(no_hysteresis)
    bad_mode = _write(tmp_path, stock.replace('power_mode = "default"', 'power_mode = "15W"'), "fw3.toml")
    with pytest.raises(TargetError, match=r"power_mode '15W' is not one of"):
        resolve_firmware(target, bad_mode)


@pytest.mark.slow
def test_cli_lists_the_catalog_as_simulated():
    result = run_cli("targets")
    assert result.returncode == 0, result.stderr
    for board in BOARDS:
        assert board in result.stdout  # ids are never cut: they are what users type
    assert "all simulated" in result.stdout
    shown = run_cli("targets", "--show", "jetson-orin-nano")
    assert shown.returncode == 0 and "jetson-orin-nano-8gb" in shown.stdout and "simulated profile" in shown.stdout
    assert "sources" in shown.stdout and "http" in shown.stdout  # every figure is printed with its citation


@pytest.mark.slow
def test_cli_bad_catalog_file_is_one_line_exit_2(tmp_path):
    _write(tmp_path, _board_text().replace("max_clock_ghz = 2.4", "max_clock_ghz = -1"), "broken.toml")
    result = run_cli("targets", "--catalog", str(tmp_path))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert re.search(r"broken\.toml: cpu\.max_clock_ghz: .*greater than 0", line)
