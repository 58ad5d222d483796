"""tools/data/inference.py: each inference input is read once and checked in memory; refused files are skipped."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import tools.data.inference as inference
from tools.bundles import exit_if_inputs_failed, inference_datalist
from tools.data.evaluation import evaluation_preprocessing
from tools.data.inference import InferenceDataset, volume_problem


def test_volume_problem():
    good = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert volume_problem(good) is None
    assert "expected one 3D volume" in volume_problem(torch.zeros(1, 4, 4))
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert volume_problem(nan) == "1 of 24 voxels are NaN or inf (as read)"
    assert volume_problem(torch.full((1, 2, 2, 2), 7.0)) == "constant volume (every voxel is 7): nothing to segment"


def test_each_file_is_read_once_and_bad_files_are_skipped(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    good = tmp_path / "a_good.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((12, 10, 4)).astype(np.float32), np.eye(4)), str(good))
    nan = rng.random((12, 10, 4)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(tmp_path / "b_nan.nii.gz"))
    (tmp_path / "c_truncated.nii.gz").write_bytes(good.read_bytes()[:200])

    datalist = inference_datalist(str(tmp_path), check=False)
    assert [e["image"].rsplit("/", 1)[1] for e in datalist] == ["a_good.nii.gz", "b_nan.nii.gz", "c_truncated.nii.gz"]
    checked = []
    original = inference.check_inference_image
    monkeypatch.setattr(inference, "check_inference_image", lambda path: checked.append(path) or original(path))
    dataset = InferenceDataset(datalist, evaluation_preprocessing(8, label_key=None))
    items = list(dataset)
    assert len(items) == 1 and items[0]["image"].shape == (1, 8, 8, 4)
    # the good file was read once, by LoadImaged; only the refused files are read again, for their messages
    assert [p.rsplit("/", 1)[1] for p in checked] == ["b_nan.nii.gz", "c_truncated.nii.gz"]
    assert datalist.segmented == 1 and len(datalist.failed) == 2
    assert datalist.failed[0] == f"{tmp_path / 'b_nan.nii.gz'}: 1 of 480 voxels are NaN or inf"
    assert datalist.failed[1].startswith(f"{tmp_path / 'c_truncated.nii.gz'}: ")
    with pytest.raises(SystemExit):
        exit_if_inputs_failed(datalist)
    with pytest.raises(TypeError, match="failed"):
        InferenceDataset([{"image": str(good)}], evaluation_preprocessing(8, label_key=None))
