"""Safe inference (issue 11): bad inputs are refused naming the file, a folder run segments every good file and
exits non-zero listing the others, and each mask gets a JSON quality report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from tools.data.quality import mask_quality
from tools.data.verify import check_inference_image

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "prostate_mri_enet_student"


def write_bad_inputs(folder: Path, real_case: Path) -> dict:
    """One good copy of the real case and one file of each kind of bad input; ``{name: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.nii.gz" for name in ("good", "truncated", "flat2d", "nan", "constant")}
    shutil.copy2(real_case, paths["good"])
    raw = real_case.read_bytes()
    paths["truncated"].write_bytes(raw[: len(raw) // 2])
    nib.save(nib.Nifti1Image(np.zeros((64, 64), np.float32), np.eye(4)), str(paths["flat2d"]))
    nan = np.ones((16, 16, 4), np.float32)
    nan[3, 4, 1] = np.nan
    nan[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(paths["nan"]))
    nib.save(nib.Nifti1Image(np.full((16, 16, 4), 7, np.int16), np.eye(4)), str(paths["constant"]))
    return paths


def test_check_inference_image_names_the_file_and_the_problem(tmp_path, real_case_dir):
    paths = write_bad_inputs(tmp_path, real_case_dir / "Case00.nii.gz")
    assert check_inference_image(paths["good"]) == []
    assert check_inference_image(paths["truncated"])[0].startswith(f"{paths['truncated']}: cannot read NIfTI data")
    assert check_inference_image(paths["flat2d"]) == [f"{paths['flat2d']}: expected a 3D volume, got shape (64, 64) (2D)"]
    assert check_inference_image(paths["nan"]) == [f"{paths['nan']}: 2 of 1024 voxels are NaN or inf"]
    assert check_inference_image(paths["constant"]) == [
        f"{paths['constant']}: constant volume (every voxel is 7): nothing to segment"]
    assert check_inference_image(tmp_path / "missing.nii.gz") == [f"{tmp_path / 'missing.nii.gz'}: no such file"]


def test_mask_quality_on_known_masks():
    affine = np.diag([0.5, 0.5, 2.0, 1.0])  # 0.5 mm^3 voxels
    mask = np.zeros((60, 60, 20), bool)
    mask[10:50, 10:50, 5:15] = True  # 40 x 40 x 10 voxels = 8 mL, away from the border
    report = mask_quality(mask, affine)
    assert report["volume_ml"] == pytest.approx(8.0) and report["components"] == 1
    assert not report["touches_border"] and report["occupied_slices"] == [5, 14] and report["slice_axis"] == 2
    assert report["implausible"] and report["reasons"] == ["volume 8.0 mL outside 10-150 mL"]
    assert mask_quality(mask, affine, volume_range_ml=(5, 150))["implausible"] is False

    mask[10:50, 10:50, 9] = False  # an empty slice inside the gland
    mask[0:3, 20:24, 12] = True  # a second blob on the volume's border, in slice 12
    report = mask_quality(mask, affine, raw_components=5, volume_range_ml=(5, 150))
    assert report["components"] == 5 and report["touches_border"]
    assert report["slices_with_several_components"] == [12] and report["slice_gaps"] == [9]
    assert report["reasons"] == ["5 connected components before the largest was kept", "touches the volume border",
                                 "1 slice(s) with more than one component", "1 empty slice(s) inside the gland's extent"]
    lps_like = np.array([[0, -0.5, 0, 0], [0, 0, -0.5, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])  # axis 0 runs along S
    assert mask_quality(np.zeros((4, 5, 6), bool), lps_like)["slice_axis"] == 0
    assert mask_quality(np.zeros((4, 5, 6), bool), lps_like)["reasons"] == ["empty mask"]


@pytest.fixture(scope="module")
def student_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle") / BUNDLE.name
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "logs", "eval", "runs"))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.yaml"))
    torch.manual_seed(0)
    (root / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def", instantiate=True).state_dict(), root / "models" / "model.pt")
    return root


def run_inference(root: Path, input_path: Path, output_dir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(root / "configs" / "inference.yaml"),
               "--bundle_root", str(root), "--input", str(input_path), "--output_dir", str(output_dir),
               "--image_size", "64"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_a_bad_file_is_refused_in_one_line_with_no_mask(student_root, tmp_path, real_case_dir):
    paths = write_bad_inputs(tmp_path / "in", real_case_dir / "Case00.nii.gz")
    result = run_inference(student_root, paths["nan"], tmp_path / "out")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"{paths['nan']}: 2 of 1024 voxels are NaN or inf"
    assert not (tmp_path / "out").exists()


def test_a_folder_run_segments_the_good_files_and_lists_the_others(student_root, tmp_path, real_case_dir):
    paths = write_bad_inputs(tmp_path / "in", real_case_dir / "Case00.nii.gz")
    result = run_inference(student_root, tmp_path / "in", tmp_path / "out")
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-5] == "4 input problem(s); the other files were segmented:"
    assert [line.split(":")[0] for line in lines[-4:]] == [str(paths[n]) for n in ("constant", "flat2d", "nan", "truncated")]
    assert sorted(os.listdir(tmp_path / "out")) == ["good_seg.json", "good_seg.nii.gz"]
    mask = nib.load(str(tmp_path / "out" / "good_seg.nii.gz"))
    source = nib.load(str(paths["good"]))
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    report = json.loads((tmp_path / "out" / "good_seg.json").read_text())
    expected = mask_quality(np.asarray(mask.dataobj) > 0, mask.affine, raw_components=report["components"])
    assert report == {"image": str(paths["good"]), **expected}
