"""How close simulated sites are to a real scan, measured on the images (``python -m tools.data realism``).

Every quantity is computed the same way on the real case and on each simulated case, from the image and
its whole-gland mask, in patient LPS orientation (axis 0 to the left, axis 1 posterior, axis 2 superior):

* **intensity histogram** after the pipeline's normalisation, the z-score over the whole volume
  ``z = (v - mean(v)) / std(v)`` (``NormalizeIntensityd(nonzero=False)`` in :mod:`tools.data.transforms`):
  quantiles ``q01, q50, q99``, skewness and the Wasserstein-1 distance to the real case's histogram,
  ``W1 = integral_0^1 |Q_a(p) - Q_b(p)| dp`` evaluated on the 199 quantiles ``p = 0.005 .. 0.995``;
* **gland contrast** ``(mean(v | gland) - mean(v | shell)) / std(v)`` with the shell the voxels outside
  the gland within ``shell_mm`` (default 2-8 mm) of it (3D Euclidean distance in mm);
* **texture spectrum**: the radially averaged power spectrum of ``z`` on axial slices through the gland
  (a ``crop_mm`` square centred on the gland, slices with at least half the largest gland area), as a
  function of spatial frequency in cycles/mm; summarised by its log-log slope over
  ``band = 0.03 .. 0.15`` cycles/mm (resolvable by every site at 96x96: Nyquist >= 0.16 cycles/mm);
* **coil bias profile**: the low-pass (Gaussian, ``sigma = 10 mm``) image ``z`` along the
  anterior-posterior line through the gland centre (mean over a +-10 mm band in x) on the slice of
  largest gland area; summarised by its posterior peak (0 to 50 mm behind the gland centre) minus its
  value 40 mm anterior, in units of the volume's std (an endorectal coil makes it large and positive);
* **sector contrasts**: the median of ``z`` in a region around the gland minus the gland's median (std
  units): *anterior* (slice of largest gland area, in front of the gland's centre within +-15 mm of its
  midline, 3-15 mm in-plane from the gland), *lateral* (within +-5 mm of the centre's ``y``, 3-15 mm from the
  gland), *below the apex* and *above the base* (the slices 10-20 mm
  below the lowest / above the highest gland slice, inside the gland's axial footprint; NaN when the
  volume does not reach them). They say what a 2D network sees where the gland is not;
* **below-apex ring**: on those slices 10-20 mm below the apex, the median of ``z`` 3-12 mm (in-plane) outside the
  gland's footprint minus the median inside it, beside the footprint (lateral) and in front of it (anterior):
  positive when the tissue under the footprint is ringed by brighter tissue, like a small gland;
* **edge profile**: the median of ``z`` in bands of 3D distance (mm) from the gland's border, 4-6, 2-4 and 0-2 mm
  inside and 0-2 mm outside, minus the median deeper than 6 mm inside: a line (a dark capsule) or a gradient
  towards the edge;
* **wall profile**: the median of ``z`` over the columns within 8 mm of the gland's midline on the slice of
  largest gland area, at offsets from the gland's posterior border (negative: behind it, into the rectal
  wall; positive: into the gland), which is how an endorectal coil's near field looks to the network;
* **surroundings**: the median of the intensities 60-80 mm (in-plane) from the gland centre on the slices
  through the gland, over the gland's median (muscle, fat and bone that fill a real field of view);
* **physical extent**: field of view, body width/depth (mm) and the fraction of that slice covered by
  body (smoothed image above 15% of the median of its upper half, holes filled, largest component),
  whether the body is cut by the left and right edges of the field of view, gland extent in mm and volume.

The nearest simulated case to the real one is the one with the smallest Euclidean distance over
:data:`NEAREST_FEATURES`, each standardised by its spread across the simulated cases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
from scipy import ndimage

from .io import as_lps_array, write_png

__all__ = [
    "CaseStats",
    "load_lps",
    "zscore",
    "histogram_quantiles",
    "wasserstein_quantiles",
    "gland_contrast",
    "radial_power_spectrum",
    "texture_spectrum",
    "spectral_slope",
    "bias_profile",
    "body_mask",
    "sector_contrasts",
    "edge_profile",
    "below_apex_ring",
    "wall_profile",
    "far_field_ratio",
    "physical_extent",
    "measure_case",
    "nearest_case",
    "STD_UNIT_ROWS",
    "site_medians",
    "RoundComparison",
    "compare_rounds",
    "comparison_markdown",
    "rounds_markdown",
    "realism_report",
]

PathLike = Union[str, os.PathLike]

SPECTRUM_BAND = (0.03, 0.15)  # cycles/mm
QUANTILE_GRID = np.linspace(0.005, 0.995, 199)
WALL_OFFSETS_MM = (-3.0, 0.0, 6.0, 15.0, 24.0)
EDGE_BANDS_MM = {"edge_inside_4_6": (4.0, 6.0), "edge_inside_2_4": (2.0, 4.0), "edge_inside_0_2": (0.0, 2.0),
                 "edge_outside_0_2": (-2.0, 0.0)}
"""Bands of :func:`edge_profile`: (low, high] of the signed distance from the gland's border, mm, positive inside."""
EDGE_INTERIOR_MM = 6.0
NEAREST_FEATURES = ("q01", "q50", "q99", "skewness", "contrast", "spectral_slope", "coil_gradient",
                    "far_field_ratio", "body_fraction", "fov_mm")


def _check_volume(volume: np.ndarray, mask: np.ndarray, spacing: Sequence[float], where: str) -> None:
    if volume.ndim != 3:
        raise ValueError(f"{where}: image must be 3D, got shape {volume.shape}.")
    if mask.shape != volume.shape:
        raise ValueError(f"{where}: mask shape {mask.shape} differs from image shape {volume.shape}.")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"{where}: spacing must be 3 positive values, got {tuple(spacing)}.")
    if not np.any(mask):
        raise ValueError(f"{where}: the mask is empty.")
    if not np.all(np.isfinite(volume)):
        raise ValueError(f"{where}: the image holds non-finite values.")
    if float(np.std(volume)) == 0.0:
        raise ValueError(f"{where}: the image is constant.")



def load_lps(image_path: PathLike, label_path: PathLike) -> Tuple[np.ndarray, np.ndarray, Tuple[float, float, float]]:
    """``(image float64, mask bool, spacing mm)`` of a NIfTI pair, reoriented to LPS.

    Raises:
        ValueError: when the files differ in shape or are not 3D, naming the files.
    """
    try:
        img = nib.load(str(image_path))
        lab = nib.load(str(label_path))
    except nib.filebasedimages.ImageFileError as err:
        raise ValueError(f"{image_path} / {label_path}: not a readable NIfTI pair ({err})") from None
    if len(img.shape) != 3 or img.shape != lab.shape:
        raise ValueError(f"{image_path}: image shape {img.shape} and mask shape {lab.shape} ({label_path}) "
                         "must be equal and 3D.")
    current = nib.orientations.io_orientation(img.affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(("L", "P", "S")))
    zooms = np.zeros(3)
    for axis, (out_axis, _) in enumerate(transform):  # input axis -> its position in LPS order
        zooms[int(out_axis)] = float(img.header.get_zooms()[axis])
    return as_lps_array(img).astype(np.float64), as_lps_array(lab) > 0, tuple(float(z) for z in zooms)


def zscore(volume: np.ndarray) -> np.ndarray:
    """``(v - mean(v)) / std(v)`` over all voxels, the pipeline's ``NormalizeIntensityd(nonzero=False)``."""
    v = np.asarray(volume, dtype=np.float64)
    return (v - v.mean()) / v.std()


def histogram_quantiles(z: np.ndarray) -> Dict[str, float]:
    """``q01, q50, q99`` and skewness ``E[(z - mu)^3] / sigma^3`` of the normalised intensities."""
    z = np.asarray(z, dtype=np.float64).ravel()
    q01, q50, q99 = np.quantile(z, [0.01, 0.5, 0.99])
    c = z - z.mean()
    return {"q01": float(q01), "q50": float(q50), "q99": float(q99),
            "skewness": float(np.mean(c**3) / np.mean(c**2) ** 1.5)}


def wasserstein_quantiles(qa: np.ndarray, qb: np.ndarray) -> float:
    """W1 between two distributions given by their quantiles on one grid: ``mean |Q_a - Q_b|``."""
    qa, qb = np.asarray(qa, dtype=np.float64), np.asarray(qb, dtype=np.float64)
    if qa.shape != qb.shape:
        raise ValueError(f"quantile vectors differ in shape: {qa.shape} vs {qb.shape}.")
    return float(np.mean(np.abs(qa - qb)))


def gland_contrast(volume: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                   shell_mm: Tuple[float, float] = (2.0, 8.0)) -> float:
    """``(mean(v | gland) - mean(v | shell)) / std(v)``; the shell holds the voxels outside the gland at a
    Euclidean distance ``shell_mm[0] < d <= shell_mm[1]`` (mm) from it."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(volume, mask, spacing, "gland_contrast")
    if not 0.0 <= shell_mm[0] < shell_mm[1]:
        raise ValueError(f"shell_mm must be (inner, outer) with 0 <= inner < outer, got {shell_mm}.")
    d = ndimage.distance_transform_edt(~mask, sampling=spacing)
    shell = (d > shell_mm[0]) & (d <= shell_mm[1])
    if not shell.any():
        raise ValueError(f"gland_contrast: no voxel in the {shell_mm} mm shell around the gland.")
    v = np.asarray(volume, dtype=np.float64)
    return float((v[mask].mean() - v[shell].mean()) / v.std())


def radial_power_spectrum(image: np.ndarray, spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a 2D image: ``(f, P(f))``, ``f`` in cycles/mm.

    ``P`` is the power spectral density ``|FFT(image - mean)|^2 dx dy / N`` (units: image^2 mm^2, so that
    ``sum P df_x df_y`` over the FFT grid is the image variance whatever the pixel size) averaged over the frequencies ``sqrt(fx^2 + fy^2)`` that fall in
    bins of width ``df = max(1 / (nx dx), 1 / (ny dy))`` centred on ``0, df, 2 df, ...`` (up to the
    smaller Nyquist frequency); ``f`` is the bin centre. A sinusoid of frequency ``k df`` peaks at bin ``k``.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 4:
        raise ValueError(f"radial_power_spectrum needs a 2D image of at least 4x4, got shape {image.shape}.")
    dx, dy = float(spacing[0]), float(spacing[1])
    nx, ny = image.shape
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2 * (dx * dy / image.size)
    fx = np.fft.fftfreq(nx, dx)[:, None]
    fy = np.fft.fftfreq(ny, dy)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    df = max(1.0 / (nx * dx), 1.0 / (ny * dy))
    nyquist = min(0.5 / dx, 0.5 / dy)
    bins = np.rint(radius / df).astype(int)
    nbins = int(np.floor(nyquist / df)) + 1
    keep = bins < nbins
    sums = np.bincount(bins[keep], weights=power[keep], minlength=nbins)
    counts = np.bincount(bins[keep], minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.arange(nbins) * df, mean


def _largest_slice(mask: np.ndarray) -> int:
    return int(np.argmax(mask.sum(axis=(0, 1))))


def texture_spectrum(z: np.ndarray, mask: np.ndarray, spacing: Sequence[float], crop_mm: float = 64.0,
                     freqs: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Mean radial power spectrum of ``crop_mm`` squares of ``z`` centred on the gland, over the axial slices
    whose gland area is at least half the largest; interpolated onto ``freqs`` (cycles/mm, default
    ``0.01 .. 0.25`` by 0.005), NaN beyond a slice's Nyquist frequency."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(z, mask, spacing, "texture_spectrum")
    freqs = np.arange(0.01, 0.2501, 0.005) if freqs is None else np.asarray(freqs, dtype=np.float64)
    area = mask.sum(axis=(0, 1))
    half = [int(round(0.5 * crop_mm / s)) for s in spacing[:2]]
    spectra = []
    for k in np.flatnonzero(area >= 0.5 * area.max()):
        cx, cy = (int(round(c)) for c in np.argwhere(mask[:, :, k]).mean(axis=0))
        x0, x1 = max(0, cx - half[0]), min(z.shape[0], cx + half[0])
        y0, y1 = max(0, cy - half[1]), min(z.shape[1], cy + half[1])
        f, p = radial_power_spectrum(z[x0:x1, y0:y1, k], spacing[:2])
        spectra.append(np.interp(freqs, f, p, right=np.nan))
    stacked = np.stack(spectra)
    seen = np.isfinite(stacked).any(axis=0)
    mean = np.full(freqs.shape, np.nan)
    mean[seen] = np.nanmean(stacked[:, seen], axis=0)
    return freqs, mean


def spectral_slope(freqs: np.ndarray, power: np.ndarray, band: Tuple[float, float] = SPECTRUM_BAND) -> float:
    """Least-squares slope of ``log10 P`` against ``log10 f`` over ``band`` (cycles/mm): ``P ~ f^slope``."""
    freqs, power = np.asarray(freqs, dtype=np.float64), np.asarray(power, dtype=np.float64)
    sel = (freqs >= band[0]) & (freqs <= band[1]) & np.isfinite(power) & (power > 0)
    if sel.sum() < 3:
        raise ValueError(f"spectral_slope: fewer than 3 frequencies with power in the band {band} cycles/mm.")
    return float(np.polyfit(np.log10(freqs[sel]), np.log10(power[sel]), 1)[0])


def bias_profile(z: np.ndarray, mask: np.ndarray, spacing: Sequence[float], sigma_mm: float = 10.0,
                 band_mm: float = 10.0, reach_mm: float = 60.0) -> Tuple[np.ndarray, np.ndarray]:
    """Low-pass profile along ``y`` (posterior positive, mm from the gland centre) on the slice of largest
    gland area: the Gaussian-smoothed (``sigma_mm``) slice averaged over ``|x - x_c| <= band_mm``, sampled
    at ``-reach_mm .. reach_mm`` in 1 mm steps (NaN outside the field of view)."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(z, mask, spacing, "bias_profile")
    k = _largest_slice(mask)
    smooth = ndimage.gaussian_filter(np.asarray(z[:, :, k], dtype=np.float64),
                                     (sigma_mm / spacing[0], sigma_mm / spacing[1]), mode="nearest")
    cx, cy = np.argwhere(mask[:, :, k]).mean(axis=0)
    xs = np.abs(np.arange(z.shape[0]) - cx) * spacing[0] <= band_mm
    line = smooth[xs].mean(axis=0)
    y_mm = (np.arange(z.shape[1]) - cy) * spacing[1]
    offsets = np.arange(-reach_mm, reach_mm + 0.5, 1.0)
    return offsets, np.interp(offsets, y_mm, line, left=np.nan, right=np.nan)


def coil_gradient(offsets: np.ndarray, profile: np.ndarray) -> float:
    """Posterior peak of the bias profile (0 to 50 mm behind the gland centre) minus its value 40 mm anterior
    (the nearest sampled offset inside the field of view, at least 20 mm anterior)."""
    post = (offsets >= 0) & (offsets <= 50) & np.isfinite(profile)
    ant = (offsets <= -20) & (offsets >= -40) & np.isfinite(profile)
    if not post.any() or not ant.any():
        raise ValueError("coil_gradient: the profile does not reach 20 mm anterior and posterior of the gland.")
    return float(np.max(profile[post]) - profile[ant][0])


def sector_contrasts(z: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                     near_mm: Tuple[float, float] = (3.0, 15.0),
                     axial_mm: Tuple[float, float] = (10.0, 20.0)) -> Dict[str, float]:
    """Median of ``z`` in the anterior, lateral, below-apex and above-base regions minus the gland's median (see
    the module docstring); a region outside the volume gives NaN."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(z, mask, spacing, "sector_contrasts")
    gland = float(np.median(z[mask]))
    k = _largest_slice(mask)
    d = ndimage.distance_transform_edt(~mask[:, :, k], sampling=spacing[:2])
    cx, cy = np.argwhere(mask[:, :, k]).mean(axis=0)
    dx = np.abs(np.arange(z.shape[0]) - cx)[:, None] * spacing[0]
    dy = (np.arange(z.shape[1]) - cy)[None, :] * spacing[1]
    near = (d > near_mm[0]) & (d < near_mm[1])
    regions = {"anterior_contrast": near & (dy < 0) & (dx < 15.0),
               "lateral_contrast": near & (np.abs(dy) <= 5.0) & (dx > np.abs(dy))}
    out = {name: float(np.median(z[:, :, k][sel]) - gland) if sel.any() else float("nan")
           for name, sel in regions.items()}
    for side in ("below_apex", "above_base"):
        values = _footprint_beyond_gland(z, mask, spacing, side, axial_mm)
        out[f"{side}_contrast"] = float(np.median(values) - gland) if values.size else float("nan")
    return out


def _footprint_beyond_gland(z: np.ndarray, mask: np.ndarray, spacing: Sequence[float], side: str,
                            axial_mm: Tuple[float, float]) -> np.ndarray:
    """Values of ``z`` in the gland's footprint (its projection along the slice axis) on the slices ``axial_mm``
    below the apex (``side="below_apex"``) or above the base (``"above_base"``); empty if none is in the volume."""
    return z[:, :, _slices_beyond_gland(mask, spacing, side, axial_mm)][mask.any(axis=2)]


def _slices_beyond_gland(mask: np.ndarray, spacing: Sequence[float], side: str,
                         axial_mm: Tuple[float, float]) -> np.ndarray:
    """Indices of the slices ``axial_mm`` below the lowest gland slice (``side="below_apex"``) or above the highest
    (``"above_base"``); empty if none is in the volume."""
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    k = np.arange(mask.shape[2])
    distances = (ks[0] - k if side == "below_apex" else k - ks[-1]) * spacing[2]
    return np.flatnonzero((distances >= axial_mm[0]) & (distances <= axial_mm[1]))


def _iqr(values: np.ndarray) -> float:
    q25, q75 = np.percentile(values, [25.0, 75.0])
    return float(q75 - q25)


def uniformity(z: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
               axial_mm: Tuple[float, float] = (10.0, 20.0)) -> Dict[str, float]:
    """Interquartile range of ``z`` inside the gland (``gland_iqr``) and in the below-apex region of
    :func:`sector_contrasts` (``below_apex_iqr``: the gland's footprint, ``axial_mm`` below the apex; NaN outside
    the volume). A network told by its training data that the gland is the most uniform tissue in front of the
    rectum marks whatever is more uniform than the gland (round 6, docs/realism.md)."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(z, mask, spacing, "uniformity")
    below = _footprint_beyond_gland(z, mask, spacing, "below_apex", axial_mm)
    return {"gland_iqr": _iqr(z[mask]), "below_apex_iqr": _iqr(below) if below.size else float("nan")}


def below_apex_ring(z: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                    axial_mm: Tuple[float, float] = (10.0, 20.0),
                    ring_mm: Tuple[float, float] = (3.0, 12.0)) -> Dict[str, float]:
    """What surrounds the tissue below the apex: on the slices ``axial_mm`` below the apex, the median of ``z`` in a
    ring ``ring_mm`` (in-plane) outside the gland's footprint minus the median inside the footprint, in its
    lateral sector (``below_apex_lateral_ring``: ``|dx| > |dy|`` from the footprint's centre) and its anterior
    sector (``below_apex_anterior_ring``: ``dy < 0``, ``|dx| <= |dy|``), std units; NaN outside the volume.
    Positive: the tissue under the gland's footprint is ringed by brighter tissue, which makes it look like a
    small gland (round 7, docs/realism.md)."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(z, mask, spacing, "below_apex_ring")
    out = {"below_apex_lateral_ring": float("nan"), "below_apex_anterior_ring": float("nan")}
    slices = _slices_beyond_gland(mask, spacing, "below_apex", axial_mm)
    if not slices.size:
        return out
    footprint = mask.any(axis=2)
    d = ndimage.distance_transform_edt(~footprint, sampling=spacing[:2])
    cx, cy = np.argwhere(footprint).mean(axis=0)
    dx = np.abs(np.arange(z.shape[0]) - cx)[:, None] * spacing[0]
    dy = (np.arange(z.shape[1]) - cy)[None, :] * spacing[1]
    ring = (d > ring_mm[0]) & (d < ring_mm[1])
    below = z[:, :, slices]
    inside = float(np.median(below[footprint]))
    sectors = {"below_apex_lateral_ring": ring & (dx > np.abs(dy)),
               "below_apex_anterior_ring": ring & (dy < 0) & (dx <= np.abs(dy))}
    for name, sector in sectors.items():
        if sector.any():
            out[name] = float(np.median(below[sector]) - inside)
    return out


def edge_profile(z: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                 bands_mm: Dict[str, Tuple[float, float]] = EDGE_BANDS_MM,
                 interior_mm: float = EDGE_INTERIOR_MM) -> Dict[str, float]:
    """How the gland's intensity changes towards its border: for each band ``(low, high]`` of the signed 3D
    distance from the border (mm; positive inside, a voxel's distance to the nearest voxel on the other side), the
    median of ``z`` in the band minus the median deeper than ``interior_mm`` inside, std units; NaN for an empty
    band or interior. A simulated capsule drawn as a dark line shows as a step in the 0-2 mm band only, a real
    gland darkening gradually as negative values in the deeper bands too (docs/realism.md, "no site held out")."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(z, mask, spacing, "edge_profile")
    spacing = tuple(float(s) for s in spacing[:3])
    signed = np.where(mask, ndimage.distance_transform_edt(mask, sampling=spacing),
                      -ndimage.distance_transform_edt(~mask, sampling=spacing))
    interior = signed > interior_mm
    out = {name: float("nan") for name in bands_mm}
    if not interior.any():
        return out
    reference = float(np.median(z[interior]))
    for name, (low, high) in bands_mm.items():
        band = (signed > low) & (signed <= high)
        if band.any():
            out[name] = float(np.median(z[band]) - reference)
    return out


def wall_profile(z: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                 offsets_mm: Sequence[float] = WALL_OFFSETS_MM, band_mm: float = 8.0) -> np.ndarray:
    """Median of ``z`` at ``offsets_mm`` from the gland's posterior border (positive into the gland) over the
    columns ``|x - x_c| < band_mm`` that cross the gland, on the slice of largest gland area (NaN outside)."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(z, mask, spacing, "wall_profile")
    k = _largest_slice(mask)
    cx = np.argwhere(mask[:, :, k])[:, 0].mean()
    columns = [c for c in range(mask.shape[0]) if abs(c - cx) * spacing[0] < band_mm and mask[c, :, k].any()]
    out = []
    for offset in offsets_mm:
        values = []
        for c in columns:
            y = int(round(np.flatnonzero(mask[c, :, k]).max() - offset / spacing[1]))
            if 0 <= y < mask.shape[1]:
                values.append(z[c, y, k])
        out.append(float(np.median(values)) if values else float("nan"))
    return np.asarray(out)


def body_mask(slice2d: np.ndarray, spacing: Sequence[float], smooth_mm: float = 3.0,
              fraction: float = 0.15) -> np.ndarray:
    """Body of one axial slice: ``gaussian(slice, smooth_mm) > fraction * median(upper half)``, holes filled,
    the largest connected component."""
    s = ndimage.gaussian_filter(np.asarray(slice2d, dtype=np.float64),
                                (smooth_mm / spacing[0], smooth_mm / spacing[1]))
    upper = s[s >= np.median(s)]
    inside = ndimage.binary_fill_holes(s > fraction * np.median(upper))
    labels, n = ndimage.label(inside)
    if n == 0:
        return inside
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


def physical_extent(volume: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """Field of view, body extent and gland extent (mm), measured on the slice of largest gland area.

    ``body_cut_lr`` is 1 when the body reaches within 2 voxels of both the left and right edges.
    """
    mask = np.asarray(mask, dtype=bool)
    _check_volume(volume, mask, spacing, "physical_extent")
    k = _largest_slice(mask)
    body = body_mask(volume[:, :, k], spacing)
    xs, ys = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    gx, gy, gz = (np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != i))) for i in range(3))
    n = volume.shape[0]
    return {
        "fov_mm": float(volume.shape[0] * spacing[0]),
        "body_width_mm": float((xs[-1] - xs[0] + 1) * spacing[0]) if xs.size else 0.0,
        "body_depth_mm": float((ys[-1] - ys[0] + 1) * spacing[1]) if ys.size else 0.0,
        "body_fraction": float(body.mean()),
        "body_cut_lr": float(xs.size > 0 and xs[0] <= 2 and xs[-1] >= n - 3),
        "gland_lr_mm": float((gx[-1] - gx[0] + 1) * spacing[0]),
        "gland_ap_mm": float((gy[-1] - gy[0] + 1) * spacing[1]),
        "gland_si_mm": float((gz[-1] - gz[0] + 1) * spacing[2]),
        "gland_ml": float(mask.sum() * np.prod(spacing) / 1000.0),
    }


def far_field_ratio(volume: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                    ring_mm: Tuple[float, float] = (60.0, 80.0)) -> float:
    """``median(v | ring) / median(v | gland)``; the ring holds the voxels of the slices through the gland at an
    in-plane distance ``ring_mm[0] <= r < ring_mm[1]`` from the gland's centroid (NaN if the field of view
    does not reach the ring)."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(volume, mask, spacing, "far_field_ratio")
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    cx, cy, _ = np.argwhere(mask).mean(axis=0)
    dx = (np.arange(volume.shape[0]) - cx)[:, None] * spacing[0]
    dy = (np.arange(volume.shape[1]) - cy)[None, :] * spacing[1]
    r = np.sqrt(dx**2 + dy**2)
    ring = (r >= ring_mm[0]) & (r < ring_mm[1])
    if not ring.any():
        return float("nan")
    values = volume[:, :, ks][ring]
    return float(np.median(values) / np.median(volume[mask]))


@dataclass
class CaseStats:
    """Everything measured on one case: scalar statistics plus the curves behind them."""

    name: str
    stats: Dict[str, float]
    quantiles: np.ndarray
    freqs: np.ndarray
    spectrum: np.ndarray
    offsets: np.ndarray
    profile: np.ndarray
    image_path: str = ""
    label_path: str = ""
    site: str = ""
    extra: Dict[str, float] = field(default_factory=dict)


def measure_case(volume: np.ndarray, mask: np.ndarray, spacing: Sequence[float], name: str = "case") -> CaseStats:
    """All statistics of one LPS volume and its gland mask (see the module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    _check_volume(volume, mask, spacing, name)
    z = zscore(volume)
    stats = histogram_quantiles(z)
    stats["contrast"] = gland_contrast(volume, mask, spacing)
    freqs, spectrum = texture_spectrum(z, mask, spacing)
    stats["spectral_slope"] = spectral_slope(freqs, spectrum)
    offsets, profile = bias_profile(z, mask, spacing)
    stats["coil_gradient"] = coil_gradient(offsets, profile)
    stats["far_field_ratio"] = far_field_ratio(volume, mask, spacing)
    stats.update(sector_contrasts(z, mask, spacing))
    stats.update(uniformity(z, mask, spacing))
    stats.update(below_apex_ring(z, mask, spacing))
    stats.update(edge_profile(z, mask, spacing))
    stats.update({f"wall_{offset:+.0f}mm": value for offset, value in zip(WALL_OFFSETS_MM, wall_profile(z, mask, spacing))})
    stats.update(physical_extent(volume, mask, spacing))
    return CaseStats(name=name, stats=stats, quantiles=np.quantile(z.ravel(), QUANTILE_GRID), freqs=freqs,
                     spectrum=spectrum, offsets=offsets, profile=profile)


def nearest_case(real: CaseStats, simulated: Sequence[CaseStats], features: Sequence[str] = NEAREST_FEATURES) -> int:
    """Index of the simulated case nearest to ``real``: Euclidean distance over ``features`` divided by their
    standard deviation across ``simulated`` (a feature with no spread counts with unit scale; a feature that is
    NaN for a case, e.g. a ring beyond its field of view, is left out of that case's sum)."""
    if not simulated:
        raise ValueError("nearest_case: no simulated case.")
    sim = np.array([[c.stats[f] for f in features] for c in simulated], dtype=np.float64)
    ref = np.array([real.stats[f] for f in features], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scale = np.nanstd(sim, axis=0)
    scale[~(scale > 0)] = 1.0
    return int(np.argmin(np.sqrt(np.nansum(((sim - ref) / scale) ** 2, axis=1))))


# ------------------------------------------------------------------ the report

ROWS = (
    ("q01", "z-score 1st percentile", "{:.2f}"),
    ("q50", "z-score median", "{:.2f}"),
    ("q99", "z-score 99th percentile", "{:.2f}"),
    ("skewness", "z-score skewness", "{:.2f}"),
    ("w1_to_real", "histogram W1 to the real case (std units)", "{:.3f}"),
    ("contrast", "gland - shell(2-8 mm) contrast (std units)", "{:.2f}"),
    ("spectral_slope", "texture spectrum slope, 0.03-0.15 cycles/mm", "{:.2f}"),
    ("coil_gradient", "coil bias: posterior peak - 40 mm anterior (std units)", "{:.2f}"),
    ("anterior_contrast", "anterior sector (3-15 mm) - gland median (std units)", "{:.2f}"),
    ("lateral_contrast", "lateral sector (3-15 mm) - gland median (std units)", "{:.2f}"),
    ("below_apex_contrast", "10-20 mm below the apex, gland footprint - gland median (std units)", "{:.2f}"),
    ("gland_iqr", "gland: interquartile range (std units)", "{:.2f}"),
    ("below_apex_iqr", "10-20 mm below the apex, gland footprint: interquartile range (std units)", "{:.2f}"),
    ("below_apex_lateral_ring", "10-20 mm below the apex, 3-12 mm beside the footprint - inside it (std units)",
     "{:.2f}"),
    ("below_apex_anterior_ring", "10-20 mm below the apex, 3-12 mm in front of the footprint - inside it (std units)",
     "{:.2f}"),
    ("above_base_contrast", "10-20 mm above the base, gland footprint - gland median (std units)", "{:.2f}"),
    ("edge_inside_4_6", "gland edge: 4-6 mm inside - deeper than 6 mm (std units)", "{:.2f}"),
    ("edge_inside_2_4", "gland edge: 2-4 mm inside - deeper than 6 mm (std units)", "{:.2f}"),
    ("edge_inside_0_2", "gland edge: 0-2 mm inside - deeper than 6 mm (std units)", "{:.2f}"),
    ("edge_outside_0_2", "gland edge: 0-2 mm outside - deeper than 6 mm (std units)", "{:.2f}"),
    *((f"wall_{o:+.0f}mm", f"wall profile {o:+.0f} mm from the posterior gland border (z-score)", "{:.2f}")
      for o in WALL_OFFSETS_MM),
    ("far_field_ratio", "surroundings: median 60-80 mm from the gland / gland median", "{:.2f}"),
    ("fov_mm", "field of view (mm)", "{:.0f}"),
    ("body_width_mm", "body width on the mid-gland slice (mm)", "{:.0f}"),
    ("body_fraction", "fraction of the slice covered by body", "{:.2f}"),
    ("body_cut_lr", "body cut by the left and right FOV edges (fraction of cases)", "{:.2f}"),
    ("gland_lr_mm", "gland left-right extent (mm)", "{:.0f}"),
    ("gland_ap_mm", "gland antero-posterior extent (mm)", "{:.0f}"),
    ("gland_si_mm", "gland cranio-caudal extent (mm)", "{:.0f}"),
    ("gland_ml", "gland volume (mL)", "{:.0f}"),
)


def _site_cases(root: Path) -> List[Tuple[str, Path, Path]]:
    from .synthesis.sites import SITES

    cases = []
    for site in SITES:
        for name in (site.old_name, site.new_name):
            folder = root / name
            if not folder.is_dir():
                continue
            for image in sorted(p for p in folder.glob("Case*.nii.gz") if "egmentation" not in p.name):
                stem = image.name[: -len(".nii.gz")]
                label = next((folder / f"{stem}{s}.nii.gz" for s in ("_segmentation", "_Segmentation")
                              if (folder / f"{stem}{s}.nii.gz").exists()), None)
                if label is None:
                    raise FileNotFoundError(f"no mask {stem}_segmentation.nii.gz (or _Segmentation) next to {image}.")
                cases.append((site.key, image, label))
            break
    return cases


def measure_collection(root: PathLike, real: CaseStats) -> List[CaseStats]:
    """Statistics of every case of every site folder under ``root`` (either naming), W1 to ``real`` included."""
    root = Path(root)
    cases = _site_cases(root)
    if not cases:
        raise FileNotFoundError(f"no site folder with Case*.nii.gz under {root}.")
    out = []
    for site, image, label in cases:
        vol, mask, spacing = load_lps(image, label)
        c = measure_case(vol, mask, spacing, name=f"{site}/{image.name[:-7]}")
        c.site, c.image_path, c.label_path = site, str(image), str(label)
        c.stats["w1_to_real"] = wasserstein_quantiles(c.quantiles, real.quantiles)
        out.append(c)
    return out


STD_UNIT_ROWS = (
    "q01", "q50", "q99", "w1_to_real", "contrast", "coil_gradient", "anterior_contrast", "lateral_contrast",
    "below_apex_contrast", "above_base_contrast", "gland_iqr", "below_apex_iqr", "below_apex_lateral_ring",
    "below_apex_anterior_ring", "edge_inside_4_6", "edge_inside_2_4", "edge_inside_0_2", "edge_outside_0_2",
    *(f"wall_{o:+.0f}mm" for o in WALL_OFFSETS_MM),
)
"""The report's 23 rows in std units of the z-score: the rows the simulator rounds' rules sum and guard
(docs/realism.md, rounds 6-9). ``w1_to_real`` is already a distance to the real case."""


def site_medians(cases: Sequence[CaseStats]) -> Dict[str, Dict[str, float]]:
    """``{site: {row: median over the site's cases}}``, NaN cases left out (NaN where every case is NaN)."""
    out: Dict[str, Dict[str, float]] = {}
    for site in dict.fromkeys(c.site for c in cases):
        mine = [c.stats for c in cases if c.site == site]
        out[site] = {}
        for key in mine[0]:
            values = np.array([m.get(key, np.nan) for m in mine], dtype=np.float64)
            finite = values[np.isfinite(values)]
            out[site][key] = float(np.median(finite)) if finite.size else float("nan")
    return out


def _distance(row: str, value: float, real: Dict[str, float]) -> float:
    return abs(value) if row == "w1_to_real" else abs(value - real[row])


@dataclass
class RoundComparison:
    """A candidate collection against a baseline under a simulator round's rule (:func:`compare_rounds`).

    ``target_*`` and ``all_*`` are distances to the real case summed over the target rows / ``all_rows`` and the
    sites (NaN cells left out); ``worse`` lists ``(row, site, baseline, candidate, how much further)`` for every
    guarded cell that moved more than the tolerance further from the real case."""

    target_baseline: float
    target_candidate: float
    all_baseline: float
    all_candidate: float
    worse: List[Tuple[str, str, float, float, float]]

    @property
    def passes(self) -> bool:
        """The rule of rounds 6-9: the target rows closer to the real case, no guarded cell further by more than
        the tolerance."""
        return self.target_candidate < self.target_baseline and not self.worse


def compare_rounds(real: Dict[str, float], baseline: Dict[str, Dict[str, float]],
                   candidate: Dict[str, Dict[str, float]], target_rows: Sequence[str],
                   guard_rows: Optional[Sequence[str]] = None, tolerance: float = 0.1,
                   all_rows: Sequence[str] = STD_UNIT_ROWS) -> RoundComparison:
    """Apply a simulator round's rule to two collections' :func:`site_medians`.

    Args:
        real: the real case's statistics (``CaseStats.stats``).
        baseline, candidate: site medians of the collection before and after the change (the same sites).
        target_rows: the rows the round is meant to bring closer to the real case.
        guard_rows: the rows that must not move more than ``tolerance`` further at any site (default: the other
            rows of ``all_rows``).
        tolerance: in the rows' own units.
        all_rows: the rows whose summed distance ranks passing candidates.
    """
    if set(baseline) != set(candidate):
        raise ValueError(f"compare_rounds: the collections have different sites: {sorted(baseline)} vs "
                         f"{sorted(candidate)}.")
    guard_rows = [r for r in all_rows if r not in target_rows] if guard_rows is None else list(guard_rows)
    for row in [*target_rows, *guard_rows, *all_rows]:
        if row != "w1_to_real" and row not in real:
            raise ValueError(f"compare_rounds: unknown row {row!r}; rows are {sorted(real)}.")

    def total(medians, rows):
        values = [_distance(r, medians[s][r], real) for r in rows for s in medians]
        return float(np.nansum(values))

    worse = []
    for row in guard_rows:
        for site in baseline:
            before, after = baseline[site][row], candidate[site][row]
            if not (np.isfinite(before) and np.isfinite(after)):
                continue
            further = _distance(row, after, real) - _distance(row, before, real)
            if further > tolerance:
                worse.append((row, site, before, after, further))
    return RoundComparison(target_baseline=total(baseline, target_rows), target_candidate=total(candidate, target_rows),
                           all_baseline=total(baseline, all_rows), all_candidate=total(candidate, all_rows),
                           worse=worse)


def comparison_markdown(result: RoundComparison, label: str) -> str:
    """One row of a round's result table: the summed distances, the guarded cells that moved further, the verdict."""
    worse = "; ".join(f"{row} at {site} ({b:.2f} -> {a:.2f}, +{d:.3f})" for row, site, b, a, d in result.worse)
    return (f"| {label} | {result.target_baseline:.3f} -> {result.target_candidate:.3f} | {worse or 'none'} | "
            f"{result.all_baseline:.3f} -> {result.all_candidate:.3f} | {'passes' if result.passes else 'fails'} |")


def markdown_table(real: CaseStats, simulated: Sequence[CaseStats], title: str) -> str:
    """Rows: the statistics of :data:`ROWS`; columns: the real case, then the median over each site's cases."""
    medians = site_medians(simulated)
    sites = list(medians)
    lines = [f"**{title}**", "", "| quantity | real case | " + " | ".join(sites) + " | all simulated cases (min - max) |",
             "|---|---|" + "---|" * (len(sites) + 1)]
    for key, label, fmt in ROWS:
        cells = [fmt.format(real.stats.get(key, 0.0))]
        cells.extend(fmt.format(medians[s][key]) for s in sites)
        values = np.array([c.stats[key] for c in simulated], dtype=np.float64)
        cells.append(f"{fmt.format(np.nanmin(values))} - {fmt.format(np.nanmax(values))}" if np.isfinite(values).any()
                     else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _panel(ax, vol: np.ndarray, mask: np.ndarray, k: int, title: str) -> None:
    lo, hi = np.percentile(vol, [0.5, 99.5])
    ax.imshow(vol[:, :, k].T, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    ax.contour(mask[:, :, k].T.astype(float), [0.5], colors="r", linewidths=0.6)
    ax.set_title(title, fontsize=7, pad=2)
    ax.set_xticks([])
    ax.set_yticks([])


def write_figure(real: CaseStats, real_vol: Tuple[np.ndarray, np.ndarray], simulated: Sequence[CaseStats],
                 nearest: int, out_png: PathLike) -> str:
    """Real case vs the nearest simulated case (three axial slices each, radiological view, anterior up),
    then histograms, texture spectra and bias profiles of the real case against every simulated site."""
    from matplotlib.figure import Figure

    near = simulated[nearest]
    sim_vol, sim_mask, _ = load_lps(near.image_path, near.label_path)
    fig = Figure(figsize=(11, 6.2))
    axes = fig.subplots(2, 5, squeeze=False)
    for row, (vol, mask, name) in enumerate(((real_vol[0], real_vol[1], f"real {real.name}"),
                                             (sim_vol, sim_mask, f"nearest simulated {near.name}"))):
        ks = np.flatnonzero(mask.any(axis=(0, 1)))
        for col, frac in enumerate((0.2, 0.5, 0.8)):
            k = int(round(ks[0] + frac * (ks[-1] - ks[0])))
            _panel(axes[row, col], vol, mask, k, f"{name}, z={k}")
    colours = dict(zip(("RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK"),
                       ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")))
    ax = axes[0, 3]
    for c in simulated:
        ax.plot(c.quantiles, QUANTILE_GRID, color=colours.get(c.site, "gray"), lw=0.5, alpha=0.6)
    ax.plot(real.quantiles, QUANTILE_GRID, "k", lw=2, label="real")
    ax.set_xlim(-2.5, 6)
    ax.set_title("normalised intensity CDF", fontsize=8)
    ax.set_xlabel("z-score", fontsize=7)
    ax = axes[0, 4]
    for c in simulated:
        ax.loglog(c.freqs, c.spectrum, color=colours.get(c.site, "gray"), lw=0.5, alpha=0.6)
    ax.loglog(real.freqs, real.spectrum, "k", lw=2)
    ax.axvspan(*SPECTRUM_BAND, color="0.9", zorder=0)
    ax.set_title("texture power spectrum", fontsize=8)
    ax.set_xlabel("cycles/mm", fontsize=7)
    ax = axes[1, 3]
    for c in simulated:
        ax.plot(c.offsets, c.profile, color=colours.get(c.site, "gray"), lw=0.5, alpha=0.6)
    ax.plot(real.offsets, real.profile, "k", lw=2)
    ax.set_title("bias profile (10 mm low-pass)", fontsize=8)
    ax.set_xlabel("mm from gland centre (posterior +)", fontsize=7)
    ax = axes[1, 4]
    ax.axis("off")
    handles = [ax.plot([], [], color=v, lw=2, label=k)[0] for k, v in colours.items()]
    handles.append(ax.plot([], [], "k", lw=2, label="real case")[0])
    ax.legend(handles=handles, loc="center", fontsize=7, frameon=False)
    for a in axes[:, 3:].ravel():
        a.tick_params(labelsize=6)
    fig.tight_layout(pad=0.4)
    return write_png(fig, out_png, dpi=90)


REPORT_HEADER = """# Realism of the simulated sites against a real scan

Written by `python -m tools.data realism` (module `tools.data.realism`, where each statistic is defined with its
formula). Every quantity is measured the same way on the real case (`../shared/data/real_case/Case00`, a 3T
endorectal-coil T2 volume, most likely PROMISE12 BIDMC) and on every simulated case; a site's column is the median
over its cases. Intensities are z-scored over the whole volume first, as the training pipeline does. One real case
of one site: this says how far the simulator is from that scan, not from the benchmark.

"""


ROUNDS_FILE = Path(__file__).with_name("realism_rounds.md")
"""The report's hand-written part: every round's rule, result and reading, newest first (edit it there)."""
ROUND2_MARKER = "<!-- generated here: round2_markdown() -->\n"
VARIANTS_MARKER = "<!-- generated here: variants_markdown() -->\n"


def rounds_markdown(path: PathLike = ROUNDS_FILE) -> str:
    """The report's "Variants measured" part: ``path`` without its leading comment, with the calibration module's
    generated tables (``round2_markdown``, ``variants_markdown``) put in at their marker lines.

    Raises:
        ValueError: naming ``path``, when a marker is missing.
    """
    from .synthesis.calibration import round2_markdown, variants_markdown

    text = Path(path).read_text()
    if text.startswith("<!--"):
        text = text.split("-->\n", 1)[1].lstrip("\n")
    for marker in (ROUND2_MARKER, VARIANTS_MARKER):
        if marker not in text:
            raise ValueError(f"{path}: the marker line {marker.strip()!r} is missing.")
    return text.replace(ROUND2_MARKER, round2_markdown()).replace(VARIANTS_MARKER, variants_markdown())


def realism_report(real_image: PathLike, real_label: PathLike, root: PathLike, out_md: PathLike,
                   out_png: PathLike, baseline_root: Optional[PathLike] = None, header: str = "",
                   label: Optional[str] = None, baseline_label: Optional[str] = None) -> Dict[str, str]:
    """Measure the real case and every simulated case under ``root`` and write the table and the figure.

    With ``baseline_root`` (another simulated collection, e.g. from an earlier simulator), its table is
    written too, for before/after comparisons. ``header`` is markdown put above the tables (default
    :data:`REPORT_HEADER`); ``label`` / ``baseline_label`` name the collections in the table titles
    (default: their paths).

    Returns:
        ``{"markdown": path, "png": path, "nearest": case name}``.
    """
    vol, mask, spacing = load_lps(real_image, real_label)
    real = measure_case(vol, mask, spacing, name=Path(str(real_image)).name.split(".")[0])
    real.stats["w1_to_real"] = 0.0
    simulated = measure_collection(root, real)
    nearest = nearest_case(real, simulated)
    parts = [header or REPORT_HEADER]
    parts.append(markdown_table(real, simulated, f"{label or root} (median over each site's cases)"))
    if baseline_root is not None:
        parts.append(markdown_table(real, measure_collection(baseline_root, real),
                                    f"{baseline_label or baseline_root} (median over each site's cases)"))
    parts.append(f"Nearest simulated case to the real one (standardised distance over {', '.join(NEAREST_FEATURES)}): "
                 f"`{simulated[nearest].name}`.\n")
    from .synthesis.calibration import calibration_markdown

    parts.append("## Where the simulator's numbers come from\n\n" + calibration_markdown())
    parts.append("## Variants measured and how they were chosen\n\n" + rounds_markdown())
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(parts))
    png = write_figure(real, (vol, mask), simulated, nearest, out_png)
    return {"markdown": str(out_md), "png": png, "nearest": simulated[nearest].name}
