"""distill.yaml's default objective and the paper_literal and EMKD overrides, read from the student bundles' configs
(parsed, not run): paper_literal restores eq. 8 exactly as written, distill_emkd.yaml sets EMKD's terms and weights
(docs/distillation.md); the terms are declared as ``distill_terms: {term: weight}``, an absent term being off."""

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from custom_losses import EMKD_TERMS, PAPER_TERMS

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
STUDENTS = ["prostate_mri_enet_student", "prostate_mri_espnet_student", "prostate_mri_erfnet_student"]
KEYS = ("distill_terms", "kernel_reduction", "affinity_balance", "affinity_stride")


def objective(student, *files):
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / student / "configs" / name) for name in ("train.yaml", "distill.yaml", *files)])
    return {key: parser[key] for key in KEYS}, parser


@pytest.mark.parametrize("student", STUDENTS)
def test_default_and_paper_literal_objectives(student):
    default, parser = objective(student)
    assert default == {
        "distill_terms": {"logits": 0.2, "kernel": 0.9, "affinity": 0.09},
        "kernel_reduction": "mean",
        "affinity_balance": "class",
        "affinity_stride": 1,
    }
    loss = parser["distillation_loss"]
    assert loss["terms"] == "@distill_terms"
    for key in ("kernel_reduction", "affinity_balance", "affinity_stride"):
        assert loss[key] == f"@{key}", f"distillation_loss#{key} does not read the top-level key"
    assert parser["train#trainer#_target_"] == "tools.engines.DistillationTrainer"
    assert parser["train#trainer#loss_function"] == "@loss", "Seg must be train.yaml's loss"
    assert parser["diagnostics_interval"] == 10
    assert "@distillation_diagnostics" in parser["train#trainer#train_handlers"]
    literal, _ = objective(student, "distill_paper_literal.yaml")
    assert literal == {
        "distill_terms": dict(PAPER_TERMS),
        "kernel_reduction": "batchmean",
        "affinity_balance": "pooled",
        "affinity_stride": 1,
    }


@pytest.mark.parametrize("student", STUDENTS)
def test_emkd_objective(student):
    """distill_emkd.yaml over distill.yaml: EMKD's three terms alone, at its weights (train_kd.py: 0.1, 0.9, 0.9),
    T = 4, exponent 4, on the low and high features; the loss reads every option from its top-level key."""
    emkd, parser = objective(student, "distill_emkd.yaml")
    assert emkd["distill_terms"] == dict(EMKD_TERMS) == {"kd_logits": 0.1, "emkd_importance": 0.9,
                                                          "emkd_region_affinity": 0.9}
    assert (parser["kd_temperature"], parser["emkd_exponent"]) == (4, 4)
    assert parser["emkd_pairs"] == [["low", "low"], ["high", "high"]]
    loss = parser["distillation_loss"]
    for key in ("kd_temperature", "emkd_exponent", "emkd_pairs"):
        assert loss[key] == f"@{key}", f"distillation_loss#{key} does not read the top-level key"
    # the default objective declares none of EMKD's terms but carries the same options
    default, parser = objective(student)
    assert not set(default["distill_terms"]) & set(EMKD_TERMS) and parser["kd_temperature"] == 4


def test_an_ablation_override_leaves_terms_out():
    """Table 4's ablation as a config override: the terms given are the terms built."""
    _, parser = objective(STUDENTS[0])
    parser["distill_terms"] = {"logits": 0.2, "affinity": 0.09}
    parser["student_channels"] = {"high": 4}
    parser["distillation_loss#student_channels"] = "@student_channels"
    parser["distillation_loss#teacher_channels"] = "@student_channels"
    loss = parser.get_parsed_content("distillation_loss")
    assert loss.weights == {"logits": 0.2, "affinity": 0.09} and len(loss.kernel_losses) == 0
    parser["distill_terms"] = {"kernel": 0.9, "mutual": 1.0}
    with pytest.raises(RuntimeError) as error:  # MONAI's "Failed to instantiate", from the loss's own error
        parser.get_parsed_content("distillation_loss", lazy=False)
    assert isinstance(error.value.__cause__, ValueError)
    assert str(error.value.__cause__).startswith("unknown distillation term 'mutual' in terms")
