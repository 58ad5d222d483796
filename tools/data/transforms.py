"""MONAI transforms for training 2D networks on axial slices of 3D prostate MRI volumes.

The training chain has two parts (DESIGN.md section 2):

* a deterministic 3D preprocessing, cacheable by :class:`monai.data.CacheDataset`:
  ``LoadImaged -> MergeZonesd -> Orientationd -> Resized (S, S, -1) -> NormalizeIntensityd -> EnsureTyped``;
* a random 2D part: :class:`RandSliceSampled` draws ``num_samples`` axial slices of the cached volume,
  then a modest 2D augmentation and ``EnsureTyped``.

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
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandScaleIntensityd,
    Resized,
)
from monai.transforms.traits import MultiSampleTrait

__all__ = [
    "MergeZonesd",
    "RandSliceSampled",
    "in_plane_size",
    "preprocessing_transforms",
    "augmentation_transforms",
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
) -> Compose:
    """Deterministic 3D preprocessing, identical for every epoch and therefore cacheable.

    ``LoadImaged`` (channel first, float32; metadata in the MetaTensor) -> ``MergeZonesd`` on ``label_key``
    -> ``Orientationd(axcodes)`` -> ``Resized`` to ``(H, W, -1)`` (``-1``: the number of slices is kept;
    bilinear for ``image_key``, nearest for every other key) -> ``NormalizeIntensityd`` on ``image_key``:
    ``(x - mean(x)) / std(x)`` over the whole resized volume of each channel -> ``EnsureTyped``.
    Keys in ``original_geometry_keys`` are loaded (and merged) but skip orientation and resize: that is
    how evaluation keeps the reference mask in the geometry of the file
    (:func:`tools.data.evaluation.evaluation_preprocessing`).

    Normalisation comes after the resize so that the network's input is exactly zero-mean, unit-std per
    volume (resizing first makes the statistics those of the voxels the network sees).

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
    """
    height, width = in_plane_size(image_size)
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
    transforms += [
        Orientationd(keys=spatial_keys, axcodes=axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Resized(
            keys=spatial_keys,
            spatial_size=(height, width, -1),
            mode=["bilinear" if k == image_key else "nearest" for k in spatial_keys],
        ),
        NormalizeIntensityd(keys=image_key, nonzero=False, channel_wise=True),
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


def training_random_transforms(
    num_samples: int = 8,
    background_fraction: float = 0.1,
    keys: Sequence[str] = ("image", "label"),
    image_key: str = "image",
    label_key: str = "label",
    augment: bool = True,
    **augmentation: Any,
) -> Compose:
    """The random 2D part of training: :class:`RandSliceSampled`, augmentation if ``augment``, ``EnsureTyped``.

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
        axcodes, reader: see :func:`preprocessing_transforms`.
        augmentation: keyword arguments of :func:`augmentation_transforms`.
    """
    deterministic = preprocessing_transforms(
        image_size, keys=keys, image_key=image_key, label_key=label_key, axcodes=axcodes, reader=reader
    )
    random = training_random_transforms(
        num_samples=num_samples,
        background_fraction=background_fraction,
        keys=keys,
        image_key=image_key,
        label_key=label_key,
        augment=augment,
        **augmentation,
    )
    return Compose([*deterministic.transforms, *random.transforms])
