"""Glyphs example data: sklearn's 8×8 digits rendered as tinted 24×24 RGB camera frames (raw 0–255, HWC).

Each part is ``(frames, {"logits": digit, "ink": ink coverage})``: the frames are what the sensor
gives (float32 ``[N, 24, 24, 3]`` in [0, 255]); the contract's ``[pipeline]`` scales, normalises
and transposes them for the model. ``ink`` is the fraction of the glyph's cells that carry ink,
the target of the model's regression head.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

SPLIT_SEED: int = 20261202
PARTS: tuple[str, ...] = ("train", "calibration", "test")
N_CALIBRATION: int = 200
N_TEST: int = 360
SIDE_PX: int = 24
_PIXEL_MAX: float = 16.0
_INK_LEVEL: float = 4.0


def _upsample(images: np.ndarray, side_px: int) -> np.ndarray:
    """Bilinear resample of ``[N, h, w]`` to ``[N, side, side]`` with element-wise numpy (same bytes everywhere)."""
    n_in = images.shape[1]
    position = np.arange(side_px, dtype=np.float64) * ((n_in - 1) / (side_px - 1))
    lo = np.minimum(np.floor(position).astype(np.int64), n_in - 2)
    w = position - lo
    rows = images[:, lo, :] * (1.0 - w[None, :, None]) + images[:, lo + 1, :] * w[None, :, None]
    return rows[:, :, lo] * (1.0 - w[None, None, :]) + rows[:, :, lo + 1] * w[None, None, :]


def render(glyphs: np.ndarray, seed: int) -> np.ndarray:
    """Glyphs in [0, 1] ``[N, H, W]`` as RGB frames in [0, 255]: a tinted ink on a tinted background."""
    rng = np.random.RandomState(seed)
    n = len(glyphs)
    ink = rng.uniform(150.0, 255.0, (n, 1, 1, 3))
    paper = rng.uniform(0.0, 60.0, (n, 1, 1, 3))
    g = glyphs[..., None]
    return (paper + (ink - paper) * g).astype(np.float32)


def split(n: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Seeded disjoint split of ``range(n)`` (legacy RandomState: numpy freezes its stream)."""
    order = np.random.RandomState(seed).permutation(n)
    cut = (N_CALIBRATION, N_CALIBRATION + N_TEST)
    return {"calibration": np.sort(order[: cut[0]]), "test": np.sort(order[cut[0] : cut[1]]), "train": np.sort(order[cut[1] :])}


def load_all() -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    digits = load_digits()
    glyphs = digits.images.astype(np.float64) / _PIXEL_MAX
    ink = (digits.images >= _INK_LEVEL).mean(axis=(1, 2)).astype(np.float32)
    frames = render(_upsample(glyphs, SIDE_PX), SPLIT_SEED)
    labels = digits.target.astype(np.int64)
    return {
        name: (np.ascontiguousarray(frames[idx]), {"logits": labels[idx].copy(), "ink": ink[idx, None].copy()})
        for name, idx in split(len(labels)).items()
    }


def load(part: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One part's ``(frames, labels by output)``; ``part`` is "train", "calibration" or "test"."""
    if part not in PARTS:
        raise ValueError(f"unknown glyphs part {part!r}; valid parts: {', '.join(PARTS)}")
    return load_all()[part]
