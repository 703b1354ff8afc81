"""Energy meters on fake sysfs trees, a fake tegrastats binary and meter CSVs; detection on this host."""

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeproof.errors import DataError
from edgeproof.measure.energy import (
    EnergyWindow,
    ExternalCsvMeter,
    MeterError,
    ZeusMeter,
    best_meter,
    csv_windows,
    detect_meters,
    ina3221_meter,
    integrate_tegrastats_log,
    parse_tegrastats_line,
    probe_hwmon,
    probe_ina3221,
    probe_rapl,
    probe_tegrastats,
    probe_zeus,
    why_unavailable,
)


def put(path: Path, value: object) -> None:
    """Write a sysfs-like attribute atomically, so a sampling thread never reads it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def rapl_zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int = 262143328850) -> Path:
    path = root / "sys/class/powercap" / zone
    put(path / "name", name)
    put(path / "energy_uj", energy_uj)
    put(path / "max_energy_range_uj", max_uj)
    return path


def step_window(meter, step_up, low_w: float, high_w: float, low_s: float, high_s: float):
    """One window in which the sensor steps from low_w to high_w; returns it and the joules actually drawn."""
    meter.begin_window("run")
    t_begin = time.perf_counter()
    time.sleep(low_s)
    step_up()
    t_switch = time.perf_counter()
    time.sleep(high_s)
    window = meter.end_window("run")
    t_end = time.perf_counter()
    return window, low_w * (t_switch - t_begin) + high_w * (t_end - t_switch)


# --- RAPL -------------------------------------------------------------------------------------------


def test_rapl_sums_packages_and_dram_but_not_core_or_psys(tmp_path):
    pkg0 = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 10_000_000)
    core = rapl_zone(tmp_path, "intel-rapl:0:0", "core", 5_000_000)
    dram = rapl_zone(tmp_path, "intel-rapl:0:1", "dram", 1_000_000)
    psys = rapl_zone(tmp_path, "intel-rapl:1", "psys", 50_000_000)
    pkg2 = rapl_zone(tmp_path, "intel-rapl:2", "package-1", 7_000_000)
    probe = probe_rapl(tmp_path)
    (meter,) = probe.meters
    assert meter.name == "rapl:package-0+package-0/dram+package-1"

    meter.begin_window("run")
    put(pkg0 / "energy_uj", 13_500_000)  # +3.5 J
    put(core / "energy_uj", 8_000_000)  # inside package: must not be added again
    put(dram / "energy_uj", 1_250_000)  # +0.25 J
    put(psys / "energy_uj", 90_000_000)  # platform total: would double count
    put(pkg2 / "energy_uj", 9_000_000)  # +2 J
    window = meter.end_window("run")

    assert window.energy_j == pytest.approx(5.75)
    assert window.meter == meter.name
    assert window.duration_s > 0
    assert window.avg_power_w == pytest.approx(window.energy_j / window.duration_s)


def test_rapl_counter_wraparound(tmp_path):
    max_uj = 65_532_610_987
    pkg = rapl_zone(tmp_path, "intel-rapl:0", "package-0", max_uj - 2_000_000, max_uj=max_uj)
    (meter,) = probe_rapl(tmp_path).meters
    meter.begin_window("w")
    put(pkg / "energy_uj", 3_000_000)  # wrapped: 2 J before the top, 3 J after zero
    assert meter.end_window("w").energy_j == pytest.approx(5.0)


def test_rapl_absent_and_unreadable_say_why(tmp_path):
    assert probe_rapl(tmp_path).absent == f"no RAPL ({tmp_path}/sys/class/powercap absent)"
    zone = tmp_path / "sys/class/powercap/intel-rapl:0"
    put(zone / "name", "package-0")
    (zone / "energy_uj").mkdir()  # stands in for a root-only counter (tests may run as root)
    probe = probe_rapl(tmp_path)
    assert probe.meters == []
    assert probe.absent.startswith("RAPL unreadable (cannot read") and "energy_uj" in probe.absent


# --- hwmon ------------------------------------------------------------------------------------------


def test_hwmon_power_sensor_is_sampled_and_integrated(tmp_path):
    chip = tmp_path / "sys/class/hwmon/hwmon0"
    put(chip / "name", "testpsu")
    put(chip / "power1_label", "board_in")
    put(chip / "power1_input", 2_000_000)  # µW
    (meter,) = probe_hwmon(tmp_path, interval_s=0.01).meters
    assert meter.name == "hwmon:testpsu/board_in"

    window, expected_j = step_window(meter, lambda: put(chip / "power1_input", 6_000_000), 2.0, 6.0, 0.15, 0.45)
    # Only the two end readings would give 4 W x 0.6 s = 2.4 J against the true ~3.0 J: the
    # background samples must have caught the step.
    assert window.energy_j == pytest.approx(expected_j, rel=0.08)
    assert 2.0 < window.avg_power_w < 6.0
    meter.close()


def test_hwmon_prefers_energy_counters_and_rejects_a_counter_going_back(tmp_path):
    chip = tmp_path / "sys/class/hwmon/hwmon1"
    put(chip / "name", "amd_energy")
    put(chip / "energy1_label", "Esocket0")
    put(chip / "energy1_input", 40_000_000)  # µJ
    put(chip / "power1_input", 9_000_000)  # same channel: the counter wins
    put(chip / "power2_input", 1_000_000)
    meters = probe_hwmon(tmp_path).meters
    assert [m.name for m in meters] == ["hwmon:amd_energy/Esocket0", "hwmon:amd_energy/power2"]

    counter = meters[0]
    counter.begin_window("a")
    put(chip / "energy1_input", 41_500_000)
    assert counter.end_window("a").energy_j == pytest.approx(1.5)
    counter.begin_window("b")
    put(chip / "energy1_input", 100)
    with pytest.raises(MeterError, match="went backwards"):
        counter.end_window("b")


def test_overlapping_windows_on_a_sampled_meter(tmp_path):
    chip = tmp_path / "sys/class/hwmon/hwmon0"
    put(chip / "name", "rail")
    put(chip / "power1_input", 3_000_000)
    (meter,) = probe_hwmon(tmp_path, interval_s=0.01).meters
    with meter:
        meter.begin_window("outer")
        time.sleep(0.05)
        meter.begin_window("inner")
        time.sleep(0.05)
        inner = meter.end_window("inner")
        time.sleep(0.05)
        outer = meter.end_window("outer")
        with pytest.raises(ValueError, match="not open"):
            meter.end_window("outer")
    assert inner.energy_j == pytest.approx(3.0 * inner.duration_s)
    assert outer.energy_j == pytest.approx(3.0 * outer.duration_s)
    assert outer.duration_s > inner.duration_s + 0.09


def test_window_names_are_checked(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    (meter,) = probe_rapl(tmp_path).meters
    meter.begin_window("x")
    with pytest.raises(ValueError, match="already open"):
        meter.begin_window("x")
    assert meter.open_windows == ("x",)
    with pytest.raises(ValueError, match="duration"):
        EnergyWindow(name="bad", energy_j=1.0, duration_s=0.0, meter="m")


# --- INA3221 ----------------------------------------------------------------------------------------


def ina3221_hwmon(root: Path) -> Path:
    """Mainline-driver layout (Orin): labels, bus voltage in mV and current in mA per channel."""
    folder = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for n, (label, mv, ma) in enumerate([("VDD_IN", 5000, 1000), ("VDD_CPU_GPU_CV", 5000, 400), ("VDD_SOC", 5000, 200)], 1):
        put(folder / f"in{n}_label", label)
        put(folder / f"in{n}_input", mv)
        put(folder / f"curr{n}_input", ma)
    return folder


def test_ina3221_picks_rail_by_label(tmp_path):
    ina3221_hwmon(tmp_path)
    (default,) = probe_ina3221(tmp_path, interval_s=0.01).meters
    assert default.name == "ina3221:VDD_IN"
    soc = ina3221_meter(tmp_path, rail="VDD_SOC", interval_s=0.01)
    assert soc.name == "ina3221:VDD_SOC"
    for meter, watts in ((default, 5.0), (soc, 1.0)):
        meter.begin_window("w")
        time.sleep(0.1)
        window = meter.end_window("w")
        assert window.energy_j == pytest.approx(watts * window.duration_s)
    with pytest.raises(MeterError, match=r"no INA3221 rail named VDD_GPU \(rails found: VDD_IN, VDD_CPU_GPU_CV, VDD_SOC\)"):
        ina3221_meter(tmp_path, rail="VDD_GPU")


def test_ina3221_downstream_iio_layout_and_nano_input_rail(tmp_path):
    folder = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    put(folder / "rail_name_0", "POM_5V_IN")
    put(folder / "in_power0_input", 3000)  # mW
    put(folder / "rail_name_1", "POM_5V_GPU")
    put(folder / "in_current1_input", 100)
    put(folder / "in_voltage1_input", 5000)
    (meter,) = probe_ina3221(tmp_path, interval_s=0.01).meters
    assert meter.name == "ina3221:POM_5V_IN"
    meter.begin_window("w")
    time.sleep(0.05)
    window = meter.end_window("w")
    assert window.energy_j == pytest.approx(3.0 * window.duration_s)
    gpu = ina3221_meter(tmp_path, rail="POM_5V_GPU")
    gpu.begin_window("w")
    window = gpu.end_window("w")
    assert window.avg_power_w == pytest.approx(0.5)


# --- tegrastats -------------------------------------------------------------------------------------

ORIN_LINE = (
    "12-23-2024 22:54:11 RAM 3162/7620MB (lfb 4x2MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729,off,off] "
    "GR3D_FREQ 1% cpu@62.843C soc2@61.968C gpu@61.687C tj@62.843C VDD_IN 3913mW/3922mW VDD_CPU_GPU_CV 598mW/598 "
    "VDD_SOC 1238mW/1237mW"
)
NANO_LINE = (
    "RAM 1766/3964MB (lfb 197x4MB) IRAM 0/252kB(lfb 252kB) SWAP 0/2048MB (cached 0MB) CPU [24%@1224,15%@1224] "
    "EMC_FREQ 0% GR3D_FREQ 0% PLL@21C CPU@25C PMIC@100C GPU@23.5C POM_5V_IN 2545/2547 POM_5V_GPU 0/0 POM_5V_CPU 549/529"
)
XAVIER_LINE = "RAM 5059/30623MB (lfb 5843x4MB) CPU [15%@735] GPU 152/150 CPU 311/311 SOC 933/933 CV 0/0 VDDRQ 155/155 SYS5V 1254/1254"


def test_tegrastats_lines_of_three_jetpack_formats():
    orin = parse_tegrastats_line(ORIN_LINE)
    assert orin.rails_mw == {"VDD_IN": 3913.0, "VDD_CPU_GPU_CV": 598.0, "VDD_SOC": 1238.0}
    assert orin.timestamp_s == pytest.approx(datetime(2024, 12, 23, 22, 54, 11).timestamp())
    nano = parse_tegrastats_line(NANO_LINE)
    assert nano.rails_mw == {"POM_5V_IN": 2545.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 549.0}
    assert nano.timestamp_s is None
    xavier = parse_tegrastats_line(XAVIER_LINE)
    assert xavier.rails_mw == {"GPU": 152.0, "CPU": 311.0, "SOC": 933.0, "CV": 0.0, "VDDRQ": 155.0, "SYS5V": 1254.0}
    assert parse_tegrastats_line(f"1700000000.250 {NANO_LINE}").timestamp_s == 1700000000.25


def test_tegrastats_log_integration_and_errors():
    t0 = 1_700_000_000.0
    # 1 s apart, 2 W then 4 W then 4 W: the window [t0+0.5, t0+2.0] sees 3 W -> 4 W linear, then 4 W.
    log = [f"{t0 + i:.3f} {ORIN_LINE[20:].replace('3913mW', f'{mw}mW')}" for i, mw in enumerate([2000, 4000, 4000])]
    energy_j = integrate_tegrastats_log(log, "VDD_IN", t0 + 0.5, t0 + 2.0)
    assert energy_j == pytest.approx(0.5 * (3.0 + 4.0) / 2 + 1.0 * 4.0)

    # Whole-second local stamps repeat at a 500 ms interval: refused unless the interval is given.
    stamped = [ORIN_LINE, ORIN_LINE, ORIN_LINE.replace("22:54:11", "22:54:12")]
    with pytest.raises(DataError, match=r"run.log:2: timestamp does not increase"):
        integrate_tegrastats_log(stamped, "VDD_IN", 0, 1, source="run.log")
    start = parse_tegrastats_line(ORIN_LINE).timestamp_s
    assert integrate_tegrastats_log(stamped, "VDD_IN", start, start + 1.0, interval_ms=500) == pytest.approx(3.913)

    with pytest.raises(DataError, match=r"run.log: window .* lies outside the log"):
        integrate_tegrastats_log(stamped, "VDD_IN", start, start + 5.0, interval_ms=500, source="run.log")
    with pytest.raises(DataError, match=r"run.log:1: no VDD_IN rail .*POM_5V_IN"):
        integrate_tegrastats_log([NANO_LINE], "VDD_IN", 0, 1, interval_ms=500, source="run.log")


FAKE_TEGRASTATS = """#!{python}
import pathlib, sys, time
interval_s = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000
control = pathlib.Path(__file__).with_name("power_mw")
while True:
    mw = control.read_text().strip()
    print(f"RAM 2340/7620MB (lfb 1x4MB) CPU [1%@729] VDD_IN {{mw}}mW/{{mw}}mW VDD_SOC 1357mW/1357mW", flush=True)
    time.sleep(interval_s)
"""


def test_tegrastats_meter_runs_the_binary_and_integrates_its_lines(tmp_path):
    binary = tmp_path / "usr/bin/tegrastats"
    put(binary, FAKE_TEGRASTATS.format(python=sys.executable))
    binary.chmod(0o755)
    put(binary.with_name("power_mw"), 4000)
    (meter,) = probe_tegrastats(tmp_path, interval_ms=20).meters
    assert meter.name == "tegrastats:VDD_IN"

    window, expected_j = step_window(meter, lambda: put(binary.with_name("power_mw"), 8000), 4.0, 8.0, 0.2, 0.5)
    assert window.energy_j == pytest.approx(expected_j, rel=0.08)

    wrong_rail = probe_tegrastats(tmp_path, rail="VDD_GPU", interval_ms=20).meters[0]
    with pytest.raises(MeterError, match="printed no VDD_GPU rail"):
        wrong_rail.begin_window("run")
    assert probe_tegrastats(tmp_path / "elsewhere").absent == "no tegrastats binary"


# --- external meter CSV -----------------------------------------------------------------------------


def test_csv_power_log_aligned_to_windows_with_clock_offset(tmp_path):
    path = tmp_path / "meter.csv"
    rows = [f"{1000 + i},{w}" for i, w in enumerate([1.0, 1.0, 3.0, 3.0, 3.0, 1.0])]
    path.write_text("Timestamp,Power (W)\n" + "\n".join(rows) + "\n")
    # The meter's clock runs 100 s ahead of the host's.
    (a, b) = csv_windows(path, [("a", 901.0, 903.0), ("b", 902.5, 904.0)], clock_offset_s=100.0)
    assert a.energy_j == pytest.approx(2.0 + 3.0)  # a 1 -> 3 W ramp over 1 s, then 3 W for 1 s
    assert b.energy_j == pytest.approx(1.5 * 3.0)
    assert (a.meter, a.duration_s) == ("external:meter.csv", 2.0)


def test_csv_cumulative_energy_with_iso_timestamps(tmp_path):
    path = tmp_path / "otii.csv"
    path.write_text("time,energy_mj\n2026-11-25T10:00:00Z,0\n2026-11-25T10:00:01Z,2000\n2026-11-25T10:00:02+00:00,6000\n")
    t0 = datetime(2026, 11, 25, 10, tzinfo=UTC).timestamp()
    (window,) = csv_windows(path, [("run", t0 + 0.5, t0 + 1.5)])
    assert window.energy_j == pytest.approx(1.0 + 2.0)


def test_csv_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,power_w\n1000,2.0\n1001,2.5\n1002,oops\n")
    with pytest.raises(DataError, match=rf"{path}:4: power_w 'oops' is not a number"):
        csv_windows(path, [("run", 1000.0, 1001.0)])
    path.write_text("timestamp,power_w\n1000,2.0\n999,2.5\n")
    with pytest.raises(DataError, match=rf"{path}:3: timestamp goes back"):
        csv_windows(path, [("run", 1000.0, 1001.0)])
    path.write_text("timestamp,current_ma\n1000,2.0\n1001,2.5\n")
    with pytest.raises(DataError, match=rf"{path}: no power or energy column .*current_ma"):
        csv_windows(path, [("run", 1000.0, 1001.0)])
    path.write_text("timestamp,power_w\n1000,2.0\n1001,2.5\n")
    with pytest.raises(DataError, match=rf"{path}: window 'late' \[.*\] lies outside the CSV's"):
        csv_windows(path, [("late", 1000.5, 1002.0)])
    with pytest.raises(DataError, match="cannot read meter CSV"):
        csv_windows(tmp_path / "missing.csv", [("run", 1000.0, 1001.0)])


def test_external_csv_meter_times_windows_on_the_host_clock(tmp_path):
    path = tmp_path / "live.csv"
    now = time.time()
    path.write_text("unix_s,power_w\n" + "".join(f"{now - 5 + i},2.5\n" for i in range(11)))
    meter = ExternalCsvMeter(path)
    meter.begin_window("w")
    time.sleep(0.05)
    window = meter.end_window("w")
    assert window.energy_j == pytest.approx(2.5 * window.duration_s, rel=0.01)
    late = ExternalCsvMeter(path, clock_offset_s=3600.0)
    late.begin_window("w")
    with pytest.raises(DataError, match="lies outside the CSV"):
        late.end_window("w")


# --- detection --------------------------------------------------------------------------------------


def test_empty_root_has_no_meter_and_says_what_is_absent(tmp_path):
    assert detect_meters(tmp_path) == []
    assert best_meter(tmp_path) is None
    why = why_unavailable(tmp_path)
    assert f"no RAPL ({tmp_path}/sys/class/powercap absent)" in why
    assert "no hwmon power sensor" in why and "no INA3221" in why and "no tegrastats" in why
    assert "\n" not in why


def test_detection_ranks_board_input_rail_above_rapl(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    ina3221_hwmon(tmp_path)
    names = [m.name for m in detect_meters(tmp_path)]
    assert names == ["ina3221:VDD_IN", "rapl:package-0"]
    assert best_meter(tmp_path).name == "ina3221:VDD_IN"
    assert "RAPL" not in why_unavailable(tmp_path)


@pytest.mark.skipif(Path("/sys/class/powercap").exists(), reason="this host exposes powercap")
def test_this_host_has_no_meter_and_names_rapl():
    assert best_meter("/") is None
    why = why_unavailable("/")
    assert "no RAPL (/sys/class/powercap absent)" in why


def test_zeus_meter_reports_unavailable_without_raising_or_measures():
    probe = probe_zeus()
    if probe.meters:
        (meter,) = probe.meters
        assert meter.name.startswith("zeus:")
        meter.begin_window("w")
        time.sleep(0.5)
        assert meter.end_window("w").energy_j > 0
    else:
        assert "no NVML/AMD GPU" in probe.absent
        with pytest.raises(MeterError, match="no NVML/AMD GPU"):
            ZeusMeter()
