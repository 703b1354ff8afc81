"""Digits example data: sklearn's 8×8 digits upsampled to 32×32, split train/calibration/test."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

SPLIT_SEED: int = 20261125
SPLITS: tuple[str, ...] = ("train", "calibration", "test")
N_CALIBRATION: int = 200
N_TEST: int = 360
SIDE_PX: int = 32
_PIXEL_MAX: float = 16.0


def _bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and upper weight for resampling one axis, corners aligned.

    Corner alignment matches ``scipy.ndimage.zoom(order=1)``.
    """
    position = np.arange(n_out, dtype=np.float64) * ((n_in - 1) / (n_out - 1))
    lower = np.minimum(np.floor(position).astype(np.int64), n_in - 2)
    return lower, lower + 1, position - lower


def upsample(images: np.ndarray, side_px: int = SIDE_PX) -> np.ndarray:
    """Bilinearly resample ``[N, h, w]`` images to ``[N, side_px, side_px]`` in float64.

    Written with element-wise numpy operations rather than a BLAS matmul or scipy's C loop so
    that every machine rounds the same way and produces the same bytes.
    """
    lo_r, hi_r, w_r = _bilinear_axis(images.shape[1], side_px)
    lo_c, hi_c, w_c = _bilinear_axis(images.shape[2], side_px)
    w_r = w_r[None, :, None]
    rows = images[:, lo_r, :] * (1.0 - w_r) + images[:, hi_r, :] * w_r
    w_c = w_c[None, None, :]
    return rows[:, :, lo_c] * (1.0 - w_c) + rows[:, :, hi_c] * w_c


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Seeded, stratified, disjoint split of ``range(len(labels))`` into the three splits.

    Each class gives the calibration and test splits its share of their sizes (largest
    remainder rounding); the rest is training data. The legacy ``RandomState`` is used because
    numpy freezes its stream, so the split is the same under every numpy version.
    """
    rng = np.random.RandomState(seed)
    classes, class_counts = np.unique(labels, return_counts=True)
    taken = {
        "calibration": _stratified_counts(class_counts, N_CALIBRATION),
        "test": _stratified_counts(class_counts, N_TEST),
    }
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for k, cls in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_cal, n_test = taken["calibration"][k], taken["test"][k]
        parts["calibration"].append(members[:n_cal])
        parts["test"].append(members[n_cal : n_cal + n_test])
        parts["train"].append(members[n_cal + n_test :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def _stratified_counts(class_counts: np.ndarray, total: int) -> np.ndarray:
    """Per-class counts summing to ``total``, proportional to ``class_counts``."""
    share = class_counts * (total / class_counts.sum())
    counts = np.floor(share).astype(np.int64)
    # Ties in the remainder go to the lower class index (stable sort), so the result is unique.
    by_remainder = np.argsort(-(share - counts), kind="stable")
    counts[by_remainder[: total - counts.sum()]] += 1
    return counts


def load_all() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All three splits: images float32 ``[N, 1, 32, 32]`` in [0, 1] and labels int64 ``[N]``."""
    digits = load_digits()
    images = (upsample(digits.images.astype(np.float64)) / _PIXEL_MAX).astype(np.float32)
    images = images[:, None, :, :]
    labels = digits.target.astype(np.int64)
    return {name: (np.ascontiguousarray(images[idx]), labels[idx].copy()) for name, idx in split_indices(labels).items()}


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's ``(images, labels)``; ``split`` is "train", "calibration" or "test"."""
    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}; valid splits: {', '.join(SPLITS)}")
    return load_all()[split]
