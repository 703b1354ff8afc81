"""Temperatures from a fake sysfs tree, and the background peak sampler with a sensor changing under it."""

import os
import time
from pathlib import Path

from edgeproof.measure.thermal import ThermalSampler, max_temperature_c, read_temperatures


def put(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def fake_tree(root: Path) -> Path:
    """Two thermal zones (one garbled), a hwmon chip with a labelled and an unlabelled sensor; returns the hot one."""
    put(root / "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    put(root / "sys/class/thermal/thermal_zone0/temp", 45500)
    put(root / "sys/class/thermal/thermal_zone1/type", "iwlwifi")
    put(root / "sys/class/thermal/thermal_zone1/temp", "")  # a driver with no reading right now
    put(root / "sys/class/thermal/thermal_zone10/type", "gpu-thermal")
    put(root / "sys/class/thermal/thermal_zone10/temp", 39000)
    chip = root / "sys/class/hwmon/hwmon2"
    put(chip / "name", "k10temp")
    put(chip / "temp1_label", "Tctl")
    put(chip / "temp1_input", 61250)
    put(chip / "temp2_input", 40000)
    return chip / "temp1_input"


def test_reads_thermal_zones_and_hwmon_with_names(tmp_path):
    fake_tree(tmp_path)
    assert read_temperatures(tmp_path) == {
        "thermal_zone0:cpu-thermal": 45.5,
        "thermal_zone10:gpu-thermal": 39.0,
        "hwmon2:k10temp/Tctl": 61.25,
        "hwmon2:k10temp/temp2": 40.0,
    }
    assert max_temperature_c(tmp_path) == 61.25


def test_no_sensor_is_none_not_zero(tmp_path):
    assert read_temperatures(tmp_path) == {}
    assert max_temperature_c(tmp_path) is None
    with ThermalSampler(tmp_path, interval_s=0.01) as sampler:
        time.sleep(0.03)
    assert sampler.peak_c is None and sampler.peak_sensor is None
    assert sampler.n_samples >= 2


def test_sampler_catches_a_peak_that_is_gone_by_the_end(tmp_path):
    hot = fake_tree(tmp_path)
    with ThermalSampler(tmp_path, interval_s=0.01) as sampler:
        time.sleep(0.05)
        put(hot, 83500)
        time.sleep(0.1)
        put(hot, 55000)
        time.sleep(0.05)
    assert sampler.peak_c == 83.5
    assert sampler.peak_sensor == "hwmon2:k10temp/Tctl"
    assert max_temperature_c(tmp_path) == 55.0
