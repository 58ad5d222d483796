"""tools/data/postprocess.py: the fast argmax and largest component give MONAI's masks voxel for voxel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, KeepLargestConnectedComponentd
from scipy import ndimage

from tools.data.postprocess import Argmaxd, KeepLargestComponentd, largest_component


def blobs(shape=(40, 36, 12), seed=0) -> np.ndarray:
    """Smoothed noise thresholded into many components of different sizes, plus single voxels."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    return field > 0.08


@pytest.mark.parametrize("channels", [2, 3])
def test_argmax_equals_monai_including_ties(channels):
    scores = torch.randn(channels, 20, 16, 6, generator=torch.Generator().manual_seed(channels))
    scores[:, :5] = 0.25  # exact ties over all channels: the lower class, as torch.argmax
    scores[1, 5:8] = scores[0, 5:8]  # ties between the first two
    scores = MetaTensor(scores, affine=torch.diag(torch.tensor([0.5, 0.5, 3.0, 1.0])), meta={"filename_or_obj": "a.nii.gz"})
    expected = AsDiscreted(keys="pred", argmax=True)({"pred": scores})["pred"]
    got = Argmaxd(keys="pred")({"pred": scores})["pred"]
    assert got.dtype == torch.uint8 and got.shape == (1, 20, 16, 6)
    assert torch.equal(got.as_tensor().long(), expected.as_tensor().long())
    assert isinstance(got, MetaTensor) and got.meta["filename_or_obj"] == "a.nii.gz"
    assert torch.equal(got.affine, scores.affine)
    with pytest.raises(ValueError, match="'pred' must be channel-first"):
        Argmaxd(keys="pred")({"pred": torch.zeros(5)})


@pytest.mark.parametrize("connectivity", [None, 1])
def test_largest_component_equals_monai(connectivity):
    mask = blobs()
    labels = mask.astype(np.uint8)
    labels[0, 0, 0] = 2  # another label is left as it is

    def data():  # MONAI's transform writes into its input
        return {"pred": MetaTensor(torch.as_tensor(labels[None].copy()), meta={"filename_or_obj": "b.nii.gz"})}

    expected = KeepLargestConnectedComponentd(keys="pred", applied_labels=[1], is_onehot=False, connectivity=connectivity)(
        data())["pred"]
    got = KeepLargestComponentd(keys="pred", label=1, connectivity=connectivity)(data())
    assert torch.equal(got["pred"].as_tensor(), expected.as_tensor())
    structure = ndimage.generate_binary_structure(3, 3 if connectivity is None else connectivity)
    count = ndimage.label(labels == 1, structure=structure)[1]
    assert got["pred_components"] == count and count > 5
    assert got["pred"].meta["filename_or_obj"] == "b.nii.gz"


def test_largest_component_of_one_or_no_component():
    empty = np.zeros((4, 5, 6), bool)
    kept, count = largest_component(empty)
    assert count == 0 and not kept.any()
    one = empty.copy()
    one[1:3, 1:3, 1:3] = True
    kept, count = largest_component(one)
    assert count == 1 and np.array_equal(kept, one)
    out = KeepLargestComponentd(keys="pred", count_key=None)({"pred": torch.as_tensor(one[None].astype(np.uint8))})
    assert "pred_components" not in out and torch.equal(out["pred"], torch.as_tensor(one[None].astype(np.uint8)))
    with pytest.raises(ValueError, match="'pred' must be a label map"):
        KeepLargestComponentd(keys="pred")({"pred": torch.zeros(2, 4, 4, 4)})
