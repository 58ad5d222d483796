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
