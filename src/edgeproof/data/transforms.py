"""Image corruptions for stress and tail slices: NCHW float images in [0, 1], severity in [0, 1].

Severity 0 leaves an image unchanged; severity 1 is the harshest level each transform defines
below. Random transforms draw from the numpy Generator they are given, so a slice is the same
for the same seed. Every output is clipped back to [0, 1].

With a contract ``[pipeline]`` the data is raw sensor data of any numeric dtype and layout (a
camera's ``uint8`` HWC frames): ``edgeproof.data.slices.transformed`` hands it to these transforms
as NCHW floats in [0, 1] (per ``raw_range``; integers without one span their dtype, uint8 0..255)
and turns the result back into raw data of the same dtype (integers rounded and clipped), which
the pipeline then preprocesses like any other frame.

| name           | family | severity s means                                                  |
|----------------|--------|-------------------------------------------------------------------|
| gaussian_noise | stress | additive noise, sigma = 0.4·s                                     |
| blur           | stress | Gaussian blur over H and W, sigma = 2.5·s pixels                  |
| low_light      | stress | x' = gain·x^gamma with gamma = 1 + 2·s, gain = 1 − 0.6·s          |
| contrast       | stress | pull towards each image's mean by a factor (1 − 0.9·s)            |
| occlusion      | tail   | one black square per image, side = round(0.6·s·min(H, W)) pixels  |
| dead_pixels    | tail   | fraction 0.5·s of pixel sites (all channels) read 0               |
| saturation     | tail   | over-exposure: x' = x·(1 + 4·s), clipped                          |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

from edgeproof.errors import DataError

# Bumped whenever a transform's arithmetic changes, so slice IDs made by older code never collide.
TRANSFORMS_VERSION = 1
SEVERITY_RANGE = (0.0, 1.0)
# Inputs a little outside [0, 1] are tolerated (resampling overshoot); beyond that they are not images.
_RANGE_TOLERANCE = 1e-3

Transform = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


def gaussian_noise(x: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor read noise: add N(0, (0.4·s)²) independently per element."""
    return x + rng.normal(0.0, 0.4 * severity, size=x.shape).astype(x.dtype)


def blur(x: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Defocus / motion smear: Gaussian blur of sigma 2.5·s pixels over the spatial axes."""
    sigma_px = 2.5 * severity
    if sigma_px == 0.0:
        return x.copy()
    return gaussian_filter(x, sigma=(0.0, 0.0, sigma_px, sigma_px), mode="nearest")


def low_light(x: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Under-exposure: darken with gamma 1 + 2·s and gain 1 − 0.6·s."""
    gamma = 1.0 + 2.0 * severity
    gain = 1.0 - 0.6 * severity
    return gain * np.power(np.clip(x, 0.0, 1.0), gamma)


def contrast(x: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast loss (haze, flat lighting): shrink each image towards its own mean."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return mean + (x - mean) * (1.0 - 0.9 * severity)


def occlusion(x: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Something in front of the lens: one black square per image at a random place."""
    n, _, h, w = x.shape
    side_px = int(round(0.6 * severity * min(h, w)))
    out = x.copy()
    if side_px == 0:
        return out
    tops = rng.integers(0, h - side_px + 1, size=n)
    lefts = rng.integers(0, w - side_px + 1, size=n)
    for i in range(n):
        out[i, :, tops[i] : tops[i] + side_px, lefts[i] : lefts[i] + side_px] = 0.0
    return out


def dead_pixels(x: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor dropout: a random fraction 0.5·s of pixel sites read 0 in every channel."""
    n, _, h, w = x.shape
    dead = rng.random((n, 1, h, w)) < 0.5 * severity
    return np.where(dead, 0.0, x).astype(x.dtype)


def saturation(x: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Over-exposure: gain 1 + 4·s, so bright regions clip to 1 and lose detail."""
    return x * (1.0 + 4.0 * severity)


TRANSFORMS: dict[str, tuple[Literal["stress", "tail"], Transform]] = {
    "gaussian_noise": ("stress", gaussian_noise),
    "blur": ("stress", blur),
    "low_light": ("stress", low_light),
    "contrast": ("stress", contrast),
    "occlusion": ("tail", occlusion),
    "dead_pixels": ("tail", dead_pixels),
    "saturation": ("tail", saturation),
}


def check_transform(name: str, severity: float, where: str) -> None:
    """Raise DataError unless ``name`` is a known transform and ``severity`` lies in [0, 1]."""
    if name not in TRANSFORMS:
        raise DataError(f"{where}: unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    low, high = SEVERITY_RANGE
    if not low <= severity <= high:
        raise DataError(f"{where}: transform {name!r} severity {severity} is outside [{low:g}, {high:g}]")


def apply_transform(x: np.ndarray, name: str, severity: float, rng: np.random.Generator, where: str) -> np.ndarray:
    """Apply one named transform to an NCHW float batch in [0, 1] and clip the result to [0, 1]."""
    check_transform(name, severity, where)
    if x.ndim != 4:
        raise DataError(f"{where}: transforms need NCHW images, got an array of shape {list(x.shape)}")
    low, high = float(x.min()), float(x.max())
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise DataError(f"{where}: transforms need images scaled to [0, 1], got values in [{low:.3g}, {high:.3g}]")
    out = TRANSFORMS[name][1](x, severity, rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
