"""MONAI Label serves the project's ENet student bundle (tools/monailabel_app.py).

The server runs in ``.venv-monailabel`` (requirements-monailabel.txt); these tests drive it from the
main environment over HTTP on 127.0.0.1, with the offline settings of
:data:`tools.monailabel_app.OFFLINE_CONF` (``sam2 false``, a local ``zoo_source``, no trainers).

The bundle is ``bundles/prostate_mri_enet_student`` as committed: its configs, LICENSE and docs are
copied unmodified (``image_size`` 384, ``bundle_root`` computed by ``tools.bundles.bundle_dir``, which
MONAI Label and ``--bundle_root`` replace), and ``models/model.pt`` is the state dict of the bundle's
own ``network_def``, randomly initialised with :data:`WEIGHT_SEED`. That seed is not 0, the seed the
bundle's ``initialize`` sets before its network is built, so a weight file that failed to load could
not reproduce the reference mask by accident.

The reference mask is the same served bundle folder run by ``python -m monai.bundle run`` with the
Python that runs the tests (normally the main environment: torch 2.13 CPU, numpy 2) and
``--bundle_root`` pointing at the copy; the server (torch 2.14, numpy 1.26) must return the same
voxels, in the input's shape and affine.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tools import monailabel_app as mla

if not (mla.DEFAULT_VENV / "bin" / "python").exists():
    pytest.skip(
        f"MONAI Label environment {mla.DEFAULT_VENV} not found (create it from requirements-monailabel.txt)",
        allow_module_level=True,
    )

BUNDLE = mla.REPO_ROOT / "bundles" / "prostate_mri_enet_student"
#: What is copied from the committed bundle (those present); ``models/`` is written by :func:`copy_student`.
BUNDLE_ITEMS = ("configs", "LICENSE", "docs")
WEIGHT_SEED = 2024
#: case id -> (simulated site, axial slices kept): a whole (48, 48, 20) volume and 6 slices of another
#: site's volume (another spacing and origin; cut to keep the 384 x 384 slice inference cheap). Both
#: have left-posterior axes, so ``Orientationd("RAS")`` flips them and only ``Invertd`` flips them back.
CASES = {"case0": ("ISBI", slice(None)), "case1": ("UCL", slice(8, 14))}


def copy_student(target: Path, seed: int = WEIGHT_SEED) -> Path:
    """``BUNDLE``'s configs, LICENSE and docs in ``target``, plus ``models/model.pt``: the state dict of
    its ``network_def`` (from ``configs/inference.yaml``) after ``torch.manual_seed(seed)``."""
    from monai.bundle import ConfigParser

    target.mkdir(parents=True)
    for item in BUNDLE_ITEMS:
        source = BUNDLE / item
        if source.is_dir():
            shutil.copytree(source, target / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy2(source, target / item)
    parser = ConfigParser()
    parser.read_config(target / "configs" / "inference.yaml")
    parser["bundle_root"] = str(target)
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def", instantiate=True)
    (target / "models").mkdir()
    torch.save(network.state_dict(), target / "models" / "model.pt")
    return target


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """One weighted copy of the student bundle for the module; tests that change it copy it again."""
    return copy_student(tmp_path_factory.mktemp("bundle") / BUNDLE.name)


@pytest.fixture
def student_copy(student, tmp_path) -> Path:
    """A private copy of :func:`student` that a test may modify."""
    return Path(shutil.copytree(student, tmp_path / BUNDLE.name))


def synthetic_cases(folder: Path) -> dict[str, Path]:
    """``folder/<id>.nii.gz`` for :data:`CASES`: slices of the first image of each named site of the
    project's simulator (``nibabel``'s slicer keeps the affine of the kept voxels)."""
    from tools.data.synth import synthesize

    written = synthesize(folder / "sites", cases_per_site=1, size=48, seed=0)
    cases = {}
    for case_id, (site, slices) in CASES.items():
        cases[case_id] = folder / f"{case_id}.nii.gz"
        nib.save(nib.load(written[site][0]).slicer[:, :, slices], cases[case_id])
    return cases


def read_nifti(payload: bytes) -> nib.Nifti1Image:
    """A NIfTI image from the bytes of a .nii or .nii.gz file."""
    raw = gzip.decompress(payload) if payload[:2] == b"\x1f\x8b" else payload
    return nib.Nifti1Image.from_bytes(raw)


def test_check_bundle_reports_what_monailabel_reads(student_copy):
    summary = mla.check_bundle(student_copy)
    assert summary["dimension"] == 2  # metadata spatial_shape [384, 384]: a 2D network
    assert summary["labels"] == {"prostate": 1}
    assert summary["config"] == student_copy / "configs" / "inference.yaml"
    assert summary["weights"] == student_copy / "models" / "model.pt"

    (student_copy / "models" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        mla.check_bundle(student_copy)


def test_check_bundle_rejects_other_keys(student_copy):
    metadata_path = student_copy / "configs" / "metadata.json"
    meta = json.loads(metadata_path.read_text())
    meta["network_data_format"]["outputs"] = {"seg": meta["network_data_format"]["outputs"]["pred"]}
    metadata_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'seg'"):
        mla.check_bundle(student_copy)


def test_prepare_app_copies_sample_app_and_bundle(student_copy, tmp_path):
    student = student_copy
    (student / "eval").mkdir()
    (student / "eval" / "case0_seg.nii.gz").write_bytes(b"")  # outputs of earlier runs stay behind
    target = mla.prepare_app(student, tmp_path / "app")
    assert target == tmp_path / "app" / "model" / BUNDLE.name
    sample = (mla.sample_app_dir() / "main.py").read_text()  # the sample app, building the strict inference task
    expected = sample.replace(mla.SAMPLE_INFER_IMPORT, mla.STRICT_INFER_IMPORT)
    assert expected != sample and (tmp_path / "app" / "main.py").read_text() == expected
    copied = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(student) for p in student.rglob("*") if p.is_file() and "eval" not in p.parts)
    assert (target / "models" / "model.pt").read_bytes() == (student / "models" / "model.pt").read_bytes()
    assert (target / "configs" / "inference.yaml").read_text() == (BUNDLE / "configs" / "inference.yaml").read_text()


def test_server_start_failure_reports_log(student_copy, tmp_path):
    """A network_def that names no class: the app fails at start-up, and the error says why."""
    config = student_copy / "configs" / "inference.yaml"
    text = config.read_text()
    assert "custom_nets.ENet" in text
    config.write_text(text.replace("custom_nets.ENet", "custom_nets.NoSuchNet"))
    app = tmp_path / "app"
    mla.prepare_app(student_copy, app)
    reason = "(?s)exited with code.*Cannot locate class or function path: 'custom_nets.NoSuchNet'"
    with pytest.raises(RuntimeError, match=reason):
        mla.start_server(app, tmp_path / "studies", models=BUNDLE.name, timeout=120)


#: preprocessing keys written into the served copy's inference.yaml (docs/preprocessing.md); {} = as committed
PREPROCESSING = {"committed": {}, "spacing-percentile": {"in_plane_mode": "spacing", "intensity_norm": "percentile"}}


@pytest.mark.parametrize("preprocessing", list(PREPROCESSING))
def test_monailabel_serves_student_bundle(student, tmp_path, preprocessing):
    """case0 from the studies folder by id, case1 uploaded with the request; both as `monai.bundle run` gives them,
    with the committed preprocessing and with a fixed pixel spacing + percentile z-score set in inference.yaml."""
    if PREPROCESSING[preprocessing]:
        student = Path(shutil.copytree(student, tmp_path / "bundle" / BUNDLE.name))
        config = student / "configs" / "inference.yaml"
        text = config.read_text()
        for key, value in PREPROCESSING[preprocessing].items():
            assert text.count(f"\n{key}: ") == 1, key
            text = re.sub(rf"\n{key}: .*\n", f"\n{key}: {value}\n", text)
        config.write_text(text)
    cases = synthetic_cases(tmp_path / "cases")
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy2(cases["case0"], studies / "case0.nii.gz")
    app = tmp_path / "app"
    served = mla.prepare_app(student, app)

    # the reference runs on the served folder while the server starts: the user's command, any working directory
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(served / "configs" / "inference.yaml")]
    command += ["--input", str(cases["case0"].parent), "--bundle_root", str(served)]
    reference_log = tmp_path / "reference.log"
    with open(reference_log, "wb") as log:
        reference = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        server = mla.start_server(app, studies, models=BUNDLE.name, timeout=240)
    except BaseException:
        reference.kill()
        reference.wait()
        raise
    try:
        info = mla.wait_until_ready(server, timeout=10)
        assert info["models"][BUNDLE.name]["dimension"] == 2
        assert info["models"][BUNDLE.name]["labels"] == {"prostate": 1}
        # the reference runs on the CPU (the main environment's torch is the CPU wheel): so does the server
        results = {
            "case0": read_nifti(mla.infer(server.url, BUNDLE.name, image_id="case0", params={"device": "cpu"})),
            "case1": read_nifti(mla.infer(server.url, BUNDLE.name, image_file=cases["case1"], params={"device": "cpu"})),
        }
        assert mla.upload_image(server.url, cases["case1"], image_id="case1") == {"image": "case1"}
    except BaseException:
        print(f"--- MONAI Label server log ({server.log_path}) ---\n{server.log_tail(20000)}")
        raise
    finally:
        assert mla.stop_server(server) is not None, "the server process is still running"
        assert reference.wait(timeout=300) == 0, f"{' '.join(command)} failed:\n{reference_log.read_text()[-6000:]}"

    assert (studies / "case1.nii.gz").read_bytes() == cases["case1"].read_bytes(), "the upload lands in the studies"
    for case_id, result in results.items():
        image = nib.load(cases[case_id])
        expected = nib.load(served / "eval" / f"{case_id}_seg.nii.gz")  # output_dir follows --bundle_root
        expected_mask = np.asarray(expected.dataobj)
        assert set(np.unique(expected_mask)) == {0, 1}, f"{case_id}: the mask should hold both labels"
        assert result.shape == image.shape == expected.shape, case_id
        np.testing.assert_allclose(result.affine, image.affine, atol=1e-5, err_msg=case_id)
        np.testing.assert_array_equal(np.asarray(result.dataobj), expected_mask, err_msg=case_id)


def test_use_strict_inference_patches_one_import(tmp_path):
    main_py = tmp_path / "main.py"
    main_py.write_text(f"import os\n{mla.SAMPLE_INFER_IMPORT}\nx = BundleInferTask\n")
    mla.use_strict_inference(main_py)
    mla.use_strict_inference(main_py)  # idempotent
    assert main_py.read_text() == f"import os\n{mla.STRICT_INFER_IMPORT}\nx = BundleInferTask\n"
    other = tmp_path / "other.py"
    other.write_text("print('another app')\n")
    with pytest.raises(ValueError, match="other.py: expected one line"):
        mla.use_strict_inference(other)


def test_a_wrong_checkpoint_fails_the_request_naming_the_file(student_copy, tmp_path):
    """A checkpoint of another width: MONAI Label alone would warn and serve partly random weights."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(student_copy / "configs" / "inference.yaml")
    parser["network_width"] = 0.5
    wrong = student_copy / "models" / "model.pt"
    torch.save(parser.get_parsed_content("network_def", instantiate=True).state_dict(), wrong)
    cases = synthetic_cases(tmp_path / "cases")
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy2(cases["case0"], studies / "case0.nii.gz")
    app = tmp_path / "app"
    served = mla.prepare_app(student_copy, app)
    assert mla.STRICT_INFER_IMPORT in (app / "main.py").read_text()
    checkpoint = str(served / "models" / "model.pt")
    reason = f"(?s)exited with code.*{re.escape(checkpoint)}: .*shape"  # the server refuses to start, saying why
    with pytest.raises(RuntimeError, match=reason):
        mla.start_server(app, studies, models=BUNDLE.name, timeout=240)
