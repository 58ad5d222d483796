"""Site contrast from echo and repetition times, and site annotation conventions (simulator round 3)."""

import math
from dataclasses import fields, replace

import numpy as np
import pytest

from tools.data.synth import synthesize_case
from tools.data.synthesis import SITES, get_site
from tools.data.synthesis.anatomy import sample_t2_levels
from tools.data.synthesis.relaxation import (
    REFERENCE_SEQUENCE,
    RELAXATION_MS,
    T1_RATIO_3T_TO_1P5T,
    sequence_weight,
    weight_levels,
)


def test_reference_sequence_keeps_every_level():
    levels = sample_t2_levels(np.random.default_rng(0), (0.8, 0.9))
    same = weight_levels(levels, REFERENCE_SEQUENCE["echo_time_ms"], REFERENCE_SEQUENCE["repetition_time_ms"],
                         REFERENCE_SEQUENCE["field_strength_t"])
    for item in fields(levels):
        assert getattr(same, item.name) == pytest.approx(getattr(levels, item.name), rel=1e-12), item.name


def test_sequence_weight_exact_values():
    # 3T, reference TR, TE + 29 ms: muscle (T2 29 ms) loses exactly a factor e.
    assert sequence_weight(898.0, 29.0, 129.0, 4000.0, 3.0) == pytest.approx(math.exp(-1.0), rel=1e-12)
    # 3T, reference TE, TR 2000 ms: the ratio of saturation recoveries.
    expected = (1 - math.exp(-2000.0 / 1597.0)) / (1 - math.exp(-4000.0 / 1597.0))
    assert sequence_weight(1597.0, 74.0, 100.0, 2000.0, 3.0) == pytest.approx(expected, rel=1e-12)
    # 1.5T: T1 is 1.21x shorter, so the same TR recovers more.
    expected = (1 - math.exp(-4000.0 * T1_RATIO_3T_TO_1P5T / 3000.0)) / (1 - math.exp(-4000.0 / 3000.0))
    assert sequence_weight(3000.0, 1000.0, 100.0, 4000.0, 1.5) == pytest.approx(expected, rel=1e-12)


def test_longer_echo_darkens_short_t2_tissue_most():
    levels = sample_t2_levels(np.random.default_rng(1), (0.8, 0.9))
    long_te = weight_levels(levels, 130.0, 4000.0, 3.0)
    ratio = {item.name: getattr(long_te, item.name) / getattr(levels, item.name) for item in fields(levels)}
    assert ratio["muscle"] < ratio["central_gland"] < ratio["peripheral_zone"] < ratio["urine"] <= 1.0
    assert ratio["cortex"] == 1.0  # no modelled signal: kept


def test_every_level_has_a_relaxation_entry():
    assert set(RELAXATION_MS) == {item.name for item in fields(sample_t2_levels(np.random.default_rng(0), (1, 1)))}


@pytest.mark.parametrize("bad", [(0.0, 74.0, 100.0, 4000.0, 3.0), (1597.0, 74.0, 100.0, -1.0, 3.0)])
def test_sequence_weight_rejects_non_positive_times(bad):
    with pytest.raises(ValueError, match="must be > 0"):
        sequence_weight(*bad)


def test_sites_differ_in_sequence_and_annotation():
    echo = {s.key: np.mean(s.echo_time_ms) for s in SITES}
    assert max(echo.values()) - min(echo.values()) >= 25.0
    offsets = [s.annotation_offset_mm for s in SITES]
    assert all(-1.0 <= o <= 1.0 for o in offsets) and len(set(offsets)) >= 4
    assert get_site("BIDMC").annotation_offset_mm == 0.0


def test_case_records_its_sequence_inside_the_site_ranges():
    for site in SITES:
        case = synthesize_case(site, 0, seed=3, size=32)
        low, high = site.echo_time_ms
        assert low <= case.acquisition["echo_time_ms"] <= high
        low, high = site.repetition_time_ms
        assert low <= case.acquisition["repetition_time_ms"] <= high
        assert case.acquisition["annotation_offset_mm"] == site.annotation_offset_mm


def test_sequence_changes_contrast_not_anatomy():
    """Same case with another TE: the same mask, a different image (the sequence has its own random stream)."""
    site = get_site("RUNMC")
    base = synthesize_case(site, 2, seed=0, size=48)
    other = synthesize_case(replace(site, echo_time_ms=(130.0, 130.0)), 2, seed=0, size=48)
    np.testing.assert_array_equal(base.label, other.label)
    assert base.acquisition["prostate_ml"] == other.acquisition["prostate_ml"]
    inside = base.label > 0
    assert not np.array_equal(base.image, other.image)
    # Longer TE: the gland loses signal (TE 100-108 -> 130 ms: exp(-(~26)/74..110) ~ 0.7-0.8 of its level).
    assert other.image[inside].mean() < 0.9 * base.image[inside].mean()


def test_annotation_offset_moves_the_outline_by_its_millimetres():
    """An outward offset of d mm adds about (surface area x d) to the mask; the true gland is unchanged."""
    site = get_site("RUNMC")
    volumes, cases = {}, {}
    for offset in (0.0, -1.0, 1.0):
        case = cases[offset] = synthesize_case(replace(site, annotation_offset_mm=offset), 4, seed=0, size=96)
        voxel_ml = float(np.prod(case.geometry.spacing_mm)) / 1000.0
        volumes[offset] = case.label.astype(bool).sum() * voxel_ml
        assert case.acquisition["prostate_ml"] == cases[0.0].acquisition["prostate_ml"]  # the true gland is kept
    true_ml = cases[0.0].acquisition["prostate_ml"]
    assert volumes[-1.0] < volumes[0.0] < volumes[1.0]
    # Sphere of the true volume: dV/dr = 4 pi r^2; 1 mm moves the volume by about that much (within 40%:
    # the gland is not a sphere and the mask is thresholded on a 2-4 mm grid).
    radius = (3.0 * true_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    per_mm = 4.0 * math.pi * radius**2 / 1000.0
    assert volumes[1.0] - volumes[0.0] == pytest.approx(per_mm, rel=0.4)
    assert volumes[0.0] - volumes[-1.0] == pytest.approx(per_mm, rel=0.4)
