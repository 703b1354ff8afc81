"""Confidence of one output and quality statistics of one image input, computed on the device (never sent raw)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Confidence:
    """Top-1 probability, its margin over the runner-up, and the entropy (nats) of one output row."""

    top1: float
    margin: float
    entropy: float


def confidence(output: np.ndarray) -> Confidence:
    """Confidence of the first row of a classifier output: probabilities if they already sum to 1, else logits (softmax).

    Only the first row counts: batch 1 is the device case; a batch's other rows are left out.
    """
    row = np.asarray(output, dtype=np.float64).reshape(-1) if np.ndim(output) <= 1 else np.asarray(output, dtype=np.float64)[0].reshape(-1)
    if row.size == 0:
        raise ValueError("empty output: no confidence")
    if row.min() >= 0.0 and abs(row.sum() - 1.0) < 1e-3:
        p = row
    else:
        z = np.exp(row - row.max())
        p = z / z.sum()
    top2 = np.partition(p, -2)[-2:] if p.size > 1 else np.array([0.0, p[0]])
    nz = p[p > 0]
    return Confidence(top1=float(top2[1]), margin=float(top2[1] - top2[0]), entropy=float(-(nz * np.log(nz)).sum()))


@dataclass(frozen=True)
class ImageQuality:
    """Brightness, contrast, noise and clipped share of one image, each scaled to 0..1 of the input's range."""

    brightness: float
    contrast: float
    noise: float
    clipped_fraction: float


def image_quality(image: np.ndarray, value_range: tuple[float, float] | None = None) -> ImageQuality:
    """Quality statistics of an image tensor (HW, CHW or NCHW; the last two axes are the image).

    ``value_range`` is the input's nominal range (e.g. ``(0, 255)``); by default ``(0, 1)`` for floats
    and the dtype's range for integers. Noise is the spread of the image minus its 4-neighbour mean
    (a Laplacian residual), which is small on smooth content and large on sensor noise.
    """
    x = np.asarray(image)
    if value_range is None:
        value_range = (float(np.iinfo(x.dtype).min), float(np.iinfo(x.dtype).max)) if x.dtype.kind in "iu" else (0.0, 1.0)
    lo, hi = value_range
    span = hi - lo
    if span <= 0:
        raise ValueError(f"value range must be increasing, got {value_range}")
    f = (x.astype(np.float32) - lo) / span
    if f.ndim < 2:
        raise ValueError(f"an image needs two spatial axes, got shape {x.shape}")
    plane = f.reshape(-1, f.shape[-2], f.shape[-1])
    residual = plane[:, 1:-1, 1:-1] - 0.25 * (plane[:, :-2, 1:-1] + plane[:, 2:, 1:-1] + plane[:, 1:-1, :-2] + plane[:, 1:-1, 2:])
    eps = 1.0 / 512
    clipped = np.count_nonzero((f <= eps) | (f >= 1 - eps)) / f.size
    return ImageQuality(
        brightness=float(f.mean()),
        contrast=float(f.std()),
        noise=float(residual.std()) if residual.size else 0.0,
        clipped_fraction=float(clipped),
    )
