"""The six-site simulator: layout, determinism, geometry, site differences, montage, building blocks."""

import filecmp
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tools.data.synth import synthesize, synthesize_case, write_montage
from tools.data.synthesis import SITES, case_file_names, case_numbers, get_site, site_folder
from tools.data.synthesis.acquisition import add_rician_noise, choose_slice_window, crop_slices, sample_geometry
from tools.data.synthesis.fields import ellipsoid_distance, fraction_inside, segment_distance, smooth_field

SIZE = 48
SEED = 3
OLD = ["ISBI", "ISBI_1.5", "I2CVB", "UCL", "BIDMC", "HK"]
NEW = ["RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    written = synthesize(out, cases_per_site=2, size=SIZE, seed=SEED, naming="old")
    return out, written


@pytest.fixture(scope="module")
def cases():
    """Four cases per site (two case numbers under two seeds) as in-memory results."""
    return {
        site.key: [synthesize_case(site, n, seed=s, size=SIZE) for s in (SEED, SEED + 1) for n in case_numbers(site, 2)]
        for site in SITES
    }


def _load(path):
    img = nib.load(str(path))
    return img, np.asanyarray(img.dataobj)


# ---------------------------------------------------------------- layout


def test_layout_old_naming(collection):
    out, written = collection
    assert sorted(p.name for p in out.iterdir()) == sorted(OLD)
    assert list(written) == OLD
    expected = {
        "ISBI": ["Case00.nii.gz", "Case00_segmentation.nii.gz", "Case01.nii.gz", "Case01_segmentation.nii.gz"],
        "ISBI_1.5": ["Case00.nii.gz", "Case00_Segmentation.nii.gz", "Case01.nii.gz", "Case01_Segmentation.nii.gz"],
        "I2CVB": ["Case00.nii.gz", "Case00_segmentation.nii.gz", "Case01.nii.gz", "Case01_segmentation.nii.gz"],
        "UCL": ["Case01.nii.gz", "Case01_segmentation.nii.gz", "Case26.nii.gz", "Case26_segmentation.nii.gz"],
        "BIDMC": ["Case00.nii.gz", "Case00_segmentation.nii.gz", "Case02.nii.gz", "Case02_segmentation.nii.gz"],
        "HK": ["Case38.nii.gz", "Case38_segmentation.nii.gz", "Case39.nii.gz", "Case39_segmentation.nii.gz"],
    }
    for folder, names in expected.items():
        assert sorted(p.name for p in (out / folder).iterdir()) == names, folder
        assert written[folder] == [str(out / folder / n) for n in names if "egmentation" not in n]


def test_layout_new_naming(tmp_path):
    synthesize(tmp_path, cases_per_site=1, size=24, seed=0, naming="new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NEW)
    assert (tmp_path / "BMC" / "Case00_Segmentation.nii.gz").exists()
    assert (tmp_path / "HCRUDB" / "Case00_segmentation.nii.gz").exists()
    assert (tmp_path / "HK" / "Case38.nii.gz").exists()


def test_case_numbering_keeps_the_real_gaps():
    assert case_numbers(get_site("UCL"), 5) == [1, 26, 27, 28, 29]
    assert case_numbers(get_site("BIDMC"), 3) == [0, 2, 3]
    assert case_numbers(get_site("HK"), 12) == list(range(38, 50))
    assert case_numbers(get_site("ISBI"), 30) == list(range(30))
    assert case_numbers(get_site("UCL"), 1) == [1]
    assert case_numbers(get_site("UCL"), 0) == []
    assert case_file_names(get_site("BMC"), 7) == {"image": "Case07.nii.gz", "label": "Case07_Segmentation.nii.gz"}


def test_site_names_resolve_under_both_namings():
    for old, new in zip(OLD, NEW):
        assert get_site(old) is get_site(new)
        assert site_folder(get_site(old), "old") == old
        assert site_folder(get_site(old), "new") == new
    with pytest.raises(KeyError, match="PROSTATEX"):
        get_site("PROSTATEX")


def test_zone_labels_only_in_zone_sites(collection):
    out, _ = collection
    for folder in OLD:
        site = get_site(folder)
        for mask_path in sorted((out / folder).glob(f"*{site.mask_suffix}.nii.gz")):
            img, lab = _load(mask_path)
            assert lab.dtype == np.uint8, mask_path
            values = set(np.unique(lab).tolist())
            if site.zone_labels:
                assert values == {0, 1, 2}, mask_path
            else:
                assert values == {0, 1}, mask_path


# ---------------------------------------------------------------- determinism


def test_same_seed_same_files(collection, tmp_path):
    out, _ = collection
    synthesize(tmp_path, cases_per_site=2, size=SIZE, seed=SEED, naming="old")
    for path in sorted(out.glob("*/*.nii.gz")):
        assert filecmp.cmp(path, tmp_path / path.parent.name / path.name, shallow=False), path


def test_other_seed_other_voxels():
    a = synthesize_case("BIDMC", 0, seed=0, size=SIZE)
    b = synthesize_case("BIDMC", 0, seed=1, size=SIZE)
    again = synthesize_case("BIDMC", 0, seed=0, size=SIZE)
    assert np.array_equal(a.image, again.image) and np.array_equal(a.label, again.label)
    assert np.array_equal(a.affine, again.affine)
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)


def test_case_does_not_depend_on_how_many_are_written(collection):
    out, _ = collection
    case = synthesize_case("UCL", 26, seed=SEED, size=SIZE)
    img, data = _load(out / "UCL" / "Case26.nii.gz")
    _, lab = _load(out / "UCL" / "Case26_segmentation.nii.gz")
    assert np.array_equal(data, case.image)
    assert np.array_equal(lab, case.label)
    np.testing.assert_allclose(img.affine, case.affine, atol=1e-4)


# ---------------------------------------------------------------- geometry


def test_affines_match_the_site_table(collection):
    out, _ = collection
    for folder in OLD:
        site = get_site(folder)
        for image_path in sorted((out / folder).glob("Case??.nii.gz")):
            img, data = _load(image_path)
            assert data.dtype == np.dtype(site.dtype), image_path
            assert data.shape[:2] == (SIZE, SIZE), image_path
            assert "".join(nib.aff2axcodes(img.affine)) == site.orientation, image_path
            linear = img.affine[:3, :3]
            assert np.count_nonzero(linear - np.diag(np.diag(linear))) == 0, image_path
            zooms = np.abs(np.diag(linear))
            np.testing.assert_allclose(img.header.get_zooms()[:3], zooms, rtol=1e-5)
            assert site.fov_mm[0] - 1e-3 <= zooms[0] * SIZE <= site.fov_mm[1] + 1e-3, image_path
            assert zooms[0] == pytest.approx(zooms[1]), image_path
            assert site.slice_mm[0] - 1e-4 <= zooms[2] <= site.slice_mm[1] + 1e-4, image_path
            assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1, image_path
            mask, _ = _load(image_path.parent / case_file_names(site, int(image_path.name[4:6]))["label"])
            np.testing.assert_array_equal(mask.affine, img.affine)


def test_slab_is_the_site_coverage_unless_the_gland_needs_more(cases):
    for key, results in cases.items():
        for case in results:
            slices = case.image.shape[2]
            thickness = case.geometry.spacing_mm[2]
            coverage = slices * thickness
            occupied = np.flatnonzero(case.label.any(axis=(0, 1)))
            needed = (occupied[-1] - occupied[0] + 1) * thickness + 16.0
            low, high = case.site.coverage_mm
            assert 12 <= slices <= 70, (key, slices)
            assert low - thickness <= coverage <= max(high, needed) + 2 * thickness, (key, coverage, needed)
            assert occupied[0] * thickness >= 8.0 and (slices - 1 - occupied[-1]) * thickness >= 8.0, key


def test_content_agrees_with_affine(cases):
    """Landmarks placed in patient space land where the affine says: mask centroid on the prostate,
    rectum posterior and bladder superior to it (RAS world)."""
    for key, results in cases.items():
        for case in results:
            idx = np.argwhere(case.label > 0).mean(axis=0)
            centroid = case.affine[:3, :3] @ idx + case.affine[:3, 3]
            marks = case.landmarks_ras
            assert np.linalg.norm(centroid - marks["prostate"]) < 15.0, (key, centroid, marks["prostate"])
            assert marks["rectum"][1] < centroid[1] - 10.0, key
            assert marks["bladder"][2] > centroid[2] + 10.0, key


def test_masks_are_plausible(cases):
    for key, results in cases.items():
        for case in results:
            lab = case.label > 0
            volume_ml = lab.sum() * np.prod(case.geometry.spacing_mm) / 1000.0
            assert 10.0 <= volume_ml <= 150.0, (key, case.case_number, volume_ml)
            border = [lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]]
            assert not any(b.any() for b in border), (key, case.case_number, "mask touches the border")
            slices = np.flatnonzero(lab.any(axis=(0, 1)))
            assert np.all(np.diff(slices) == 1), (key, "mask is not one run of slices")


# ---------------------------------------------------------------- site differences


def _world_distance(case, point):
    ijk = np.indices(case.image.shape).reshape(3, -1).T
    world = ijk @ case.affine[:3, :3].T + case.affine[:3, 3]
    return np.linalg.norm(world - point, axis=1)


def test_endorectal_coil_sites_have_a_steep_bias_around_the_rectum(cases):
    """p95 within 30 mm of the coil (or rectum) over the median beyond 60 mm: every coil case exceeds every
    no-coil case."""
    ratios = {True: [], False: []}
    for key, results in cases.items():
        for case in results:
            ref = case.landmarks_ras.get("coil", case.landmarks_ras["rectum"])
            d = _world_distance(case, ref)
            v = case.image.astype(np.float64).ravel()
            ratios[case.site.endorectal_coil].append(np.percentile(v[d < 30.0], 95) / np.median(v[d > 60.0]))
    assert min(ratios[True]) > max(ratios[False]), ratios


def test_sites_differ_in_raw_intensity_statistics(cases):
    median = {k: np.median([np.median(c.image) for c in v]) for k, v in cases.items()}
    dynamic = {k: np.median([np.percentile(c.image, 99.5) / np.median(c.image) for c in v]) for k, v in cases.items()}
    # vendor scales: the raw medians of the six sites span more than a factor of 5
    assert max(median.values()) > 5.0 * min(median.values()), median
    # the coil's bright ring widens the dynamic range of every coil site beyond every surface-coil site
    coil = [dynamic[s.key] for s in SITES if s.endorectal_coil]
    surface = [dynamic[s.key] for s in SITES if not s.endorectal_coil]
    assert min(coil) > max(surface), dynamic
    # int16 sites hold integers, float32 sites do not
    for key, results in cases.items():
        image = results[0].image
        if results[0].site.dtype == "int16":
            assert image.dtype == np.int16 and image.min() >= 0
        else:
            assert image.dtype == np.float32 and not np.allclose(image, np.rint(image))


def test_noise_follows_field_strength(cases):
    sigma = {1.5: [], 3.0: []}
    for results in cases.values():
        for case in results:
            assert case.field_strength_t in case.site.field_strengths_t
            sigma[case.field_strength_t].append(case.acquisition["noise_sigma"])
    assert min(sigma[1.5]) > max(sigma[3.0]), sigma


def test_fields_of_view_differ(cases):
    fov = {k: np.mean([c.acquisition["fov_mm"] for c in v]) for k, v in cases.items()}
    assert fov["BIDMC"] < fov["RUNMC"] < fov["HCRUDB"], fov
    assert fov["BMC"] < fov["HK"], fov


# ---------------------------------------------------------------- montage and arguments


def test_write_montage(collection, tmp_path):
    import matplotlib.image

    out, _ = collection
    png = write_montage(out, tmp_path / "docs" / "montage.png", slices_per_site=2)
    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 200
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    with pytest.raises(FileNotFoundError, match="no site folder"):
        write_montage(tmp_path / "empty", tmp_path / "x.png")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"naming": "newest"}, "naming"),
        ({"cases_per_site": 0}, "cases_per_site"),
        ({"size": 8}, "size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_synthesize_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize(tmp_path, **kwargs)


# ---------------------------------------------------------------- building blocks


def test_fraction_inside_is_the_area_fraction_of_a_flat_edge():
    d = np.array([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], dtype=np.float32)
    np.testing.assert_allclose(fraction_inside(d, 1.0), [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    with pytest.raises(ValueError, match="width_mm"):
        fraction_inside(d, 0.0)


def test_distances_are_exact_where_they_should_be():
    p = (np.array([3.0, 0.0, 0.0], np.float32), np.array([4.0, 0.0, 1.0], np.float32), np.zeros(3, np.float32))
    np.testing.assert_allclose(ellipsoid_distance(p, (0, 0, 0), (2, 2, 2)), [3.0, -2.0, -1.0], atol=1e-5)
    q = (np.array([7.0, 0.0, 0.0], np.float32), np.array([0.0, 4.0, 1.0], np.float32))
    np.testing.assert_allclose(ellipsoid_distance(q, (0, 0), (5, 2)), [2.0, 2.0, -1.0], atol=1e-5)
    s = (np.array([-3.0, 2.0, 9.0], np.float32), np.array([4.0, 5.0, 0.0], np.float32))
    np.testing.assert_allclose(segment_distance(s, (0, 0), (6, 0)), [5.0, 5.0, 3.0], atol=1e-5)


def test_smooth_field_has_unit_variance_and_gaussian_correlation():
    """Filtered white noise with kernel sigma s has correlation exp(-d^2 / (4 s^2)) at lag d."""
    rng = np.random.default_rng(0)
    for sigma in (1.0, 4.0):  # direct and coarse-grid paths
        f = np.stack([smooth_field(rng, (64, 64, 8), (sigma, sigma, 0.0)) for _ in range(12)])
        assert f.dtype == np.float32
        assert abs(f.mean()) < 0.05 and abs(f.var() - 1.0) < 0.12, (sigma, f.mean(), f.var())
        lag = int(sigma)
        corr = np.mean(f[:, :-lag] * f[:, lag:]) / f.var()
        assert corr == pytest.approx(np.exp(-(lag**2) / (4 * sigma**2)), abs=0.05), sigma


def test_rician_noise():
    rng = np.random.default_rng(0)
    sigma = 2.0
    background = add_rician_noise(rng, np.zeros((200, 200, 4), np.float32), sigma)
    # zero signal: Rayleigh, mean sigma * sqrt(pi / 2), mean / std = sqrt(pi / 2) / sqrt(2 - pi / 2)
    assert background.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.01)
    assert background.mean() / background.std() == pytest.approx(np.sqrt(np.pi / 2) / np.sqrt(2 - np.pi / 2), rel=0.02)
    bright = add_rician_noise(rng, np.full((200, 200, 4), 100.0, np.float32), sigma, correlation_px=0.7)
    assert bright.std() == pytest.approx(sigma, rel=0.05)  # high SNR: Gaussian, sigma kept by the smoothing
    neighbour = np.corrcoef(bright[:-1].ravel(), bright[1:].ravel())[0, 1]
    assert 0.3 < neighbour < 0.9
    with pytest.raises(ValueError, match="sigma"):
        add_rician_noise(rng, background, -1.0)


def test_real_case_is_in_the_family_of_the_coil_sites(real_case_dir):
    """The real endorectal-coil case's dynamic range lies inside that of the synthetic coil sites."""
    img = nib.load(str(Path(real_case_dir) / "Case00.nii.gz"))
    data = np.asanyarray(img.dataobj).astype(np.float64)
    real = np.percentile(data, 99.5) / np.median(data)
    coil_cases = [synthesize_case(s, n, 0, 64) for s in SITES if s.endorectal_coil for n in case_numbers(s, 3)]
    synthetic = [np.percentile(c.image, 99.5) / np.median(c.image) for c in coil_cases]
    assert min(synthetic) < real < max(synthetic), (real, synthetic)


def test_choose_slice_window():
    rng = np.random.default_rng(0)
    occupied = np.zeros(10, bool)
    occupied[3:6] = True
    assert choose_slice_window(rng, occupied, target=5, margin=1) == (2, 5)  # the only fit
    assert choose_slice_window(rng, occupied, target=20, margin=1) == (0, 10)  # capped at the grid
    assert choose_slice_window(rng, occupied, target=2, margin=2) == (1, 7)  # the gland needs 3 + 2 * 2
    starts = {choose_slice_window(rng, occupied, target=8, margin=1)[0] for _ in range(200)}
    assert starts == {0, 1, 2}
    with pytest.raises(ValueError, match="empty"):
        choose_slice_window(rng, np.zeros(4, bool), 2, 1)


def test_crop_slices_moves_the_origin_along_the_slice_axis():
    geometry = sample_geometry(np.random.default_rng(0), get_site("HCRUDB"), 32, (-20.0, 20.0))
    cropped = crop_slices(geometry, 5, 12)
    assert cropped.shape == (32, 32, 12)
    np.testing.assert_allclose(cropped.affine[:3, :3], geometry.affine[:3, :3])
    np.testing.assert_allclose(cropped.affine @ [0, 0, 0, 1], geometry.affine @ [0, 0, 5, 1])
    with pytest.raises(ValueError, match="outside"):
        crop_slices(geometry, geometry.shape[2] - 3, 4)


# ---------------------------------------------------------------- anatomy to scale and realism


def test_the_field_of_view_cuts_the_body_as_in_a_real_scan(cases):
    """A pelvis is 300-400 mm wide and every site's field of view (120-300 mm) is narrower: on the slice of
    largest gland area the body reaches both lateral edges of the image in every case. The pelvis is only
    220-285 mm deep, so at HCRUDB's 260-300 mm the anterior and posterior skin may show (body fraction < 1)."""
    from tools.data.realism import physical_extent

    for key, results in cases.items():
        for case in results:
            extent = physical_extent(case.image.astype(np.float64), case.label > 0, case.geometry.spacing_mm)
            assert extent["body_cut_lr"] == 1.0 and extent["body_fraction"] > 0.7, (key, case.case_number, extent)


def test_simulated_bidmc_is_close_to_the_real_case_on_image_statistics(real_case_dir):
    """The statistics the simulator is calibrated on (docs/realism.md, rounds 1 and 2), with margins. Round 1's
    simulator (commit 65ac201) fails it: 10-20 mm below the apex it is 0.18 std brighter than the gland (real
    -0.63), its coil puts 7.3 std on the rectal wall (real 2.2) and its anterior sector is -0.37 (real -1.05).
    Round 2 traded the whole-volume histogram for these local statistics (W1 0.08 -> 0.16, skewness 6.0 -> 2.5,
    shell contrast -0.31 -> +0.27; real 5.57 and -0.12), so those are only bounded loosely here."""
    from tools.data.realism import load_lps, measure_case, wasserstein_quantiles

    vol, mask, spacing = load_lps(real_case_dir / "Case00.nii.gz", real_case_dir / "Case00_segmentation.nii.gz")
    real = measure_case(vol, mask, spacing)
    sims = []
    for number in case_numbers(get_site("BIDMC"), 4):
        case = synthesize_case("BIDMC", number, seed=0, size=96)
        sims.append(measure_case(case.image.astype(np.float64), case.label > 0, case.geometry.spacing_mm))
    median = {k: float(np.nanmedian([s.stats[k] for s in sims])) for k in real.stats}

    def gap(key):
        return abs(median[key] - real.stats[key])

    # round 2: what the network sees where the gland is not, and the coil's near field
    assert gap("below_apex_contrast") < 0.3, median["below_apex_contrast"]
    assert gap("anterior_contrast") < 0.5, median["anterior_contrast"]
    assert gap("lateral_contrast") < 0.35, median["lateral_contrast"]
    assert median["wall_-3mm"] - real.stats["wall_-3mm"] < 2.0, median["wall_-3mm"]
    # round 1, kept
    assert gap("spectral_slope") < 0.35, median["spectral_slope"]
    assert median["coil_gradient"] > 1.0
    # traded off in round 2: loose bounds
    w1 = float(np.median([wasserstein_quantiles(s.quantiles, real.quantiles) for s in sims]))
    assert w1 < 0.2, w1
    assert gap("contrast") < 0.5, median["contrast"]
    assert median["skewness"] > 1.5, median["skewness"]


def test_the_rectoprostatic_layer_darkens_the_gap_behind_the_gland_and_leaves_the_mask(monkeypatch, tmp_path):
    """Round 5c: the 0.5-2.5 mm between the gland and the rectal wall is fibromuscular (dark), not fat, so the
    coil's near field no longer puts the image's brightest band just behind the gland."""
    import tools.data.synthesis.anatomy as anatomy
    from tools.data.realism import load_lps, wall_profile, zscore

    def render(layer_mm):
        monkeypatch.setattr(anatomy, "RECTOPROSTATIC_FASCIA_MM", layer_mm)
        case = synthesize_case("BMC", 0, seed=0, size=64)
        image, label = tmp_path / f"image{layer_mm}.nii.gz", tmp_path / f"label{layer_mm}.nii.gz"
        nib.save(nib.Nifti1Image(case.image.astype(np.float32), case.affine), str(image))
        nib.save(nib.Nifti1Image(case.label.astype(np.uint8), case.affine), str(label))
        volume, mask, spacing = load_lps(image, label)
        return case.label, wall_profile(zscore(volume.astype(np.float32)), mask > 0, spacing, offsets_mm=[-2.0, 4.0])

    label_with, (behind_with, inside_with) = render(anatomy.RECTOPROSTATIC_FASCIA_MM)
    label_without, (behind_without, _) = render(0.0)
    assert np.array_equal(label_with, label_without)
    assert behind_with < behind_without - 0.5
    assert behind_with < inside_with


@pytest.mark.parametrize("site", ["RUNMC", "HK"])
def test_the_tissue_below_the_apex_is_more_uniform_than_the_gland(site):
    """Round 6 (docs/realism.md): in the real case the gland's footprint 10-20 mm below the apex is more uniform
    than the gland (interquartile range 0.57 vs 1.29 std). With the perineal fat painted as 3 mm blobs (round 5c)
    the medians over these four cases were the other way round: RUNMC 1.59 vs 0.78, HK 1.23 vs 1.05."""
    from tools.data.realism import uniformity, zscore

    measured = []
    for number in case_numbers(get_site(site), 4):
        case = synthesize_case(site, number, seed=0, size=96)
        measured.append(uniformity(zscore(case.image.astype(np.float64)), case.label > 0, case.geometry.spacing_mm))
    gland = float(np.median([m["gland_iqr"] for m in measured]))
    below = float(np.median([m["below_apex_iqr"] for m in measured]))
    assert below < gland - 0.1, (below, gland)


def test_gland_ends_factor_is_a_linear_ramp_from_the_nearer_end():
    """Round 8: ``1 - darkening * clip(1 - e / length_mm, 0, 1)``; the default darkens nothing."""
    from tools.data.synthesis.anatomy import GlandEnds

    factor = GlandEnds(darkening=0.4, length_mm=8.0).factor(np.array([0.0, 2.0, 4.0, 8.0, 20.0]))
    assert factor.dtype == np.float32
    np.testing.assert_allclose(factor, [0.6, 0.7, 0.8, 1.0, 1.0], rtol=1e-6)
    assert np.all(GlandEnds().factor(np.array([0.0, 3.0, 50.0])) == 1.0)
    with pytest.raises(ValueError, match="GlandEnds: darkening must lie in"):
        GlandEnds(darkening=1.5)
    with pytest.raises(ValueError, match="length_mm=0"):
        GlandEnds(darkening=0.3, length_mm=0)


def test_the_gland_is_darker_at_its_apex_and_base_and_nothing_else_changes(monkeypatch):
    """Round 8 (docs/realism.md): the gland's end slices are darker than without the darkening, its middle slice
    and everything away from the gland are bit for bit the same, and so is the mask (the darkening has its own
    random stream and changes no other draw)."""
    from scipy import ndimage

    import tools.data.synth as synth
    from tools.data.synthesis.anatomy import GlandEnds

    darkened = synthesize_case("BIDMC", 0, seed=0, size=64)
    monkeypatch.setattr(synth, "sample_gland_ends", lambda rng: GlandEnds())
    plain = synthesize_case("BIDMC", 0, seed=0, size=64)
    assert np.array_equal(darkened.label, plain.label)
    mask = darkened.label > 0
    near = ndimage.binary_dilation(mask, iterations=2)
    assert np.array_equal(darkened.image[~near], plain.image[~near])
    slices = np.flatnonzero(mask.any(axis=(0, 1)))
    middle = int(slices[len(slices) // 2])
    assert np.array_equal(darkened.image[..., middle], plain.image[..., middle])
    for k in (slices[0], slices[-1]):
        ratio = np.median(darkened.image[..., k][mask[..., k]].astype(np.float64)
                          / plain.image[..., k][mask[..., k]].astype(np.float64))
        assert ratio < 0.85, (k, ratio)
