"""``tools.data.realism``: each statistic pinned on inputs whose answer is known, the report and the CLI."""

from pathlib import Path

import numpy as np
import nibabel as nib
import pytest

from tools.data.realism import (
    edge_profile,
    CaseStats,
    bias_profile,
    far_field_ratio,
    coil_gradient,
    gland_contrast,
    histogram_quantiles,
    load_lps,
    measure_case,
    nearest_case,
    physical_extent,
    radial_power_spectrum,
    below_apex_ring,
    sector_contrasts,
    realism_report,
    spectral_slope,
    uniformity,
    wall_profile,
    wasserstein_quantiles,
    zscore,
)
from tools.data.synth import synthesize

from test_data_cli import run_cli, stderr_lines


def test_zscore_and_quantiles():
    v = np.arange(1, 101, dtype=np.float64).reshape(4, 5, 5)
    z = zscore(v)
    assert z.mean() == pytest.approx(0.0, abs=1e-12) and z.std() == pytest.approx(1.0)
    q = histogram_quantiles(z)
    assert q["q50"] == pytest.approx(0.0, abs=1e-12)  # symmetric data
    assert q["skewness"] == pytest.approx(0.0, abs=1e-12)
    skewed = histogram_quantiles(np.r_[np.zeros(99), 1.0])  # Bernoulli(p): (1 - 2p) / sqrt(p (1 - p))
    assert skewed["skewness"] == pytest.approx((1 - 0.02) / np.sqrt(0.01 * 0.99))


def test_wasserstein_of_a_shift_is_the_shift():
    q = np.quantile(np.random.default_rng(0).normal(size=1000), np.linspace(0.005, 0.995, 199))
    assert wasserstein_quantiles(q, q + 0.7) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="shape"):
        wasserstein_quantiles(q, q[:-1])


def test_gland_contrast_on_a_volume_with_known_levels():
    spacing = (1.0, 1.5, 3.0)
    shape = (40, 40, 20)
    lo, hi = np.array([15, 15, 8]), np.array([24, 24, 11])
    idx = np.indices(shape).transpose(1, 2, 3, 0)
    gap = np.maximum(np.maximum(lo - idx, idx - hi), 0) * np.array(spacing)
    distance = np.sqrt((gap**2).sum(-1))  # to the nearest voxel centre of the box
    mask = distance == 0
    volume = np.ones(shape)
    volume[(distance > 2.0) & (distance <= 8.0)] = 2.0
    volume[mask] = 5.0
    assert gland_contrast(volume, mask, spacing) == pytest.approx(3.0 / volume.std())
    two_level = np.where(mask, 3.0, 1.0)  # no shell level: (a - b) / (|a - b| sqrt(p (1 - p)))
    p = mask.mean()
    assert gland_contrast(two_level, mask, spacing) == pytest.approx(1.0 / np.sqrt(p * (1 - p)))
    with pytest.raises(ValueError, match="mask is empty"):
        gland_contrast(volume, np.zeros(shape, bool), spacing)
    with pytest.raises(ValueError, match="differs from image shape"):
        gland_contrast(volume, mask[:-1], spacing)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0)])
def test_power_spectrum_of_a_sinusoid_peaks_at_its_frequency(spacing):
    nx, ny = 64, 48
    df = max(1.0 / (nx * spacing[0]), 1.0 / (ny * spacing[1]))
    k = 5
    x = np.arange(nx)[:, None] * spacing[0]
    image = np.sin(2 * np.pi * k * df * x) * np.ones((1, ny))
    f, p = radial_power_spectrum(image, spacing)
    assert int(np.nanargmax(p)) == k and f[k] == pytest.approx(k * df)
    assert f[-1] <= min(0.5 / spacing[0], 0.5 / spacing[1]) + 1e-12


def test_power_spectrum_is_a_density():
    """White noise of variance s^2 on pixels dx dy has a flat density s^2 dx dy, whatever the pixel size."""
    rng = np.random.default_rng(0)
    for spacing in ((1.0, 1.0), (2.0, 0.5), (0.5, 0.5)):
        f, p = radial_power_spectrum(rng.normal(0, 2.0, (128, 128)), spacing)
        assert np.nanmean(p[2:]) == pytest.approx(4.0 * spacing[0] * spacing[1], rel=0.05), spacing


def test_spectral_slope_of_a_power_law():
    f = np.linspace(0.01, 0.25, 49)
    assert spectral_slope(f, 7.0 * f**-3.0) == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="fewer than 3"):
        spectral_slope(f, np.full_like(f, np.nan))


def test_bias_profile_of_a_ramp_is_the_ramp():
    spacing = (1.0, 1.0, 2.0)
    shape = (60, 240, 5)
    mask = np.zeros(shape, bool)
    mask[25:35, 115:126, 1:4] = True  # centre y = 120
    alpha = 0.01  # per mm, posterior positive
    volume = np.broadcast_to(alpha * np.arange(shape[1])[None, :, None] * spacing[1], shape).copy()
    offsets, profile = bias_profile(volume, mask, spacing)
    np.testing.assert_allclose(profile - profile[offsets == 0], alpha * offsets, atol=1e-9)
    assert coil_gradient(offsets, profile) == pytest.approx(alpha * 90.0)


def test_physical_extent_of_a_box_body():
    spacing = (2.0, 1.0, 3.0)
    shape = (50, 80, 10)
    volume = np.zeros(shape)
    volume[10:40, 20:70] = 100.0  # 30 x 50 voxels = 60 x 50 mm
    mask = np.zeros(shape, bool)
    mask[20:30, 40:52, 3:7] = True  # 20 x 12 x 12 mm
    volume[mask] = 60.0
    e = physical_extent(volume, mask, spacing)
    assert e["fov_mm"] == 100.0
    # a step smoothed by a 3 mm Gaussian crosses 15% of its height 3 mm * Phi^-1(0.85) = 3.11 mm outside it:
    # voxel centres 8..41 (x, 2 mm) and 17..72 (y, 1 mm) are body
    out = 3.0 * 1.0364
    xs = [i for i in range(shape[0]) if 10 - 0.5 - out / 2.0 < i < 40 - 0.5 + out / 2.0]
    ys = [j for j in range(shape[1]) if 20 - 0.5 - out < j < 70 - 0.5 + out]
    assert (xs[0], xs[-1], ys[0], ys[-1]) == (8, 41, 17, 72)
    assert e["body_width_mm"] == len(xs) * spacing[0]
    assert e["body_depth_mm"] == len(ys) * spacing[1]
    assert e["body_fraction"] == pytest.approx(len(xs) * len(ys) / (50 * 80), rel=0.03)  # corners are rounded
    assert e["body_cut_lr"] == 0.0
    assert (e["gland_lr_mm"], e["gland_ap_mm"], e["gland_si_mm"]) == (20.0, 12.0, 12.0)
    assert e["gland_ml"] == pytest.approx(10 * 12 * 4 * 6.0 / 1000.0)
    volume[:, 20:70] = 100.0  # the body now crosses both lateral edges
    volume[mask] = 60.0
    assert physical_extent(volume, mask, spacing)["body_cut_lr"] == 1.0


def test_load_lps_reorders_axes_and_spacing(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    # array axis 0 runs anterior (RAS +y) at 2 mm, axis 1 runs left (RAS -x) at 1 mm, axis 2 superior at 3 mm
    affine = np.array([[0, -1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    mask = np.zeros_like(data, dtype=np.uint8)
    mask[1, 2, 3] = 1
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "i.nii.gz"))
    nib.save(nib.Nifti1Image(mask, affine), str(tmp_path / "m.nii.gz"))
    vol, m, spacing = load_lps(tmp_path / "i.nii.gz", tmp_path / "m.nii.gz")
    assert spacing == (1.0, 2.0, 3.0)
    assert vol.shape == (3, 2, 4)
    # LPS axis 0 (left) is array axis 1 (RAS -x is left); LPS axis 1 (posterior) is array axis 0 reversed
    assert vol[2, 0, 3] == data[1, 2, 3] and m[2, 0, 3] and m.sum() == 1
    assert vol[0, 1, 0] == data[0, 0, 0]
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        load_lps(tmp_path / "bad.nii.gz", tmp_path / "m.nii.gz")


def _stats(**values):
    empty = np.zeros(1)
    return CaseStats(name="c", stats=values, quantiles=empty, freqs=empty, spectrum=empty, offsets=empty,
                     profile=empty)


def test_nearest_case_uses_standardised_distance():
    real = _stats(a=0.0, b=0.0)
    sims = [_stats(a=1.0, b=0.0), _stats(a=0.0, b=30.0), _stats(a=3.0, b=10.0)]
    # std of a over the sims is 1.25, of b 12.5: sim 0 is 0.8 away, sim 1 is 2.4, sim 2 is 2.5
    assert nearest_case(real, sims, features=("a", "b")) == 0
    with pytest.raises(ValueError, match="no simulated case"):
        nearest_case(real, [], features=("a",))


def test_measure_case_on_the_real_case(real_case_dir):
    vol, mask, spacing = load_lps(real_case_dir / "Case00.nii.gz", real_case_dir / "Case00_segmentation.nii.gz")
    assert spacing == pytest.approx((1.094, 1.094, 1.616), abs=1e-3)
    stats = measure_case(vol, mask, spacing).stats
    # facts of the case (README beside it): 140 mm field of view, gland about 54 x 36 x 55 mm, 46 mL
    assert stats["fov_mm"] == pytest.approx(140.0, abs=1.0)
    assert stats["gland_ml"] == pytest.approx(46.0, abs=1.5)
    assert stats["body_cut_lr"] == 1.0  # a real pelvis is wider than a prostate field of view
    assert stats["coil_gradient"] > 1.0  # endorectal coil: bright behind the gland


@pytest.fixture(scope="module")
def tiny_collection(tmp_path_factory):
    out = tmp_path_factory.mktemp("realism_synth")
    synthesize(out, cases_per_site=1, size=32, seed=0)
    return out


def test_report_and_cli(real_case_dir, tiny_collection, tmp_path):
    result = realism_report(real_case_dir / "Case00.nii.gz", real_case_dir / "Case00_segmentation.nii.gz",
                            tiny_collection, tmp_path / "r.md", tmp_path / "r.png")
    text = (tmp_path / "r.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| quantity"))
    assert header.split("|")[2:-1] == [" real case ", " RUNMC ", " BMC ", " HCRUDB ", " UCL ", " BIDMC ", " HK ",
                                       " all simulated cases (min - max) "]
    assert result["nearest"].split("/")[0] in ("RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK")
    assert (tmp_path / "r.png").stat().st_size > 10_000
    ok = run_cli("realism", "--root", tiny_collection, "--real", real_case_dir / "Case00.nii.gz",
                 "--out-md", tmp_path / "c.md", "--out-png", tmp_path / "c.png", "--label", "new sim",
                 "--baseline", tiny_collection, "--baseline-label", "old sim")
    assert ok.returncode == 0, ok.stderr
    assert "nearest simulated case" in ok.stdout
    titles = [line for line in (tmp_path / "c.md").read_text().splitlines()
              if line.startswith("**") and line.endswith("cases)**")]  # table titles, not bold prose
    assert titles == ["**new sim (median over each site's cases)**", "**old sim (median over each site's cases)**"]


def test_realism_rule_cli_on_a_collection_against_itself(real_case_dir, tiny_collection):
    """The same collection as baseline and candidate: nothing moves, so no guard trips and the target does not
    fall, and the rule fails; the summed distances printed are the same before and after."""
    ok = run_cli("realism_rule", "--real", real_case_dir / "Case00.nii.gz", "--baseline", tiny_collection,
                 "--candidate", tiny_collection, "--target", "gland_iqr")
    assert ok.returncode == 0, ok.stderr
    row = ok.stdout.strip().splitlines()[-1].split("|")
    before, after = row[2].split("->")
    assert float(before) == float(after) and row[3].strip() == "none" and row[5].strip() == "fails"
    assert ok.stdout.startswith("gland_iqr: real 1.29; RUNMC ")


def test_cli_bad_input_is_one_line(tmp_path, real_case_dir):
    cases = [
        (["realism", "--root", tmp_path], "--real needs a path"),
        (["realism", "--root", tmp_path, "--real", tmp_path / "x.nii"], "must be a .nii.gz image"),
        (["realism", "--root", tmp_path, "--real", tmp_path / "Case00.nii.gz"], "no mask"),
        (["realism", "--root", tmp_path / "empty", "--real", real_case_dir / "Case00.nii.gz",
          "--out-md", tmp_path / "a.md", "--out-png", tmp_path / "a.png"], "no site folder"),
        (["realism_rule", "--real", real_case_dir / "Case00.nii.gz", "--baseline", tmp_path, "--candidate",
          tmp_path], "--target needs at least one report row"),
        (["realism_rule", "--real", real_case_dir / "Case00.nii.gz", "--baseline", tmp_path, "--candidate",
          tmp_path, "--target", "gland_iqr,glnad_iqr"], "unknown report row(s) glnad_iqr;"),
        (["realism_rule", "--real", tmp_path / "x.nii", "--baseline", tmp_path, "--candidate", tmp_path, "--target",
          "gland_iqr"], "must be a .nii.gz image"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        lines = stderr_lines(result)
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not (tmp_path / "a.md").exists()


def test_far_field_ratio_of_two_levels():
    spacing = (1.0, 1.0, 2.0)
    shape = (200, 200, 6)
    mask = np.zeros(shape, bool)
    mask[95:106, 95:106, 2:4] = True  # centre (100, 100)
    volume = np.full(shape, 10.0)
    x, y = np.meshgrid(np.arange(200) - 100.0, np.arange(200) - 100.0, indexing="ij")
    volume[(np.sqrt(x**2 + y**2) >= 50.0)[:, :, None].repeat(6, axis=2)] = 3.0
    assert far_field_ratio(volume, mask, spacing) == pytest.approx(0.3)
    small = np.zeros((40, 40, 6), bool)
    small[15:25, 15:25, 2:4] = True
    assert np.isnan(far_field_ratio(np.ones((40, 40, 6)) + small, small, spacing))  # the ring is outside the FOV


def test_nearest_case_skips_missing_features():
    real = _stats(a=0.0, b=0.0)
    sims = [_stats(a=5.0, b=0.0), _stats(a=0.0, b=float("nan")), _stats(a=1.0, b=1.0)]
    assert nearest_case(real, sims, features=("a", "b")) == 1


def _box_phantom():
    """A 10x10x4-voxel gland (value 5) at 1 x 1 x 5 mm in a 60 x 60 x 14 volume with known surroundings:
    anterior (y in front of the gland) 1, lateral (beside it) 2, below-apex slices 3, above-base slices 4."""
    spacing = (1.0, 1.0, 5.0)
    volume = np.zeros((60, 60, 14))
    mask = np.zeros(volume.shape, bool)
    mask[25:35, 25:35, 5:9] = True  # centre x 29.5, y 29.5; slices 5..8
    volume[:, :25, :] = 1.0  # anterior half-plane (y < gland)
    volume[:22, 25:35, :] = 2.0  # beside the gland, both sides
    volume[38:, 25:35, :] = 2.0
    volume[:, :, :3] = 3.0  # slices 0-2: 10-25 mm below slice 5
    volume[:, :, 11:] = 4.0  # slices 11-13: 15-25 mm above slice 8
    volume[mask] = 5.0
    return volume, mask, spacing


def test_sector_contrasts_of_a_box_phantom():
    volume, mask, spacing = _box_phantom()
    out = sector_contrasts(volume, mask, spacing)
    assert out["anterior_contrast"] == pytest.approx(1.0 - 5.0)
    assert out["lateral_contrast"] == pytest.approx(2.0 - 5.0)
    # 10-20 mm below slice 5 at 5 mm: slices 3 (10 mm, value 0) and 1 (20 mm, value 3), slice 2 (15 mm, value 3)
    assert out["below_apex_contrast"] == pytest.approx(3.0 - 5.0)
    assert out["above_base_contrast"] == pytest.approx(np.median([0.0] * 100 + [4.0] * 200) - 5.0)
    short = volume[:, :, 4:10], mask[:, :, 4:10]  # no slice 10-20 mm away on either side
    out = sector_contrasts(*short, spacing)
    assert np.isnan(out["below_apex_contrast"]) and np.isnan(out["above_base_contrast"])


def test_uniformity_of_the_gland_and_below_the_apex_on_a_box_phantom():
    volume, mask, spacing = _box_phantom()
    volume[mask] = np.broadcast_to(np.arange(25, 35)[:, None, None] - 25.0, (10, 60, 14))[:, 25:35, 5:9].ravel()
    out = uniformity(volume, mask, spacing)
    # the gland holds 0..9, 40 voxels each: quartiles 2 and 7
    assert out["gland_iqr"] == pytest.approx(5.0)
    # 10-20 mm below the apex (slices 3, 2, 1) in the footprint: 100 voxels of 0 and 200 of 3
    assert out["below_apex_iqr"] == pytest.approx(3.0)
    assert np.isnan(uniformity(volume[:, :, 4:10], mask[:, :, 4:10], spacing)["below_apex_iqr"])


def test_below_apex_ring_reads_the_wedges_around_the_footprint():
    volume, mask, spacing = _box_phantom()
    x = np.arange(60)[:, None] - 29.5
    y = np.arange(60)[None, :] - 29.5
    # on the slices 10-20 mm below the apex (1, 2, 3 at 5 mm): lateral wedges 7, anterior wedge 1, posterior 0,
    # the footprint 3; slice 0 (25 mm below) is outside the window and holds 100
    pinwheel = np.where(np.abs(x) > np.abs(y), 7.0, np.where(y < 0, 1.0, 0.0))
    pinwheel[25:35, 25:35] = 3.0
    volume[:, :, 1:4] = pinwheel[:, :, None]
    volume[:, :, 0] = 100.0
    out = below_apex_ring(volume, mask, spacing)
    assert out["below_apex_lateral_ring"] == pytest.approx(7.0 - 3.0)
    assert out["below_apex_anterior_ring"] == pytest.approx(1.0 - 3.0)
    # a ring of the footprint's own tissue reads 0; a volume that stops at the apex reads NaN
    volume[:, :, 1:4] = 3.0
    assert below_apex_ring(volume, mask, spacing) == pytest.approx(
        {"below_apex_lateral_ring": 0.0, "below_apex_anterior_ring": 0.0})
    short = below_apex_ring(volume[:, :, 4:10], mask[:, :, 4:10], spacing)
    assert np.isnan(short["below_apex_lateral_ring"]) and np.isnan(short["below_apex_anterior_ring"])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 3.0)])
def test_edge_profile_reads_bands_of_distance_from_the_border(spacing):
    # a slab: an inside voxel's distance to the nearest outside voxel is its smallest axis distance to a face (mm);
    # wide in plane and 20 slices thick, so that slices read at 1 mm instead of 3 would change every band's median
    mask = np.zeros((60, 60, 60), bool)
    mask[5:55, 5:55, 20:40] = True
    ends = [(4, 55), (4, 55), (19, 40)]
    axis = [np.minimum(np.arange(60) - lo, hi - np.arange(60)) * sp for (lo, hi), sp in zip(ends, spacing)]
    depth = np.minimum(np.minimum(axis[0][:, None, None], axis[1][None, :, None]), axis[2][None, None, :])
    level = np.select([depth > 6, depth > 4, depth > 2], [10.0, 9.0, 8.0], default=5.0)
    volume = np.where(mask, level, 2.0)
    out = edge_profile(volume, mask, spacing)
    assert out == pytest.approx({"edge_inside_4_6": -1.0, "edge_inside_2_4": -2.0, "edge_inside_0_2": -5.0,
                                 "edge_outside_0_2": -8.0})
    small = np.zeros((20, 20, 20), bool)
    small[8:12, 8:12, 8:12] = True  # nothing deeper than 6 mm: no reference, every band NaN
    noise = np.random.default_rng(0).normal(size=small.shape)
    assert all(np.isnan(v) for v in edge_profile(noise, small, spacing).values())


def test_wall_profile_reads_offsets_from_the_posterior_border():
    spacing = (1.0, 0.5, 3.0)
    volume = np.zeros((40, 80, 5))
    mask = np.zeros(volume.shape, bool)
    mask[15:25, 20:50, 1:4] = True  # posterior border at y index 49
    y_mm = np.arange(80) * 0.5
    volume[:] = y_mm[None, :, None]  # value = y in mm
    profile = wall_profile(volume, mask, spacing, offsets_mm=(-3.0, 0.0, 6.0, 40.0))
    border = 49 * 0.5
    assert profile[:3] == pytest.approx([border + 3.0, border, border - 6.0])
    assert np.isnan(profile[3])  # 40 mm into the gland is outside the volume


def _site_stats(site, **values):
    case = _stats(**values)
    case.site = site
    return case


def test_site_medians_leave_nan_cases_out():
    from tools.data.realism import site_medians

    cases = [_site_stats("A", x=1.0, y=np.nan), _site_stats("A", x=3.0, y=np.nan),
             _site_stats("A", x=np.nan, y=np.nan), _site_stats("B", x=5.0, y=2.0)]
    medians = site_medians(cases)
    assert list(medians) == ["A", "B"]
    assert medians["A"]["x"] == 2.0 and np.isnan(medians["A"]["y"])
    assert medians["B"] == {"x": 5.0, "y": 2.0}


def test_compare_rounds_sums_distances_and_guards_every_cell():
    """Exact sums on two sites and three rows; ``w1_to_real`` counts as its own distance; a NaN cell is left out of
    the sums and the guard; a guarded cell further by more than the tolerance fails the rule, by less it does not."""
    from tools.data.realism import compare_rounds

    real = {"t": -1.0, "g": 0.0, "w1_to_real": 0.0}
    rows = ("t", "g", "w1_to_real")
    base = {"A": {"t": 0.0, "g": 0.5, "w1_to_real": 0.2}, "B": {"t": np.nan, "g": -0.2, "w1_to_real": 0.1}}
    closer = {"A": {"t": -0.5, "g": 0.55, "w1_to_real": 0.2}, "B": {"t": -3.0, "g": -0.29, "w1_to_real": 0.1}}
    result = compare_rounds(real, base, closer, ["t"], tolerance=0.1, all_rows=rows)
    assert result.target_baseline == pytest.approx(1.0)  # B's NaN left out
    assert result.target_candidate == pytest.approx(0.5 + 2.0)
    assert result.all_baseline == pytest.approx(1.0 + 0.5 + 0.2 + 0.2 + 0.1)
    assert result.worse == [] and not result.passes  # no guard tripped, but the target moved away (2.5 > 1.0)

    closer["B"]["t"] = np.nan
    result = compare_rounds(real, base, closer, ["t"], tolerance=0.1, all_rows=rows)
    assert result.target_candidate == pytest.approx(0.5) and result.passes

    closer["A"]["w1_to_real"] = 0.35  # 0.15 further from the real case: over the tolerance
    result = compare_rounds(real, base, closer, ["t"], tolerance=0.1, all_rows=rows)
    assert not result.passes
    assert [(r, s) for r, s, *_ in result.worse] == [("w1_to_real", "A")]
    assert result.worse[0][4] == pytest.approx(0.15)
    assert compare_rounds(real, base, closer, ["t"], guard_rows=["g"], all_rows=rows).passes


def test_compare_rounds_refuses_unknown_rows_and_different_sites():
    from tools.data.realism import compare_rounds

    real = {"t": 0.0}
    with pytest.raises(ValueError, match="unknown row 'nope'"):
        compare_rounds(real, {"A": {"t": 0.0}}, {"A": {"t": 0.0}}, ["nope"], all_rows=("t",))
    with pytest.raises(ValueError, match="different sites"):
        compare_rounds(real, {"A": {"t": 0.0}}, {"B": {"t": 0.0}}, ["t"], all_rows=("t",))


def test_rounds_markdown_fills_the_markers_and_drops_the_leading_comment(tmp_path):
    from tools.data.realism import ROUND2_MARKER, VARIANTS_MARKER, rounds_markdown
    from tools.data.synthesis.calibration import round2_markdown, variants_markdown

    rounds = tmp_path / "rounds.md"
    rounds.write_text("<!-- a note for editors -->\n\n### Round 2\n\n" + ROUND2_MARKER + "### Round 1\n" + VARIANTS_MARKER)
    assert rounds_markdown(rounds) == "### Round 2\n\n" + round2_markdown() + "### Round 1\n" + variants_markdown()
    rounds.write_text("### Round 2\n" + ROUND2_MARKER)
    with pytest.raises(ValueError, match=r"rounds\.md: the marker line .*variants_markdown"):
        rounds_markdown(rounds)


def test_the_committed_report_ends_with_the_rounds_file():
    """docs/realism.md is generated: its hand-written part must be the one the next regeneration writes."""
    from tools.data.realism import rounds_markdown

    report = (Path(__file__).resolve().parents[1] / "docs" / "realism.md").read_text()
    assert report.endswith("## Variants measured and how they were chosen\n\n" + rounds_markdown())
