"""The compiler, driver and board facts a run records for its BOM: found where they exist, said unavailable with why."""

from __future__ import annotations

from edgeproof.platform_facts import board_model, ort_build, platform_facts, tegra_release


def test_a_jetson_root_gives_its_l4t_release_and_board_name(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n")
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert tegra_release(str(tmp_path)).startswith("R36 (release), REVISION: 3.0")
    assert board_model(str(tmp_path)) == "NVIDIA Jetson Orin Nano Developer Kit"


def test_what_is_absent_says_why_and_what_exists_is_stated(tmp_path):
    facts = platform_facts(str(tmp_path))
    assert facts["driver_l4t_release"] == "unavailable:/etc/nv_tegra_release absent (not a Jetson)"
    assert facts["board_device_tree_model"].startswith("unavailable:/proc/device-tree/model absent")
    assert facts["kernel_release"] and not facts["kernel_release"].startswith("unavailable")
    assert "build type" in ort_build()  # this onnxruntime states its build
    driver = facts["driver_nvidia"]
    assert driver.startswith("unavailable:") or driver[0].isdigit()  # a version like 550.54.15 where NVML runs


def test_the_bom_states_the_compiler_and_says_why_a_driver_is_absent(tmp_path):
    from conftest import DIGITS_MODEL
    from edgeproof.bom._build import runtime_properties
    from edgeproof.measure.runner import ProfileOptions
    from edgeproof.runners import runner_for

    with runner_for("host", check_fitness=False) as runner:
        options = ProfileOptions(min_sessions=1, max_sessions=1, samples_per_session=20, cold_start_repeats=0, profile_nodes=False)
        record = runner.run(runner.prepare(DIGITS_MODEL, options), None, options)
    props = runtime_properties(record)
    assert "build type" in props["runtime.compiler"]
    driver = props["runtime.driver"]
    assert driver.startswith("driver_") or (driver.startswith("unavailable:") and ("NVML" in driver or "pynvml" in driver))
    assert props["platform.kernel"]
