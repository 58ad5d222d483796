"""How a site's scanner sees the patient: grid and affine, coil sensitivity, noise, vendor scaling.

World coordinates are LPS millimetres (DICOM); the written affine is nibabel's voxel -> RAS. A file's
orientation code (``"LPS"`` or ``"RAS"``, nibabel's axis codes) says where each array axis points, so an
``"LPS"`` file has axis 0 running to the patient's left and axis 1 running posterior, like the real
ITK-converted volumes. The patient lies slightly rotated in the scanner; the affine stays axis-aligned
with the voxel spacing on its diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

from .anatomy import PelvisAnatomy
from .fields import Coords, segment_distance, smooth_field
from .sites import SiteSpec

__all__ = [
    "AcquisitionGeometry",
    "sample_geometry",
    "choose_slice_window",
    "crop_slices",
    "patient_coordinates",
    "patient_to_world_ras",
    "surface_coil_bias",
    "endorectal_coil_bias",
    "add_rician_noise",
    "to_vendor_dtype",
]

_LPS_SIGN = {"L": 1.0, "R": -1.0, "P": 1.0, "A": -1.0, "S": 1.0, "I": -1.0}
_AXIS_LETTERS = ("LR", "PA", "SI")


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Patient -> world rotation: about z (yaw), x (pitch, axial obliquity) and y (roll)."""
    cz, sz = np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg))
    cx, sx = np.cos(np.deg2rad(pitch_deg)), np.sin(np.deg2rad(pitch_deg))
    cy, sy = np.cos(np.deg2rad(roll_deg)), np.sin(np.deg2rad(roll_deg))
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class AcquisitionGeometry:
    """The written grid and where the patient lies in it.

    Attributes:
        shape: written array shape ``(size, size, slices)``.
        spacing_mm: voxel spacing per array axis.
        orientation: nibabel axis codes of the array, e.g. ``"LPS"``.
        affine: voxel -> RAS world (mm), ``diag(+-spacing)`` plus the origin.
        supersampling: sub-slices rendered per slice (the slice profile's partial volume).
        prostate_world_lps: world position (mm) of the patient origin (prostate centre).
        rotation: patient -> world rotation (3x3).
        target_slices: the site's slice count for this case (the written slab has at least as many
            when the prostate fits, see :func:`choose_slice_window`).
    """

    shape: Tuple[int, int, int]
    spacing_mm: Tuple[float, float, float]
    orientation: str
    affine: np.ndarray
    supersampling: int
    prostate_world_lps: np.ndarray
    rotation: np.ndarray
    target_slices: int

    @property
    def evaluation_shape(self) -> Tuple[int, int, int]:
        return self.shape[0], self.shape[1], self.shape[2] * self.supersampling

    @property
    def evaluation_spacing_mm(self) -> Tuple[float, float, float]:
        return self.spacing_mm[0], self.spacing_mm[1], self.spacing_mm[2] / self.supersampling


def sample_geometry(rng: np.random.Generator, site: SiteSpec, size: int,
                    prostate_extent_z: Tuple[float, float]) -> AcquisitionGeometry:
    """Draw field of view, slice thickness, coverage, patient pose and origin for one case of ``site``.

    In-plane spacing is ``fov / size`` (the site's field of view is kept whatever ``size`` is); the slice
    thickness is the site's. The returned grid is the *render* grid: centred on the prostate and long
    enough for both the site's coverage (``target_slices = round(coverage / thickness)``) and the
    prostate's bound ``prostate_extent_z`` plus 8 mm on each side. :func:`choose_slice_window` then
    picks the written slab once the mask is known.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 voxels, got {size}.")
    if len(site.orientation) != 3 or any(c not in pair for c, pair in zip(site.orientation, _AXIS_LETTERS)):
        raise ValueError(f"site {site.key}: orientation must be like 'LPS' or 'RAS', got {site.orientation!r}.")
    fov = rng.uniform(*site.fov_mm)
    thickness = rng.uniform(*site.slice_mm)
    target = int(round(rng.uniform(*site.coverage_mm) / thickness))
    half = max(-prostate_extent_z[0], prostate_extent_z[1]) + 8.0
    slices = max(target, 2 * int(np.ceil(half / thickness)) + 1)
    inplane = fov / size
    supersampling = int(np.clip(round(thickness / inplane), 1, 3))
    rotation = _rotation(rng.uniform(-6.0, 6.0), rng.uniform(-8.0, 8.0), rng.uniform(-3.0, 3.0))
    prostate = np.array([rng.uniform(-10.0, 10.0), rng.uniform(-10.0, 40.0), rng.uniform(-30.0, 30.0)])
    offset_patient = np.array([rng.uniform(-8.0, 8.0), rng.uniform(0.0, 18.0), 0.0])
    center = prostate + rotation @ offset_patient

    spacing = (inplane, inplane, thickness)
    shape = (size, size, slices)
    sign = np.array([_LPS_SIGN[c] for c in site.orientation])
    step_lps = sign * np.array(spacing)
    origin_lps = center - step_lps * (np.array(shape) - 1) / 2.0
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ np.diag(step_lps)
    affine[:3, 3] = lps_to_ras @ origin_lps
    return AcquisitionGeometry(shape=shape, spacing_mm=spacing, orientation=site.orientation, affine=affine,
                               supersampling=supersampling, prostate_world_lps=prostate, rotation=rotation,
                               target_slices=target)


def choose_slice_window(rng: np.random.Generator, occupied: np.ndarray, target: int, margin: int) -> Tuple[int, int]:
    """``(start, count)`` of the written slab: ``count = max(target, extent + 2 margin)`` slices (at most
    all of them), placed uniformly at random among the positions that keep ``margin`` empty slices on
    both sides of the occupied run.

    Args:
        rng: draws the position.
        occupied: per-slice flags of the render grid (the mask is non-empty there); at least one is set.
        target: the site's number of slices.
        margin: empty slices wanted beyond the mask on each side.
    """
    hits = np.flatnonzero(occupied)
    if hits.size == 0:
        raise ValueError("no occupied slice: the prostate mask is empty on the render grid.")
    total = occupied.size
    count = min(total, max(target, int(hits[-1] - hits[0] + 1 + 2 * margin)))
    low = max(0, int(hits[-1]) + margin + 1 - count)
    high = min(int(hits[0]) - margin, total - count)
    start = int(rng.integers(low, high + 1)) if high >= low else int(np.clip(low, 0, total - count))
    return start, count


def crop_slices(geometry: AcquisitionGeometry, start: int, count: int) -> AcquisitionGeometry:
    """The geometry of slices ``start .. start + count - 1``: same spacing, origin moved along the slice axis."""
    if start < 0 or count < 1 or start + count > geometry.shape[2]:
        raise ValueError(f"slices {start}..{start + count - 1} fall outside 0..{geometry.shape[2] - 1}.")
    affine = geometry.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(start)]) + affine[:3, 3]
    return replace(geometry, shape=(geometry.shape[0], geometry.shape[1], count), affine=affine)


def patient_coordinates(geometry: AcquisitionGeometry) -> Coords:
    """Patient LPS coordinates ``(x, y, z)`` (mm, prostate at 0) of every evaluation-grid voxel.

    Sub-slice ``s`` of slice ``k`` sits at index ``k + (s + 1/2) / S - 1/2``; ``p = R^T (w - p0)`` with
    ``w`` the LPS world position from the affine.
    """
    nx, ny, nz = geometry.evaluation_shape
    s = geometry.supersampling
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    step = ras_to_lps @ np.diag(geometry.affine[:3, :3])
    origin = ras_to_lps @ geometry.affine[:3, 3] - geometry.prostate_world_lps
    index = (np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64),
             (np.arange(nz, dtype=np.float64) + 0.5) / s - 0.5)
    world = [origin[a] + step[a] * index[a] for a in range(3)]  # world axis a varies along array axis a
    shapes = ((nx, 1, 1), (1, ny, 1), (1, 1, nz))
    rt = geometry.rotation.T
    coords = []
    for row in rt:
        total = np.zeros((nx, ny, nz), dtype=np.float32)
        for a in range(3):
            total += (row[a] * world[a]).astype(np.float32).reshape(shapes[a])
        coords.append(total)
    return tuple(coords)


def patient_to_world_ras(geometry: AcquisitionGeometry, point: Sequence[float]) -> np.ndarray:
    """World RAS position (mm) of a patient-coordinate point."""
    lps = geometry.prostate_world_lps + geometry.rotation @ np.asarray(point, dtype=np.float64)
    return np.array([-lps[0], -lps[1], lps[2]])


def surface_coil_bias(rng: np.random.Generator, anatomy: PelvisAnatomy, coords: Coords,
                      spacing_mm: Sequence[float], amplitude: float) -> np.ndarray:
    """Phased-array sensitivity: ``exp(a (rho^2 - 1/2) + 0.1 g)``.

    ``rho`` is the elliptical radius normalised to the body outline (1 at the skin), so the signal is
    brighter near the skin and darker at the centre of the pelvis; ``g`` is a unit Gaussian random field
    with a 60 mm correlation length.
    """
    x, y = coords[0], coords[1]
    bx, by = anatomy.body_semi
    rho2 = (x / np.float32(bx)) ** 2 + ((y - np.float32(anatomy.body_center_y)) / np.float32(by)) ** 2
    g = smooth_field(rng, x.shape, 60.0 / np.asarray(spacing_mm))
    return np.exp(np.float32(amplitude) * (np.minimum(rho2, 1.5) - 0.5) + np.float32(0.1) * g)


def endorectal_coil_bias(coil_segment, coords: Coords, gain: float, falloff_mm: float) -> np.ndarray:
    """Endorectal receive coil: ``1 + g / (1 + (d / lambda)^2)^(3/2)``, ``d`` the distance to the coil element.

    The ``(1 + (d/lambda)^2)^(-3/2)`` law is the on-axis field of a current loop of radius ``lambda``.
    """
    start, end = coil_segment
    d = segment_distance(coords, start, end) * np.float32(1.0 / falloff_mm)
    return 1.0 + np.float32(gain) * (1.0 + d * d) ** np.float32(-1.5)


def add_rician_noise(rng: np.random.Generator, signal: np.ndarray, sigma: float,
                     correlation_px: float = 0.0) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise: ``sqrt((s + sigma n1)^2 + (sigma n2)^2)``.

    ``n1, n2`` are unit normal; with ``correlation_px > 0`` they are smoothed in-plane (zero-filled
    interpolation) and divided by the exact standard deviation of the smoothing, so ``sigma`` is kept.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}.")
    n = rng.standard_normal((2,) + signal.shape, dtype=np.float32)
    if correlation_px > 0:
        radius = int(4.0 * correlation_px + 0.5)
        k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / correlation_px) ** 2)
        k /= k.sum()
        norm = np.float32(np.sum(k**2))  # two in-plane axes: std factor sqrt(sum^2) per axis
        n = ndimage.gaussian_filter(n, (0, correlation_px, correlation_px, 0), mode="wrap") / norm
    real = signal + np.float32(sigma) * n[0]
    imag = np.float32(sigma) * n[1]
    return np.sqrt(real * real + imag * imag)


def to_vendor_dtype(image: np.ndarray, dtype: str) -> np.ndarray:
    """Cast to the site's voxel type: ``int16`` rounds and clips to ``[0, 32767]``; ``float32`` is kept."""
    if dtype == "int16":
        return np.clip(np.rint(image), 0, 32767).astype(np.int16)
    if dtype == "float32":
        return image.astype(np.float32, copy=False)
    raise ValueError(f"unsupported image dtype {dtype!r}; expected 'int16' or 'float32'.")
