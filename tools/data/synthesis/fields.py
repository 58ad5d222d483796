"""Smooth random fields and soft shapes: the building blocks of the synthetic pelvis.

Every shape is described by an (approximate) signed distance ``d`` in millimetres, negative inside,
and turned into a partial-volume fraction by :func:`fraction_inside`. All arrays are ``float32``.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

__all__ = [
    "Coords",
    "smooth_field",
    "fraction_inside",
    "ellipsoid_distance",
    "segment_distance",
    "slab_distance",
    "blend",
]

Coords = Tuple[np.ndarray, ...]
"""Per-axis coordinate arrays in millimetres (all of one shape), e.g. ``(x, y, z)``."""


def _gaussian_sum_of_squares(sigma: float) -> float:
    """``sum_k w_k**2`` of the normalised discrete kernel that ``ndimage.gaussian_filter`` uses."""
    if sigma <= 0:
        return 1.0
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    return float(np.sum(w**2))


def _upsample_linear(coarse: np.ndarray, shape: Sequence[int], step: Sequence[float]) -> np.ndarray:
    """Separable linear interpolation: output index ``i`` along an axis reads coarse position ``i / step``."""
    out = coarse
    for axis, (n, s) in enumerate(zip(shape, step)):
        if s == 1.0:
            out = out[(slice(None),) * axis + (slice(0, n),)]
            continue
        pos = np.arange(n, dtype=np.float64) / s
        i0 = np.floor(pos).astype(np.intp)
        w = (pos - i0).astype(np.float32)
        bshape = [1] * out.ndim
        bshape[axis] = n
        w = w.reshape(bshape)
        out = np.take(out, i0, axis=axis) * (1.0 - w) + np.take(out, i0 + 1, axis=axis) * w
    return out


def smooth_field(rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float]) -> np.ndarray:
    """A stationary Gaussian random field with zero mean and unit variance.

    White noise ``n`` filtered by a Gaussian of standard deviation ``sigma_vox`` (voxels, per axis) and
    divided by the exact standard deviation of the filtered noise, ``prod_i (sum_k w_ik^2)^(1/2)``,
    so the amplitude stays random (not re-normalised from the sample). Kernels wider than 2 voxels are
    evaluated on a grid coarser by ``step_i = sigma_i / 2`` (so 2 coarse cells per sigma) and linearly
    interpolated back; the noise is padded by ``3 sigma`` so that no border is special.

    Args:
        rng: the generator that draws the white noise.
        shape: output shape.
        sigma_vox: correlation length per axis in voxels (``>= 0``; ``0`` leaves that axis white).

    Returns:
        ``float32`` array of ``shape``.
    """
    shape = tuple(int(n) for n in shape)
    sigma = np.broadcast_to(np.asarray(sigma_vox, dtype=np.float64), (len(shape),))
    if np.any(sigma < 0):
        raise ValueError(f"sigma_vox must be >= 0, got {tuple(sigma)}.")
    step = [max(1.0, s / 2.0) for s in sigma]
    sigma_c = [s / st for s, st in zip(sigma, step)]
    pad = [int(np.ceil(3.0 * sc)) for sc in sigma_c]
    inner = [int(np.floor((n - 1) / st)) + 2 for n, st in zip(shape, step)]
    noise = rng.standard_normal([i + 2 * p for i, p in zip(inner, pad)], dtype=np.float32)
    filtered = ndimage.gaussian_filter(noise, sigma_c, mode="constant", cval=0.0)
    filtered = filtered[tuple(slice(p, p + i) for p, i in zip(pad, inner))]
    norm = float(np.sqrt(np.prod([_gaussian_sum_of_squares(sc) for sc in sigma_c])))
    return (_upsample_linear(filtered, shape, step) / norm).astype(np.float32, copy=False)


def fraction_inside(distance_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Partial-volume fraction of a voxel of width ``width_mm`` cut by a flat edge at signed distance ``d``.

    ``f = clip(1/2 - d / width, 0, 1)``: the exact area fraction for an axis-aligned straight edge.
    """
    if width_mm <= 0:
        raise ValueError(f"width_mm must be > 0, got {width_mm}.")
    return np.clip(np.float32(0.5) - distance_mm * np.float32(1.0 / width_mm), 0.0, 1.0)


def ellipsoid_distance(coords: Coords, center: Sequence[float], semi_axes: Sequence[float]) -> np.ndarray:
    """First-order signed distance (mm) to an axis-aligned ellipse/ellipsoid, negative inside.

    With ``r = sqrt(sum_i ((p_i - c_i) / a_i)^2)``, ``d = (r - 1) / |grad r|`` where
    ``|grad r| = sqrt(sum_i ((p_i - c_i) / a_i^2)^2) / r``; exact on a sphere and within a few percent
    of the true distance near the surface of an ellipsoid, which is where it is used.
    The number of axes is ``len(center)``; extra arrays in ``coords`` are ignored.
    """
    if len(center) != len(semi_axes):
        raise ValueError(f"center and semi_axes differ in length: {len(center)} vs {len(semi_axes)}.")
    r2 = None
    g2 = None
    for p, c, a in zip(coords, center, semi_axes):
        u = p - np.float32(c)
        u *= np.float32(1.0 / a)
        uu = u * u
        if r2 is None:
            r2 = uu
            g2 = uu * np.float32(1.0 / (a * a))
        else:
            r2 += uu
            uu *= np.float32(1.0 / (a * a))
            g2 += uu
    r = np.sqrt(r2, out=r2)
    grad = np.sqrt(g2, out=g2)
    grad /= np.maximum(r, np.float32(1e-6))
    # |grad r| lies between 1 / max(a) and 1 / min(a); the clip also settles the centre (r = 0)
    np.clip(grad, np.float32(1.0 / max(semi_axes)), np.float32(1.0 / min(semi_axes)), out=grad)
    r -= np.float32(1.0)
    r /= grad
    return r


def segment_distance(coords: Coords, start: Sequence[float], end: Sequence[float]) -> np.ndarray:
    """Unsigned distance (mm) to the segment from ``start`` to ``end`` (2D or 3D: ``len(start)`` axes).

    A capsule of radius ``r`` is ``segment_distance(...) - r``.
    """
    if len(start) != len(end):
        raise ValueError(f"start and end differ in length: {len(start)} vs {len(end)}.")
    direction = np.asarray(end, dtype=np.float64) - np.asarray(start, dtype=np.float64)
    length2 = float(direction @ direction)
    if length2 == 0.0:
        raise ValueError(f"segment has zero length: start = end = {tuple(start)}.")
    t = 0.0
    for p, s, d in zip(coords, start, direction):
        t = t + (p - np.float32(s)) * np.float32(d / length2)
    t = np.clip(t, 0.0, 1.0)
    dist2 = 0.0
    for p, s, d in zip(coords, start, direction):
        dist2 = dist2 + (p - np.float32(s) - t * np.float32(d)) ** 2
    return np.sqrt(dist2)


def slab_distance(z: np.ndarray, low: float, high: float) -> np.ndarray:
    """Signed distance (mm) to the slab ``low <= z <= high``, negative inside."""
    if high <= low:
        raise ValueError(f"empty slab: low={low} >= high={high}.")
    mid = np.float32(0.5 * (low + high))
    return np.abs(z - mid) - np.float32(0.5 * (high - low))


def blend(signal: np.ndarray, fraction: np.ndarray, value) -> np.ndarray:
    """Paint a tissue over ``signal`` in place: ``s <- s (1 - f) + f v`` (``v`` scalar or array)."""
    signal *= 1.0 - fraction
    signal += fraction * value
    return signal
