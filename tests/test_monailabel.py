"""MONAI Label serves a 2D-slice bundle on a 3D NIfTI volume (tools/monailabel_app.py).

The server runs in ``.venv-monailabel`` (requirements-monailabel.txt); this test drives it from
the main environment over HTTP on 127.0.0.1. The bundle is a stand-in with the shape of the
project's bundles: a 2D network (``spatial_shape: [H, W]``) applied slice by slice with
``SliceInferer``, an in-plane resize and a reorientation that ``Invertd`` must undo.

The reference mask is the same bundle run in this process with ``monai.bundle.ConfigParser``
(preprocessing -> inferer -> postprocessing, as ``monai.bundle run`` would): the server must give
the same voxels in the input's geometry.
"""

from __future__ import annotations

import gzip
import json
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

BUNDLE_NAME = "slice_unet_stand_in"
ROI = [32, 32]  # in-plane size the 2D network sees (BasicUNet needs multiples of 16)
VOLUME_SHAPE = (40, 48, 6)  # non-square in-plane, so a swapped or flipped axis cannot go unnoticed
# Left-posterior-superior axes (as DICOM-derived NIfTI often are): Orientationd(RAS) flips the
# first two axes, and only Invertd flips them back (MONAI Label's own Restored step does not).
VOLUME_AFFINE = np.array(
    [[-0.6, 0.0, 0.0, 12.0], [0.0, -0.7, 0.0, -5.0], [0.0, 0.0, 3.0, 30.0], [0.0, 0.0, 0.0, 1.0]]
)

METADATA = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
    "version": "0.0.1",
    "changelog": {"0.0.1": "stand-in for tests"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "1.26.4",
    "required_packages_version": {"nibabel": "5.4.2"},
    "task": "Prostate segmentation (test stand-in)",
    "description": "A randomly initialised 2D BasicUNet applied to axial slices",
    "authors": "prostate-rkd tests",
    "copyright": "Apache-2.0",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": "MR",
                "num_channels": 1,
                "spatial_shape": ROI,
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": False,
                "channel_def": {"0": "T2"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": ROI,
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "background", "1": "prostate"},
            }
        },
    },
}

INFERENCE_YAML = f"""
imports:
  - $import torch
bundle_root: .
output_dir: $@bundle_root + '/eval'
device: $torch.device('cpu')
network_def:
  _target_: monai.networks.nets.BasicUNet
  spatial_dims: 2
  in_channels: 1
  out_channels: 2
  features: [4, 4, 8, 8, 16, 4]
network: $@network_def.to(@device)
preprocessing:
  _target_: Compose
  transforms:
    - _target_: LoadImaged
      keys: image
    - _target_: EnsureChannelFirstd
      keys: image
    - _target_: Orientationd
      keys: image
      axcodes: RAS
    - _target_: NormalizeIntensityd
      keys: image
      channel_wise: true
    - _target_: Resized
      keys: image
      spatial_size: [{ROI[0]}, {ROI[1]}, -1]
      mode: bilinear
    - _target_: EnsureTyped
      keys: image
inferer:
  _target_: SliceInferer
  roi_size: {ROI}
  spatial_dim: 2
  sw_batch_size: 4
postprocessing:
  _target_: Compose
  transforms:
    - _target_: Activationsd
      keys: pred
      softmax: true
    - _target_: Invertd
      keys: pred
      transform: '@preprocessing'
      orig_keys: image
      nearest_interp: false
      to_tensor: true
    - _target_: AsDiscreted
      keys: pred
      argmax: true
    - _target_: SaveImaged
      keys: pred
      output_dir: '@output_dir'
      separate_folder: false
      resample: false
"""


def make_bundle(root: Path) -> Path:
    """The stand-in bundle: configs, a LICENSE, and the seeded random network's state dict."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA, indent=2))
    (root / "configs" / "inference.yaml").write_text(INFERENCE_YAML)
    (root / "LICENSE").write_text("Apache-2.0\n")
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def make_volume(path: Path, shape=VOLUME_SHAPE, affine=VOLUME_AFFINE, seed: int = 0) -> Path:
    """A smooth synthetic T2-like volume: a bright ellipsoid on a dim gradient, plus seeded noise."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    blob = ((x - 0.2) ** 2 / 0.3 + (y + 0.1) ** 2 / 0.2 + z**2 / 0.8) < 1
    rng = np.random.default_rng(seed)
    data = 100 + 50 * x + 300 * blob + rng.normal(0, 10, shape)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


def reference_mask(bundle: Path, image: Path) -> np.ndarray:
    """The bundle's own inference in this process, SaveImaged left out: (H, W, D) labels."""
    from monai.bundle import ConfigParser
    from monai.transforms import SaveImaged

    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.yaml")
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu"))
    net.eval()
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], net)[0]
    for t in parser.get_parsed_content("postprocessing").transforms:
        if not isinstance(t, SaveImaged):
            data = t(data)
    return np.asarray(data["pred"][0])


def read_nifti(payload: bytes) -> nib.Nifti1Image:
    """A NIfTI image from the bytes of a .nii or .nii.gz file."""
    raw = gzip.decompress(payload) if payload[:2] == b"\x1f\x8b" else payload
    return nib.Nifti1Image.from_bytes(raw)


def test_check_bundle_reports_what_monailabel_reads(tmp_path):
    bundle = make_bundle(tmp_path / BUNDLE_NAME)
    summary = mla.check_bundle(bundle)
    assert summary["dimension"] == 2
    assert summary["labels"] == {"prostate": 1}
    assert summary["config"].name == "inference.yaml" and summary["weights"].name == "model.pt"

    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        mla.check_bundle(bundle)


def test_check_bundle_rejects_other_keys(tmp_path):
    bundle = make_bundle(tmp_path / BUNDLE_NAME)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"] = {"seg": meta["network_data_format"]["outputs"]["pred"]}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'seg'"):
        mla.check_bundle(bundle)


def test_prepare_app_copies_sample_app_and_bundle(tmp_path):
    bundle = make_bundle(tmp_path / BUNDLE_NAME)
    target = mla.prepare_app(bundle, tmp_path / "app")
    assert target == tmp_path / "app" / "model" / BUNDLE_NAME
    assert (tmp_path / "app" / "main.py").read_text() == (mla.sample_app_dir() / "main.py").read_text()
    assert (target / "models" / "model.pt").read_bytes() == (bundle / "models" / "model.pt").read_bytes()


def test_server_start_failure_reports_log(tmp_path):
    """A bundle whose network_def names no class: the app fails at start-up, and the error says why."""
    bundle = make_bundle(tmp_path / BUNDLE_NAME)
    config = bundle / "configs" / "inference.yaml"
    config.write_text(config.read_text().replace("monai.networks.nets.BasicUNet", "custom_nets.NoSuchNet"))
    app = tmp_path / "app"
    mla.prepare_app(bundle, app)
    reason = "(?s)exited with code.*Cannot locate class or function path: 'custom_nets.NoSuchNet'"
    with pytest.raises(RuntimeError, match=reason):
        mla.start_server(app, tmp_path / "studies", models=BUNDLE_NAME, timeout=120)


def test_monailabel_serves_slice_bundle_on_volume(tmp_path):
    """Three ways in: an image of the studies folder, one uploaded to the datastore, one sent with the request."""
    bundle = make_bundle(tmp_path / BUNDLE_NAME)
    studies = tmp_path / "studies"
    studies.mkdir()
    case0 = make_volume(studies / "case0.nii.gz")
    # uploaded later: another shape, and right-anterior axes, so Orientationd flips only the second one
    case1_affine = np.diag([0.5, -0.5, 2.5, 1.0])
    case1 = make_volume(tmp_path / "case1.nii.gz", shape=(36, 52, 5), affine=case1_affine, seed=1)
    expected = {name: reference_mask(bundle, path) for name, path in (("case0", case0), ("case1", case1))}
    for name, mask in expected.items():
        assert set(np.unique(mask)) == {0.0, 1.0}, f"{name}: the random network should give both labels"

    app = tmp_path / "app"
    mla.prepare_app(bundle, app)
    server = mla.start_server(app, studies, models=BUNDLE_NAME, timeout=240)
    try:
        info = mla.wait_until_ready(server, timeout=10)
        assert info["models"][BUNDLE_NAME]["dimension"] == 2
        assert info["models"][BUNDLE_NAME]["labels"] == {"prostate": 1}

        by_id = read_nifti(mla.infer(server.url, BUNDLE_NAME, image_id="case0"))
        assert mla.upload_image(server.url, case1, image_id="case1") == {"image": "case1"}
        uploaded = read_nifti(mla.infer(server.url, BUNDLE_NAME, image_id="case1"))
        with_request = read_nifti(mla.infer(server.url, BUNDLE_NAME, image_file=case0))
    except BaseException:
        print(f"--- MONAI Label server log ({server.log_path}) ---\n{server.log_tail(20000)}")
        raise
    finally:
        assert mla.stop_server(server) is not None, "the server process is still running"

    assert (studies / "case1.nii.gz").is_file(), "the upload should land in the studies folder"
    answers = ((by_id, "case0", VOLUME_AFFINE), (uploaded, "case1", case1_affine), (with_request, "case0", VOLUME_AFFINE))
    for result, name, affine in answers:
        assert result.shape == expected[name].shape
        np.testing.assert_allclose(result.affine, affine, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(result.dataobj), expected[name])
