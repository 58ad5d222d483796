"""MONAI transforms for training 2D networks on axial slices of 3D prostate MRI volumes.

The training chain has two parts (DESIGN.md section 2):

* a deterministic 3D preprocessing, cacheable by :class:`monai.data.CacheDataset`:
  ``LoadImaged -> MergeZonesd -> Orientationd -> in-plane geometry -> intensity normalisation -> EnsureTyped``,
  where the in-plane geometry is ``Resized (S, S, -1)`` (the paper's, ``in_plane_mode="resize"``) or
  ``InPlaneSpacingd (s, s, keep) -> ResizeWithPadOrCropd (S, S, -1)`` (``in_plane_mode="spacing"``, as nnU-Net and
  TAPS), and the normalisation a z-score over all voxels, over the nonzero voxels, or after clipping to
  percentiles (``intensity_norm``; see :func:`geometry_transforms` and :func:`intensity_transforms`);
* a random 2D part: :class:`RandSliceSampled` draws ``num_samples`` axial slices of the cached volume,
  then a modest 2D augmentation, optionally a strong randomisation of the appearance
  (:func:`appearance_randomization_transforms`), and ``EnsureTyped``.

:func:`training_transforms` returns both parts as one *flat* :class:`monai.transforms.Compose`, so that
``CacheDataset`` caches everything before :class:`RandSliceSampled` (the first random transform) and
every epoch's slices of a volume come from one cached 3D volume. A nested ``Compose`` would defeat this:
``Compose`` is itself ``Randomizable``, so ``CacheDataset`` would stop caching at it.

Because :class:`RandSliceSampled` returns a list of dictionaries, a ``DataLoader`` over these transforms
needs ``collate_fn=monai.data.list_data_collate``, and a batch of ``B`` volumes holds
``B * num_samples`` slices.

Geometry: after ``Orientationd(axcodes="RAS")`` the volume is ``(C, X, Y, Z)`` with ``Z`` the
inferior-superior axis, so axial slices are ``[..., z]`` whatever the storage order of the file; a 2D
sample is ``(C, X, Y)``, the layout :func:`tools.data.evaluation.slice_inferer` feeds the network.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    ClipIntensityPercentilesd,
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    Randomizable,
    RandScaleIntensityd,
    RandSimulateLowResolutiond,
    Resized,
    ResizeWithPadOrCropd,
    Spacingd,
)
from monai.transforms.traits import MultiSampleTrait

from .gin_ipa import RandGinIpad

__all__ = [
    "IN_PLANE_MODES",
    "INTENSITY_NORMS",
    "InPlaneSpacingd",
    "MergeZonesd",
    "RandSliceSampled",
    "in_plane_size",
    "in_plane_spacing",
    "geometry_transforms",
    "intensity_transforms",
    "preprocessing_transforms",
    "augmentation_transforms",
    "appearance_randomization_transforms",
    "training_random_transforms",
    "training_transforms",
]


def _source_name(value: Any) -> str:
    """The file a tensor was read from (``meta["filename_or_obj"]``), for error messages."""
    meta = getattr(value, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return "<unknown file>"


def in_plane_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from ``S`` or ``(H, W)``; every entry a positive integer.

    Raises:
        ValueError: when ``image_size`` has another length or a non-positive entry.
    """
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or any(int(s) != s or int(s) < 1 for s in size):
        raise ValueError(f"image_size must be a positive int S or a pair (H, W), got {image_size!r}.")
    return int(size[0]), int(size[1])


IN_PLANE_MODES = ("resize", "spacing")
"""``in_plane_mode`` values: ``resize`` the axial plane to ``image_size`` (the paper), or resample it to
``pixel_spacing_mm`` and centre crop / pad to ``image_size`` (nnU-Net, TAPS)."""

INTENSITY_NORMS = ("zscore", "nonzero", "percentile")
"""``intensity_norm`` values: z-score over every voxel (the paper), over the nonzero voxels only, or over
every voxel after clipping to the ``intensity_percentiles``."""


def in_plane_spacing(pixel_spacing_mm: float | Sequence[float]) -> tuple[float, float]:
    """``(sx, sy)`` in mm from ``s`` or ``(sx, sy)``; every entry a positive finite number.

    Raises:
        ValueError: naming ``pixel_spacing_mm``, for another length or a non-positive / non-finite entry.
    """
    if isinstance(pixel_spacing_mm, (int, float, np.integer, np.floating)) and not isinstance(pixel_spacing_mm, bool):
        spacing = (pixel_spacing_mm, pixel_spacing_mm)
    elif isinstance(pixel_spacing_mm, Sequence) and not isinstance(pixel_spacing_mm, str):
        spacing = tuple(pixel_spacing_mm)
    else:
        spacing = ()
    try:
        ok = len(spacing) == 2 and all(np.isfinite(float(s)) and float(s) > 0 for s in spacing)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"pixel_spacing_mm must be a positive number s or a pair (sx, sy) in mm, got {pixel_spacing_mm!r}.")
    return float(spacing[0]), float(spacing[1])


def _percentiles(intensity_percentiles: Sequence[float]) -> tuple[float, float]:
    try:
        lower, upper = (float(p) for p in intensity_percentiles)
        ok = not isinstance(intensity_percentiles, str) and 0.0 <= lower < upper <= 100.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"intensity_percentiles must be a pair (lower, upper) with 0 <= lower < upper <= 100, got {intensity_percentiles!r}."
        )
    return lower, upper


class InPlaneSpacingd(Spacingd):
    """Resample the axial plane of ``(C, X, Y, Z)`` volumes to ``(sx, sy)`` mm, keeping the slices.

    MONAI's ``Spacingd`` with ``pixdim=(sx, sy, -1)`` (a non-positive entry keeps the file's spacing along that
    axis), so the output's voxel centres start at the input's first one, the slices are neither moved nor
    interpolated, and ``Invertd`` restores the input grid. One difference: ``Spacingd`` updates every entry
    named ``<key>_*`` as if it were a metadata dict, and MONAI Label's pre-transforms carry ``image_path``, a
    string, which made it raise ``AttributeError: 'str' object has no attribute 'update'``; here such non-dict
    entries are set aside during the call and put back unchanged.

    Args:
        keys: keys of the volumes.
        pixel_spacing_mm: ``s`` or ``(sx, sy)`` in mm (:func:`in_plane_spacing`).
        mode: interpolation per key (``bilinear`` for images, ``nearest`` for labels).
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixel_spacing_mm: float | Sequence[float],
        mode: str | Sequence[str] = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        sx, sy = in_plane_spacing(pixel_spacing_mm)
        super().__init__(
            keys, pixdim=(sx, sy, -1.0), mode=mode, padding_mode="zeros", allow_missing_keys=allow_missing_keys
        )

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys)
        aside = {k: d.pop(k) for k in list(d) if str(k).startswith(prefixes) and not isinstance(d[k], Mapping)}
        d = dict(super().__call__(d, lazy=lazy))
        d.update(aside)
        return d


def geometry_transforms(
    keys: Sequence[str],
    image_key: str,
    image_size: int | Sequence[int],
    in_plane_mode: str = "resize",
    pixel_spacing_mm: float | Sequence[float] = 0.5,
) -> list:
    """The in-plane geometry of ``(C, X, Y, Z)`` volumes oriented so that ``Z`` is the slice axis; slices are kept.

    * ``in_plane_mode="resize"`` (the paper): ``Resized`` to ``(H, W, -1)``, whatever the field of view, so the
      pixel size is ``FOV_x / H`` by ``FOV_y / W`` and varies with the acquisition;
    * ``in_plane_mode="spacing"`` (nnU-Net, TAPS): :class:`InPlaneSpacingd` to ``(sx, sy, keep)`` mm (``pixel_spacing_mm``;
      the slice spacing and the slice positions are the file's, so the slices are not interpolated), then
      ``ResizeWithPadOrCropd`` to ``(H, W, -1)``: a centred window of ``H sx`` by ``W sy`` mm, cropped where the
      field of view is larger and zero-padded where it is smaller (before normalisation, so 0 is "no signal").
      The window's centre is voxel ``N // 2`` of the resampled plane: with an odd difference the extra padded
      voxel goes at the end, the extra cropped voxel comes off the start. The pixel size is the same for every scan.

    ``image_key`` is interpolated bilinearly, every other key nearest. Both modes are invertible (``Invertd``).

    Raises:
        ValueError: naming the key, for an unknown ``in_plane_mode`` or a bad ``image_size`` / ``pixel_spacing_mm``.
    """
    height, width = in_plane_size(image_size)
    sx, sy = in_plane_spacing(pixel_spacing_mm)  # checked in both modes: a typo fails whichever mode is on
    keys = list(keys)
    modes = ["bilinear" if k == image_key else "nearest" for k in keys]
    if in_plane_mode == "resize":
        return [Resized(keys=keys, spatial_size=(height, width, -1), mode=modes)]
    if in_plane_mode == "spacing":
        return [
            InPlaneSpacingd(keys=keys, pixel_spacing_mm=(sx, sy), mode=modes),
            ResizeWithPadOrCropd(keys=keys, spatial_size=(height, width, -1), mode="constant", value=0),
        ]
    raise ValueError(f"in_plane_mode must be one of {list(IN_PLANE_MODES)}, got {in_plane_mode!r}.")


def intensity_transforms(
    image_key: str = "image",
    intensity_norm: str = "zscore",
    intensity_percentiles: Sequence[float] = (0.5, 99.5),
) -> list:
    """Per-volume, per-channel intensity normalisation of ``image_key``, as a list of MONAI transforms.

    With ``x`` the voxels of one channel and ``mu``, ``sigma`` their mean and population standard deviation:

    * ``zscore`` (the paper): ``(x - mu) / sigma`` over every voxel (``NormalizeIntensityd``);
    * ``nonzero``: ``mu``, ``sigma`` over the voxels with ``x != 0`` only; those become ``(x - mu) / sigma``,
      zeros stay 0 (``NormalizeIntensityd(nonzero=True)``, nnU-Net's and TAPS's MRI scheme): the air and the
      padding outside the field of view do not weigh on the statistics;
    * ``percentile``: ``x`` clipped to ``[q_lower, q_upper]``, its percentiles ``intensity_percentiles``
      (default 0.5 and 99.5) over every voxel (``ClipIntensityPercentilesd``, hard clipping), then ``zscore``:
      a few very bright voxels (the endorectal coil's near field) no longer inflate ``sigma``.

    A constant channel (``sigma = 0``) is only shifted to mean 0.

    Raises:
        ValueError: naming the key, for an unknown ``intensity_norm`` or bad ``intensity_percentiles``.
    """
    lower, upper = _percentiles(intensity_percentiles)  # checked for every norm: a typo fails whichever is on
    if intensity_norm == "zscore":
        return [NormalizeIntensityd(keys=image_key, nonzero=False, channel_wise=True)]
    if intensity_norm == "nonzero":
        return [NormalizeIntensityd(keys=image_key, nonzero=True, channel_wise=True)]
    if intensity_norm == "percentile":
        return [
            ClipIntensityPercentilesd(keys=image_key, lower=lower, upper=upper, channel_wise=True),
            NormalizeIntensityd(keys=image_key, nonzero=False, channel_wise=True),
        ]
    raise ValueError(f"intensity_norm must be one of {list(INTENSITY_NORMS)}, got {intensity_norm!r}.")


class MergeZonesd(MapTransform):
    """Merge zonal labels into one whole-gland label: ``out = 1`` where ``label`` is in ``zone_values``, else 0.

    Some masks of the benchmark hold value 2 (a second zone) besides 1; the literature evaluates the whole
    gland, so both become 1. Any value that is neither 0 nor one of ``zone_values`` means the file is not
    a prostate mask of this dataset and raises, naming the key, the file and the values. The output keeps
    the input's type, dtype and metadata.

    Args:
        keys: keys of the label maps.
        zone_values: the values that belong to the gland. Defaults to ``(1, 2)``.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self, keys: KeysCollection, zone_values: Sequence[int] = (1, 2), allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.zone_values = tuple(int(v) for v in zone_values)
        if not self.zone_values or 0 in self.zone_values:
            raise ValueError(f"zone_values must be non-empty and exclude 0 (background), got {zone_values!r}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            values = torch.unique(torch.as_tensor(label))
            allowed = torch.tensor((0,) + self.zone_values, dtype=values.dtype, device=values.device)
            unexpected = values[~torch.isin(values, allowed)]
            if unexpected.numel() > 0:
                shown = [int(v) if float(v).is_integer() else float(v) for v in unexpected.tolist()[:10]]
                raise ValueError(
                    f"label '{key}' of {_source_name(label)} holds values {shown}; "
                    f"expected only 0 and zone values {list(self.zone_values)}."
                )
            gland = torch.isin(torch.as_tensor(label), allowed[1:])
            if isinstance(label, np.ndarray):
                d[key] = gland.cpu().numpy().astype(label.dtype)
            else:
                d[key] = label.clone()
                d[key][...] = gland.to(label.dtype)
        return d


class RandSliceSampled(Randomizable, MapTransform, MultiSampleTrait):
    """Draw ``num_samples`` 2D slices of a channel-first 3D volume, a chosen fraction of them without foreground.

    Each draw is independent (with replacement): with probability ``background_fraction`` the slice index is
    uniform over the *background slices* (no voxel of ``label_key`` > 0), otherwise uniform over the
    *foreground slices* (at least one voxel > 0). When one of the two sets is empty every draw comes from the
    other, so a volume whose gland spans all slices yields only foreground slices and a volume with an empty
    mask yields only background slices.

    Input: a dict whose ``keys`` hold tensors of one shape ``(C, X, Y, Z)`` (``C`` may differ per key).
    Output: a list of ``num_samples`` dicts, where each key of ``keys`` holds the slice along
    ``spatial_dim`` as a :class:`monai.data.MetaTensor` ``(C, *in-plane)``; its affine is the in-plane block
    of the volume's affine with the slice's offset folded into the translation (exact when the slice axis
    is aligned with a world axis, as after ``Orientationd``), its ``applied_operations`` are empty and its
    meta keeps ``filename_or_obj``. The slices are copies, so a ``CacheDataset`` with ``copy_cache=False``
    stays intact under later in-place transforms. Other entries of the dict are shared across the outputs,
    and ``slice_key`` (unless None) holds the slice index.

    Args:
        keys: keys of the volumes to slice (image and label).
        label_key: key of the label that defines foreground slices.
        num_samples: number of slices returned per volume.
        background_fraction: probability, in [0, 1], that a draw comes from the background slices.
        spatial_dim: spatial axis to slice along (0, 1 or 2 of ``(X, Y, Z)``); 2 = axial after ``Orientationd``.
        slice_key: key that receives the slice index in each output, or None.
        allow_missing_keys: don't raise if a key of ``keys`` is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        num_samples: int = 1,
        background_fraction: float = 0.0,
        spatial_dim: int = 2,
        slice_key: str | None = "slice_index",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        if not 0.0 <= background_fraction <= 1.0:
            raise ValueError(f"background_fraction must be in [0, 1], got {background_fraction!r}.")
        if spatial_dim not in (0, 1, 2):
            raise ValueError(f"spatial_dim must be 0, 1 or 2 of (X, Y, Z), got {spatial_dim!r}.")
        self.label_key = label_key
        self.num_samples = int(num_samples)
        self.background_fraction = float(background_fraction)
        self.spatial_dim = spatial_dim
        self.slice_key = slice_key
        self._indices: list[int] = []

    def foreground_slices(self, label: torch.Tensor) -> torch.Tensor:
        """Boolean vector over the slices of ``label`` ``(C, X, Y, Z)``: True where a voxel is > 0."""
        moved = torch.as_tensor(label).movedim(self.spatial_dim + 1, 0)
        return (moved.reshape(moved.shape[0], -1) > 0).any(dim=1)

    def randomize(self, label: torch.Tensor) -> None:
        is_foreground = self.foreground_slices(label).cpu().numpy()
        foreground = np.flatnonzero(is_foreground)
        background = np.flatnonzero(~is_foreground)
        self._indices = []
        for _ in range(self.num_samples):
            from_background = self.R.random_sample() < self.background_fraction
            pool = background if (from_background and background.size) or not foreground.size else foreground
            self._indices.append(int(pool[self.R.randint(pool.size)]))

    def _slice(self, volume: torch.Tensor, index: int) -> MetaTensor:
        dim = self.spatial_dim
        plain = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
        image = plain.select(dim + 1, index).clone()
        affine = volume.affine if isinstance(volume, MetaTensor) else torch.eye(4, dtype=torch.float64)
        keep = [a for a in range(3) if a != dim]
        affine_2d = torch.eye(3, dtype=torch.float64)
        affine_2d[:2, :2] = affine[keep][:, keep]
        affine_2d[:2, 2] = affine[keep, 3] + affine[keep, dim] * index
        meta = {"filename_or_obj": _source_name(volume) if isinstance(volume, MetaTensor) else ""}
        return MetaTensor(image, affine=affine_2d, meta=meta)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"label key '{self.label_key}' not in data (keys: {sorted(map(str, d))}).")
        label = d[self.label_key]
        if label.ndim != 4:
            raise ValueError(
                f"'{self.label_key}' of {_source_name(label)} must be channel-first 3D (C, X, Y, Z), "
                f"got shape {tuple(label.shape)}."
            )
        for key in self.key_iterator(d):
            if d[key].ndim != 4 or tuple(d[key].shape[1:]) != tuple(label.shape[1:]):
                raise ValueError(
                    f"'{key}' of {_source_name(d[key])} has shape {tuple(d[key].shape)}; expected (C, "
                    f"{', '.join(map(str, label.shape[1:]))}) like '{self.label_key}'."
                )
        self.randomize(label)
        samples = []
        for index in self._indices:
            sample = dict(d)
            for key in self.key_iterator(d):
                sample[key] = self._slice(d[key], index)
            if self.slice_key is not None:
                sample[self.slice_key] = index
            samples.append(sample)
        return samples


def _label_keys(keys: Sequence[str], image_key: str) -> list[str]:
    return [k for k in keys if k != image_key]


def preprocessing_transforms(
    image_size: int | Sequence[int],
    keys: Sequence[str] = ("image", "label"),
    image_key: str = "image",
    label_key: str | None = "label",
    axcodes: str = "RAS",
    reader: str | None = None,
    zone_values: Sequence[int] = (1, 2),
    original_geometry_keys: Sequence[str] = (),
    in_plane_mode: str = "resize",
    pixel_spacing_mm: float | Sequence[float] = 0.5,
    intensity_norm: str = "zscore",
    intensity_percentiles: Sequence[float] = (0.5, 99.5),
) -> Compose:
    """Deterministic 3D preprocessing, identical for every epoch and therefore cacheable.

    ``LoadImaged`` (channel first, float32; metadata in the MetaTensor) -> ``MergeZonesd`` on ``label_key``
    -> ``Orientationd(axcodes)`` -> the in-plane geometry of :func:`geometry_transforms` (``in_plane_mode``:
    ``Resized`` to ``(H, W, -1)``, or ``InPlaneSpacingd`` to ``pixel_spacing_mm`` then ``ResizeWithPadOrCropd`` to
    ``(H, W, -1)``; the slices are kept; bilinear for ``image_key``, nearest for every other key) -> the
    normalisation of :func:`intensity_transforms` on ``image_key`` (``intensity_norm``: z-score over the
    volume, over its nonzero voxels, or after clipping to ``intensity_percentiles``) -> ``EnsureTyped``.
    Keys in ``original_geometry_keys`` are loaded (and merged) but skip orientation and resize: that is
    how evaluation keeps the reference mask in the geometry of the file
    (:func:`tools.data.evaluation.evaluation_preprocessing`).

    Normalisation comes after the geometry so that the network's input is exactly zero-mean, unit-std per
    volume (the statistics are those of the voxels the network sees, the zero padding of ``spacing`` included
    unless ``intensity_norm="nonzero"``).

    Args:
        image_size: in-plane size ``S`` (square, 384 in the paper) or ``(H, W)``.
        keys: keys of all volumes to load and transform; must contain ``image_key``.
        image_key: the MR image.
        label_key: the mask whose zone values are merged, or None (inference without labels).
        axcodes: orientation of the output volume; ``"RAS"`` puts the axial slices along the last axis.
        reader: MONAI image reader name, or None for MONAI's choice by file suffix (NIfTI with nibabel,
            MetaImage ``.mha``/``.mhd`` with ITK; both give the array in (x, y, z) order with a RAS affine).
        zone_values: label values merged into the gland (see :class:`MergeZonesd`).
        original_geometry_keys: keys of ``keys`` left in the file's geometry (not ``image_key``).
        in_plane_mode, pixel_spacing_mm: see :func:`geometry_transforms`.
        intensity_norm, intensity_percentiles: see :func:`intensity_transforms`.

    Raises:
        ValueError: naming the argument (the bundle config key of the same name) for a bad value.
    """
    keys = list(keys)
    if image_key not in keys:
        raise ValueError(f"image_key '{image_key}' must be one of keys {keys}.")
    if label_key is not None and label_key not in keys:
        raise ValueError(f"label_key '{label_key}' must be one of keys {keys} (or None).")
    unknown = [k for k in original_geometry_keys if k not in keys or k == image_key]
    if unknown:
        raise ValueError(f"original_geometry_keys {unknown} must be keys of {keys} other than '{image_key}'.")
    spatial_keys = [k for k in keys if k not in original_geometry_keys]
    transforms: list = [LoadImaged(keys=keys, reader=reader, image_only=True, ensure_channel_first=True)]
    if label_key is not None:
        transforms.append(MergeZonesd(keys=label_key, zone_values=zone_values))
    geometry = geometry_transforms(spatial_keys, image_key, image_size, in_plane_mode, pixel_spacing_mm)
    intensity = intensity_transforms(image_key, intensity_norm, intensity_percentiles)
    transforms += [
        Orientationd(keys=spatial_keys, axcodes=axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        *geometry,
        *intensity,
        EnsureTyped(keys=keys, dtype=torch.float32),
    ]
    return Compose(transforms)


def augmentation_transforms(
    keys: Sequence[str] = ("image", "label"),
    image_key: str = "image",
    rotate_degrees: float = 15.0,
    scale_range: float = 0.1,
    affine_prob: float = 0.5,
    flip_prob: float = 0.5,
    noise_prob: float = 0.15,
    noise_std: float = 0.1,
    smooth_prob: float = 0.1,
    smooth_sigma: Sequence[float] = (0.5, 1.0),
    intensity_scale_prob: float = 0.15,
    intensity_scale: float = 0.1,
    contrast_prob: float = 0.15,
    contrast_gamma: Sequence[float] = (0.7, 1.5),
) -> list:
    """Modest 2D augmentation of ``(C, X, Y)`` slices, as a list of MONAI transforms.

    Spatial (all ``keys``; image bilinear with border padding, labels nearest with zero padding):
    ``RandAffined`` rotation in ``[-rotate_degrees, rotate_degrees]`` and isotropic-range scaling by
    ``1 + U(-scale_range, scale_range)`` per axis with probability ``affine_prob``; ``RandFlipd`` along X
    (left-right after ``Orientationd("RAS")``) with probability ``flip_prob``.
    Intensity (``image_key`` only, on z-scored values): ``RandGaussianNoised(std=noise_std)``,
    ``RandGaussianSmoothd(sigma in smooth_sigma)``, ``RandScaleIntensityd`` by ``1 + U(-s, s)``,
    ``RandAdjustContrastd(gamma in contrast_gamma)``, each with its own probability. A probability of 0
    disables that transform.
    """
    keys = list(keys)
    label_keys = _label_keys(keys, image_key)
    image_first = [image_key, *label_keys]
    return [
        RandAffined(
            keys=image_first,
            prob=affine_prob,
            rotate_range=(float(np.deg2rad(rotate_degrees)),),
            scale_range=(scale_range, scale_range),
            mode=["bilinear"] + ["nearest"] * len(label_keys),
            padding_mode=["border"] + ["zeros"] * len(label_keys),
        ),
        RandFlipd(keys=keys, prob=flip_prob, spatial_axis=0),
        RandGaussianNoised(keys=image_key, prob=noise_prob, mean=0.0, std=noise_std),
        RandGaussianSmoothd(
            keys=image_key, prob=smooth_prob, sigma_x=tuple(smooth_sigma), sigma_y=tuple(smooth_sigma)
        ),
        RandScaleIntensityd(keys=image_key, prob=intensity_scale_prob, factors=intensity_scale),
        RandAdjustContrastd(keys=image_key, prob=contrast_prob, gamma=tuple(contrast_gamma)),
    ]


def appearance_randomization_transforms(
    image_key: str = "image",
    bias_field_prob: float = 0.3,
    bias_field_coeff: Sequence[float] = (0.0, 0.3),
    remap_prob: float = 0.3,
    remap_control_points: Sequence[int] = (5, 15),
    gamma_prob: float = 0.3,
    gamma: Sequence[float] = (0.5, 2.0),
    low_resolution_prob: float = 0.25,
    low_resolution_zoom: Sequence[float] = (0.5, 1.0),
) -> list:
    """Strong random changes of a 2D slice's appearance (``image_key`` only), for scanners the training sites lack.

    Each with its own probability, in this order:

    * ``RandBiasFieldd``: multiplication by ``exp(p(x, y))``, ``p`` a random polynomial of degree 3 with
      coefficients in ``bias_field_coeff`` (a smooth receive-coil profile, as SynthSeg draws one per image);
    * ``RandHistogramShiftd``: a random monotone piecewise-linear intensity map with ``remap_control_points``
      control points (tissue contrasts change, their order does not; BigAug's random intensity transforms);
    * ``RandAdjustContrastd``: ``((x - min) / range) ** g * range + min``, ``g`` in ``gamma`` (wider than the
      modest augmentation's);
    * ``RandSimulateLowResolutiond``: nearest-neighbour down-sampling by a factor in ``low_resolution_zoom``
      and bilinear up-sampling back (nnU-Net's low-resolution simulation: coarser scanners and thicker
      partial volumes).

    The defaults are fixed from published practice, not tuned (docs/realism.md, round 4). The labels are not
    touched: every transform here keeps the geometry. A probability of 0 disables that transform.
    """
    return [
        RandBiasFieldd(keys=image_key, prob=bias_field_prob, degree=3, coeff_range=tuple(bias_field_coeff)),
        RandHistogramShiftd(keys=image_key, prob=remap_prob, num_control_points=tuple(remap_control_points)),
        RandAdjustContrastd(keys=image_key, prob=gamma_prob, gamma=tuple(gamma)),
        RandSimulateLowResolutiond(
            keys=image_key, prob=low_resolution_prob, zoom_range=tuple(low_resolution_zoom),
            downsample_mode="nearest", upsample_mode="bilinear",
        ),
    ]


def training_random_transforms(
    num_samples: int = 8,
    background_fraction: float = 0.1,
    keys: Sequence[str] = ("image", "label"),
    image_key: str = "image",
    label_key: str = "label",
    augment: bool = True,
    appearance_randomization: bool = False,
    gin_ipa_prob: float = 0.0,
    **augmentation: Any,
) -> Compose:
    """The random 2D part of training: :class:`RandSliceSampled`, augmentation if ``augment``, the
    :func:`appearance_randomization_transforms` if ``appearance_randomization``, GIN-IPA
    (:class:`tools.data.gin_ipa.RandGinIpad`, the reference's settings) on a slice with probability
    ``gin_ipa_prob`` if it is above 0, ``EnsureTyped``.

    ``augmentation`` holds keyword arguments of :func:`augmentation_transforms` (probabilities, ranges).
    """
    transforms: list = [
        RandSliceSampled(
            keys=list(keys), label_key=label_key, num_samples=num_samples, background_fraction=background_fraction
        )
    ]
    if augment:
        transforms += augmentation_transforms(keys=keys, image_key=image_key, **augmentation)
    elif augmentation:
        raise ValueError(f"augmentation options {sorted(augmentation)} given with augment=False.")
    if appearance_randomization:
        transforms += appearance_randomization_transforms(image_key=image_key)
    if gin_ipa_prob:
        transforms.append(RandGinIpad(keys=image_key, prob=gin_ipa_prob))
    transforms.append(EnsureTyped(keys=list(keys), dtype=torch.float32))
    return Compose(transforms)


def training_transforms(
    image_size: int | Sequence[int],
    num_samples: int = 8,
    background_fraction: float = 0.1,
    keys: Sequence[str] = ("image", "label"),
    image_key: str = "image",
    label_key: str = "label",
    augment: bool = True,
    axcodes: str = "RAS",
    reader: str | None = None,
    in_plane_mode: str = "resize",
    pixel_spacing_mm: float | Sequence[float] = 0.5,
    intensity_norm: str = "zscore",
    intensity_percentiles: Sequence[float] = (0.5, 99.5),
    appearance_randomization: bool = False,
    gin_ipa_prob: float = 0.0,
    **augmentation: Any,
) -> Compose:
    """Full training chain, flat: :func:`preprocessing_transforms` then :func:`training_random_transforms`.

    Per datalist entry ``{"image": path, "label": path, ...}`` it returns ``num_samples`` dicts with
    ``image`` ``(1, H, W)`` z-scored float32 and ``label`` ``(1, H, W)`` in {0, 1}. With ``CacheDataset``
    everything up to :class:`RandSliceSampled` is cached (use ``collate_fn=list_data_collate``).

    Args:
        image_size: in-plane size ``S`` or ``(H, W)``.
        num_samples: slices per volume per epoch.
        background_fraction: probability that a slice is drawn among those without prostate.
        keys, image_key, label_key: data keys.
        augment: apply :func:`augmentation_transforms`.
        appearance_randomization: then apply :func:`appearance_randomization_transforms`.
        gin_ipa_prob: then replace a slice by a GIN-IPA blend with this probability (0: never).
        axcodes, reader, in_plane_mode, pixel_spacing_mm, intensity_norm, intensity_percentiles: see
            :func:`preprocessing_transforms`.
        augmentation: keyword arguments of :func:`augmentation_transforms`.
    """
    deterministic = preprocessing_transforms(
        image_size,
        keys=keys,
        image_key=image_key,
        label_key=label_key,
        axcodes=axcodes,
        reader=reader,
        in_plane_mode=in_plane_mode,
        pixel_spacing_mm=pixel_spacing_mm,
        intensity_norm=intensity_norm,
        intensity_percentiles=intensity_percentiles,
    )
    random = training_random_transforms(
        num_samples=num_samples,
        background_fraction=background_fraction,
        keys=keys,
        image_key=image_key,
        label_key=label_key,
        augment=augment,
        appearance_randomization=appearance_randomization,
        gin_ipa_prob=gin_ipa_prob,
        **augmentation,
    )
    return Compose([*deterministic.transforms, *random.transforms])
