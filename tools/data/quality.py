"""A quality report of each predicted mask, written beside it as JSON (inference without a reference mask).

:func:`mask_quality` measures what a reader would check at a glance, in the geometry of the input file:

* ``volume_ml``: foreground voxels x voxel volume (``|det(affine[:3, :3])|`` mm^3) / 1000;
* ``components``: 3D connected components of the network's raw prediction (before the largest one is kept);
* ``touches_border``: the kept mask has a voxel on a face of the volume;
* ``slices_with_several_components``: axial slices (along the file's inferior-superior axis) whose kept mask
  has more than one 2D component;
* ``slice_gaps``: empty axial slices between the first and the last occupied one;
* ``implausible`` and ``reasons``: any of an empty mask, a volume outside ``volume_range_ml``, more than one
  raw component, border contact, several components in a slice, or gaps.

The checks follow those TAPS (``lavlab-taps``) runs on its own masks; its volume range (15-80 mL) excludes
common enlarged glands, so the default range here is 10-150 mL (normal adult glands are 20-30 mL, benign
hyperplasia commonly reaches 100 mL and more; the simulator draws 14-118 mL).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage

from tools.data.io import write_json

__all__ = ["VOLUME_RANGE_ML", "mask_quality", "CountComponentsd", "MaskQualityReportd"]

VOLUME_RANGE_ML = (10.0, 150.0)
_FULL_3D = np.ones((3, 3, 3), dtype=bool)


def _inferior_superior_axis(affine: np.ndarray) -> int:
    """The array axis that runs along the patient's inferior-superior direction (the axial slices' normal)."""
    return int(np.flatnonzero(nib.orientations.io_orientation(np.asarray(affine, float))[:, 0] == 2)[0])


def mask_quality(
    mask: np.ndarray,
    affine: np.ndarray,
    raw_components: int | None = None,
    volume_range_ml: Sequence[float] = VOLUME_RANGE_ML,
) -> dict:
    """The report of one kept mask ``(X, Y, Z)`` with its file's ``affine``; see the module docstring.

    ``raw_components`` is the component count of the prediction before the largest component was kept
    (``None``: counted on ``mask``).
    """
    mask = np.asarray(mask).astype(bool)
    affine = np.asarray(affine, dtype=float)
    if mask.ndim != 3 or affine.shape != (4, 4):
        raise ValueError(f"mask_quality needs a 3D mask and a 4x4 affine, got {mask.shape} and {affine.shape}.")
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    volume_ml = float(np.count_nonzero(mask)) * voxel_ml
    if raw_components is None:
        raw_components = int(ndimage.label(mask, structure=_FULL_3D)[1])
    border = mask[[0, -1]].any() or mask[:, [0, -1]].any() or mask[:, :, [0, -1]].any()
    axis = _inferior_superior_axis(affine)
    slices = np.moveaxis(mask, axis, 0)
    occupied = np.flatnonzero(slices.reshape(slices.shape[0], -1).any(axis=1))
    several = [int(k) for k in occupied if ndimage.label(slices[k], structure=np.ones((3, 3), bool))[1] > 1]
    gaps = [int(k) for k in range(occupied[0], occupied[-1] + 1) if k not in set(occupied)] if occupied.size else []
    low, high = float(volume_range_ml[0]), float(volume_range_ml[1])
    reasons = []
    if volume_ml == 0:
        reasons.append("empty mask")
    elif not low <= volume_ml <= high:
        reasons.append(f"volume {volume_ml:.1f} mL outside {low:g}-{high:g} mL")
    if raw_components > 1:
        reasons.append(f"{raw_components} connected components before the largest was kept")
    if border:
        reasons.append("touches the volume border")
    if several:
        reasons.append(f"{len(several)} slice(s) with more than one component")
    if gaps:
        reasons.append(f"{len(gaps)} empty slice(s) inside the gland's extent")
    return {
        "volume_ml": round(volume_ml, 3),
        "components": int(raw_components),
        "touches_border": bool(border),
        "slice_axis": axis,
        "occupied_slices": [int(occupied[0]), int(occupied[-1])] if occupied.size else [],
        "slices_with_several_components": several,
        "slice_gaps": gaps,
        "volume_range_ml": [low, high],
        "implausible": bool(reasons),
        "reasons": reasons,
    }


class CountComponentsd(MapTransform):
    """Store the number of 3D connected components of label ``label`` in ``data[<key>_components]``.

    Placed before ``KeepLargestConnectedComponentd`` so that the report counts what the network predicted.
    """

    def __init__(self, keys: KeysCollection, label: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label = label

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = np.asarray(d[key])[0] == self.label
            d[f"{key}_components"] = int(ndimage.label(mask, structure=_FULL_3D)[1])
        return d


class MaskQualityReportd(MapTransform):
    """Write :func:`mask_quality` of ``data[key]`` (``(1, X, Y, Z)`` in the file's geometry) as JSON beside the
    mask that ``SaveImaged`` wrote: ``<output_dir>/<image name>_<output_postfix>.json``.

    The affine and file name come from the mask's metadata (``affine``, ``filename_or_obj``), the raw
    component count from ``data[<key>_components]`` when :class:`CountComponentsd` ran before.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        output_postfix: str = "seg",
        volume_range_ml: Sequence[float] = VOLUME_RANGE_ML,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.output_postfix = output_postfix
        self.volume_range_ml = tuple(volume_range_ml)

    def report_path(self, source: str) -> Path:
        name = Path(source).name
        for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return self.output_dir / f"{name}_{self.output_postfix}.json"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            meta = getattr(mask, "meta", {})
            affine = np.asarray(meta.get("affine", np.eye(4)), dtype=float)
            source = str(meta.get("filename_or_obj", "mask"))
            report = mask_quality(np.asarray(mask)[0] > 0, affine, d.get(f"{key}_components"), self.volume_range_ml)
            report = {"image": source, **report}
            write_json(report, self.report_path(source))
            d[f"{key}_quality"] = report
        return d
