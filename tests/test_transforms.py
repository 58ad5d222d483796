"""Training transforms: geometry (resize or fixed spacing), intensity normalisation, zone merge, slice sampling,
caching, augmentation wiring."""

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, MetaTensor, list_data_collate

from tools.data.transforms import (
    MergeZonesd,
    geometry_transforms,
    in_plane_spacing,
    intensity_transforms,
    RandSliceSampled,
    appearance_randomization_transforms,
    augmentation_transforms,
    in_plane_size,
    preprocessing_transforms,
    training_random_transforms,
    training_transforms,
)

# 40 x 36 x 10 voxels, 0.7 x 0.6 x 3.0 mm, stored LPS (x and y axes point to -R and -A)
SHAPE = (40, 36, 10)
LPS_AFFINE = np.array(
    [[-0.7, 0.0, 0.0, 30.0], [0.0, -0.6, 0.0, 20.0], [0.0, 0.0, 3.0, -10.0], [0.0, 0.0, 0.0, 1.0]]
)
GLAND_SLICES = (3, 4, 5, 6)


def write_case(folder, mask=None, name="Case00"):
    """An LPS case: noisy image with a bright gland; mask with zone value 2 inside value 1, slices 3-6."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 20.0, SHAPE).astype(np.float32)
    if mask is None:
        mask = np.zeros(SHAPE, np.uint8)
        mask[10:30, 8:25, 3:7] = 1
        mask[15:20, 10:15, 4:6] = 2
    image[mask > 0] += 150.0
    nib.save(nib.Nifti1Image(image, LPS_AFFINE), str(folder / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(mask, LPS_AFFINE), str(folder / f"{name}_segmentation.nii.gz"))
    return {
        "image": str(folder / f"{name}.nii.gz"),
        "label": str(folder / f"{name}_segmentation.nii.gz"),
        "site": "SITE",
        "case": name,
    }, image, mask


@pytest.fixture
def case(tmp_path):
    return write_case(tmp_path)


def test_in_plane_size():
    assert in_plane_size(384) == (384, 384)
    assert in_plane_size([80, 72]) == (80, 72)
    for bad in (0, (80,), (80, 72, 3), (80.5, 72)):
        with pytest.raises(ValueError, match="image_size"):
            in_plane_size(bad)


def test_merge_zones_maps_zone_values_to_one():
    label = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    out = MergeZonesd(keys="label")({"label": label})["label"]
    assert torch.equal(out, torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
    assert out.dtype == label.dtype
    assert torch.equal(label, torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])), "the input must not be modified"
    numpy_out = MergeZonesd(keys="label")({"label": np.array([0, 2, 1], np.uint8)})["label"]
    assert numpy_out.dtype == np.uint8 and numpy_out.tolist() == [0, 1, 1]


def test_merge_zones_rejects_unknown_values_naming_the_file(case, tmp_path):
    item, _, mask = case
    mask = mask.copy()
    mask[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(mask, LPS_AFFINE), item["label"])
    with pytest.raises(RuntimeError, match="MergeZonesd") as raised:  # MONAI's Compose wraps the error
        preprocessing_transforms(16)(item)
    assert isinstance(raised.value.__cause__, ValueError)
    assert "Case00_segmentation.nii.gz holds values [3]" in str(raised.value.__cause__)
    with pytest.raises(ValueError, match="zone_values"):
        MergeZonesd(keys="label", zone_values=(0, 1))


def test_preprocessing_orients_resizes_merges_and_zscores(case):
    item, image, mask = case
    out = preprocessing_transforms((80, 72))(item)
    assert out["image"].shape == (1, 80, 72, 10) and out["label"].shape == (1, 80, 72, 10)
    assert out["image"].dtype == torch.float32
    assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S")
    # in-plane voxels halved (0.7 -> 0.35, 0.6 -> 0.3), slices untouched (3 mm)
    assert np.allclose(np.linalg.norm(out["image"].affine.numpy()[:3, :3], axis=0), [0.35, 0.3, 3.0])
    # label: zones merged, x and y flipped (LPS -> RAS), each voxel a 2 x 2 block (nearest, factor 2)
    expected = np.flip(mask > 0, axis=(0, 1)).astype(np.float32)
    assert torch.equal(out["label"][0, ::2, ::2, :], torch.from_numpy(expected.copy()))
    assert torch.equal(out["label"][0, 1::2, 1::2, :], torch.from_numpy(expected.copy()))
    # z-score over the whole volume: mean 0, population std 1
    values = out["image"].double()
    assert abs(values.mean().item()) < 1e-5
    assert abs(values.std(unbiased=False).item() - 1.0) < 1e-5
    # and it is the z-score of the flipped image resized (tri)linearly in-plane, computed independently
    flipped = torch.from_numpy(np.flip(image, axis=(0, 1)).copy())[None, None].double()
    resized = torch.nn.functional.interpolate(flipped, size=(80, 72, 10), mode="trilinear", align_corners=False)
    expected_image = (resized - resized.mean()) / resized.std(unbiased=False)
    assert torch.allclose(out["image"][None].double(), expected_image, atol=1e-4)


def test_preprocessing_reads_metaimage_like_nifti(case, tmp_path):
    itk = pytest.importorskip("itk")
    item = case[0]
    for key in ("image", "label"):
        itk.imwrite(itk.imread(item[key]), item[key].replace(".nii.gz", ".mha"))
    from_nifti = preprocessing_transforms(32)(item)
    from_mha = preprocessing_transforms(32)({k: item[k].replace(".nii.gz", ".mha") for k in ("image", "label")})
    for key in ("image", "label"):
        assert torch.equal(from_mha[key].as_tensor(), from_nifti[key].as_tensor())
        assert torch.allclose(from_mha[key].affine, from_nifti[key].affine, atol=1e-6)


def test_preprocessing_keeps_original_geometry_keys(case):
    item, _, mask = case
    out = preprocessing_transforms(64, original_geometry_keys=("label",))(item)
    assert out["image"].shape == (1, 64, 64, 10)
    assert out["label"].shape == (1, *SHAPE)
    assert np.allclose(out["label"].affine.numpy(), LPS_AFFINE)
    assert torch.equal(out["label"][0], torch.from_numpy((mask > 0).astype(np.float32)))
    with pytest.raises(ValueError, match="original_geometry_keys"):
        preprocessing_transforms(64, original_geometry_keys=("image",))


def volume_dict(foreground_slices, depth=12, size=(6, 5)):
    label = torch.zeros(1, *size, depth)
    for z in foreground_slices:
        label[0, 1:3, 1:3, z] = 1
    image = torch.arange(label.numel(), dtype=torch.float32).reshape(label.shape)
    return {"image": image, "label": label, "case": "c"}


@pytest.mark.parametrize("fraction, expect_foreground", [(0.0, True), (1.0, False)])
def test_slice_sampler_extreme_fractions(fraction, expect_foreground):
    data = volume_dict(foreground_slices=[3, 4, 5])
    sampler = RandSliceSampled(keys=["image", "label"], num_samples=50, background_fraction=fraction)
    sampler.set_random_state(0)
    samples = sampler(data)
    assert len(samples) == 50
    for s in samples:
        assert s["image"].shape == (1, 6, 5) and s["label"].shape == (1, 6, 5)
        z = s["slice_index"]
        assert torch.equal(s["image"], data["image"][..., z]) and torch.equal(s["label"], data["label"][..., z])
        assert bool(s["label"].any()) == expect_foreground
        assert s["case"] == "c"
    indices = {s["slice_index"] for s in samples}
    assert indices == ({3, 4, 5} if expect_foreground else set(range(12)) - {3, 4, 5})


def test_slice_sampler_fraction_is_respected_statistically():
    data = volume_dict(foreground_slices=range(2, 10))
    sampler = RandSliceSampled(keys=["image", "label"], num_samples=2000, background_fraction=0.3)
    sampler.set_random_state(123)
    background = np.mean([not s["label"].any() for s in sampler(data)])
    # binomial standard deviation sqrt(0.3 * 0.7 / 2000) = 0.0102; allow 4 of them
    assert abs(background - 0.3) < 4 * 0.0102


def test_slice_sampler_without_background_or_foreground_slices():
    all_foreground = volume_dict(foreground_slices=range(12))
    samples = RandSliceSampled(keys=["image", "label"], num_samples=20, background_fraction=1.0)(all_foreground)
    assert all(s["label"].any() for s in samples)
    empty = volume_dict(foreground_slices=[])
    samples = RandSliceSampled(keys=["image", "label"], num_samples=20, background_fraction=0.0)(empty)
    assert len(samples) == 20 and not any(s["label"].any() for s in samples)


def test_slice_sampler_returns_copies_with_2d_affine():
    data = volume_dict(foreground_slices=[4])
    # the slice axis also moves x by 0.25 mm per slice, so slice 4 starts 1 mm further along x
    affine = torch.tensor([[0.5, 0, 0.25, 1.0], [0, 0.4, 0, 2.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]], dtype=torch.float64)
    data["image"] = MetaTensor(data["image"], affine=affine, meta={"filename_or_obj": "x.nii.gz"})
    sample = RandSliceSampled(keys=["image", "label"], num_samples=1)(data)[0]
    assert sample["slice_index"] == 4
    expected = torch.tensor([[0.5, 0, 2.0], [0, 0.4, 2.0], [0, 0, 1]], dtype=torch.float64)
    assert torch.equal(sample["image"].affine, expected)
    assert sample["image"].meta["filename_or_obj"] == "x.nii.gz"
    assert sample["image"].applied_operations == []
    sample["image"].fill_(-1.0)
    assert data["image"].min() == 0.0, "slices must be copies of the volume"


def test_slice_sampler_checks_shapes_and_arguments():
    data = volume_dict(foreground_slices=[1])
    data["image"] = data["image"][..., :5]
    with pytest.raises(ValueError, match="'image'.*like 'label'"):
        RandSliceSampled(keys=["image", "label"])(data)
    with pytest.raises(ValueError, match="channel-first 3D"):
        RandSliceSampled(keys=["label"])({"label": torch.zeros(4, 4, 4)})
    with pytest.raises(ValueError, match="background_fraction"):
        RandSliceSampled(keys="label", background_fraction=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        RandSliceSampled(keys="label", num_samples=0)


def test_training_transforms_cache_the_3d_volume_and_return_2d_batches(case, tmp_path):
    items = [case[0], write_case(tmp_path, name="Case01")[0]]
    transforms = training_transforms(32, num_samples=3, background_fraction=0.0, augment=False)
    dataset = CacheDataset(items, transforms, cache_rate=1.0, num_workers=0, copy_cache=False, progress=False)
    cached = dataset._cache[0]
    assert isinstance(cached, dict) and cached["image"].shape == (1, 32, 32, 10), "cache must hold the 3D volume"
    batch = next(iter(DataLoader(dataset, batch_size=2, collate_fn=list_data_collate)))
    assert batch["image"].shape == (6, 1, 32, 32) and batch["label"].shape == (6, 1, 32, 32)
    for i, z in enumerate(batch["slice_index"].tolist()):
        assert z in GLAND_SLICES
        volume = dataset._cache[i // 3]
        assert torch.equal(batch["image"][i], volume["image"][..., z])
        assert torch.equal(batch["label"][i], volume["label"][..., z])
    assert batch["case"] == ["Case00"] * 3 + ["Case01"] * 3


def test_augmentation_keeps_labels_binary_and_flips_image_and_label_together(case):
    item = case[0]
    volume = preprocessing_transforms(32)(item)
    augmented = training_random_transforms(num_samples=16, background_fraction=0.0)
    augmented.set_random_state(1)
    for s in augmented(volume):
        assert s["image"].shape == (1, 32, 32) and s["image"].dtype == torch.float32
        assert set(torch.unique(s["label"]).tolist()) <= {0.0, 1.0}
    only_flip = dict(
        affine_prob=0.0, flip_prob=1.0, noise_prob=0.0, smooth_prob=0.0, intensity_scale_prob=0.0, contrast_prob=0.0
    )
    flipped = training_random_transforms(num_samples=2, background_fraction=0.0, **only_flip)(volume)
    for s in flipped:
        z = s["slice_index"]
        assert torch.equal(s["image"], torch.flip(volume["image"][..., z], dims=[1]))
        assert torch.equal(s["label"], torch.flip(volume["label"][..., z], dims=[1]))
    with pytest.raises(ValueError, match="augment=False"):
        training_random_transforms(augment=False, flip_prob=1.0)
    assert len(augmentation_transforms()) == 6


def test_real_case_preprocessing_and_slice_sampling(real_case_dir):
    item = {"image": str(real_case_dir / "Case00.nii.gz"), "label": str(real_case_dir / "Case00_segmentation.nii.gz")}
    volume = preprocessing_transforms(192)(item)
    assert volume["image"].shape == (1, 192, 192, 64)
    assert nib.aff2axcodes(volume["image"].affine.numpy()) == ("R", "A", "S")
    assert abs(volume["image"].double().mean().item()) < 1e-5
    assert abs(volume["image"].double().std(unbiased=False).item() - 1.0) < 1e-5
    # LPS -> RAS flips x and y only, so the gland keeps its slices 16..49 (README of the case)
    foreground = RandSliceSampled(keys="label").foreground_slices(volume["label"])
    assert torch.nonzero(foreground).flatten().tolist() == list(range(16, 50))
    for fraction, allowed in ((0.0, set(range(16, 50))), (1.0, set(range(64)) - set(range(16, 50)))):
        sampler = RandSliceSampled(keys=["image", "label"], num_samples=32, background_fraction=fraction)
        sampler.set_random_state(0)
        assert {s["slice_index"] for s in sampler(volume)} <= allowed


# ------------------------------------------------------------------ preprocessing options (docs/preprocessing.md)


def ramp_volume(shape=(40, 36, 10), spacing=(1.0, 1.0, 3.0)):
    """A RAS volume (1, X, Y, Z) whose value is the x index (image) and a label that is 1 for x in [10, 20)."""
    x = torch.arange(shape[0], dtype=torch.float32)[:, None, None].expand(shape).clone()
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    label = torch.zeros(shape)
    label[10:20] = 1.0
    return {"image": MetaTensor(x[None], affine=affine), "label": MetaTensor(label[None], affine=affine.clone())}


def apply(transforms, data):
    for t in transforms:
        data = t(data)
    return data


def test_spacing_mode_resamples_the_plane_to_the_pixel_spacing_and_keeps_the_slices():
    """40 x 36 voxels of 1 mm -> 2 mm: voxel centres 0, 2, ..., 38 (20) and 0, 2, ..., 34 (18); the window
    (20, 18) is exactly that grid, so the image holds the ramp's values at even x and the label is sampled
    nearest; the 10 slices of 3 mm are untouched."""
    data = apply(geometry_transforms(["image", "label"], "image", (20, 18), "spacing", 2.0), ramp_volume())
    assert data["image"].shape == (1, 20, 18, 10) and data["label"].shape == (1, 20, 18, 10)
    assert np.allclose(np.linalg.norm(data["image"].affine.numpy()[:3, :3], axis=0), [2.0, 2.0, 3.0])
    assert np.allclose(data["image"].affine.numpy()[:3, 3], [0.0, 0.0, 0.0])  # the first voxel centre stays
    expected = 2.0 * torch.arange(20, dtype=torch.float32)[:, None, None].expand(20, 18, 10)
    assert torch.allclose(data["image"][0], expected, atol=1e-4)
    assert torch.equal(data["label"][0, :, 0, 0], (torch.arange(20) * 2 >= 10).float() * (torch.arange(20) * 2 < 20))
    # anisotropic pixel spacing (sx, sy): 40 x 36 at 1 mm -> 40 / 4 = 10 x 36 / 3 -> 12 voxels (centres 0..36, 0..33)
    data = apply(geometry_transforms(["image"], "image", (10, 12), "spacing", (4.0, 3.0)), ramp_volume())
    assert data["image"].shape == (1, 10, 12, 10)
    assert np.allclose(np.linalg.norm(data["image"].affine.numpy()[:3, :3], axis=0), [4.0, 3.0, 3.0])


@pytest.mark.parametrize(
    "size, first, last, zeros_before, zeros_after",
    [
        (16, 4.0, 34.0, 0, 0),  # 20 -> 16: 2 voxels cropped on each side (x = 4 ... 34)
        (24, 0.0, 38.0, 2, 2),  # 20 -> 24: 2 zeros padded on each side
        (23, 0.0, 38.0, 1, 2),  # 20 -> 23: the odd voxel of padding goes to the end
        (17, 4.0, 36.0, 0, 0),  # 20 -> 17: the odd cropped voxel comes off the start (2 there, 1 at the end)
    ],
)
def test_spacing_mode_crops_or_pads_a_centred_window(size, first, last, zeros_before, zeros_after):
    data = apply(geometry_transforms(["image"], "image", (size, 18), "spacing", 2.0), ramp_volume())
    line = data["image"][0, :, 0, 0]
    assert line.shape == (size,)
    inside = line[zeros_before : size - zeros_after]
    assert torch.all(line[:zeros_before] == 0) and torch.all(line[size - zeros_after :] == 0)
    assert inside[0].item() == pytest.approx(first) and inside[-1].item() == pytest.approx(last)
    assert torch.allclose(inside[1:] - inside[:-1], torch.full((len(inside) - 1,), 2.0), atol=1e-4)


def test_resize_mode_is_the_papers_resize_whatever_the_spacing():
    data = apply(geometry_transforms(["image"], "image", (80, 72), "resize", 2.0), ramp_volume())
    assert data["image"].shape == (1, 80, 72, 10)
    assert np.allclose(np.linalg.norm(data["image"].affine.numpy()[:3, :3], axis=0), [0.5, 0.5, 3.0])


def test_nonzero_zscore_ignores_zeros():
    """Nonzero voxels (2, 4, 6): mean 4, population std sqrt(8/3); zeros stay 0; more zeros change nothing."""
    values = torch.tensor([0.0, 0.0, 0.0, 2.0, 4.0, 6.0])
    out = apply(intensity_transforms("image", "nonzero"), {"image": values.clone().reshape(1, 6, 1, 1)})["image"].flatten()
    s = (8.0 / 3.0) ** 0.5
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 0.0, -2.0 / s, 0.0, 2.0 / s]), atol=1e-6)
    padded = torch.cat([values, torch.zeros(30)]).reshape(1, 36, 1, 1)
    out_padded = apply(intensity_transforms("image", "nonzero"), {"image": padded})["image"].flatten()
    assert torch.allclose(out_padded[:6], out, atol=1e-6) and torch.all(out_padded[6:] == 0)
    plain = apply(intensity_transforms("image", "zscore"), {"image": torch.cat([values, torch.zeros(30)]).reshape(1, 36, 1, 1)})
    plain = plain["image"].flatten()
    assert not torch.allclose(plain[:6], out, atol=1e-2), "the plain z-score does count the zeros"


def test_percentile_zscore_clips_then_zscores():
    """0, 1, ..., 99 and one outlier 10000: the 1st / 99th percentiles (linear, numpy's default) are 1 and 99;
    clipped, the values are z-scored by their own mean and population std, so the outlier no longer sets the scale."""
    values = np.concatenate([np.arange(100.0), [10000.0]])
    lower, upper = np.percentile(values, 1.0), np.percentile(values, 99.0)
    assert (lower, upper) == pytest.approx((1.0, 99.0))
    clipped = np.clip(values, lower, upper)
    expected = (clipped - clipped.mean()) / clipped.std()
    image = torch.tensor(values, dtype=torch.float32).reshape(1, 101, 1, 1)
    out = apply(intensity_transforms("image", "percentile", (1.0, 99.0)), {"image": image.clone()})["image"].flatten()
    assert np.allclose(out.numpy(), expected, atol=1e-5)
    assert out[0].item() == pytest.approx((1.0 - clipped.mean()) / clipped.std(), rel=1e-5)  # 0 clipped up to 1
    assert out[-1].item() == out[-2].item() == pytest.approx((99.0 - clipped.mean()) / clipped.std(), rel=1e-5)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-5) and out.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)
    plain = apply(intensity_transforms("image", "zscore"), {"image": image})["image"].flatten()
    assert plain[:100].std().item() < 0.1 < out[:100].std().item()  # unclipped, the outlier squeezes the rest


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"in_plane_mode": "crop"}, "in_plane_mode"),
        ({"in_plane_mode": "spacing", "pixel_spacing_mm": 0}, "pixel_spacing_mm"),
        ({"pixel_spacing_mm": -1.0}, "pixel_spacing_mm"),
        ({"pixel_spacing_mm": (1.0, 2.0, 3.0)}, "pixel_spacing_mm"),
        ({"pixel_spacing_mm": "1mm"}, "pixel_spacing_mm"),
        ({"intensity_norm": "minmax"}, "intensity_norm"),
        ({"intensity_norm": "percentile", "intensity_percentiles": (99.5, 0.5)}, "intensity_percentiles"),
        ({"intensity_percentiles": (0.0, 101.0)}, "intensity_percentiles"),
        ({"intensity_percentiles": 99.5}, "intensity_percentiles"),
        ({"intensity_percentiles": "19"}, "intensity_percentiles"),
    ],
)
def test_bad_preprocessing_options_fail_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"^{key} must be") as raised:
        preprocessing_transforms(32, **kwargs)
    assert "\n" not in str(raised.value), "one line"
    with pytest.raises(ValueError, match=f"^{key} must be"):
        training_transforms(32, **kwargs)


def test_in_plane_spacing():
    assert in_plane_spacing(0.8) == (0.8, 0.8)
    assert in_plane_spacing([0.5, 0.6]) == (0.5, 0.6)
    assert in_plane_spacing(np.float32(2.0)) == (2.0, 2.0)
    for bad in (True, float("nan"), float("inf"), (1.0,), None):
        with pytest.raises(ValueError, match="pixel_spacing_mm"):
            in_plane_spacing(bad)


@pytest.mark.parametrize("intensity_norm", ["zscore", "nonzero", "percentile"])
def test_spacing_mode_on_a_non_square_lps_case(case, intensity_norm):
    """The LPS case 40 x 36 at 0.7 x 0.6 mm resampled to 0.35 x 0.3 mm (79 x 71 voxel centres) in an 80 x 72
    window: one zero voxel padded at the end of each axis; the label is the file's mask, flipped to RAS, each
    voxel a 2 x 2 block; the image is normalised over what the network sees."""
    item, image, mask = case
    out = preprocessing_transforms(
        (80, 72), in_plane_mode="spacing", pixel_spacing_mm=(0.35, 0.3), intensity_norm=intensity_norm
    )(item)
    assert out["image"].shape == (1, 80, 72, 10) and out["label"].shape == (1, 80, 72, 10)
    assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S")
    assert np.allclose(np.linalg.norm(out["image"].affine.numpy()[:3, :3], axis=0), [0.35, 0.3, 3.0])
    expected = np.flip(mask > 0, axis=(0, 1)).astype(np.float32)
    assert torch.equal(out["label"][0, :79:2, :71:2, :], torch.from_numpy(expected.copy()))
    assert torch.all(out["label"][0, 79] == 0) and torch.all(out["label"][0, :, 71] == 0)
    values = out["image"].double()
    if intensity_norm == "nonzero":
        assert torch.all(values[0, 79] == 0) and torch.all(values[0, :, 71] == 0)  # the padding is not counted
        inside = values[0, :79, :71]
        assert abs(inside.mean().item()) < 1e-5 and abs(inside.std(unbiased=False).item() - 1.0) < 1e-5
    else:
        assert abs(values.mean().item()) < 1e-5 and abs(values.std(unbiased=False).item() - 1.0) < 1e-5


def test_real_case_at_the_cpu_profiles_spacing(real_case_dir):
    """The real case (128 x 128 at 1.094 mm, 140 mm) at 2 mm: 70 x 70 voxel centres, padded to 96 x 96 (13 zero
    voxels before, 13 after); slices and gland slices 16..49 kept; nonzero z-score leaves the padding at 0."""
    item = {"image": str(real_case_dir / "Case00.nii.gz"), "label": str(real_case_dir / "Case00_segmentation.nii.gz")}
    out = preprocessing_transforms(96, in_plane_mode="spacing", pixel_spacing_mm=2.0, intensity_norm="nonzero")(item)
    assert out["image"].shape == (1, 96, 96, 64)
    assert np.allclose(np.linalg.norm(out["image"].affine.numpy()[:3, :3], axis=0), [2.0, 2.0, 1.6160], atol=1e-3)
    rows = torch.nonzero(out["image"][0].abs().sum(dim=(1, 2)) > 0).flatten()
    assert (rows.min().item(), rows.max().item()) == (13, 82)
    foreground = RandSliceSampled(keys="label").foreground_slices(out["label"])
    assert torch.nonzero(foreground).flatten().tolist() == list(range(16, 50))


def test_in_plane_spacing_keeps_entries_that_are_not_metadata_dicts():
    """MONAI Label's pre-transforms carry ``image_path`` (a string) beside ``image``; MONAI's ``Spacingd`` treats
    every ``image_*`` entry as a metadata dict and raised on it. InPlaneSpacingd leaves it as it was, and its
    inverse restores the input grid."""
    from monai.transforms import Spacingd

    from tools.data.transforms import InPlaneSpacingd

    data = dict(ramp_volume(), image_path="/studies/case0.nii.gz")
    data["image"].meta["filename_or_obj"] = "/studies/case0.nii.gz"  # Spacingd's update needs a NIfTI name
    with pytest.raises(AttributeError, match="update"):
        Spacingd(keys="image", pixdim=(2.0, 2.0, -1.0))(dict(data))
    transform = InPlaneSpacingd(keys="image", pixel_spacing_mm=2.0)
    out = transform(dict(data))
    assert out["image_path"] == "/studies/case0.nii.gz" and out["image"].shape == (1, 20, 18, 10)
    back = transform.inverse(out)["image"]
    assert back.shape == (1, 40, 36, 10) and torch.allclose(back.affine, data["image"].affine)
    assert torch.allclose(back[0, ::2, ::2], data["image"][0, ::2, ::2], atol=1e-4)
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        InPlaneSpacingd(keys="image", pixel_spacing_mm=0.0)


def test_appearance_randomization_changes_the_image_only(case):
    volume = preprocessing_transforms(32)(case[0])
    off = dict(affine_prob=0.0, flip_prob=0.0, noise_prob=0.0, smooth_prob=0.0, intensity_scale_prob=0.0,
               contrast_prob=0.0)
    plain = training_random_transforms(num_samples=8, background_fraction=0.0, **off)
    strong = training_random_transforms(num_samples=8, background_fraction=0.0, appearance_randomization=True, **off)
    plain.set_random_state(3)
    strong.set_random_state(3)
    changed = 0
    for a, b in zip(plain(volume), strong(volume)):
        assert a["slice_index"] == b["slice_index"]  # the same slices drawn: only the appearance differs
        assert torch.equal(a["label"], b["label"])
        assert b["image"].shape == a["image"].shape and torch.isfinite(b["image"]).all()
        changed += int(not torch.allclose(a["image"], b["image"]))
    assert changed >= 1  # each transform fires with probability 0.25-0.3, so 8 slices almost surely see one
    assert [type(t).__name__ for t in appearance_randomization_transforms()] == [
        "RandBiasFieldd", "RandHistogramShiftd", "RandAdjustContrastd", "RandSimulateLowResolutiond"]


def test_appearance_randomization_with_zero_probabilities_is_the_identity():
    image = torch.randn(1, 24, 24)
    transforms = appearance_randomization_transforms(bias_field_prob=0.0, remap_prob=0.0, gamma_prob=0.0,
                                                     low_resolution_prob=0.0)
    out = {"image": image.clone()}
    for t in transforms:
        out = t(out)
    assert torch.equal(torch.as_tensor(out["image"]), image)


def test_appearance_randomization_keeps_the_intensity_order_of_the_remap():
    """The intensity remap is monotone: it changes contrasts, never which tissue is brighter."""
    transforms = appearance_randomization_transforms(remap_prob=1.0)
    (remap,) = [t for t in transforms if type(t).__name__ == "RandHistogramShiftd"]
    remap.set_random_state(0)
    image = torch.linspace(-2.0, 3.0, 400).reshape(1, 20, 20)
    out = torch.as_tensor(remap({"image": image})["image"]).flatten()
    assert not torch.allclose(out, image.flatten())
    assert (out[1:] >= out[:-1] - 1e-6).all()
