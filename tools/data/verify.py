"""The dataset integrity check, in the spirit of nnU-Net's ``verify_dataset_integrity``.

For the dataset as a whole (see :mod:`tools.data.layout`): the root exists and holds the site
folders (directly or one level down); every expected site has exactly one folder and at least one
case; every image has a mask and every mask an image; no stray volume file names.

For every case (image ``I``, mask ``M``), read in full:

* both are readable and 3D;
* ``I`` has no NaN or inf;
* the values of ``M`` are in {0, 1, 2} (2 = a zone label, merged into 1 by the transforms) and
  ``M`` is not empty (some voxel > 0);
* ``I`` and ``M`` have the same shape and ``max |A_I - A_M| <= affine_atol`` (mm), A the 4x4
  voxel -> RAS affines (all entries are in mm: spacing-scaled directions and the origin);
* the affine is usable: finite, every voxel size > 0.

Every problem is one line ``"<path>: <what is wrong>"``; all problems are collected, none stops
the check early.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .io import DatasetError, PathLike, Volume, read_volume
from .layout import SITES, CaseFiles, DatasetLayout, discover, site_display_name

__all__ = ["AFFINE_ATOL", "LABEL_VALUES", "check_case", "check_inference_image", "scan_dataset", "verify_dataset", "summary_line"]

AFFINE_ATOL = 1e-3
"""Largest allowed difference (mm) between any two entries of an image's and its mask's affines."""

LABEL_VALUES = (0, 1, 2)
"""Allowed raw mask values: background, whole gland, and a second zone label merged into 1 later."""


def _format_values(values: np.ndarray, limit: int = 6) -> str:
    shown = [str(int(v)) if np.isfinite(v) and float(v).is_integer() else repr(float(v)) for v in values[:limit]]
    more = f", ... ({len(values)} values)" if len(values) > limit else ""
    return "{" + ", ".join(shown) + more + "}"


def _read(path: Path, problems: List[str]) -> Optional[Volume]:
    try:
        return read_volume(path, ndim=3)
    except DatasetError as err:
        problems.extend(err.problems)
        return None


def _check_affine(volume: Volume, problems: List[str]) -> bool:
    affine = volume.affine
    if not np.all(np.isfinite(affine)) or min(volume.spacing) <= 0:
        finite = bool(np.all(np.isfinite(affine)))
        problems.append(f"{volume.path}: invalid affine (voxel size {volume.spacing} mm, finite={finite})")
        return False
    return True


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def check_case(case: CaseFiles, root: PathLike, affine_atol: float = AFFINE_ATOL) -> Tuple[Optional[Dict], List[str]]:
    """Check one case; return ``(record, problems)``, ``record`` None when there is a problem.

    The record is the case's entry in the index: ``site``, ``case``, ``image`` and ``label``
    (paths relative to ``root``, POSIX separators), ``shape``, ``spacing`` (mm, from the image
    affine), ``orientation`` (e.g. ``"LPS"``) and ``label_values`` (sorted raw mask values).
    """
    problems: List[str] = []
    image = _read(case.image, problems)
    label = _read(case.label, problems)
    label_values: List[int] = []
    if image is not None:
        _check_affine(image, problems)
        if image.array.dtype.kind in "fc":
            bad = int(np.count_nonzero(~np.isfinite(image.array)))
            if bad:
                problems.append(f"{case.image}: image has {bad} NaN or inf voxels")
    if label is not None:
        _check_affine(label, problems)
        values = np.unique(label.array)
        invalid = values[~np.isin(values, LABEL_VALUES)]
        if invalid.size:
            allowed = _format_values(np.array(LABEL_VALUES))
            problems.append(f"{case.label}: mask values must be in {allowed}, found {_format_values(invalid)}")
        elif values.size == 0 or values.max() <= 0:
            problems.append(f"{case.label}: mask is empty (no voxel > 0)")
        else:
            label_values = [int(v) for v in values]
    if image is not None and label is not None:
        if image.shape != label.shape:
            problems.append(
                f"{case.label}: mask shape {label.shape} differs from image shape {image.shape} ({case.image})"
            )
        else:
            diff = float(np.max(np.abs(image.affine - label.affine)))
            if not diff <= affine_atol:
                problems.append(
                    f"{case.label}: mask affine differs from the image affine by up to {diff:.4g} mm "
                    f"(tolerance {affine_atol:g}; mask {label.orientation} spacing "
                    f"{tuple(round(s, 4) for s in label.spacing)}, image {image.orientation} spacing "
                    f"{tuple(round(s, 4) for s in image.spacing)}; {case.image})"
                )
    if problems:
        return None, problems
    root = Path(root)
    record = {
        "site": case.site,
        "case": case.case,
        "image": _relative(case.image, root),
        "label": _relative(case.label, root),
        "shape": list(image.shape),
        "spacing": [round(s, 6) for s in image.spacing],
        "orientation": image.orientation,
        "label_values": label_values,
    }
    return record, []


def scan_dataset(
    root: PathLike, sites: Optional[Sequence[str]] = None, affine_atol: float = AFFINE_ATOL
) -> Tuple[Optional[DatasetLayout], List[Dict], List[str]]:
    """Discover and check every case: ``(layout, records, problems)``; records are in S1..S6, case-number order."""
    layout, problems = discover(root, sites)
    records: List[Dict] = []
    if layout is None:
        return None, records, problems
    for case in layout.cases:
        record, case_problems = check_case(case, layout.root, affine_atol)
        problems.extend(case_problems)
        if record is not None:
            records.append(record)
    return layout, records, problems


def verify_dataset(
    root: PathLike, sites: Optional[Sequence[str]] = None, affine_atol: float = AFFINE_ATOL
) -> List[str]:
    """All integrity problems of the dataset under ``root`` (empty list: the dataset is sound).

    Args:
        root: dataset root (site folders in it or one level below).
        sites: the sites that must be present (any accepted names); default all six.
        affine_atol: tolerance in mm for image/mask affine agreement.
    """
    return scan_dataset(root, sites, affine_atol)[2]


def summary_line(records: Sequence[Dict]) -> str:
    """``"6 sites, 116 cases: RUNMC (ISBI) 30, BMC (ISBI_1.5) 30, ..."`` for index records."""
    counts: Dict[str, int] = {}
    for record in records:
        counts[record["site"]] = counts.get(record["site"], 0) + 1
    parts = ", ".join(f"{site_display_name(s)} {counts[s]}" for s in SITES if s in counts)
    return f"{len(counts)} sites, {len(records)} cases: {parts}"


def check_inference_image(path: PathLike) -> List[str]:
    """Problems that make ``path`` unfit for inference, one line each naming the file; ``[]`` when it is fit.

    The file must read as a 3D volume (:func:`tools.data.io.read_volume`: missing, unknown format, unreadable
    or truncated files and non-3D arrays are refused from the header or the read), hold at least one voxel,
    have only finite values, and not be constant (nothing to segment; z-scoring it divides by zero).
    """
    problems: List[str] = []
    volume = _read(Path(path), problems)
    if volume is None:
        return problems
    array = volume.array
    if array.size == 0:
        return [f"{volume.path}: empty volume (shape {tuple(array.shape)})"]
    if array.dtype.kind in "fc":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            problems.append(f"{volume.path}: {bad} of {array.size} voxels are NaN or inf")
            return problems
    if float(np.min(array)) == float(np.max(array)):
        problems.append(f"{volume.path}: constant volume (every voxel is {float(np.min(array)):g}): nothing to segment")
    return problems

