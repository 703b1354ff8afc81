"""Compiler, driver and board facts of the machine a run measures on (for the BOM), each found or said unavailable with why."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import onnxruntime as ort


def _unavailable(why: str) -> str:
    return f"unavailable:{why}"


def _read(root: str, path: str) -> str | None:
    try:
        return Path(root, path.lstrip("/")).read_text(errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def ort_build() -> str:
    """ONNX Runtime's build: its build info line plus the CUDA, cuDNN and TensorRT it was built with, where built in."""
    parts = []
    build = ort.get_build_info() if hasattr(ort, "get_build_info") else ""
    if build:
        parts.append(build.removeprefix("ORT Build Info: "))
    cuda = getattr(ort, "cuda_version", "") or ""
    if cuda:
        parts.append(f"CUDA {cuda}")
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        info = None
    for attr, label in (("cudnn_version", "cuDNN"), ("tensorrt_version", "TensorRT")):
        value = getattr(info, attr, None) if info is not None else None
        if value:
            parts.append(f"{label} {value}")
    providers = ort.get_available_providers()
    if "TensorrtExecutionProvider" in providers and not any(p.startswith("TensorRT") for p in parts):
        parts.append("TensorRT provider built in")
    return "; ".join(parts) or _unavailable("onnxruntime exposes no build info")


def nvidia_driver() -> str:
    """The NVIDIA driver version through NVML (nvidia-ml-py), or why there is none."""
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return _unavailable("nvidia-ml-py (pynvml) not installed")
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError: no driver or no GPU; its subclasses vary by cause
        return _unavailable(f"NVML did not start ({exc})")
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        pynvml.nvmlShutdown()


def tegra_release(root: str = "/") -> str:
    """The Jetson L4T release line (``# R36 (release), REVISION: 3.0, ...``), or why there is none."""
    text = _read(root, "/etc/nv_tegra_release")
    if text is None:
        return _unavailable("/etc/nv_tegra_release absent (not a Jetson)")
    return re.sub(r"\s+", " ", text.splitlines()[0].lstrip("# "))


def board_model(root: str = "/") -> str:
    """The board name the device tree gives (Raspberry Pi, Jetson...), or why there is none."""
    return _read(root, "/proc/device-tree/model") or _unavailable("/proc/device-tree/model absent (no device tree: not an ARM board)")


def platform_facts(root: str = "/") -> dict[str, str]:
    """What the fingerprint records for the BOM's compiler and driver facts (keys ``compiler_*``, ``driver_*``, ``board_*``)."""
    return {
        "compiler_onnxruntime_build": ort_build(),
        "driver_nvidia": nvidia_driver(),
        "driver_l4t_release": tegra_release(root),
        "board_device_tree_model": board_model(root),
        "kernel_release": platform.release(),
    }
