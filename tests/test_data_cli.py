"""``python -m tools.data``: commands run as subprocesses, on tiny NIfTI datasets written here.

Checked: exit codes, one line per problem on stderr naming the file, no traceback, and no output
file (not even a temporary one) when a command fails.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SITE_FOLDERS = {
    "old": ["ISBI", "ISBI_1.5", "I2CVB", "UCL", "BIDMC", "HK"],
    "new": ["RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK"],
}
AFFINE = np.diag([-0.6, -0.6, 3.0, 1.0])


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "tools.data", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def stderr_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def write_case(folder, number, shape=(8, 8, 4), mask_suffix="_segmentation"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(number)
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 2:6, 1:3] = 1
    image_path = folder / f"Case{number:02d}.nii.gz"
    label_path = folder / f"Case{number:02d}{mask_suffix}.nii.gz"
    nib.save(nib.Nifti1Image(rng.uniform(0, 100, shape).astype(np.float32), AFFINE), str(image_path))
    nib.save(nib.Nifti1Image(mask, AFFINE), str(label_path))
    return image_path, label_path


def write_dataset(root, naming="old", cases=(0, 1, 2)):
    for folder in SITE_FOLDERS[naming]:
        for n in cases:
            suffix = "_Segmentation" if folder in ("ISBI_1.5", "BMC") else "_segmentation"
            write_case(root / folder, n, mask_suffix=suffix)
    return root


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


@pytest.fixture(scope="module")
def good_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("good") / "Processed_data_nii", naming="new").parent


def test_verify_index_split_and_split_all(good_root, tmp_path):
    result = run_cli("verify", "--root", good_root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK {good_root}: 6 sites, 18 cases")

    index_path = tmp_path / "out" / "index.json"
    result = run_cli("index", "--root", good_root, "--out", index_path)
    assert result.returncode == 0, result.stderr
    index = json.loads(index_path.read_text())
    assert index["root"] == str(good_root) and index["site_dir"] == "Processed_data_nii"
    assert [c["image"] for c in index["cases"][:2]] == [
        "Processed_data_nii/RUNMC/Case00.nii.gz",
        "Processed_data_nii/RUNMC/Case01.nii.gz",
    ]
    assert index["cases"][3]["label"] == "Processed_data_nii/BMC/Case00_Segmentation.nii.gz"

    datalist_path = tmp_path / "datalist.json"
    options = ("--val-fraction", 0.4, "--seed", 5)
    result = run_cli("split", "--index", index_path, "--target", "ISBI_1.5", "--out", datalist_path, *options)
    assert result.returncode == 0, result.stderr
    datalist = json.loads(datalist_path.read_text())
    assert (datalist["target_site"], datalist["seed"], datalist["val_fraction"]) == ("BMC", 5, 0.4)
    assert datalist["source_sites"] == ["RUNMC", "HCRUDB", "UCL", "BIDMC", "HK"]
    assert (len(datalist["training"]), len(datalist["validation"]), len(datalist["test"])) == (10, 5, 3)
    assert all((good_root / e["image"]).is_file() and (good_root / e["label"]).is_file() for e in datalist["training"])

    out_dir = tmp_path / "datalists"
    result = run_cli("split_all", "--index", index_path, "--out-dir", out_dir, *options)
    assert result.returncode == 0, result.stderr
    assert listing(out_dir) == sorted(f"datalist_{s}.json" for s in SITE_FOLDERS["new"])
    assert json.loads((out_dir / "datalist_BMC.json").read_text()) == datalist  # same seed, same split


def test_index_lists_every_problem_and_writes_nothing(tmp_path):
    root = write_dataset(tmp_path / "data")
    truncated = root / "UCL" / "Case01.nii.gz"
    image = nib.Nifti1Image(np.random.default_rng(0).uniform(size=(32, 32, 16)).astype(np.float32), AFFINE)
    nib.save(image, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    mismatched = root / "HK" / "Case02_segmentation.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), np.diag([-0.6, -0.6, 2.0, 1.0])), str(mismatched))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    result = run_cli("index", "--root", root, "--out", out_dir / "index.json")
    assert result.returncode == 1
    lines = stderr_lines(result)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{truncated}: cannot read NIfTI data")
    assert lines[1].startswith(f"{mismatched}: mask affine differs from the image affine")
    assert listing(out_dir) == []
    assert run_cli("verify", "--root", root).stderr == result.stderr


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 4, 1)], ids=["2D", "4D"])
def test_non_3d_volume(tmp_path, shape):
    root = write_dataset(tmp_path / "data", cases=(0,))
    bad = root / "BIDMC" / "Case00.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), AFFINE), str(bad))
    result = run_cli("verify", "--root", root)
    assert result.returncode == 1
    assert stderr_lines(result) == [f"{bad}: expected a 3D volume, got shape {shape} ({len(shape)}D)"]


def test_root_and_site_problems(tmp_path):
    missing = tmp_path / "missing"
    result = run_cli("index", "--root", missing, "--out", tmp_path / "index.json")
    assert (result.returncode, stderr_lines(result)) == (1, [f"{missing}: dataset root does not exist"])
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("verify", "--root", empty)
    assert (result.returncode, stderr_lines(result)) == (1, [f"{empty}: dataset root is empty"])
    root = write_dataset(tmp_path / "data", cases=(0,))
    for path in (root / "HK").iterdir():
        path.unlink()
    result = run_cli("verify", "--root", root)
    expected = f"{root / 'HK'}: site HK has no cases (no CaseNN image with its mask)"
    assert (result.returncode, stderr_lines(result)) == (1, [expected])
    result = run_cli("verify", "--root", root, "--sites", "UCL,S5")  # only the sites asked for are required
    assert (result.returncode, result.stdout.strip()) == (0, f"OK {root}: 2 sites, 2 cases: UCL 1, BIDMC 1")
    assert not (tmp_path / "index.json").exists()


def test_split_errors_write_nothing(good_root, tmp_path):
    index_path = tmp_path / "index.json"
    assert run_cli("index", "--root", good_root, "--out", index_path).returncode == 0
    out = tmp_path / "split" / "datalist.json"
    result = run_cli("split", "--index", index_path, "--target", "ISBI_3", "--out", out)
    assert result.returncode == 1 and len(stderr_lines(result)) == 1 and "unknown site 'ISBI_3'" in result.stderr
    result = run_cli("split", "--index", index_path, "--target", "HK", "--out", out, "--val-fraction", 1.5)
    assert result.returncode == 1 and "val_fraction must be a number in (0, 1)" in result.stderr
    missing = tmp_path / "nope.json"
    result = run_cli("split_all", "--index", missing, "--out-dir", tmp_path / "split")
    assert (result.returncode, stderr_lines(result)) == (1, [f"{missing}: no such index file"])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = run_cli("split", "--index", broken, "--target", "HK", "--out", out)
    assert result.returncode == 1 and stderr_lines(result)[0].startswith(f"{broken}: not valid JSON")
    assert not out.parent.exists()


def test_synth_output_passes_verify(tmp_path):
    pytest.importorskip("tools.data.synth")
    out = tmp_path / "synth"
    result = run_cli("synth", "--out", out, "--cases-per-site", 2, "--size", 32, "--seed", 0, "--naming", "new")
    assert result.returncode == 0, result.stderr
    result = run_cli("verify", "--root", out)
    assert result.returncode == 0, result.stderr
    assert "6 sites, 12 cases" in result.stdout


def test_truncated_metaimage_gives_one_clean_line(tmp_path):
    """MetaIO writes its complaints straight to the C stderr; they must not reach the user as extra lines."""
    root = write_dataset(tmp_path / "data", cases=(0,))
    (root / "UCL" / "Case00.nii.gz").unlink()
    truncated = root / "UCL" / "Case00.mha"
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nElementSpacing = 0.6 0.6 3\n"
        "DimSize = 8 8 4\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    truncated.write_bytes(header.encode() + np.zeros(8 * 8 * 4, np.float32).tobytes()[:100])
    result = run_cli("verify", "--root", root)
    assert result.returncode == 1
    [line] = stderr_lines(result)
    assert line.startswith(f"{truncated}: cannot read MetaImage data, the file may be truncated")
