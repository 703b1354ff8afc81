"""ONNX Runtime sessions with explicit, recorded settings."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from edgeproof.errors import ModelError, first_line
from edgeproof.records import RuntimeSettings

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def provider_name(name: str) -> str:
    """Accept ``cpu``/``cuda`` or a full provider name; refuse one this ONNX Runtime build lacks."""
    full = PROVIDER_ALIASES.get(name.lower(), name)
    available = ort.get_available_providers()
    if full not in available:
        raise ModelError(f"execution provider {full} is not available in this onnxruntime build (have: {', '.join(available)})")
    return full


def session_options(settings: RuntimeSettings, profile_prefix: str | None = None, spinning: bool = True) -> ort.SessionOptions:
    """``spinning`` False: worker threads sleep as soon as a run ends (ONNX Runtime's
    ``session.intra_op.allow_spinning`` = 0), for sessions that take turns on the same cores."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.intra_op_threads
    opts.inter_op_num_threads = settings.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization_level]
    # 4 (fatal only): a failed run raises with the same message, which we report in one line; the
    # runtime must not also print it to the user's terminal
    opts.log_severity_level = 4
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def providers_for(settings: RuntimeSettings) -> list[str]:
    """The primary provider, with CPU as the fallback ONNX Runtime places unsupported nodes on."""
    if settings.provider == "CPUExecutionProvider":
        return ["CPUExecutionProvider"]
    return [settings.provider, "CPUExecutionProvider"]


def open_session(
    model_path: str | Path, settings: RuntimeSettings, profile_prefix: str | None = None, spinning: bool = True
) -> ort.InferenceSession:
    """A fresh session; ONNX Runtime's refusal becomes one ModelError line."""
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=session_options(settings, profile_prefix, spinning), providers=providers_for(settings)
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors (Fail, InvalidGraph, NotImplemented...)
        raise ModelError(f"{model_path}: onnxruntime cannot load it ({first_line(exc)})") from None


def run_checked(sess: ort.InferenceSession, feeds: dict, where: str) -> list:
    """One inference whose failure (wrong dtype, bad index, shape) becomes one ModelError line."""
    try:
        return sess.run(None, feeds)
    except Exception as exc:  # same untyped onnxruntime errors as above
        raise ModelError(f"{where}: inference failed ({first_line(exc)})") from None
