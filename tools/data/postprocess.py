"""Fast post-processing of a 3D prediction: class scores -> label map -> largest connected component.

The two transforms give, voxel for voxel, what MONAI's ``AsDiscreted(argmax=True)`` and
``KeepLargestConnectedComponentd(applied_labels=[label], is_onehot=False)`` give, in tens of milliseconds on a
384 x 384 x 30 volume instead of about a second:

* :class:`Argmaxd`: ``torch.argmax`` over the leading (channel) dimension of a ``(2, X, Y, Z)`` tensor takes
  0.6 s on one CPU thread (a strided reduction over two values per voxel); comparing the channels takes 3 ms.
  Ties go to the lower class, as with ``torch.argmax``. The labels are ``uint8`` (``AsDiscreted``: float32).
* :class:`KeepLargestComponentd`: one ``skimage.measure.label`` of the label's ``bool`` mask (MONAI's own labelling
  and its choice of the largest component), which also gives the number of components before the largest is
  kept (``<key>_components``, read by :class:`tools.data.quality.MaskQualityReportd`): one labelling instead of
  the two of ``CountComponentsd`` + ``KeepLargestConnectedComponentd``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["Argmaxd", "KeepLargestComponentd", "largest_component"]


def _channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """``torch.argmax(scores, dim=0, keepdim=True)`` as ``uint8``, by comparing the channels one after another."""
    if scores.shape[0] > 255:
        raise ValueError(f"Argmaxd writes uint8 labels: at most 255 classes, got {scores.shape[0]} channels.")
    if scores.shape[0] == 2:
        return (scores[1:2] > scores[0:1]).to(torch.uint8)
    labels = torch.zeros_like(scores[0:1], dtype=torch.uint8)
    best = scores[0:1].clone()
    for index in range(1, scores.shape[0]):
        better = scores[index : index + 1] > best  # strict: ties keep the lower class, as torch.argmax
        labels[better] = index
        best = torch.where(better, scores[index : index + 1], best)
    return labels


class Argmaxd(MapTransform):
    """Channel-first class scores ``(C, *spatial)`` -> labels ``(1, *spatial)`` of ``dtype``, the argmax over ``C``.

    Equal to ``AsDiscreted(argmax=True)`` up to the dtype (``AsDiscreted``: float32; ties: the lower class), for
    finite scores. The metadata of a ``MetaTensor`` is kept.

    Raises:
        ValueError: a score tensor with fewer than 2 dimensions or more than 255 channels (the message names the key).
    """

    def __init__(self, keys: KeysCollection, dtype: torch.dtype = torch.uint8, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scores = d[key]
            if not isinstance(scores, torch.Tensor):
                scores = torch.as_tensor(np.asarray(scores))
            if scores.ndim < 2:
                raise ValueError(f"Argmaxd: '{key}' must be channel-first (C, *spatial), got shape {tuple(scores.shape)}.")
            plain = scores.as_tensor() if isinstance(scores, MetaTensor) else scores
            labels = _channel_argmax(plain).to(self.dtype)
            d[key] = MetaTensor(labels, meta=scores.meta, applied_operations=scores.applied_operations) if isinstance(
                scores, MetaTensor) else labels
        return d


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box of ``mask`` holding all its ``True`` voxels (``mask`` must have one)."""
    box = []
    for axis in range(mask.ndim):
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
    return tuple(box)


def largest_component(mask: np.ndarray, connectivity: int | None = None) -> tuple[np.ndarray, int]:
    """``(kept, n)``: the largest connected component of the boolean ``mask`` and the number ``n`` of components.

    Labelling and choice are MONAI's ``get_largest_connected_component_mask`` (``skimage.measure.label`` with
    ``connectivity``, ``None``: full, i.e. 26 neighbours in 3D; the largest by ``argsort`` of the sizes). The
    labelling runs on the bounding box of the mask only; a translation keeps the raster order of the components,
    so their numbers, and the choice among components of equal size, are those of the whole volume.
    """
    from skimage import measure

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask, 0
    box = _bounding_box(mask)
    labels, count = measure.label(mask[box], connectivity=connectivity, return_num=True)
    if count <= 1:
        return mask, int(count)
    sizes = np.bincount(labels.reshape(-1))
    sizes[0] = 0
    keep = np.zeros(sizes.shape[0], dtype=bool)
    keep[np.argsort(sizes)[::-1][:1]] = True
    kept = np.zeros_like(mask)
    kept[box] = keep[labels]
    return kept, int(count)


class KeepLargestComponentd(MapTransform):
    """Keep the largest connected component of ``label`` in a label map ``(1, *spatial)``; other labels untouched.

    Equal to ``KeepLargestConnectedComponentd(applied_labels=[label], is_onehot=False, connectivity=...)``. With
    ``count_key`` (default ``"{key}_components"``; ``None``: not stored), the number of components of ``label``
    before the largest was kept goes to ``data[count_key.format(key=key)]``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label: int = 1,
        connectivity: int | None = None,
        count_key: str | None = "{key}_components",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label = label
        self.connectivity = connectivity
        self.count_key = count_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if value.ndim < 2 or value.shape[0] != 1:
                raise ValueError(f"KeepLargestComponentd: '{key}' must be a label map (1, *spatial), got shape "
                                 f"{tuple(value.shape)}.")
            plain = value.as_tensor() if isinstance(value, MetaTensor) else value
            array = plain.cpu().numpy() if isinstance(plain, torch.Tensor) else np.asarray(plain)
            foreground = array[0] == self.label
            kept, count = largest_component(foreground, self.connectivity)
            if count > 1:
                array = array.copy()
                array[0][foreground & ~kept] = 0
                result = torch.as_tensor(array) if isinstance(plain, torch.Tensor) else array
                d[key] = MetaTensor(result, meta=value.meta, applied_operations=value.applied_operations) if isinstance(
                    value, MetaTensor) else result
            if self.count_key is not None:
                d[self.count_key.format(key=key)] = count
        return d
