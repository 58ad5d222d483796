"""The six sites of the multi-site prostate T2 benchmark, as the simulator models them.

One :class:`SiteSpec` per site holds (a) the layout of the real files (folder names, mask suffix,
case numbering, zone labels) and (b) the acquisition model: field strength, endorectal coil, native
resolution, field of view, slice thickness, orientation, vendor intensity scale, contrast and noise.
Acquisition columns follow DESIGN.md section 2 (MS-Net, TMI 2020); fields of view, scales, contrast
and noise are the simulator's choices, documented per field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

__all__ = ["SiteSpec", "SITES", "NAMINGS", "site_folder", "case_numbers", "case_file_names", "get_site"]

Range = Tuple[float, float]

NAMINGS = ("old", "new")


@dataclass(frozen=True)
class SiteSpec:
    """One site: layout of its files and the model of its acquisition.

    Attributes:
        key: stable identifier (the newer folder name), also used to seed the site.
        index: position in :data:`SITES` (part of every case's random seed).
        old_name / new_name: folder name in the older / newer distribution of the benchmark.
        origin: challenge the site comes from.
        field_strengths_t: field strengths a case is drawn from (tesla).
        endorectal_coil: whether cases carry an endorectal coil (balloon void + steep bias field).
        native_inplane_mm: in-plane spacing of the real acquisitions (site table).
        slice_mm: slice thickness range (site table); written unchanged into the affine.
        fov_mm: in-plane field of view range; the written in-plane spacing is ``fov / size``.
        coverage_mm: through-plane coverage range; number of slices ``round(coverage / thickness)``.
        orientation: nibabel axis codes of the written array (``"LPS"`` like DICOM/ITK, or ``"RAS"``).
        dtype: voxel type of the image file.
        intensity_scale: scanner units of a unit T2 signal (fat is about 0.8 units), per case.
        gamma: contrast exponent applied to the tissue signal, ``s -> s ** gamma``.
        fat_level: T2 signal of fat (vendor/sequence dependent).
        noise_at_3t: Rician noise sigma relative to a unit signal at 3T; scales as ``3 / B0``.
        noise_correlation_px: Gaussian correlation of the noise in-plane (zero-filled interpolation).
        surface_bias: amplitude of the phased-array bias ``exp(a (rho^2 - 1/2))`` over the body.
        coil_gain: endorectal-coil sensitivity at the coil, ``1 + g / (1 + (d/lambda)^2)^1.5``.
        coil_falloff_mm: ``lambda`` above.
        echo_time_ms / repetition_time_ms: effective TE and TR of the site's T2 turbo-spin-echo; they reweight
            the tissue signals by their relaxation times (:mod:`.relaxation`). Simulator choices within the
            usual ranges of prostate T2 protocols (TE 90-135 ms, TR 2500-7000 ms), one narrow range per site.
        annotation_offset_mm: where the site's annotators draw the outline, outward of the true capsule (mm,
            negative: inside). Each site's masks come from a different team (NCI-ISBI 2013, I2CVB,
            PROMISE12); the simulator gives each a fixed offset in [-1, +1] mm, BIDMC 0 (the real case's
            kind of site, on which the simulator's label is calibrated). A simulator choice.
        zone_labels: masks store central gland = 1 and peripheral zone = 2.
        mask_suffix: ``"_segmentation"`` or the ``"_Segmentation"`` of ISBI_1.5/BMC.
        numbering: runs ``(first, count)`` of case numbers; the last run is open (``count=None``).
    """

    key: str
    index: int
    old_name: str
    new_name: str
    origin: str
    field_strengths_t: Tuple[float, ...]
    endorectal_coil: bool
    native_inplane_mm: Range
    slice_mm: Range
    fov_mm: Range
    coverage_mm: Range
    orientation: str
    dtype: str
    intensity_scale: Range
    gamma: Range
    fat_level: Range
    noise_at_3t: Range
    noise_correlation_px: float
    surface_bias: Range
    coil_gain: Range
    coil_falloff_mm: Range
    echo_time_ms: Range
    repetition_time_ms: Range
    annotation_offset_mm: float
    zone_labels: bool
    mask_suffix: str
    numbering: Tuple[Tuple[int, Optional[int]], ...]


SITES: Tuple[SiteSpec, ...] = (
    SiteSpec(
        key="RUNMC", index=0, old_name="ISBI", new_name="RUNMC", origin="NCI-ISBI 2013",
        field_strengths_t=(3.0,), endorectal_coil=False,
        native_inplane_mm=(0.6, 0.625), slice_mm=(3.6, 4.0), fov_mm=(185.0, 205.0), coverage_mm=(70.0, 90.0),
        orientation="LPS", dtype="int16", intensity_scale=(280.0, 420.0), gamma=(0.95, 1.05),
        fat_level=(0.72, 0.82), noise_at_3t=(0.022, 0.032), noise_correlation_px=0.0,
        surface_bias=(0.35, 0.6), coil_gain=(0.0, 0.0), coil_falloff_mm=(1.0, 1.0),
        echo_time_ms=(100.0, 108.0), repetition_time_ms=(3500.0, 4500.0), annotation_offset_mm=0.0,
        zone_labels=False, mask_suffix="_segmentation", numbering=((0, None),),
    ),
    SiteSpec(
        key="BMC", index=1, old_name="ISBI_1.5", new_name="BMC", origin="NCI-ISBI 2013",
        field_strengths_t=(1.5,), endorectal_coil=True,
        native_inplane_mm=(0.4, 0.4), slice_mm=(3.0, 3.0), fov_mm=(120.0, 140.0), coverage_mm=(60.0, 75.0),
        orientation="LPS", dtype="int16", intensity_scale=(350.0, 520.0), gamma=(0.8, 0.9),
        fat_level=(0.85, 0.95), noise_at_3t=(0.03, 0.04), noise_correlation_px=0.0,
        surface_bias=(0.1, 0.25), coil_gain=(13.0, 32.5), coil_falloff_mm=(22.0, 30.0),
        echo_time_ms=(115.0, 125.0), repetition_time_ms=(4000.0, 5500.0), annotation_offset_mm=1.0,
        zone_labels=False, mask_suffix="_Segmentation", numbering=((0, None),),
    ),
    SiteSpec(
        key="HCRUDB", index=2, old_name="I2CVB", new_name="HCRUDB", origin="I2CVB",
        field_strengths_t=(3.0,), endorectal_coil=False,
        native_inplane_mm=(0.67, 0.79), slice_mm=(1.25, 1.25), fov_mm=(260.0, 300.0), coverage_mm=(70.0, 85.0),
        orientation="RAS", dtype="float32", intensity_scale=(90.0, 150.0), gamma=(1.2, 1.35),
        fat_level=(0.6, 0.7), noise_at_3t=(0.035, 0.05), noise_correlation_px=0.0,
        surface_bias=(0.4, 0.7), coil_gain=(0.0, 0.0), coil_falloff_mm=(1.0, 1.0),
        echo_time_ms=(88.0, 96.0), repetition_time_ms=(5000.0, 7000.0), annotation_offset_mm=-1.0,
        zone_labels=True, mask_suffix="_segmentation", numbering=((0, None),),
    ),
    SiteSpec(
        key="UCL", index=3, old_name="UCL", new_name="UCL", origin="PROMISE12",
        field_strengths_t=(1.5, 3.0), endorectal_coil=False,
        native_inplane_mm=(0.325, 0.625), slice_mm=(3.0, 3.6), fov_mm=(160.0, 200.0), coverage_mm=(65.0, 85.0),
        orientation="LPS", dtype="int16", intensity_scale=(300.0, 1500.0), gamma=(1.0, 1.2),
        fat_level=(0.75, 0.85), noise_at_3t=(0.025, 0.035), noise_correlation_px=0.6,
        surface_bias=(0.3, 0.55), coil_gain=(0.0, 0.0), coil_falloff_mm=(1.0, 1.0),
        echo_time_ms=(100.0, 120.0), repetition_time_ms=(3000.0, 5000.0), annotation_offset_mm=0.5,
        zone_labels=True, mask_suffix="_segmentation", numbering=((1, 1), (26, None)),
    ),
    SiteSpec(
        key="BIDMC", index=4, old_name="BIDMC", new_name="BIDMC", origin="PROMISE12",
        field_strengths_t=(3.0,), endorectal_coil=True,
        native_inplane_mm=(0.25, 0.27), slice_mm=(2.2, 3.0), fov_mm=(130.0, 150.0), coverage_mm=(70.0, 90.0),
        orientation="LPS", dtype="float32", intensity_scale=(90.0, 160.0), gamma=(0.9, 1.0),
        fat_level=(0.8, 0.9), noise_at_3t=(0.035, 0.05), noise_correlation_px=0.5,
        surface_bias=(0.1, 0.25), coil_gain=(19.5, 39.0), coil_falloff_mm=(20.0, 28.0),
        echo_time_ms=(95.0, 105.0), repetition_time_ms=(3500.0, 4500.0), annotation_offset_mm=0.0,
        zone_labels=False, mask_suffix="_segmentation", numbering=((0, 1), (2, None)),
    ),
    SiteSpec(
        key="HK", index=5, old_name="HK", new_name="HK", origin="PROMISE12",
        field_strengths_t=(1.5,), endorectal_coil=True,
        native_inplane_mm=(0.625, 0.625), slice_mm=(3.6, 3.6), fov_mm=(190.0, 230.0), coverage_mm=(65.0, 80.0),
        orientation="LPS", dtype="int16", intensity_scale=(150.0, 250.0), gamma=(0.75, 0.85),
        fat_level=(0.9, 1.0), noise_at_3t=(0.028, 0.035), noise_correlation_px=0.0,
        surface_bias=(0.15, 0.3), coil_gain=(10.4, 26.0), coil_falloff_mm=(24.0, 32.0),
        echo_time_ms=(120.0, 135.0), repetition_time_ms=(2500.0, 3500.0), annotation_offset_mm=-0.5,
        zone_labels=False, mask_suffix="_segmentation", numbering=((38, None),),
    ),
)


def get_site(name: str) -> SiteSpec:
    """The site called ``name`` under either naming scheme (``"ISBI"`` and ``"RUNMC"`` are the same site)."""
    for site in SITES:
        if name in (site.key, site.old_name, site.new_name):
            return site
    known = sorted({n for s in SITES for n in (s.old_name, s.new_name)})
    raise KeyError(f"unknown site {name!r}; known: {known}.")


def site_folder(site: SiteSpec, naming: str) -> str:
    """Folder name of ``site`` under ``naming``: ``"old"`` (ISBI, ISBI_1.5, I2CVB...) or ``"new"`` (RUNMC, BMC...)."""
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}.")
    return site.old_name if naming == "old" else site.new_name


def case_numbers(site: SiteSpec, count: int) -> List[int]:
    """The first ``count`` case numbers of ``site``, gaps included (UCL: 1, 26, 27...; HK: 38, 39...)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    numbers: List[int] = []
    for first, run in site.numbering:
        take = count - len(numbers) if run is None else min(run, count - len(numbers))
        numbers.extend(range(first, first + take))
        if len(numbers) >= count:
            break
    return numbers


def case_file_names(site: SiteSpec, case_number: int) -> Dict[str, str]:
    """``{"image": "CaseNN.nii.gz", "label": "CaseNN<mask suffix>.nii.gz"}`` for one case."""
    stem = f"Case{case_number:02d}"
    return {"image": f"{stem}.nii.gz", "label": f"{stem}{site.mask_suffix}.nii.gz"}
