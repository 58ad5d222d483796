"""Inference inputs read once: an iterable dataset that checks each volume in memory as it reads it.

The bundles' ``inference.yaml`` lists the input files (:func:`tools.bundles.inference_datalist` with
``check=False``) and reads them through :class:`InferenceDataset`: the checks of
:func:`tools.data.verify.check_inference_image` (readable, one 3D volume, not empty, finite, not constant) run on the
array that the preprocessing's ``LoadImaged`` has just read, instead of on a first reading of every file before
the run. A refused file is skipped and its problem recorded; the others are segmented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, Iterator, Optional

import torch
from monai.transforms import Compose, LoadImaged
from torch.utils.data import IterableDataset

from tools.data.verify import check_inference_image

__all__ = ["InferenceDataset", "volume_problem"]


def volume_problem(image: Any) -> Optional[str]:
    """Why a loaded channel-first volume ``(1, X, Y, Z)`` is unfit for inference, or ``None`` when it is fit."""
    array = torch.as_tensor(image)
    if array.ndim != 4 or array.shape[0] != 1:
        return f"expected one 3D volume, read shape {tuple(array.shape)} (channel first)"
    if array.numel() == 0:
        return f"empty volume (shape {tuple(array.shape[1:])})"
    if array.is_floating_point():
        finite = torch.isfinite(array)
        if not bool(finite.all()):
            return f"{int((~finite).sum())} of {array.numel()} voxels are NaN or inf (as read)"
    low, high = torch.aminmax(array)
    if float(low) == float(high):
        return f"constant volume (every voxel is {float(low):g}): nothing to segment"
    return None


class InferenceDataset(IterableDataset):
    """The files of ``data`` (``[{"image": path}, ...]``), each read once, checked, then preprocessed.

    ``transform`` is the bundle's preprocessing, a ``Compose`` whose first transform reads the file
    (``LoadImaged``). For each entry, that transform runs alone, the volume it read is checked in memory
    (:func:`volume_problem`), and the other transforms run. A file that cannot be read or fails a check is skipped
    and its problem appended to ``data.failed`` (the lines of :func:`tools.data.verify.check_inference_image`, which
    reads that file again, so that the messages are those of the up-front check); ``data.segmented`` counts the
    files handed on. When the first transform is not a ``LoadImaged``, each file is checked by
    ``check_inference_image`` before the whole chain runs (then it is read twice).

    ``data.failed`` fills as the data loader iterates: read it in the same process (``num_workers=0``).
    """

    def __init__(self, data: Sequence[Mapping], transform: Callable, image_key: str = "image") -> None:
        super().__init__()
        self.data = data
        self.transform = transform
        self.image_key = image_key
        if not hasattr(data, "failed"):
            raise TypeError("InferenceDataset needs a datalist with a `failed` list (tools.bundles.inference_datalist).")

    def _reads_first(self) -> bool:
        transforms = getattr(self.transform, "transforms", ())
        return isinstance(self.transform, Compose) and bool(transforms) and isinstance(transforms[0], LoadImaged)

    def _refuse(self, path: str, detail: str) -> None:
        self.data.failed.extend(check_inference_image(path) or [f"{path}: {detail}"])

    def _prepare(self, entry: Mapping) -> Optional[dict]:
        path = str(entry[self.image_key])
        if not self._reads_first():
            problems = check_inference_image(path)
            if problems:
                self.data.failed.extend(problems)
                return None
            return self.transform(dict(entry))
        try:
            loaded = self.transform(dict(entry), end=1)
        except Exception as error:  # unreadable, truncated, unknown format
            self._refuse(path, f"cannot read ({type(error).__name__}: {error})")
            return None
        problem = volume_problem(loaded[self.image_key])
        if problem:
            self._refuse(path, problem)
            return None
        return self.transform(loaded, start=1)

    def __iter__(self) -> Iterator[dict]:
        for entry in self.data:
            item = self._prepare(entry)
            if item is not None:
                self.data.segmented = getattr(self.data, "segmented", 0) + 1
                yield item
