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


NO_HELD_OUT_HEADER = """### A model for scans from outside the collection: no site held out (plan written 2026-12-03 13:55 UTC, before its runs)

Every real-case number so far comes from a leave-one-site-out model: five simulated sites trained, one held out. A
real scan is from none of the six, so the model a user would run on it trains on all six. The bundles now take
`--target_site none` (every site trains and validates, the same validation cases as in the leave-one-site-out
datalists, no test site; `tools.data.datalist.make_split`). What prompted it, said plainly because it is a reading of
the real case: in the round-6 study the ENet students trained without the simulated BIDMC site (the main job's
target, a 3T endorectal-coil site like the real case) score 0.09 / 0.11 on the real case, those trained with it
0.00-0.56 (`results/cpu_all_sites_r6/real_case.md`).

Measured once, nothing chosen: ENet w/o, the CPU profile (40 epochs), `--target_site none`, seeds 0 and 1, on the
round-6 study's collection; reported: the six sites' validation Dice (`--evaluate_key validation`) and the real
case's Dice through the bundle's inference, whatever they are. The simulator, the profile and the checkpoint rule
(best source-validation epoch) are the study's, unchanged, except one key that follows the profile's own intent:
six training sites make 15 iterations per epoch instead of 13, so `lr_step_size` is 300 (the profile's "one
CyclicLR cycle over the run", 40 x 15 / 2) instead of 260, which would start a second, rising cycle for the last 80
iterations (noticed in the first minute of the runs, which were restarted with it; 13:58 UTC).

Result (14:07-14:15 UTC, beside the study; training 9 min 14 s / 10 min 1 s on one thread each):

| ENet w/o, no site held out | six sites' validation Dice | real case Dice (report) | the bundle's mask on the real case |
|---|---|---|---|
| seed 0 | 0.781 | 0.410 | 12.6 mL (true 46) on slices 27-47: the largest of 3 components, inside the gland |
| seed 1 | 0.782 | 0.093 | 17.0 mL on slices 0-26: the largest of 4 components, the region below the apex (touches the border) |

Training on all six simulated sites does not carry the model to the real scan either: the same two failures as the
leave-one-site-out models (a part of the gland, and the region below the apex taken for the gland) with the same
seed-to-seed swing. Having the simulated BIDMC site in the training set does not by itself lift the real case (two
seeds; the leave-one-site-out models trained with it range 0.00-0.56).

A probe of what these networks key on (14:17 UTC, report only, nothing chosen; the real volume changed in network
space, the CPU profile's 2 mm grid, threshold 0.5, no largest-component step): a dark outline painted around the
real gland, one 2 mm pixel wide, in plane, from the real mask, at -0.8 or -0.4 in network units (two dark levels
picked by hand, below the real gland's 10th percentile, 0.34).

| ENet w/o | gland covered: as is | outline inside the gland | outline outside it | voxels on the 16 slices below the apex (all variants) |
|---|---|---|---|---|
| BIDMC held out, seed 0 (the main job's, round 6) | 0.39 | 0.51 / 0.54 | 0.69 / 0.69 | 3 227 |
| no site held out, seed 0 | 0.28 | 0.41 / 0.42 | 0.49 / 0.44 | 1 500 |
| no site held out, seed 1 | 0.28 | 0.31 / 0.33 | 0.43 / 0.43 | 2 190 |

An enclosing dark outline is a cue: with one drawn, the networks take in 0.03-0.30 more of the real gland (raw Dice
0.370 -> 0.581 for the main job's model). Every simulated gland has one (the capsule, 1.2 mm at 70% of the capsule
level, and the levator ani 1-3 mm beside it), and at 2 mm the real gland's is faint. The report now measures the
edge (four rows added after this probe, `edge_profile`: the median of the z-score in bands of 3D distance from the
gland's border minus the median deeper than 6 mm inside): the real gland darkens gradually towards its edge (4-6 /
2-4 / 0-2 mm inside, 0-2 mm outside: -0.31 / -0.49 / -0.76 / -0.79), while the simulated glands darken later and
less, until the capsule (round 6, site medians: -0.09 to 0.16 / -0.34 to -0.07 / -0.73 to -0.37 / -0.69 to -0.37;
NaN at HK, whose 2.2 mm pixels leave the 0-2 mm bands empty). The outline does not change the
region below the apex, which the networks mark the same in every variant. A candidate for a later round, written
here before it was tried: the gland brighter at depth than at its periphery, or the capsule as a gradient of
variable darkness instead of a fixed 1.2 mm line, judged on these rows; round 8 (next section) tried the first with
a rule written before its data. The scripts of the probe were one-off (`/tmp`).

"""
"""Not a simulator round: a model trained on all six simulated sites (``--target_site none``) on the real case,
and a probe of what the networks key on (2026-12-03); kept here so that regenerating the report keeps it."""

ROUND10_HEADER = """### Round 10: GIN-IPA in training (rule committed 2026-12-03 before its runs)

What prompted it, no score used for a choice: rounds 5-9 changed what the simulated sites look like, each by a rule on
the report's statistics, and every real-case figure since round 4 stays in the same 0.0-0.6 band with swings of 0.3
between seeds and machines. The probes of rounds 6 and 8 found the networks' decisions on the real scan local and
carried by the spatial structure of the tissue (patch swaps: the intensity levels did not matter, smoothing or
scrambling the phase did), which neither the simulator's rounds nor round 4's appearance randomisation (bias field,
monotone intensity map, gamma, low resolution: every one keeps the local texture) changes. GIN-IPA (Ouyang et al.,
IEEE TMI 2022, published on this six-site collection for unseen sites) remaps every slice through random shallow
convolution networks (1x1 and 3x3 kernels, so local texture and contrast polarity change, geometry does not) and
blends two such remaps under a smooth random mask: `tools.data.gin_ipa` (the reference's settings: 4 layers, 2
channels between them, kernels 1 and 3, weights N(0, 1), a U(0, 1) mix with the input, the input's Frobenius norm, an
8 x 8 grid of control points for the mask), one training key, `gin_ipa_prob` (0: off, today's default). Departure
from the reference: no three-copy consistency term (a change of the loss); each training slice is replaced by one
blend, on which the segmentation loss is computed, as the reference computes its segmentation loss on its first blend.

* Candidates: G1 `gin_ipa_prob: 1.0` (every training slice, as the reference); G2 `gin_ipa_prob: 0.5`.
* Runs: ENet w/o, the CPU profile, BIDMC held out, seeds 0 and 1, the round-8 study's collection
  (`results/cpu_all_sites_r8/data`), the study's commands with `--gin_ipa_prob` as an override, one thread per run,
  on this session's machine beside the study. The current default is measured by the same runs without the key: the
  ENet w/o runs of distillation.md section 19 (same machine, data and seeds).
* Measure: the source sites' validation Dice (`evaluate.yaml --evaluate_key validation`), mean over the two seeds.
* Rule (round 4's non-inferiority test, unchanged): a candidate passes if its mean is at least the current default's
  minus 0.02. Its purpose is robustness to scanners the source sites do not contain, which their validation cases
  cannot show; it must not cost them accuracy. If both pass, G1 (the reference's setting). A passing candidate
  becomes the CPU profile's default for every bundle (one template, as round 4 would have), and since it changes
  every run, the round-8 all-sites study stops and starts again on the new profile (distillation.md section 18: the
  study runs once, on the final setting). If neither passes, the key stays at 0. The unseen site's Dice and the real
  case are reported beside them and not used.

"""
"""Round 10: a training augmentation (GIN-IPA), not a simulator change; kept here so that regenerating keeps it."""

ROUND9_HEADER = """### Round 9: the gland as heterogeneous as a real one (rule committed 2026-12-03 17:48 UTC in 4b691fc, before its data)

What was seen, no score used: of the report's rows, the gland's interquartile range is the one on which every
simulated site lies on the same side of the real case, below it (round 8, site medians 0.79-1.07 std against 1.29;
summed distance over the six sites **2.252**): the simulated glands are more uniform than the real one. Round 8's
patch swaps found that what the networks read as gland on the real scan is carried by spatial structure rather than
by intensity levels, and round 6's probes that they leave out the real gland's brightest, most heterogeneous parts.
Anatomy: benign prostatic hyperplasia makes the central gland a mosaic of glandular (T2-bright) and stromal
(T2-dark) nodules, and the peripheral zone is striated by ducts and septa; the simulator paints both with small
amplitudes (nodule contrast 0.1-0.25 of the central gland's 3 mm field, 1 mm texture 18% in the peripheral zone,
0.08 in the central gland).

Candidates (simulator; no random draw added or removed: the nodule contrast keeps its one draw with a wider range,
the texture amplitudes are constants, so every other structure stays bit for bit):
* V1 (nodules): the nodule contrast ~ U(0.2, 0.45) in place of U(0.1, 0.25).
* V2 (fine texture): the 1 mm texture of the peripheral zone 30% (was 18%) and of the central gland 0.14 (was 0.08).
* V3: V1 and V2 together.

Measure: the realism report of each variant's collection (`synthesize(out, cases_per_site=6, size=96, seed=0)`),
the median over each site's six cases, against round 8's (same command).
Rule: a variant passes if (a) the summed distance to the real case of the gland's interquartile range over the six
sites falls below round 8's 2.252, (b) none of the 22 other std-unit rows of round 8's rule (its 19 and the four edge
rows, less the gland's interquartile range) at any site moves more than 0.1 further from the real case than in
round 8, and (c) the texture spectrum slope moves no more than 0.1 further at any site. Among passes the smallest
summed distance over all 23 std-unit rows and six sites is adopted (round 8: 72.962); if none passes, the simulator
stays at round 8. If one is adopted: ENet w/o (40 epochs, BIDMC held out, seeds 0 and 1) is trained on its
collection and its source validation, unseen BIDMC and real-case Dice are reported, not used; the main job and
the tests move to it; and, whether one is adopted or not, the all-sites study then starts (distillation.md
section 18).

Result (2026-12-03 17:49 UTC; the variants' collections made with the study's command, compared with round 8's by the
same one-off script as round 8's): **no variant passes; the simulator stays at round 8.**

| variant | gland IQR, summed distance over 6 sites (round 8: 2.252) | other rows > 0.1 further away (b) | spectrum slope > 0.1 further (c) | all 23 std-unit rows (round 8: 72.962) |
|---|---|---|---|---|
| V1 (nodules) | 1.333 | 6 cells, all wall-profile points (+6 mm at RUNMC and BMC, +15 mm at HCRUDB and UCL, +24 mm at BMC and UCL; up to 0.37) | none | 71.898 |
| V2 (fine texture) | 1.440 | 1 cell (+6 mm at UCL, 0.15) | HCRUDB, UCL, HK (-1.95 -> -1.78 ...; real -2.78) | 72.047 |
| V3 (both) | 0.556 | 8 cells (7 wall-profile points, the edge 0-2 mm outside at HCRUDB) | HCRUDB, UCL, HK | 71.210 |

Each variant brings the gland's spread towards the real case's (V3: site medians 1.12-1.27 against 1.29) and lowers
the sum over all rows, and each fails a guard: the wall-profile points, each a median over the few columns of one
slice that cross the gland within 8 mm of its centre, move with the texture inside the gland by up to 0.56 std at
one site (HCRUDB +6 mm, V3), and the 1 mm texture flattens the spectrum's slope at three sites, away from the real
case. The rule is applied as written. Noticed for a later rule, not changed here: a 0.1 guard on a one-slice
statistic at one site cannot tell a change of texture from a change of structure. No model was trained on these
collections. A correction to the motivation above, not to the rule: round 6's probes found the networks leaving out
the real gland's brightest part (the peripheral zone next to the coil); that it is also its most heterogeneous part
was not measured.

Reproducible since this round: `python -m tools.data realism_rule` (`tools.data.realism.compare_rounds`, tested)
applies the rule to two collections and prints the verdict; on the same collections it prints round 8's V1 (`--target
edge_inside_4_6,edge_inside_2_4,edge_inside_0_2,edge_outside_0_2` against round 6: 6.242 -> 5.365, no guarded cell,
73.425 -> 72.962, passes) and round 9's V2 (`--target gland_iqr` with the spectrum slope added to `--guards`: 2.252 ->
1.440, the wall cell at UCL and the slope at HCRUDB, UCL and HK, 72.962 -> 72.047, fails), the one-off script's
figures.

"""
"""Simulator round 9: the rule, written before its data, and its result."""

ROUND8_HEADER = """### Round 8: the gland darkens towards its ends and its border (rule committed 2026-12-03 16:53 UTC in 4eaf3ce, before its data)

What was seen, no score used: the edge rows (`edge_profile`, added after the outline probe above) and the same
bands split by direction around the gland (a one-off split, `/tmp`; real case against the simulated BIDMC cases 00
and 03 of round 6), each band's median minus the median deeper than 6 mm:

| band (mm from the border, + inside) | 4-6 | 2-4 | 0-2 | -2-0 |
|---|---|---|---|---|
| real, posterior (the coil side) | 1.04 | 1.09 | 0.90 | 1.06 |
| simulated BIDMC, posterior | 1.42 / 2.08 | 1.70 / 2.17 | 1.17 / 1.20 | 2.56 / 2.29 |
| real, anterior | -0.78 | -0.92 | -1.18 | -1.32 |
| simulated BIDMC, anterior | -0.58 / -0.57 | -0.55 / -0.78 | -0.81 / -1.30 | -0.73 / -1.10 |
| real, lateral | -0.25 | -0.41 | -0.71 | -0.88 |
| simulated BIDMC, lateral | 0.14 / -0.16 | 0.08 / -0.21 | -0.36 / -0.75 | -0.22 / -0.55 |
| real, the gland's first and last 3 slices (apex, base) | -1.08 | -1.04 | -0.87 | -0.55 |
| simulated BIDMC, first and last 3 slices | 0.29 / 0.30 | 0.20 / 0.06 | -0.12 / -0.35 | -0.09 / -0.42 |

The largest difference is at the gland's ends: the real gland is about 1 std darker than its interior on its apical
and basal slices, even 4-6 mm inside its outline, where the simulated gland is as bright as its interior; laterally
the real gland darkens over its outer 6 mm, the simulated one only at the capsule line. Anatomy: at the base the
gland is mostly central zone (T2-dark, around the ejaculatory ducts) and the bladder neck's smooth muscle; at the
apex the striated fibres of the urethral sphincter run into the gland; the prostate has no true capsule, its outer
millimetres are a fibromuscular band (the simulator paints the whole gland at its zone levels up to a 1.2 mm dark line).

Candidates (simulator). The gland's signal (both zones, before the capsule line and the urethra are painted) is
multiplied by `1 - a * clip(1 - e / D, 0, 1)`, `e` the distance in mm from where the darkening starts; `a` and `D`
per case from a third random stream, `default_rng([seed, site, case, 2])`, so that no other draw changes and every
other structure stays bit for bit (as TE/TR's second stream in round 3):
* V1 (the ends): `e` = the distance along the gland's long axis from its nearer end (apex or base),
  `(1 - |w|) x` the half-length, `w` the gland's normalised axial coordinate; `a` ~ U(0.3, 0.6), `D` ~ U(6, 10) mm.
* V2 (the border): `e` = the depth inside the gland's outline (its signed distance); `a` ~ U(0.2, 0.45),
  `D` ~ U(6, 10) mm.
* V3: V1 and V2 together (their factors multiplied, the same draws as V1 and V2).

The ranges are set from the real case's bands (image statistics; at 1 std of the z-score about a third of the gland's
level): about 1 std darker on the end slices, about 0.3-0.5 std over 2-6 mm laterally, no darkening beyond about
8 mm (the real lateral bands extrapolate to 0 there).

Measure: the realism report of each variant's collection (`synthesize(out, cases_per_site=6, size=96, seed=0)`),
the median over each site's six cases, against round 6's (the all-sites study's collection).
Rule: a variant passes if (a) the summed distance to the real case of the four edge rows (4-6, 2-4, 0-2 mm inside,
0-2 mm outside) over the six sites (NaN cells, HK's 0-2 mm bands, left out) falls below round 6's **6.242**, and
(b) none of the 19 other std-unit rows (z-score 1st percentile, median, 99th percentile, histogram W1, gland - shell
contrast, coil bias, anterior, lateral, below-apex and above-base sector contrasts, gland and below-apex
interquartile ranges, the two below-apex ring rows, the five wall-profile points) at any site moves more than 0.1
further from the real case than in round 6. Among passes the smallest summed distance over all 23 std-unit rows and
six sites is adopted (round 6: 73.425); if none passes, the simulator stays at round 6.
If one is adopted: ENet w/o (40 epochs, BIDMC held out, seeds 0 and 1) is trained on its collection and its source
validation, unseen BIDMC and real-case Dice are reported, not used; the main job and the tests move to it; the
all-sites study runs again on it (`results/cpu_all_sites_r8`), and the round-6 study stays committed as what it is.

Result (2026-12-03 16:54 UTC; each variant's collection made with the study's command, compared with the round-6
study's collection on the report's per-site medians by a one-off script, `/tmp`): **V1 passes and is adopted as
round 8; V2 and V3 fail (b).**

| variant | edge rows, summed distance over 6 sites (round 6: 6.242) | rows > 0.1 further away | all 23 std-unit rows, summed distance (round 6: 73.425) |
|---|---|---|---|
| V1 (the ends) | 5.365 | none (the largest move of any: 0.099, the anterior sector at HCRUDB) | 72.962 |
| V2 (the border) | 3.455 | 31 cells: anterior sector at 6 sites, lateral at 5, above-base at 6, below-apex at 2, coil bias at 3, the wall profile at the border (+0 mm) at 5, and 4 more | 74.380 |
| V3 (both) | 3.595 | the same 31 cells | 75.037 |

V2 brings the edge rows closest (simulated BIDMC 4-6 / 2-4 / 0-2 mm inside: 0.07 / -0.07 / -0.57 -> -0.08 / -0.34 /
-0.76; real -0.31 / -0.49 / -0.76), but by darkening the gland's whole periphery it lowers the gland's median, the
reference of most other rows: the anterior and lateral sectors and the footprints above the base and below the apex
move up against the gland by 0.1-0.3 std at most sites, and the posterior border (wall profile +0 mm) darkens by
0.2-0.5 std where the real case's coil makes it bright. Rule (b) is there for such a change, which matches the
target rows by moving the others' reference. V1 is a smaller step on the target rows (each row's distance summed over the
sites, 4-6 / 2-4 / 0-2 mm inside, 0-2 mm outside: 2.08 / 1.73 / 0.98 / 1.46 -> 1.94 / 1.32 / 0.77 / 1.33; 2-4 mm
inside at the six sites -0.34..-0.07 -> -0.39..-0.16; HCRUDB 0-2 mm inside / outside -0.54 / -0.69 -> -0.68 / -0.81)
and moves no other row by 0.1. The code draws `GlandEnds` from the
third stream (`tools/data/synthesis/anatomy.py`); its collection is byte-identical to V1's, and with the darkening
set to 0 byte-identical to round 6's (checked on all 72 files).

Reported, not used (ENet w/o, 40 epochs, BIDMC held out, seeds 0 / 1, the bundle's own commands on round 8's
collection; runs 16:55-16:59 UTC on an AMD EPYC machine, training 208 / 237 s side by side):

| ENet w/o, BIDMC held out | source validation | unseen BIDMC | real case (bundle's mask) | the mask on the real case |
|---|---|---|---|---|
| round 8, seed 0 | 0.692 | 0.768 | 0.378 | 23 983 voxels: 38% of the gland, and 10 275 voxels on the 16 slices below the apex |
| round 8, seed 1 | 0.728 | 0.726 | 0.364 | 10 740 voxels: 26% of the gland, nothing below the apex, 3 257 voxels above the base |
| round 6 (the all-sites study's BIDMC runs), seed 0 / 1 | 0.652 / 0.738 | 0.708 / 0.717 | 0.086 / 0.114 | |
| round 6 (the same commands as here, section "Round 6"), seed 0 / 1 | 0.652 / 0.753 | 0.708 / 0.771 | 0.086 / 0.000 | |

Both round-8 models keep a part of the real gland with the largest-component step (round 6's kept the region below
the apex, or nothing), and one of them still marks the region below the apex. Two seeds of a model whose real-case
Dice swings by 0.3 between seeds and machines (the main job's round-6 ENet w/o scored 0.409 with the same commands):
this is not evidence that round 8 carries better to the real scan, and it chose nothing. The main job on a fresh
clone moved to round 8 (README). The all-sites study on round 8, which this rule foresaw, was started, stopped
after 9 minutes because the probe below pointed at a round 9, and started again once round 9 had failed its rule
(distillation.md section 18).

#### What round 8's models do on the real case: patch swaps (2026-12-03, report only, nothing chosen)

The main job's ENet w/o (round 8, BIDMC held out, seed 0; real-case Dice 0.378) in the network's own space (the CPU
profile's preprocessing, threshold 0.5, no largest-component step). The figure
([realism_round8_probe.png](realism_round8_probe.png); green the label, red where the network says gland) shows
the real case and two simulated BIDMC cases below the apex, near it and at mid-gland.

* **The simulated cases have the false region too, smaller.** On every simulated case (all six sites, six cases
  each; the site medians) the network marks 48-433 voxels on the slices below the labelled apex, against 3 300-8 800
  marked in all and 84-91% of the gland covered; on the real case 3 100 of the 8 713 voxels it marks lie below the
  apex and it covers 38% of the gland. In the figure it marks the simulated perineal disc in front of the balloon 2-4
  slices below the apex of both simulated cases, as it marks the real tissue in front of the anal canal. What fails
  on the real scan is first the gland's coverage (38% against 84-91%); the region below the apex is a false positive
  that the simulated data share at a smaller scale, and which the largest-component step keeps whenever the marked
  part of the gland is smaller.
* **Patch swaps** (a 28 x 28 pixel patch, 56 mm, pasted with a soft edge; the mean probability over the 12 x 12
  pixels at its centre; the real false region 4, 6 and 8 slices below the apex against each of the six simulated
  BIDMC cases at the same number of slices below its apex, medians over the six):

  | slices below the apex | 4 | 6 | 8 |
  |---|---|---|---|
  | real, as is | 0.48 | 0.90 | 0.94 |
  | simulated, as is | 0.39 | 0.29 | 0.12 |
  | the real patch in the simulated slice | 0.62 | 0.63 | 0.57 |
  | the simulated patch in the real slice | 0.64 | 0.65 | 0.73 |
  | the real patch with the simulated patch's histogram | 0.52 | 0.72 | 0.69 |
  | the real patch smoothed, Gaussian 1 / 2 px | 0.42 / 0.34 | 0.52 / 0.43 | 0.55 / 0.49 |
  | the real patch phase-scrambled (mean of 5) | 0.41 | 0.55 | 0.46 |
  | the real patch flat at its mean | 0.46 | 0.55 | 0.59 |

  Both the patch and its surroundings carry the decision: the real patch is read as gland in a simulated slice
  (0.57-0.63 against 0.12-0.39 for the simulated slice's own patch), and anything in the real slice's surroundings is
  (0.64-0.73 for the simulated patch, 0.46-0.59 for a flat grey patch). Giving the real patch the simulated patch's
  intensity histogram keeps it gland-like (0.52-0.72), smoothing or scrambling its structure lowers it (0.34-0.55):
  what marks the real region is its spatial structure and its surroundings, not its intensity levels, which is why
  the report's first-order rows, all close to the real case's, never separated it.
* Side by side at their native resolution (real mid-gland slice, 1.09 mm pixels, against simulated BIDMC case 00,
  1.46 mm; one-off figure, not committed) the endorectal balloon looks alike (a large dark ellipse with faint
  stripes), and the simulated gland looks enclosed by a continuous dark ring (the capsule line, the rectoprostatic
  layer of round 5c behind it, the levator ani at its sides) where the real one looks as if its posterior border ran
  into the coil's bright band. Measured, the impression does not hold behind the gland: the wall profile at 1 mm
  steps (`wall_profile`, site medians) dips in both, the real one 1-2 mm inside its border (-3 / 0 / +2 / +4 mm:
  2.16 / 1.79 / 1.05 / 3.02), the simulated BIDMC one at the border (2.00 / 1.92 / 2.81 / 2.90). No round-9
  candidate follows from it yet. The scripts were one-off (`/tmp`).

"""
"""Simulator round 8: the rule, written before its data, and its result."""

ROUND7_HEADER = """### Round 7: the tissue below the apex is not a disc ringed by fat (rule committed 2026-12-03 10:46 UTC in f4c0d16, before its data)

What was seen, no score used (a side-by-side of the real case's and the simulated sites' slices 8-20 mm below the
apex, 2026-12-03): in the real case the tissue in front of the anal canal below the apex is a midline band (the
bulb and the corpus spongiosum) between dark muscles (the bulbospongiosus and ischiocavernosus, the crura, and
laterally the obturator externus and the adductors), with the bright fat of the ischioanal fossae behind and beside
the anal canal. In every simulated site the perineal region is a muscle ellipse 40-56 mm wide, ringed by the pelvic
cavity's fat in front and beside it: a round, uniform, gland-sized disc in a bright ring, which is what a small
gland looks like. The probes of round 6 found the networks marking a gland-sized region on every real slice below
the apex. Anatomy: the urogenital diaphragm (deep transverse perineal muscle, the sphincter, the perineal membrane)
spans the pubic arch from one ischiopubic ramus to the other, so below the apex the space in front of the rectum is
muscle from the midline to the pelvic side wall, not a disc in fat.

A statistic for it (two rows added to the report for this round, `below_apex_ring`): on the slices 10-20 mm below
the apex, the median 3-12 mm beside (lateral) and in front of (anterior) the gland's footprint minus the median
inside it. Real case: lateral -0.36, anterior -0.40 (darker tissue around it). Round 6, site medians (lateral /
anterior): RUNMC 1.00 / 0.92, BMC 0.08 / -0.49, HCRUDB 0.35 / 0.30, UCL 0.81 / 0.80, BIDMC -0.16 / -0.06, HK -0.55 /
-0.44; summed distance to the real case over the six sites and both rows **7.765**.

Candidate (simulator; no random draw added or removed, so every other structure stays bit for bit):
* V1: the perineal region reaches from the midline to within 0-8 mm of the pelvic cavity's side wall (its half
  width `perineal_half_width` = the cavity's half width minus U(0, 8) mm, in place of U(20, 28) mm) and forward to
  the cavity's anterior edge (the pubic arch) in place of 5 mm in front of the gland; its signal (muscle with the
  `perineal_fat` admixture of round 6), its extent along the axis, the sphincter and the bulb unchanged.

Measure: the realism report of V1's collection (`synthesize(out, cases_per_site=6, size=96, seed=0)`), the median
over each site's six cases, against round 6's (the all-sites study's collection).
Rule: V1 passes if (a) the summed distance to the real case of the two ring rows over the six sites falls below
7.765, and (b) none of the 17 other std-unit rows (z-score 1st percentile, median, 99th percentile, histogram W1,
gland - shell contrast, coil bias, anterior, lateral, below-apex and above-base sector contrasts, gland and below-apex
interquartile ranges, the five wall-profile points) at any site moves more than 0.1 further from the real case
than in round 6. If it passes it becomes round 7; otherwise the simulator stays at round 6. Because a changed
simulator makes the all-sites study synthesize its data again and remove its runs (`tools/study/dataset.py`), an
adopted round 7 waits on a branch until the round-6 study has finished. Then ENet w/o (40 epochs, BIDMC held out,
seeds 0 and 1) is trained on round 7's collection and its source validation, unseen BIDMC and real-case Dice are
reported, not used.

Result (2026-12-03 10:50 UTC; V1's collection made with the study's command on branch `simulator-round7`, compared
with the round-6 study's collection): **V1 fails (b) and is not adopted; the simulator stays at round 6.**

| | ring rows, summed distance over 6 sites (round 6: 7.765) | rows > 0.1 further away | the 17 other std-unit rows, summed distance (round 6: 59.352) |
|---|---|---|---|
| V1 (perineal region across the pubic arch) | 3.170 | below-apex interquartile range at RUNMC (0.38 -> 0.26; real 0.57; +0.12) | 59.039 |

V1 does what it was made for: the ring beside / in front of the below-apex footprint is now -0.31 to 0.09 / -0.49 to
0.13 at the six sites (real -0.36 / -0.40; round 6 up to 1.00 / 0.92), and every other row moved by at most 0.05
except the below-apex region's own median and spread: its median darkened at every site (BIDMC -0.52 -> -0.77, real
-0.63) and its interquartile range fell at every site (RUNMC 0.38 -> 0.26, BMC 0.83 -> 0.63, HCRUDB 0.38 -> 0.34,
UCL 0.43 -> 0.33, BIDMC 0.71 -> 0.51, HK 0.80 -> 0.55; real 0.57): the footprint now lies in a uniform muscle sheet,
where the real one holds the bulb between dark muscles. At RUNMC that moved 0.12 further from the real case, over
the rule's 0.1, so the rule drops V1.

A probe of V1, report only, nothing chosen (was the disc in its fat ring the cue for the false region below the real
apex?): ENet w/o, 40 epochs, BIDMC held out, seeds 0 / 1, trained on V1's collection (11:00 UTC, beside the study):
source validation 0.816 / 0.798, unseen BIDMC 0.787 / 0.812, real case 0.429 / 0.000 with the bundle's mask. Without
the largest-component step (`--postprocessing#keep_largest_component False`) both seeds still mark 6 228 / 5 686
voxels on the 16 real slices below the apex, beside 32% / 25% of the gland (raw Dice 0.375 / 0.320); the component
step kept the gland for seed 0 and the region below the apex for seed 1. So the fat ring was not the cue either:
with the simulated region now a muscle sheet across the pubic arch, networks trained on it still take the real
tissue in front of the anal canal below the apex for gland. Round 6's probes (below) found the same after the
region's uniformity was matched. Neither first-order statistics nor this layout separates the real perineum from
the simulated gland; what the networks key on there is still not known.

"""

ROUND6_HEADER = """### Round 6: the tissue below the apex is more uniform than the gland (rule committed 2026-12-02 20:52 UTC in 49c4833, before its data)

What was seen, no score used: the 40-epoch ENet w/o of the main job's data (round 5c, BIDMC held out, seed 0)
marks one region 10-25 mm below the real case's apex, in front of the anal canal, and nothing inside the gland.
Measured (two rows added to the report for this round): the real case's gland footprint 10-20 mm below the apex is
*more uniform* than its gland (interquartile range of the z-scored intensity 0.57 against 1.29), while in every
simulated site it is as uniform as the gland or less (site medians 0.91-1.59 against 0.76-1.08). The simulator
paints the fat between the perineal muscles as 3 mm blobs of fat (`perineal_fat`, round 2: to bring the region's
median to the real case's), which makes the region a patchwork of bright and dark; a network trained on it learns
that the tissue in front of the rectum which is more uniform than its surroundings is the gland. Anatomy: the
perineal body, the external sphincter and the deep perineal muscles form a fibromuscular mass with fat interspersed
between fine bundles, intermediate and fairly uniform on T2 at a 1-2 mm voxel; the fat lies lateral, in the
ischioanal fossae (painted separately).

Candidates (simulator; no random draw added or removed, so every other structure stays bit for bit):
* V1: the same fat fraction as a fine admixture: the perineal region's signal is muscle x (1 - f) + fat x f with
  f = `perineal_fat` (0.25-0.6 as drawn), the muscle's 1 mm texture kept;
* V2: V1 with f = 0.5 x `perineal_fat` (V1 raises the region's median towards the gland's; V2 less).

Measure: the realism report of each variant's collection (`synthesize(out, cases_per_site=6, size=96, seed=0)`),
the median over each site's six cases, against round 5c's.
Rule: a variant passes if (a) the summed distance to the real case over the six sites of the below-apex
interquartile range falls, and (b) no std-unit row at any site moves more than 0.1 further from the real case than
in round 5c. Among passes the smallest sum of distances over all std-unit rows and sites is adopted; if none
passes, the simulator stays at round 5c. Then ENet w/o (40 epochs, BIDMC held out, seeds 0 and 1) is trained on
the adopted collection and its source validation, unseen BIDMC and real-case Dice are reported, not used.

Result (2026-12-02 20:53 UTC; both collections made with the study's command, 18 std-unit rows x 6 sites compared
with round 5c's): **V2 passes and is adopted; V1 is dropped.**

| variant | below-apex IQR, summed distance over 6 sites (5c: 4.370) | rows > 0.1 further away | all std-unit rows, summed distance (5c: 85.944) |
|---|---|---|---|
| V1 (f = `perineal_fat`) | 1.489 | below-apex contrast at BMC (-0.51 -> -0.06; +0.455) and BIDMC (-0.49 -> -0.26; +0.230) | 83.186 |
| V2 (f = 0.5 x `perineal_fat`) | 1.139 | none | 82.545 |

With V2 the below-apex region is more uniform than the gland at every site (site medians of the region's IQR
RUNMC 0.38, BMC 0.83, HCRUDB 0.38, UCL 0.43, BIDMC 0.71, HK 0.80 against the gland's 0.77-1.10; real 0.57 vs
1.29); its median stays where round 2 put it (BIDMC -0.52, HK -0.90; real -0.63). V1 brightened the region
towards the gland by up to 0.45 std at the coil sites. The code draws `perineal_fat` as 0.5 x U(0.25, 0.6) and mixes
it into every voxel (the collection is byte-identical to V2's). Every other std-unit row moved by at most 0.043
(through the whole volume's z-score; the gland's IQR by at most 0.02).

Reported, not used (ENet w/o, 40 epochs, BIDMC held out; runs 21:28-21:45 UTC): on round 6's collection seeds 0 / 1
score 0.652 / 0.753 on the source sites' validation, 0.708 / 0.771 on the unseen BIDMC and **0.086 / 0.000 on the real
case**; the same commands on round 5c's collection gave 0.682 / 0.798, 0.729 / 0.769 and 0.084 / 0.369. Both
round-6 models still mark the region 10-25 mm below the real apex (7 100-8 400 voxels) and almost nothing inside the
gland: making the simulated region as uniform as the real one did not remove the false positive, so uniformity was
not (or not alone) the cue the networks use there. What else differs there was looked at but not measured yet: in
the simulated coil sites the perineal region is a round disc with a bright urethra in its centre, ringed by fat,
much like a small gland, and left unlabelled; in the real case the region in front of the anal canal lies between
the dark limbs of the levator ani, without a fat ring. The all-sites study runs on round 6 (the simulator is not
changed again before it finishes unless a later round is worth rerunning it).

#### What round 6's models do on the real case: probes (2026-12-03, report only, nothing chosen)

The all-sites study's BIDMC seed-1 models (round 6, CPU profile, trained 03:00-03:35 UTC) were run on the real case in
the network's own space (the CPU profile's preprocessing: 2 mm in plane, 96 x 96, percentile-clipped z-score; the
label resampled the same way, 7 068 gland voxels on slices 16-49 of 64), without the largest-component step, so that
what the network marks can be separated from what that step keeps. Threshold 0.5 unless said.

* **ENet w/o** marks 7 575 voxels: 2 942 inside the gland (42% of it; raw Dice 0.402; 0.408-0.420 at thresholds
  0.3-0.1, so it is not a matter of calibration; the bundle's mask, after the largest-component step, scores
  0.114: the component it keeps is the false region below the apex joined to the gland's lowest slices, slices
  0-23 of the file, 1 863 of its 9 034 voxels in the gland), 26% of the gland's posterior half, and a gland-sized
  region (64-175 voxels per slice, probability 0.94-1.00) on every one of the 16 slices below the apex (up to 26 mm below
  it) and on the 5 slices above the base. On the gland's slices it marks the darker central and anterior part and
  leaves out the peripheral zone that the endorectal coil makes bright.
* The teachers fail differently: UNet++ marks 2 534 voxels, 1 664 inside the gland (24%; raw Dice 0.347, few false
  voxels), DeepLabV3+ 6 725, 1 806 inside (26%; 0.262).
* **Occlusion** (ENet w/o; a 24 x 24 mm patch set to 0, the volume's mean, moved in 6 mm steps; the change in the
  mean probability inside the gland and inside the false region, slices 9, 21, 33 and 39): the decisions are local.
  Hiding a region removes it (gland -0.35 to -0.45, the false region below the apex -0.43); hiding the bright band
  behind the gland (rectal wall and coil near field) *raises* the gland's probability by 0.10-0.18; patches farther
  than about 25 mm change either by less than 0.05.
* **Counterfactual intensities** (ENet w/o, the real volume changed in network space): compressing what lies above 1
  std (clipped at 1.0) raises the gland's coverage from 42% to 52% and its posterior half's from 26% to 46% (Dice on
  the gland's slices 0.550 -> 0.642); stretching it (x 1.3 above 1 std) lowers the posterior half to 15%. A dark 2 mm
  layer painted behind the gland's posterior border (what round 5c's rectoprostatic layer looks like at 2 mm) moves
  the posterior half only from 26% to 29-31%. None of these changes the false region below the apex (3 300-4 300
  voxels off the gland's slices in every variant).
* **Levels** (medians in network space, the same preprocessing): the real gland 1.51 (quartiles 0.81-2.59) against
  0.98-1.98 for the six simulated BIDMC cases; the real footprint 10-20 mm below the apex 0.64 (0.33-1.09) against
  0.51-1.30. The first-order statistics that the report matches are matched in absolute units too.

What it says: the networks treat the brightest tissue next to the coil as "not gland", although the simulated
peripheral zone is as bright at the same place (wall profile 6 mm into the gland: real 2.14, simulated BIDMC 2.41),
and the medium-gray tissue in front of the rectum as gland on every slice where it is there; what decides lies
within about 25 mm.
What separates the simulated perineal region from the simulated gland, which these networks learned, is not one of
the report's rows (each is now close to the real case's), so it is of a higher order: shape, texture or the
arrangement of the structures within 25 mm. Candidates for a later round (none tried): the brightness of the coil's
near field inside the peripheral zone (a wider range of the coil gain at the coil sites), and the layout of the
perineal region (the probes' false region lies between the levator ani's limbs, without the simulated fat ring).
The scripts were one-off (`/tmp`); the method is as described above.

"""


ROUND5_HEADER = """### Round 5: what lies between the gland and the endorectal coil (rule written 2026-12-02 16:50 UTC, before any run)

The 40-epoch models of round 4 leave out the real gland's bright posterior peripheral zone. A finer wall profile
(the report's `wall_profile` at -24 to +28 mm from the gland's posterior border, the slice of largest gland area)
shows why a network trained on the simulated coil sites would: in the real case the brightest band next to the
balloon is inside the gland (z-score 1.29 at -2 mm, 1.79 at the border, 3.02 at +4 mm), while in every simulated
coil site it is outside the gland, 2 mm behind it (median at -2 / 0 / +4 mm: BMC 3.50 / 2.71 / 1.99, BIDMC 3.98 /
1.89 / 3.06, HK 3.76 / 2.97 / 2.69). In the simulator the 0.5-2.5 mm between the gland and the rectal wall is
pelvic fat (T2 bright), and the coil's near field makes it the brightest tissue of the image. Anatomy says
otherwise: the prostate's posterior surface lies on the rectoprostatic (Denonvilliers') fascia and the rectal
muscularis, fibromuscular layers that are dark on T2, with little or no fat in the midline.

Candidate R5 (simulator): the tissue within 3 mm in front of the rectal wall (its anterior side) is fibromuscular
(the muscle level) instead of fat; the prostate, painted after it, keeps its own outline. Rule R5: kept if, on the
simulated BIDMC of the study's collection (median over its 6 cases), the wall profile at -2 mm falls below the one
at +4 mm (the real case's order), and no row of the report's table in std units moves away from the real case by
more than 0.1. The ENet w/o runs of round 4's protocol (40 epochs, seeds 0 and 1) are then reported for the record
(source validation, unseen BIDMC, real case); none of them is used to choose.

Result (2026-12-02 16:56 UTC; `synth --out /tmp/r4/data5 --cases-per-site 6 --size 96 --seed 0` with R5, and
`python -m tools.data realism --root /tmp/r4/data5 --baseline` the round-3 collection): the order is the real
case's now (simulated BIDMC at -2 / 0 / +4 mm: 1.42 / 2.10 / 3.34; round 3 3.98 / 1.89 / 3.06; real 1.29 / 1.79 /
3.02), but seven rows moved away from the real case by more than 0.1: the 99th percentile 3.90 -> 3.71 (real
4.18), skewness 2.39 -> 2.23 (5.57), gland-shell contrast 0.38 -> 0.53 (-0.12), texture slope -2.79 -> -2.55
(-2.78), and the wall profile at 0 / +6 / +15 mm 1.89 / 2.46 / 0.92 -> 2.10 / 2.69 / 1.03 (1.79 / 2.14 / 0.79).
Removing the brightest tissue of the image (the fat in the coil's near field) lowers the volume's standard
deviation, so every z-scored level inside the gland rises. **R5 is dropped by its rule**; the simulator stays at
round 3. No model was trained on it, so its effect on the real case is not known; what it shows is that the
real case's wall order and its whole-volume statistics cannot both be matched by this one change: the next
candidate has to darken the gap and keep the gland's level (e.g. together with the coil's gain).

Candidate R6 (rule written 2026-12-02 16:57 UTC, before its data were made): R5 with a 1.5 mm layer instead of
3 mm (the rectal wall's outer muscularis and the fascia only, leaving the fat further out), a smaller change to the
volume's histogram. Same rule as R5. Its statistics are measured on the simulated BIDMC only (six cases, the
study's seed and size), where the rule looks.

Result (16:59 UTC): the order is the real case's (simulated BIDMC at -2 / 0 / +4 mm: 2.40 / 1.99 / 3.20), but four
std-unit rows moved away from the real case by more than 0.1: the 99th percentile 3.904 -> 3.802 (+0.102 away),
skewness 2.394 -> 2.288 (+0.105), and the wall profile at 0 and +6 mm 1.885 -> 1.994 (+0.108) and 2.455 -> 2.574
(+0.118); at -3 mm it came 1.0 closer (3.44 -> 1.89, real 2.17). **R6 is dropped by the rule** (by margins of
0.002-0.018 over it, on six cases; the rule has no tolerance for that and is applied as written). The simulator
stays at round 3. For the next round: the fat in the coil's near field is what holds the simulated volume's
histogram near the real one, so the gap can only darken together with a change that keeps the bright tail (the
coil's gain or the peripheral zone's level), measured as one candidate.

Round 5b (rule written 2026-12-02 17:51 UTC, before its data were made): R5's and R6's layer together with a
higher coil gain, which raises the bright tail that the darkened gap removes. Candidates: the layer 1.5 or 3 mm,
and the coil gain range of every coil site (BIDMC, BMC, HK) times 1.15 or 1.3 (the sites' order kept); four
variants, measured on the simulated BIDMC like R6. Rule: R5's (the wall profile's order at -2 / +4 mm, and no
std-unit row of the report more than 0.1 further from the real case than round 3); among the variants that pass,
the one with the smallest sum over the std-unit rows of the distance to the real case. No model is trained in this
session: a variant that passes goes to the next session, which adopts it (code, tests, the main job on a fresh
clone) before the all-sites study runs again.

Result (17:54 UTC; simulated BIDMC, six cases; the sum is over the 16 std-unit rows of the report, round 3: 6.864):

| variant | wall -2 / +4 mm (real 1.29 / 3.02) | rows more than 0.1 further from the real case than round 3 | sum of distances to the real case |
|---|---|---|---|
| layer 1.5 mm, coil gain x 1.15 | 2.44 / 3.21 | wall 0 mm +0.141, +6 mm +0.132 | 6.247 |
| layer 1.5 mm, coil gain x 1.3 | 2.47 / 3.23 | wall 0 mm +0.166, +6 mm +0.142 | 6.165 |
| layer 3 mm, coil gain x 1.15 | 1.46 / 3.36 | q99 +0.170, skewness +0.120, gland-shell contrast +0.146, wall 0 / +6 / +15 mm +0.248 / +0.251 / +0.109 | 7.227 |
| layer 3 mm, coil gain x 1.3 | 1.49 / 3.37 | q99 +0.153, gland-shell contrast +0.143, wall 0 / +6 / +15 mm +0.276 / +0.263 / +0.110 | 7.154 |

**None passes the rule; the simulator stays at round 3.** The higher gain brings the histogram's tail back (q99 and
skewness within 0.1 for the 1.5 mm layer) and the two 1.5 mm variants are closer to the real case than round 3
over all rows together (6.17-6.25 against 6.86), but in every variant the peripheral zone just inside the gland's
posterior border gets brighter than round 3's, which is already brighter than the real case's (wall +0 / +6 mm:
round 3 1.89 / 2.46, real 1.79 / 2.14). What the next candidate needs besides the darker gap: a darker peripheral
zone next to the coil (its T2 level, or the coil's fall-off into the gland), measured as one variant under this
rule. The sweep ran from a scratch copy of the simulator with the layer and the gain factor as environment
variables; nothing of it is in the code.

Round 5c (rule written 2026-12-02 17:55 UTC, before its data): the 1.5 mm layer and the coil gain x 1.15 or x 1.3,
with the peripheral zone's T2 level range (0.6-0.9) times 0.9 or 0.8: four variants, the same measurement and
rule as round 5b (adoption, if one passes, in the next session).

Result (17:59 UTC; simulated BIDMC, six cases; sum over the 16 std-unit rows, round 3: 6.864):

| variant (layer 1.5 mm) | wall -2 / +4 mm (real 1.29 / 3.02) | rows more than 0.1 further from the real case than round 3 | sum of distances |
|---|---|---|---|
| gain x 1.15, peripheral zone x 0.9 | 2.42 / 2.84 | 10-20 mm above the base +0.101 | 6.076 |
| **gain x 1.3, peripheral zone x 0.9** | 2.45 / 2.85 | none | **6.003** |
| gain x 1.15, peripheral zone x 0.8 | 2.40 / 2.46 | coil gradient +0.199, anterior +0.131, lateral +0.104, below apex +0.170, above base +0.220 | 6.413 |
| gain x 1.3, peripheral zone x 0.8 | 2.43 / 2.47 | coil gradient +0.186, anterior +0.114, lateral +0.111, below apex +0.171, above base +0.210 | 6.268 |

**One variant passes: the 1.5 mm rectoprostatic layer, the coil gain of BIDMC, BMC and HK times 1.3 (BIDMC
19.5-39), the peripheral zone's T2 level 0.54-0.81 at every site.**
Its simulated BIDMC against round 3 (real case): wall -3 /
0 / +6 / +15 mm 1.99 / 1.88 / 2.37 / 0.99 (3.44 / 1.89 / 2.46 / 0.92; real 2.17 / 1.79 / 2.14 / 0.79), gland-shell
contrast 0.32 (0.38; -0.12), q99 3.85 (3.90; 4.18), skewness 2.38 (2.39; 5.57), above the base 0.22 (0.13; -0.26).
Case by case the real case's order at -2 / +4 mm now holds in 3 of 6 simulated BIDMC cases, 5 of 6 BMC and 3 of 6
HK (round 3: 0, 1 and 2 of 6): a median, not every case.
Round 5b's rule put its adoption (code, tests, the realism report of the whole collection, the main job on a
fresh clone) in the next session; time allowed it in this one, so it was adopted on a branch at 18:00 UTC and
merged only after those steps passed. It is the simulator now (the tables at the top of this page). The main
job's models (README) are the first trained on it: reported, not used for anything. The all-sites study runs on it
next.

"""


ROUND4_HEADER = """### Round 4: appearance randomisation in training (rule written 2026-12-02 16:13 UTC, before any run)

What round 3's models do on the real case (the README main job's models at ceb7837; their predictions looked at
slice by slice, no score used for a choice): ENet w/o marks prostate on all 30 real slices without gland, 400-1450
voxels each, in the bladder above the base and in the urogenital diaphragm in front of the rectum below the apex,
and covers about 60% of the gland on the gland's own slices; the DeepLabV3+ teacher's largest component lies in
the bladder. On the simulated unseen site the same models score 0.65-0.71. They rely on intensity and position cues
that hold in the simulator and not in a real scan.

Candidate A (training; the simulator unchanged): `appearance_randomization: true` (train.yaml key;
`tools.data.transforms.appearance_randomization_transforms`) adds to every training slice, after the modest
augmentation, each with its own probability: a random smooth multiplicative bias field (degree 3, coefficients
0-0.3, p 0.3), a random monotone piecewise-linear intensity map (5-15 control points, p 0.3), a wide gamma
(0.5-2.0, p 0.3) and a low-resolution simulation (zoom 0.5-1.0, p 0.25). The values are fixed from published
practice and not swept: BigAug (Zhang et al., IEEE TMI 2020: stacked image-quality, appearance and spatial
transforms for unseen-domain segmentation, prostate MRI among its tasks), nnU-Net's gamma and low-resolution
augmentation, SynthSeg's random bias fields.

Rule A: the ENet student without distillation, CPU profile, BIDMC held out, seeds 0 and 1, on the study's
collection (`synth --cases-per-site 6 --size 96 --seed 0`), trained, evaluated and run on the real case through
its bundle's configs. A becomes the CPU profile's default (teachers and students alike: one template) if its mean
source-site validation Dice over the two seeds is at least the current default's minus 0.02. The test is
non-inferiority, not superiority: A's purpose is robustness to acquisitions that the source sites do not contain,
which their validation cases cannot show; it must not cost the source sites accuracy. The current default's
figures are the study's runs of the same cells (results/cpu_all_sites, BIDMC, ENet w/o: validation 0.675 and
0.667). The unseen site's Dice and the real case are reported beside it and not used.

Candidates B and C (rules written 16:16 UTC, before A's results and before any run of B or C), each tried on top
of whatever the rules before it kept, with the same runs as A:

- B: `background_fraction: 0.5` in the CPU profile (train.yaml's 0.1 stays for the paper profile). Why: in the
  simulator too the ENet student marks prostate on slices without gland: on every unseen BIDMC case of the main
  job's ENet w/o (all 6; 6 to 20 slices each, 12-48% of its predicted voxels), with Dice 0.77-0.84 on the gland's
  own slices against 0.52-0.76 in 3D; at 0.1 a training batch holds 1.6 slices without gland on average. Rule B:
  kept if the mean source-site validation Dice over seeds 0 and 1 beats the current default's by at least 0.02.
- C: the students train 40 epochs (`max_epochs` 40, `lr_step_size` 260: the teachers' schedule) instead of 20. Why:
  the best validation epoch of the CPU profile's students is the last one in most runs (docs/preprocessing.md).
  Rule C: kept if the mean source-site validation Dice over seeds 0 and 1 beats the current default's by at least
  0.02; the training time is reported.

Round 4b (rules written 16:28 UTC, after A, B and C's results, before any run below). C changed the default that A
and B were measured against, and A's and B's losses may be those of an under-trained network, so both are tried
again on top of C with their own rules unchanged (A: non-inferior within 0.02, B: at least 0.02 better, on the
mean source-site validation Dice of seeds 0 and 1), A first, B on top of what A's rule leaves. Then the teachers
(issue 9, item 4: each teacher must beat ENet alone by at least 0.03 on seen validation): with the students at 40
epochs, the teachers' 40 are no longer longer than the students'. Candidate T: the teachers train 80 epochs
(`lr_step_size` 520), on top of whatever A and B leave; the DeepLabV3+ teacher (the one short of the gap) is
trained with BIDMC held out, seeds 0 and 1. Rule T: kept if its mean source-site validation Dice over the two
seeds is at least ENet alone's (the final student default of this round) + 0.03; if not, the teachers' profile
stays at 40 epochs and item 4 stays open. The UNet++ teacher's gap (+0.199 at 40 epochs) is re-measured by the
study.

Measured (ENet w/o unless named, CPU profile, BIDMC held out, the study's collection; each cell trained,
evaluated and run on the real case with the bundle's own configs and the candidate's keys as command-line
overrides, one thread per run, two runs at a time on 2 cores; "current default" = the study's runs of
results/cpu_all_sites; 3D Dice, mean over cases; the real case's predicted volume (true 45.7 mL) and how many of
its 30 slices without gland hold predicted prostate):

| cell | source validation, seed 0 / 1 | mean (chooses) | unseen BIDMC, seed 0 / 1 | real case, seed 0 / 1 (report) | real case: predicted mL, slices outside, seed 0 / 1 | training s, seed 0 / 1 | verdict |
|---|---|---|---|---|---|---|---|
| current default (20 epochs) | 0.675 / 0.667 | 0.671 | 0.652 / 0.677 | 0.384 / 0.530 | 90.5, 30 / n.a. | 121 / 161 | baseline |
| A: + appearance randomisation | 0.512 / 0.563 | 0.538 | 0.652 / 0.638 | 0.510 / 0.477 | 63.5, 30 / 73.5, 30 | 174 / 188 | dropped (-0.133, rule: >= -0.02) |
| B: background_fraction 0.5 | 0.526 / 0.576 | 0.551 | 0.566 / 0.540 | 0.081 / 0.549 | 17.0, 16 / 101.1, 28 | 155 / 165 | dropped (-0.120) |
| C: students 40 epochs | 0.790 / 0.817 | **0.804** | 0.770 / 0.773 | 0.428 / 0.440 | 64.5, 30 / 37.3, 15 | 327 / 328 | **kept** (+0.133, rule: >= +0.02) |
| A on top of C | 0.725 / 0.733 | 0.729 | 0.717 / 0.746 | 0.442 / 0.398 | 69.3, 30 / 59.8, 30 | 310 / 343 | dropped (-0.075) |
| B on top of C | 0.774 / 0.702 | 0.738 | 0.789 / 0.672 | 0.530 / 0.480 | 42.2, 15 / 60.8, 28 | 306 / 319 | dropped (-0.066) |

What it says (read after the choices):

- The CPU profile's students were under-trained: 40 epochs raise the source validation Dice by 0.13 and the unseen
  site's by 0.11 (0.665 -> 0.772, both seeds), and the best epoch is still the last. This changes every study
  number and is the reason the all-sites study must run again.
- Neither change helps the real case: 0.43 and 0.44 at 40 epochs against 0.38 and 0.53 at 20; the strong
  appearance randomisation scores 0.51 / 0.48 at 20 epochs and 0.44 / 0.40 at 40, within the same spread. What the
  40-epoch models get wrong on the real case (seed 1, looked at slice by slice): on the gland's slices they mark
  only the darker anterior-central part of the gland (a quarter to a half of its area on the mid-gland slices,
  almost all of it inside the gland) and leave out the peripheral zone made bright by the endorectal coil; below
  the apex they still mark a gland-sized region in front of the rectum on all 15 slices. Both are failures to
  recognise the real gland, not to reject the rest of the pelvis: the real case's gap is in the simulated
  gland's appearance next to the coil, which the statistics of the report (wall profile, sector contrasts) rank as
  close already. Appearance randomisation, as designed here, does not close it and costs the source sites 0.08-0.13.
- Strong appearance randomisation at this training length costs the source sites more than the 0.02 the rule
  allows (-0.133 at 20 epochs, -0.075 at 40): at 40 epochs it is still learning. It stays available as a
  train.yaml key (`appearance_randomization: true`), off by default.

Round 4b, T (the teachers at 80 epochs): the DeepLabV3+ teacher scored 0.731 / 0.673 on the source sites'
validation (mean 0.702), below the bar of 0.834 (ENet alone at 40 epochs + 0.03): **dropped**; the teachers stay
at 40 epochs. Details in [distillation.md](distillation.md), section 14.

"""


ROUND3_HEADER = """### Round 3: site differences that robust preprocessing keeps (for the domain shift)

With resampling to 2 mm and percentile normalisation, round 2's sites differed mostly in what that preprocessing
removes, and a network trained on five lost little on the sixth ([domain_shift.md](domain_shift.md)). Round 3 adds
two site differences that survive it: each site's effective echo and repetition times reweight the tissue signals
by their relaxation times (`relaxation.py`; a long echo darkens muscle far more than the gland), and each site's
annotators draw the outline at their own offset from the capsule (-1 to +1 mm). Rule, written before measuring:
keep round 3 if the simulated BIDMC (the real case's kind of site, at the reference sequence and offset 0) stays
as close to the real case as round 2 on these statistics. It does: every BIDMC median above moved by at most
0.08 std (10-20 mm above the base: 0.21 -> 0.13, real -0.26; W1 0.171 -> 0.168; gland-shell contrast 0.39 ->
0.38), so round 3 is kept. The other sites moved as intended: HCRUDB (short echo) gland-shell contrast 0.40 ->
0.58, anterior sector 0.04 -> -0.24; BMC (long echo, 1.5T) wall profile at the rectal wall 3.46 -> 1.95.
The domain shift and the real-case Dice of round 3 come from the all-sites study (`domain_shift.md` of
results/cpu_all_sites) and were not used to choose anything.

"""


ROUND2_HEADER = """### Round 2: where the gland is not, and the coil's near field

Round 1's simulator matched the whole-volume statistics, yet every model trained on it marked a gland-sized region
on every slice below the real apex and above the real base, and missed the bright posterior peripheral zone. The
sector contrasts and the wall profile (module `tools.data.realism`) say why: below the apex round 1 had pelvic fat,
brighter than the gland, where the real case has muscle; its bladder was brighter than the gland, the real one is
darker; and its coil put a 6 std spike on the rectal wall that the real case does not have. Rule: a variant is kept
when it moves the simulated BIDMC medians of these statistics towards the real case's, on anatomy or acquisition
grounds (`calibration.py`); the model columns were measured afterwards, for the record. A second seed of r2-v4
scored 0.630 source validation, 0.615 unseen BIDMC and 0.411 on the real case (seed 0: 0.682, 0.695, 0.436), so
the spread of the real-case Dice across variants (0.43-0.61) is larger than this seed's spread: the real case's
Dice depends on details of the simulator that these statistics do not rank. r2-v3 scored best on the real case and
was not chosen; by the rule it could not be. The final simulator (r2-v4) matches the real case's sector statistics
and wall profile better than round 1, at a cost in the whole-volume skewness (5.9 -> 2.4, real 5.6) and the 2-8 mm
shell contrast (BIDMC -0.22 -> +0.39, real -0.12: the gland is now brighter than its immediate surroundings).

"""

ROUND1_HEADER = """
### Round 1: the whole-volume statistics

"""


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
    from .synthesis.calibration import calibration_markdown, round2_markdown, variants_markdown

    parts.append("## Where the simulator's numbers come from\n\n" + calibration_markdown())
    parts.append("## Variants measured and how they were chosen\n\n" + NO_HELD_OUT_HEADER + ROUND10_HEADER
                 + ROUND9_HEADER + ROUND8_HEADER + ROUND7_HEADER + ROUND6_HEADER + ROUND5_HEADER + ROUND4_HEADER + ROUND3_HEADER
                 + ROUND2_HEADER + round2_markdown() + ROUND1_HEADER + variants_markdown())
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(parts))
    png = write_figure(real, (vol, mask), simulated, nearest, out_png)
    return {"markdown": str(out_md), "png": png, "nearest": simulated[nearest].name}
