"""The device's telemetry settings from TOML (``[telemetry]``, ``[telemetry.labels]``, ``policy = {...}``), with one-line errors.

Example::

    [telemetry]
    enabled = false                    # nothing is collected until the user consents
    directory = "/var/lib/edgeproof/telemetry"
    window_s = 3600
    sample_every = 100                 # confidence and input quality on 1 inference in 100
    raw_sample_share = 0.05            # 5% of devices also keep raw per-inference samples
    max_disk_mib = 64
    min_free_mib = 256
    policy = {min_confidence = 0.6, fallback = "model.fp32.onnx"}   # or "fallback.py:fn"

    [telemetry.labels]
    device_id = "cam-0042"
    cohort = "canary"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgeproof.telemetry._recorder import TelemetryConfig
from edgeproof.telemetry._schema import Labels


class TelemetryConfigError(ValueError):
    """A telemetry settings file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class PolicySpec:
    """``policy = {min_confidence = …, fallback = …}`` as written; ``load_fallback`` turns ``fallback`` into a callable."""

    min_confidence: float
    fallback: str


_NUMBERS = {
    "window_s": float,
    "tick_s": float,
    "system_period_s": float,
    "sample_every": int,
    "raw_sample_share": float,
    "raw_samples_max": int,
}


def load_telemetry_config(path: str | Path) -> tuple[TelemetryConfig, PolicySpec | None]:
    """Settings and the optional fallback policy from ``path``; raises TelemetryConfigError as ``file: key: what is wrong``."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TelemetryConfigError(f"{path}: {exc}") from exc
    table = doc.get("telemetry")
    if not isinstance(table, dict):
        raise TelemetryConfigError(f"{path}: [telemetry]: missing")

    def fail(key: str, what: str) -> TelemetryConfigError:
        return TelemetryConfigError(f"{path}: telemetry.{key}: {what}")

    known = {*_NUMBERS, "enabled", "directory", "labels", "policy", "max_disk_mib", "min_free_mib", "segment_mib"}
    for key in table:
        if key not in known:
            raise fail(key, f"unknown key (known: {', '.join(sorted(known))})")
    labels_table = table.get("labels", {})
    label_names = {f.name for f in fields(Labels)}
    for key, value in labels_table.items():
        if key not in label_names:
            raise fail(f"labels.{key}", f"unknown label (known: {', '.join(sorted(label_names))})")
        if not isinstance(value, str):
            raise fail(f"labels.{key}", f"must be a string, got {value!r}")
    if not labels_table.get("device_id"):
        raise fail("labels.device_id", "missing: every record carries the device id")
    kwargs: dict[str, Any] = {}
    for key, kind in _NUMBERS.items():
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
                raise fail(key, f"must be a {'whole number' if kind is int else 'number'}, got {value!r}")
            kwargs[key] = kind(value)
    for key, field_name in (("max_disk_mib", "max_disk_bytes"), ("min_free_mib", "min_free_bytes"), ("segment_mib", "segment_bytes")):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise fail(key, f"must be a number of MiB >= 0, got {value!r}")
            kwargs[field_name] = int(value * (1 << 20))
    enabled = table.get("enabled", False)
    if not isinstance(enabled, bool):
        raise fail("enabled", f"must be true or false, got {enabled!r}")
    directory = Path(table.get("directory", "telemetry"))
    if not directory.is_absolute():
        directory = path.parent / directory
    try:
        config = TelemetryConfig(directory=directory, labels=Labels(**labels_table), enabled=enabled, **kwargs)
    except ValueError as exc:
        raise TelemetryConfigError(f"{path}: telemetry: {exc}") from exc
    policy = table.get("policy")
    if policy is None:
        return config, None
    if not isinstance(policy, dict) or set(policy) != {"min_confidence", "fallback"}:
        raise fail("policy", 'must be {min_confidence = 0..1, fallback = "model.onnx" | "file.py:fn"}')
    threshold, fallback = policy["min_confidence"], policy["fallback"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise fail("policy.min_confidence", f"must be a probability within 0..1, got {threshold!r}")
    if not isinstance(fallback, str) or not (fallback.endswith(".onnx") or ".py:" in fallback):
        raise fail("policy.fallback", f"must name a model (.onnx) or a function (file.py:fn), got {fallback!r}")
    return config, PolicySpec(float(threshold), fallback)
