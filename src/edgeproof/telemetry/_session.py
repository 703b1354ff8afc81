"""An ONNX Runtime session under the recorder: load and swap events with hashes, provider placement, re-creation after errors."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeproof.telemetry._recorder import FallbackPolicy, Recorder, file_sha256


def _open(model_path: Path, providers: list[str] | None) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(model_path), providers=providers or ["CPUExecutionProvider"])


def load_fallback(spec: str, base_dir: str | Path = ".") -> Callable[..., Any]:
    """The fallback a policy names: ``model.fp32.onnx`` (run with ONNX Runtime on the CPU) or ``file.py:fn``.

    The model's fallback is called like ``session.run`` (``output_names, feeds``); a function gets the
    same arguments as the primary. Raises ValueError with what is wrong.
    """
    base = Path(base_dir)
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        file, fn_name = spec.rsplit(":", 1)
        path = base / file
        module_spec = importlib.util.spec_from_file_location(f"edgeproof_fallback_{path.stem}", path)
        if module_spec is None or module_spec.loader is None or not path.is_file():
            raise ValueError(f"policy fallback {spec!r}: {path} is not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        fn = getattr(module, fn_name, None)
        if not callable(fn):
            raise ValueError(f"policy fallback {spec!r}: {path} has no function {fn_name!r}")
        return fn
    if spec.endswith(".onnx"):
        path = base / spec
        if not path.is_file():
            raise ValueError(f"policy fallback {spec!r}: {path} does not exist")
        return _open(path, ["CPUExecutionProvider"]).run
    raise ValueError(f"policy fallback {spec!r}: give a model (.onnx) or a function (file.py:fn)")


class RecordedSession:
    """``session.run`` recorded; the session comes from ``model_path`` and can be swapped or re-created.

    ``requested_providers`` are the providers asked for; any of them missing from the session's own
    list, or ``cpu_fallback_nodes`` given by a placement profile, is the provider fallback, reported at
    load (``provider_placement``) and per window — never mixed with the policy's fallback. After a
    runtime error the session is re-created (a driver reset looks like this from user space) and the
    error re-raised.
    """

    def __init__(
        self,
        recorder: Recorder,
        model_path: str | Path,
        *,
        requested_providers: list[str] | None = None,
        cpu_fallback_nodes: int | None = None,
        policy: FallbackPolicy | None = None,
        confidence_output: int = 0,
        image_input: str | None = None,
    ) -> None:
        self.recorder = recorder
        self.requested_providers = requested_providers or ["CPUExecutionProvider"]
        self._policy = policy
        self._confidence_output = confidence_output
        self._image_input = image_input
        self.model_path = Path(model_path)
        self.session: Any = None
        self._load(self.model_path, cpu_fallback_nodes, swap_from=None)

    def _load(self, model_path: Path, cpu_fallback_nodes: int | None, swap_from: str | None) -> None:
        sha = file_sha256(model_path)
        self.session = _open(model_path, self.requested_providers)
        active = list(self.session.get_providers())
        missing = [p for p in self.requested_providers if p not in active]
        nodes = cpu_fallback_nodes if cpu_fallback_nodes is not None else (-1 if missing else 0)
        self.recorder.swap_labels(model_sha256=sha)
        self.recorder.provider_fallback_nodes = None if nodes < 0 else nodes
        if swap_from is None:
            self.recorder.event("model_load", model_sha256=sha, path=str(model_path))
        else:
            self.recorder.event("model_swap", old_model_sha256=swap_from, new_model_sha256=sha, path=str(model_path))
        self.recorder.event(
            "provider_placement",
            requested=self.requested_providers,
            active=active,
            missing=missing,
            cpu_fallback_nodes=None if nodes < 0 else nodes,
            whole_model_on_cpu=bool(missing) and active == ["CPUExecutionProvider"],
        )
        self.model_path = model_path
        self._run = self.recorder.wrap(
            self._session_run,
            policy=self._policy,
            input_of=self._input_of,
            output_of=lambda out: out[self._confidence_output],
        )

    def _session_run(self, output_names: list[str] | None, feeds: dict[str, Any], run_options: Any = None) -> Any:
        try:
            return self.session.run(output_names, feeds, run_options)
        except Exception:
            import time

            t0 = time.perf_counter()
            self.session = _open(self.model_path, self.requested_providers)
            self.recorder.event("session_recreated", reason="runtime error", seconds=time.perf_counter() - t0)
            raise

    def _input_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        feeds = args[1] if len(args) > 1 else kwargs.get("feeds", {})
        if self._image_input is not None:
            return feeds.get(self._image_input)
        return next(iter(feeds.values()), None)

    def run(self, output_names: list[str] | None, feeds: dict[str, Any], run_options: Any = None) -> Any:
        """``InferenceSession.run``, recorded (and with the policy's fallback below its threshold)."""
        return self._run(output_names, feeds, run_options)

    def swap(self, model_path: str | Path, cpu_fallback_nodes: int | None = None) -> None:
        """Load another model in place: the window closes, a ``model_swap`` event names both hashes."""
        old = file_sha256(self.model_path)
        self._load(Path(model_path), cpu_fallback_nodes, swap_from=old)

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()
