"""tools.bench.preprocessing: the commands of one option, and the rule that chooses the CPU profile's default."""

from pathlib import Path

import pytest

from tools.bench.preprocessing import OptionResult, choose, combinations, commands, write_table


def test_combinations_cover_every_option_the_papers_first():
    pairs = combinations()
    assert pairs[0] == ("resize", "zscore") and len(pairs) == len(set(pairs)) == 6
    assert {m for m, _ in pairs} == {"resize", "spacing"} and {n for _, n in pairs} == {"zscore", "nonzero", "percentile"}


def test_commands_run_the_bundle_with_the_options(tmp_path):
    c = commands("prostate_mri_enet_student", tmp_path / "r", tmp_path / "d", "BIDMC", "spacing", "percentile", 0,
                 Path("/x/Case00.nii.gz"))
    assert list(c) == ["train", "validation", "test", "real_case"]
    for step, command in c.items():
        assert command[command.index("--in_plane_mode") + 1] == "spacing", step
        assert command[command.index("--intensity_norm") + 1] == "percentile", step
        assert command[command.index("--bundle_root") + 1] == str(tmp_path / "r"), step
        assert "profile_cpu.yaml" in command[command.index("--config_file") + 1], step
    assert c["validation"][c["validation"].index("--evaluate_key") + 1] == "validation"
    assert c["test"][c["test"].index("--evaluate_key") + 1] == "test"
    assert "inference.yaml" in c["real_case"][c["real_case"].index("--config_file") + 1]


def results(**validation):
    return [OptionResult(*name.split("_"), validation=v, unseen=1.0 - v, real_case=0.9) for name, v in validation.items()]


def test_the_rule_reads_validation_only_and_keeps_the_paper_within_the_margin(tmp_path):
    chosen, why = choose(results(resize_zscore=0.80, spacing_nonzero=0.805, resize_percentile=0.70))
    assert chosen.name == "resize-zscore" and "less than 0.01" in why
    chosen, _ = choose(results(resize_zscore=0.80, spacing_nonzero=0.82, resize_percentile=0.70))
    assert chosen.name == "spacing-nonzero"  # unseen-site Dice (1 - v) would have picked resize-percentile
    chosen, _ = choose(results(resize_zscore=0.80, spacing_nonzero=0.75))
    assert chosen.name == "resize-zscore"
    with pytest.raises(ValueError, match="validation"):
        choose([OptionResult("resize", "zscore")])
    text = write_table(results(resize_zscore=0.80, spacing_nonzero=0.82), tmp_path).read_text()
    assert "| spacing | nonzero | 0.820 **(chosen)** | 0.180 | 0.900 |" in text
    assert (tmp_path / "preprocessing.csv").read_text().splitlines()[0].startswith("in_plane_mode,intensity_norm,validation_dice")


def test_background_fraction_cells_override_training_only_and_the_default_cell_is_the_baseline(tmp_path):
    c = commands("prostate_mri_enet_student", tmp_path / "r", tmp_path / "d", "BIDMC", "resize", "zscore", 0,
                 Path("/x/Case00.nii.gz"), background_fraction=0.5)
    assert c["train"][c["train"].index("--background_fraction") + 1] == "0.5"
    assert all("--background_fraction" not in c[step] for step in ("validation", "test", "real_case"))
    cells = [OptionResult("resize", "zscore", validation=0.80, unseen=0.5, real_case=0.4, background_fraction=0.1),
             OptionResult("resize", "zscore", validation=0.805, background_fraction=0.5),
             OptionResult("spacing", "percentile", validation=0.70, background_fraction=0.1)]
    chosen, why = choose(cells)
    assert chosen.name == "resize-zscore-bg0.1" and "less than 0.01" in why
    cells[1].validation = 0.82
    assert choose(cells)[0].name == "resize-zscore-bg0.5"
    cells[0].real_pred_ml, cells[0].real_true_ml, cells[0].real_slices_outside, cells[0].real_slices_without_gland = 60.0, 46.0, 3, 30
    text = write_table(cells, tmp_path).read_text()
    assert "| 0.1 | resize | zscore | 0.800 | 0.500 | 0.400 | 60.0 / 46.0 | 3 of 30 |" in text
    assert "| 0.5 | resize | zscore | 0.820 **(chosen)** |" in text


def test_case_extent_counts_volume_and_slices_outside_the_gland(tmp_path):
    import nibabel as nib
    import numpy as np

    from tools.bench.preprocessing import case_extent

    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    label = np.zeros((8, 8, 10), np.uint8)
    label[2:6, 2:6, 3:6] = 1  # 48 voxels of 2 mm^3, slices 3-5
    pred = label.copy()
    pred[2:4, 2:4, 0:2] = 1  # 2 slices below the gland
    pred[2:4, 2:4, 8] = 1  # 1 above
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "label.nii.gz"))
    nib.save(nib.Nifti1Image(pred, affine), str(tmp_path / "pred.nii.gz"))
    extent = case_extent(tmp_path / "pred.nii.gz", tmp_path / "label.nii.gz")
    assert extent["true_ml"] == pytest.approx(48 * 2 / 1000)
    assert extent["pred_ml"] == pytest.approx((48 + 12) * 2 / 1000)
    assert extent["slices_outside"] == 3 and extent["slices_without_gland"] == 7
