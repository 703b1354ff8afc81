"""What the board is and what it can tell: fingerprint, meters, and the phase-1 bring-up checklist."""

from __future__ import annotations

import base64
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort
import psutil

from edgeproof_agent import PROTOCOL, __version__

# A two-node ONNX model (Relu, Add on a 1×4 float) that every provider can run: bring-up's smoke test.
_SMOKE_MODEL = base64.b64decode(
    "CAcSD2VkZ2Vwcm9vZi1hZ2VudDpRCgwKAXgSAWgiBFJlbHUKDgoBaAoBeBIBeSIDQWRkEgdicmluZ3VwWhMKAXgSDgoMCAESCAoCCAEKAggEYhMKAXkSDgoMCAESCAoCCAEKAggEQgQKABAN"
)
_RAPL = Path("/sys/class/powercap/intel-rapl:0")
_COMMAND_TIMEOUT_S = 10
# Providers that reach a service, not hardware on the board: bring-up does not count them.
_NOT_ON_BOARD = {"AzureExecutionProvider"}


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def _command(*argv: str) -> tuple[int, str]:
    """A fixed system command's exit code and output; (127, why) when it is absent or hangs."""
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]} not found"
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, f"{argv[0]}: {exc}"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def power_mode() -> str | None:
    """The power mode `nvpmodel -q` reports on a Jetson; None elsewhere."""
    code, out = _command("nvpmodel", "-q")
    if code != 0:
        return None
    for line in out.splitlines():
        if "Power Mode" in line:
            return line.split(":", 1)[1].strip()
    return out.splitlines()[0] if out else None


class EnergyCounter:
    """RAPL's cumulative energy counter, read at the edges of a timed window."""

    name = "rapl"

    def __init__(self, root: Path = _RAPL) -> None:
        self.root = root
        self.wrap_uj = int(_read(root / "max_energy_range_uj") or 0) or 2**32

    @classmethod
    def found(cls) -> EnergyCounter | None:
        return cls() if _read(_RAPL / "energy_uj") is not None else None

    def begin(self) -> tuple[int, int]:
        return int(_read(self.root / "energy_uj") or 0), time.perf_counter_ns()

    def end(self, window: tuple[int, int]) -> tuple[float, float]:
        """(joules, seconds) since ``begin``; the counter may wrap once."""
        energy_uj, t_ns = int(_read(self.root / "energy_uj") or 0), time.perf_counter_ns()
        delta = (energy_uj - window[0]) % self.wrap_uj
        return delta / 1e6, (t_ns - window[1]) / 1e9


def peak_temperature_c() -> float | None:
    """The hottest sensor psutil can read now; None where none is readable."""
    read = getattr(psutil, "sensors_temperatures", None)
    try:
        sensors = read() if read else {}
    except OSError:
        sensors = {}
    values = [t.current for entries in sensors.values() for t in entries if t.current is not None and t.current > 0]
    return max(values) if values else None


def meters() -> dict[str, str]:
    """Where each board figure comes from: a meter name, or ``unavailable:<why>``."""
    energy = "rapl" if EnergyCounter.found() else "unavailable:no power meter readable on the board (no RAPL powercap counter)"
    temperature = "thermal-sensors" if peak_temperature_c() is not None else "unavailable:no temperature sensor readable on the board"
    return {
        "latency": "perf_counter_ns",
        "load_time": "fresh-process:session+first-inference",
        "peak_rss": "fresh-process:VmHWM",
        "energy": energy,
        "power": energy,
        "temperature": temperature,
    }


def fingerprint() -> dict[str, Any]:
    """Everything about the board that can change a measurement, sent with `hello` and every profile."""
    build = ort.get_build_info() if hasattr(ort, "get_build_info") else ""
    try:
        import onnx  # a board rarely has it; the record says which

        onnx_version = onnx.__version__
    except ImportError:
        onnx_version = "absent"
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "agent": f"edgeproof-agent {__version__}",
        "protocol": PROTOCOL,
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=True) or 1,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 2),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_build": build.removeprefix("ORT Build Info: ") if build else "",
        "onnx": onnx_version,
        "providers": list(ort.get_available_providers()),
        "governor": governor,
        "device_tree_model": _read("/proc/device-tree/model"),
        "firmware_release": (_read("/etc/nv_tegra_release") or "").splitlines()[0] if _read("/etc/nv_tegra_release") else None,
        "power_mode": power_mode(),
        "meters": meters(),
    }


def _check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"name": name, "status": status, "detail": detail}


def _provider_checks() -> list[dict[str, str]]:
    """Can each provider this onnxruntime has create a session and run the smoke model?"""
    import numpy as np

    out = []
    for provider in ort.get_available_providers():
        if provider in _NOT_ON_BOARD:
            continue
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(_SMOKE_MODEL, providers=providers)
            (y,) = session.run(None, {"x": np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32)})
            ran = session.get_providers()[0]
            ok = bool(np.allclose(y, [[-1.0, 0.0, 2.0, 4.0]]))
            status = "pass" if ok and ran == provider else "fail"
            detail = f"session created, ran on {ran}" + ("" if ok else ", wrong result")
        except Exception as exc:  # a provider that cannot start raises onnxruntime's untyped errors
            status, detail = "fail", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        out.append(_check(f"provider {provider}", status, detail))
    if len(out) == 1:
        out.append(_check("accelerator provider", "unchecked", "this onnxruntime build has no accelerator provider (CPU only)"))
    return out


def _kernel_errors() -> dict[str, str]:
    code, out = _command("dmesg", "--level=emerg,alert,crit,err", "--notime")
    if code != 0:
        return _check("kernel/driver errors since boot", "unchecked", f"dmesg not readable here ({out.splitlines()[0] if out else code})")
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        return _check("kernel/driver errors since boot", "pass", "none logged")
    return _check("kernel/driver errors since boot", "fail", f"{len(lines)} logged; last: {lines[-1][:160]}")


def _telemetry_writable(state_dir: Path) -> dict[str, str]:
    where = state_dir / "telemetry"
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".probe-{os.getpid()}"
        probe.write_bytes(b"{}\n")
        probe.unlink()
    except OSError as exc:
        return _check("telemetry writable", "fail", f"{where}: {exc.strerror or exc}")
    return _check("telemetry writable", "pass", str(where))


def bring_up(state_dir: Path) -> list[dict[str, str]]:
    """The phase-1 checklist: uptime, providers, kernel errors, telemetry; each pass, fail or unchecked."""
    uptime_s = time.time() - psutil.boot_time()
    checks = [
        _check(
            "uptime since boot",
            "pass",
            f"{uptime_s / 3600:.1f} h (booted {time.strftime('%Y-%m-%d %H:%M', time.localtime(psutil.boot_time()))})",
        )
    ]
    checks += _provider_checks()
    checks.append(_kernel_errors())
    checks.append(_telemetry_writable(state_dir))
    checks.append(_check("python", "pass", f"{sys.version.split()[0]} at {sys.executable}"))
    return checks
