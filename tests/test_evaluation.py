"""3D evaluation: slice inference, inversion to the file's geometry, saving, metrics in mm."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch

from tools.data.evaluation import (
    VolumeMetric,
    evaluation_postprocessing,
    evaluation_preprocessing,
    slice_inferer,
    volume_metrics,
    voxel_spacing,
)
from tools.data.transforms import preprocessing_transforms

# 40 x 36 x 10 voxels, 0.7 x 0.6 x 3.0 mm, stored LPS
SHAPE = (40, 36, 10)
LPS_AFFINE = np.array(
    [[-0.7, 0.0, 0.0, 30.0], [0.0, -0.6, 0.0, 20.0], [0.0, 0.0, 3.0, -10.0], [0.0, 0.0, 0.0, 1.0]]
)


def write_case(folder, name="Case00"):
    """An LPS case: noisy image, one box-shaped gland with zone value 2 inside, slices 3-6."""
    rng = np.random.default_rng(0)
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:30, 8:25, 3:7] = 1
    mask[15:20, 10:15, 4:6] = 2
    image = rng.normal(100.0, 20.0, SHAPE).astype(np.float32) + 150.0 * (mask > 0)
    paths = {"image": str(folder / f"{name}.nii.gz"), "label": str(folder / f"{name}_segmentation.nii.gz")}
    nib.save(nib.Nifti1Image(image, LPS_AFFINE), paths["image"])
    nib.save(nib.Nifti1Image(mask, LPS_AFFINE), paths["label"])
    return paths, mask


def cube(shift_axis=None, size=12):
    """A 4 x 4 x 4 cube of ones at [2:6]^3, optionally moved by one voxel along ``shift_axis``."""
    mask = np.zeros((size, size, size), np.uint8)
    start = [2, 2, 2]
    if shift_axis is not None:
        start[shift_axis] += 1
    mask[start[0] : start[0] + 4, start[1] : start[1] + 4, start[2] : start[2] + 4] = 1
    return mask


# Cube surfaces: 56 voxels each. Moved by one voxel along an axis of spacing s_shift, the moved cube's
# surface has 36 voxels on the reference surface (distance 0), the 16 voxels of its far face at s_shift
# and the 4 inner voxels of its near face at min(s_shift, smallest in-plane spacing); the reverse
# direction is the mirror image. HD95 = 95th percentile of each direction (the far face), ASD = mean.
@pytest.mark.parametrize(
    "shift_axis, spacing, hd95, asd",
    [
        (2, (0.5, 0.5, 3.0), 3.0, 2 * (16 * 3.0 + 4 * 0.5) / 112),
        (2, (3.0, 3.0, 0.5), 0.5, 2 * (16 * 0.5 + 4 * 0.5) / 112),
        (0, (0.5, 0.5, 3.0), 0.5, 2 * (16 * 0.5 + 4 * 0.5) / 112),
    ],
)
def test_volume_metrics_of_a_shifted_cube_in_mm(shift_axis, spacing, hd95, asd):
    label, pred = cube(), cube(shift_axis)
    metrics = volume_metrics(pred, label, spacing)
    assert metrics["dice"] == pytest.approx(2 * 48 / 128)
    assert metrics["hd95"] == pytest.approx(hd95, rel=1e-6)
    assert metrics["asd"] == pytest.approx(asd, rel=1e-6)
    assert volume_metrics(label, pred, spacing) == pytest.approx(metrics), "symmetric in pred and label"
    assert volume_metrics(torch.from_numpy(pred)[None], torch.from_numpy(label)[None], spacing) == pytest.approx(
        metrics
    )


def test_volume_metrics_of_a_known_overlap_and_identity():
    label = np.zeros((6, 6, 2), np.uint8)
    label[:4, :, 0] = 1  # 24 voxels
    pred = np.zeros_like(label)
    pred[2:, :, 0] = 1  # 24 voxels, 12 shared; values > 0 count as foreground
    pred[0, 0, 1] = 2
    assert volume_metrics(pred, label, (1, 1, 1))["dice"] == pytest.approx(2 * 12 / 49)
    assert volume_metrics(label, label, (0.3, 0.3, 3.0)) == {"dice": 1.0, "hd95": 0.0, "asd": 0.0}


def test_volume_metrics_of_empty_masks():
    empty, full = np.zeros((8, 8, 8)), cube(size=8)
    assert volume_metrics(empty, full, (1, 1, 1)) == {"dice": 0.0, "hd95": math.inf, "asd": math.inf}
    assert volume_metrics(full, empty, (1, 1, 1)) == {"dice": 0.0, "hd95": math.inf, "asd": math.inf}
    assert volume_metrics(empty, empty, (1, 1, 1)) == {"dice": 1.0, "hd95": 0.0, "asd": 0.0}


def test_volume_metrics_checks_inputs():
    with pytest.raises(ValueError, match="one shape"):
        volume_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1))
    with pytest.raises(ValueError, match="3D label map"):
        volume_metrics(np.zeros((4, 4)), np.zeros((4, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        volume_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        volume_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 0, 1))


def test_voxel_spacing_of_a_rotated_anisotropic_affine():
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.5, -0.7, 3.0])
    affine[:3, 3] = [10, -4, 7]
    assert voxel_spacing(affine) == pytest.approx((0.5, 0.7, 3.0))
    assert voxel_spacing(torch.from_numpy(affine)) == pytest.approx((0.5, 0.7, 3.0))
    with pytest.raises(ValueError, match="square"):
        voxel_spacing(np.eye(4)[:3])


def test_volume_metric_reads_spacing_from_the_affine_and_checks_geometry():
    affine = torch.diag(torch.tensor([0.5, 0.5, 3.0, 1.0], dtype=torch.float64))
    label = MetaTensor(torch.from_numpy(cube()).float()[None], affine=affine)
    pred = MetaTensor(torch.from_numpy(cube(2)).float()[None], affine=affine)
    metric = VolumeMetric("hd95")
    metric([pred, label], [label, label])  # two cases, as after decollate_batch
    assert metric.get_buffer().flatten().tolist() == pytest.approx([3.0, 0.0])
    assert metric.aggregate().item() == pytest.approx(1.5)
    batched = VolumeMetric("asd")
    batched(torch.stack([pred, pred]), torch.stack([label, label]))
    assert batched.get_buffer().flatten().tolist() == pytest.approx([2 * 50 / 112] * 2)
    assert VolumeMetric("dice", spacing=(1, 1, 1))(pred.as_tensor()[None], label.as_tensor()[None]).item() == 0.75
    moved = MetaTensor(pred.as_tensor(), affine=torch.diag(torch.tensor([0.25, 0.5, 3.0, 1.0])).double())
    with pytest.raises(ValueError, match="different affines"):
        VolumeMetric("dice")([moved], [label])
    with pytest.raises(ValueError, match="MetaTensor"):
        VolumeMetric("dice")(pred.as_tensor()[None], label.as_tensor()[None])
    with pytest.raises(ValueError, match="metric_name"):
        VolumeMetric("hd")


class RecordingConv(torch.nn.Module):
    """A fixed 2D convolution that records the shapes it is called with."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.conv(x)


def test_slice_inferer_applies_the_2d_network_to_each_axial_slice():
    volume = torch.randn(2, 1, 16, 12, 5)
    net = RecordingConv()
    with torch.no_grad():
        out = slice_inferer((16, 12), sw_batch_size=4)(volume, net)
        expected = torch.stack([net.conv(volume[..., z]) for z in range(5)], dim=-1)
    assert out.shape == (2, 2, 16, 12, 5)
    assert torch.allclose(out, expected, atol=1e-5)
    assert net.shapes and all(len(s) == 4 and s[1:] == (1, 16, 12) and s[0] <= 4 for s in net.shapes)


def one_hot_logits(label):
    """Logits whose softmax-argmax is ``label`` (1, ...): 10 on the label's class, 0 elsewhere."""
    return torch.cat([1 - label, label]).float() * 10.0


# the preprocessing options of docs/preprocessing.md: the paper's resize; a fixed in-plane spacing of half the
# file's (0.35 x 0.3 mm: 79 x 71 voxel centres) padded to the 80 x 72 window, or cropped to a 64 x 60 window that
# still holds the gland (the inverted crop is zero probability, i.e. background, outside the window)
GEOMETRIES = {
    "resize": ((80, 72), {}),
    "spacing-pad": ((80, 72), {"in_plane_mode": "spacing", "pixel_spacing_mm": (0.35, 0.3), "intensity_norm": "nonzero"}),
    "spacing-crop": ((64, 60), {"in_plane_mode": "spacing", "pixel_spacing_mm": (0.35, 0.3), "intensity_norm": "percentile"}),
}


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("invert_probabilities", [True, False])
def test_prediction_returns_to_the_file_geometry(tmp_path, invert_probabilities, geometry):
    """Round trip: the label in the network grid, used as the prediction, comes back as the file's mask."""
    item, mask = write_case(tmp_path)
    size, options = GEOMETRIES[geometry]
    preprocessing = evaluation_preprocessing(size, **options)
    data = preprocessing(item)
    assert data["image"].shape == (1, *size, 10) and data["label"].shape == (1, *SHAPE)
    network_grid_label = preprocessing_transforms(size, **options)(item)["label"]
    data["pred"] = one_hot_logits(network_grid_label.as_tensor())
    # an isolated false positive far from the gland, removed by the largest-component step
    data["pred"][:, size[0] - 5, 2, 0] = torch.tensor([0.0, 10.0])
    out_dir = tmp_path / "predictions"
    result = evaluation_postprocessing(
        preprocessing, invert_probabilities=invert_probabilities, output_dir=str(out_dir)
    )(data)
    pred = result["pred"]
    assert pred.shape == (1, *SHAPE)
    assert np.allclose(pred.affine.numpy(), LPS_AFFINE, atol=1e-6)
    assert torch.equal(pred[0], torch.from_numpy((mask > 0).astype(np.float32)))
    saved = nib.load(str(out_dir / "Case00_seg.nii.gz"))
    assert saved.shape == SHAPE and saved.get_data_dtype() == np.uint8
    assert np.allclose(saved.affine, LPS_AFFINE, atol=1e-6)
    assert np.array_equal(np.asarray(saved.dataobj), (mask > 0).astype(np.uint8))
    metrics = volume_metrics(pred, result["label"], voxel_spacing(result["label"].affine))
    assert metrics == {"dice": 1.0, "hd95": 0.0, "asd": 0.0}


def test_evaluation_chain_through_a_dataloader(tmp_path):
    """Batch of two cases: preprocessing, inferer, decollate, postprocessing, metric handler input."""
    items = [write_case(tmp_path, name=name)[0] for name in ("Case00", "Case01")]
    preprocessing = evaluation_preprocessing(32, label_key="label")
    batch = next(iter(DataLoader(Dataset(items, preprocessing), batch_size=2)))
    net = RecordingConv()
    with torch.no_grad():
        batch["pred"] = slice_inferer(32, sw_batch_size=8)(batch["image"], net)
    assert batch["pred"].shape == (2, 2, 32, 32, 10)
    postprocessing = evaluation_postprocessing(preprocessing, keep_largest_component=False)
    cases = [postprocessing(case) for case in decollate_batch(batch)]
    metric = VolumeMetric("dice")
    metric([c["pred"] for c in cases], [c["label"] for c in cases])
    for case, value in zip(cases, metric.get_buffer().flatten().tolist()):
        assert case["pred"].shape == (1, *SHAPE)
        assert set(torch.unique(case["pred"]).tolist()) <= {0.0, 1.0}
        assert value == pytest.approx(volume_metrics(case["pred"], case["label"], (0.7, 0.6, 3.0))["dice"])


def test_inference_preprocessing_without_label(tmp_path):
    item = write_case(tmp_path)[0]
    data = evaluation_preprocessing(24, label_key=None)({"image": item["image"]})
    assert set(data) == {"image"} and data["image"].shape == (1, 24, 24, 10)


@pytest.mark.parametrize("image_size, invert_probabilities", [(192, True), (256, False)])
def test_real_case_round_trip(real_case_dir, tmp_path, image_size, invert_probabilities):
    """The real LPS case: 128 -> 192 (x1.5) or 256 (x2) in-plane and back recovers the mask exactly."""
    item = {"image": str(real_case_dir / "Case00.nii.gz"), "label": str(real_case_dir / "Case00_segmentation.nii.gz")}
    reference = nib.load(item["label"])
    preprocessing = evaluation_preprocessing(image_size)
    data = preprocessing(item)
    assert data["image"].shape == (1, image_size, image_size, 64)
    data["pred"] = one_hot_logits(preprocessing_transforms(image_size)(item)["label"].as_tensor())
    result = evaluation_postprocessing(preprocessing, invert_probabilities=invert_probabilities)(data)
    assert result["pred"].shape == (1, *reference.shape)
    assert np.allclose(result["pred"].affine.numpy(), reference.affine, atol=1e-5)
    assert np.array_equal(result["pred"][0].numpy(), np.asarray(reference.dataobj) > 0)
    assert voxel_spacing(result["label"].affine) == pytest.approx(reference.header.get_zooms(), rel=1e-5)


@pytest.mark.parametrize(
    "pixel_spacing_mm, image_size, exact",
    [
        (0.546875, 256, True),  # half the file's 1.09375 mm: 255 voxel centres padded to 256, exact
        (0.8, 160, True),  # TAPS's in-plane spacing: 175 x 175 centres cropped to 160 (128 mm), the gland inside
        (2.0, 96, False),  # the CPU profile's: 70 x 70 centres padded to 96; coarser than the file, not exact
    ],
)
def test_real_case_round_trip_at_a_fixed_spacing(real_case_dir, pixel_spacing_mm, image_size, exact):
    """The real LPS case through the spacing mode and back: the file's shape and affine always; the mask exactly
    when the network grid is at least as fine as the file's, else a Dice the resampling alone costs."""
    item = {"image": str(real_case_dir / "Case00.nii.gz"), "label": str(real_case_dir / "Case00_segmentation.nii.gz")}
    reference = nib.load(item["label"])
    options = {"in_plane_mode": "spacing", "pixel_spacing_mm": pixel_spacing_mm, "intensity_norm": "percentile"}
    preprocessing = evaluation_preprocessing(image_size, **options)
    data = preprocessing(item)
    assert data["image"].shape == (1, image_size, image_size, 64)
    assert np.allclose(np.linalg.norm(data["image"].affine.numpy()[:3, :3], axis=0)[:2], pixel_spacing_mm)
    data["pred"] = one_hot_logits(preprocessing_transforms(image_size, **options)(item)["label"].as_tensor())
    result = evaluation_postprocessing(preprocessing)(data)
    assert result["pred"].shape == (1, *reference.shape)
    assert np.allclose(result["pred"].affine.numpy(), reference.affine, atol=1e-5)
    truth = np.asarray(reference.dataobj) > 0
    if exact:
        assert np.array_equal(result["pred"][0].numpy(), truth)
    else:
        assert volume_metrics(result["pred"], truth, voxel_spacing(reference.affine))["dice"] > 0.95
