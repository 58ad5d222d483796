"""A synthetic stand-in for the six-site prostate T2 benchmark: same layout, same kinds of site shift.

``synthesize(out_dir)`` writes one folder per site with ``CaseNN.nii.gz`` and its mask, quirks included
(``_Segmentation`` in ISBI_1.5/BMC, gaps in the case numbers, zone labels 1/2 in I2CVB and UCL).
Each site is one acquisition model (:mod:`tools.data.synthesis.sites`): field strength -> Rician noise,
endorectal coil -> balloon void and a steep bias field, field of view, slice thickness, orientation,
voxel type, vendor scale and contrast. The anatomy is a parametric pelvis
(:mod:`tools.data.synthesis.anatomy`). Every case is a pure function of ``(seed, site, case number,
size)``: the same call writes the same voxels, and case ``k`` does not depend on how many cases are asked.

Regenerate the montage in ``docs/`` (about 10 s)::

    python -m tools.data synth --out /tmp/synth && python -m tools.data montage --root /tmp/synth --out docs/synthetic_sites.png
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

import nibabel as nib
import numpy as np

from .io import as_lps_array, write_png
from .synthesis.acquisition import (
    AcquisitionGeometry,
    add_rician_noise,
    choose_slice_window,
    crop_slices,
    endorectal_coil_bias,
    patient_coordinates,
    patient_to_world_ras,
    sample_geometry,
    surface_coil_bias,
    to_vendor_dtype,
)
from .synthesis.anatomy import render_pelvis, sample_gland_ends, sample_pelvis, sample_t2_levels
from .synthesis.relaxation import weight_levels
from .synthesis.sites import NAMINGS, SITES, SiteSpec, case_file_names, case_numbers, get_site, site_folder

__all__ = ["SyntheticCase", "synthesize_case", "synthesize", "write_montage"]

PathLike = Union[str, os.PathLike]


@dataclass
class SyntheticCase:
    """One synthetic volume, ready to write.

    Attributes:
        site: the site model.
        case_number: number in ``CaseNN``.
        image: voxels in the site's dtype and orientation, shape ``geometry.shape``.
        label: ``uint8`` mask, 0 background, 1 prostate (or 1 central gland, 2 peripheral zone).
        geometry: grid, affine and patient pose.
        field_strength_t: the case's field strength.
        acquisition: the drawn acquisition parameters (scale, gamma, noise sigma, coil gain...) and
            ``prostate_ml``, the gland volume from the partial-volume fractions.
        landmarks_ras: world RAS positions (mm) of ``prostate``, ``rectum``, ``bladder`` and, with a coil,
            ``coil`` (before the few-mm random deformation).
    """

    site: SiteSpec
    case_number: int
    image: np.ndarray
    label: np.ndarray
    geometry: AcquisitionGeometry
    field_strength_t: float
    acquisition: Dict[str, float] = field(default_factory=dict)
    landmarks_ras: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def affine(self) -> np.ndarray:
        return self.geometry.affine


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def synthesize_case(site: Union[SiteSpec, str], case_number: int, seed: int = 0, size: int = 96) -> SyntheticCase:
    """Simulate case ``case_number`` of ``site`` on a ``size x size`` in-plane grid.

    Pipeline: anatomy ``A`` and tissue signals ``T``, reweighted by the site's echo and repetition times
    (:mod:`tools.data.synthesis.relaxation`) -> T2 signal ``s(p)`` on a grid supersampled through
    the slice -> contrast ``s^gamma`` -> coil sensitivity ``b(p)`` (phased array, times the endorectal
    coil where present) -> slice-profile average -> Rician noise ``sigma = sigma_3T * 3 / B0`` -> vendor
    scale and voxel type. The mask is ``mean annotated fraction >= 1/2`` over the slice (the prostate as the
    site's annotators outline it, ``annotation_offset_mm`` outside the capsule); for zone sites the
    label is 1 where the central gland is the majority of the prostate in the voxel, else 2. The written
    slab is the site's number of slices (more if the gland needs it), with at least 8 mm of empty slices
    on both sides of the mask, at a random position along the render grid.

    The random stream is ``numpy.random.default_rng([seed, site.index, case_number])``; TE and TR come from
    a second stream, ``default_rng([seed, site.index, case_number, 1])``, and the darkening of the gland's ends
    (:class:`~tools.data.synthesis.anatomy.GlandEnds`, round 8) from a third, ``[..., 2]``, so they change no other
    draw.
    """
    site = get_site(site) if isinstance(site, str) else site
    seed = _check_int("seed", seed, 0)
    case_number = _check_int("case_number", case_number, 0)
    size = _check_int("size", size, 16)
    rng = np.random.default_rng([seed, site.index, case_number])

    field_strength = float(rng.choice(site.field_strengths_t))
    anatomy = sample_pelvis(rng, site.endorectal_coil)
    levels = sample_t2_levels(rng, site.fat_level)
    geometry = sample_geometry(rng, site, size, anatomy.prostate_extent_z())
    gamma = float(rng.uniform(*site.gamma))
    scale = float(rng.uniform(*site.intensity_scale))
    noise = float(rng.uniform(*site.noise_at_3t)) * 3.0 / field_strength
    surface = float(rng.uniform(*site.surface_bias))
    gain = float(rng.uniform(*site.coil_gain))
    falloff = float(rng.uniform(*site.coil_falloff_mm))
    sequence_rng = np.random.default_rng([seed, site.index, case_number, 1])
    echo_time = float(sequence_rng.uniform(*site.echo_time_ms))
    repetition_time = float(sequence_rng.uniform(*site.repetition_time_ms))
    levels = weight_levels(levels, echo_time, repetition_time, field_strength)
    ends = sample_gland_ends(np.random.default_rng([seed, site.index, case_number, 2]))

    coords = patient_coordinates(geometry)
    spacing = geometry.evaluation_spacing_mm
    render = render_pelvis(anatomy, levels, coords, geometry.spacing_mm, rng, geometry.supersampling,
                           site.annotation_offset_mm, ends)
    signal = np.maximum(render.signal, 0.0) ** np.float32(gamma)
    signal *= surface_coil_bias(rng, anatomy, coords, spacing, surface)
    coil = anatomy.coil_segment()
    if coil is not None:
        signal *= endorectal_coil_bias(coil, coords, gain, falloff)
    del coords

    out_shape = geometry.shape
    sub = (out_shape[0], out_shape[1], out_shape[2], geometry.supersampling)
    signal = signal.reshape(sub).mean(axis=-1)
    prostate = render.prostate.reshape(sub).mean(axis=-1)
    central = render.central_gland.reshape(sub).mean(axis=-1)
    annotated = render.annotated.reshape(sub).mean(axis=-1)
    label = (annotated >= 0.5).astype(np.uint8)
    if site.zone_labels:
        label[(label == 1) & (central < 0.5 * np.maximum(prostate, annotated))] = 2

    margin = int(np.ceil(8.0 / geometry.spacing_mm[2]))
    start, count = choose_slice_window(rng, label.any(axis=(0, 1)), geometry.target_slices, margin)
    geometry = crop_slices(geometry, start, count)
    window = slice(start, start + count)
    signal, prostate = signal[:, :, window], prostate[:, :, window]
    label = np.ascontiguousarray(label[:, :, window])
    image = add_rician_noise(rng, signal, noise, site.noise_correlation_px) * np.float32(scale)
    image = to_vendor_dtype(image, site.dtype)

    landmarks = {
        "prostate": patient_to_world_ras(geometry, (0.0, 0.0, 0.0)),
        "rectum": patient_to_world_ras(geometry, (anatomy.rectum_x, anatomy.rectum_y, 0.0)),
        "bladder": patient_to_world_ras(geometry, anatomy.bladder_center),
    }
    if coil is not None:
        landmarks["coil"] = patient_to_world_ras(geometry, 0.5 * (np.asarray(coil[0]) + np.asarray(coil[1])))
    acquisition = {
        "fov_mm": geometry.spacing_mm[0] * size, "slice_mm": geometry.spacing_mm[2], "gamma": gamma,
        "intensity_scale": scale, "noise_sigma": noise, "surface_bias": surface, "coil_gain": gain,
        "coil_falloff_mm": falloff, "echo_time_ms": echo_time, "repetition_time_ms": repetition_time,
        "annotation_offset_mm": site.annotation_offset_mm, "prostate_ml": float(prostate.sum() * np.prod(geometry.spacing_mm) / 1000.0),
    }
    return SyntheticCase(site=site, case_number=case_number, image=image, label=label, geometry=geometry,
                         field_strength_t=field_strength, acquisition=acquisition, landmarks_ras=landmarks)


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def synthesize(out_dir: PathLike, cases_per_site: int = 6, size: int = 96, seed: int = 0,
               naming: str = "old") -> Dict[str, List[str]]:
    """Write the six synthetic sites under ``out_dir`` in the layout of the real benchmark.

    Args:
        out_dir: created if missing; existing case files are overwritten.
        cases_per_site: cases written per site, numbered like the real site (gaps scaled to the count).
        size: in-plane matrix; the in-plane spacing is the case's field of view / ``size``.
        seed: seed of the whole collection.
        naming: ``"old"`` (ISBI, ISBI_1.5, I2CVB, UCL, BIDMC, HK) or ``"new"`` (RUNMC, BMC, HCRUDB, ...).

    Returns:
        ``{folder name: [image path, ...]}`` in site order.
    """
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}.")
    cases_per_site = _check_int("cases_per_site", cases_per_site, 1)
    out = Path(out_dir)
    written: Dict[str, List[str]] = {}
    for site in SITES:
        folder = out / site_folder(site, naming)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for number in case_numbers(site, cases_per_site):
            case = synthesize_case(site, number, seed=seed, size=size)
            names = case_file_names(site, number)
            nib.save(_nifti(case.image, case.affine), str(folder / names["image"]))
            nib.save(_nifti(case.label, case.affine), str(folder / names["label"]))
            paths.append(str(folder / names["image"]))
        written[folder.name] = paths
    return written


def _find_site_folders(data_dir: Path):
    found = []
    for site in SITES:
        for name in (site.old_name, site.new_name):
            if (data_dir / name).is_dir():
                found.append((site, data_dir / name))
                break
    return found


def _first_case(folder: Path):
    images = sorted(p for p in folder.glob("Case*.nii.gz") if "egmentation" not in p.name)
    if not images:
        raise FileNotFoundError(f"no Case*.nii.gz image in {folder}.")
    image = images[0]
    stem = image.name[: -len(".nii.gz")]
    for suffix in ("_segmentation", "_Segmentation"):
        label = folder / f"{stem}{suffix}.nii.gz"
        if label.exists():
            return image, label
    raise FileNotFoundError(f"no mask {stem}_segmentation.nii.gz (or _Segmentation) next to {image}.")



def write_montage(data_dir: PathLike, out_png: PathLike, slices_per_site: int = 4, sagittal: bool = True) -> str:
    """One row per site found in ``data_dir`` (either naming): axial slices of its first case with the mask.

    Slices are spread evenly from 10% to 90% of the mask's extent; each row is windowed to its own
    0.5-99.5 percentiles; axial views are radiological (patient right on the image left, anterior up).
    The whole-gland contour is red; zone sites also show the central gland (yellow). With ``sagittal``, a
    last column shows the mid-sagittal plane (anterior left, superior up) at the true aspect ratio.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    slices_per_site = _check_int("slices_per_site", slices_per_site, 1)
    data_dir = Path(data_dir)
    sites = _find_site_folders(data_dir)
    if not sites:
        raise FileNotFoundError(f"no site folder ({', '.join(s.old_name for s in SITES)} or new names) in {data_dir}.")
    cols = slices_per_site + int(sagittal)
    fig = Figure(figsize=(1.7 * cols, 1.75 * len(sites)))
    axes = fig.subplots(len(sites), cols, squeeze=False)
    for row, (site, folder) in enumerate(sites):
        image_path, label_path = _first_case(folder)
        img = nib.load(str(image_path))
        vol = as_lps_array(img).astype(np.float32)
        lab = as_lps_array(nib.load(str(label_path))).astype(np.uint8)
        zooms = img.header.get_zooms()[:3]
        lo, hi = np.percentile(vol, [0.5, 99.5])
        ks = np.flatnonzero(lab.any(axis=(0, 1)))
        if ks.size == 0:
            raise ValueError(f"empty mask {label_path}.")
        picks = np.unique(np.round(np.linspace(ks[0] + 0.1 * (ks[-1] - ks[0]), ks[-1] - 0.1 * (ks[-1] - ks[0]),
                                               slices_per_site)).astype(int))
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        for col, k in enumerate(picks):
            ax = axes[row, col]
            ax.imshow(vol[:, :, k].T, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.contour((lab[:, :, k] > 0).T.astype(float), [0.5], colors="r", linewidths=0.6)
            if site.zone_labels and (lab[:, :, k] == 1).any():
                ax.contour((lab[:, :, k] == 1).T.astype(float), [0.5], colors="yellow", linewidths=0.7)
            ax.set_title(f"z={k}", fontsize=6, pad=1)
        if sagittal:
            i = int(round(np.mean(np.nonzero(lab)[0])))
            ax = axes[row, -1]
            ax.imshow(vol[i, :, :].T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest",
                      aspect=zooms[2] / zooms[1])
            ax.contour((lab[i] > 0).T.astype(float), [0.5], colors="r", linewidths=0.6)
            ax.set_title("sagittal", fontsize=6, pad=1)
        coil = "endorectal" if site.endorectal_coil else "no coil"
        axes[row, 0].set_ylabel(f"{folder.name}\n{coil}, {zooms[0]:.2f}x{zooms[2]:.2f} mm\n{img.get_data_dtype()}",
                                fontsize=6)
    fig.tight_layout(pad=0.3)
    return write_png(fig, out_png, dpi=100)
