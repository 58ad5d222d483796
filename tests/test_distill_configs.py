"""distill.yaml's default objective and the paper_literal override, read from the student bundles' configs
(parsed, not run): the override restores eq. 8 exactly as written (docs/distillation.md)."""

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
STUDENTS = ["prostate_mri_enet_student", "prostate_mri_espnet_student", "prostate_mri_erfnet_student"]
KEYS = ("lambda_logits", "lambda_kernel", "lambda_affinity", "kernel_reduction", "affinity_balance", "affinity_stride")


def objective(student, *files):
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / student / "configs" / name) for name in ("train.yaml", "distill.yaml", *files)])
    return {key: parser[key] for key in KEYS}, parser


@pytest.mark.parametrize("student", STUDENTS)
def test_default_and_paper_literal_objectives(student):
    default, parser = objective(student)
    assert default == {
        "lambda_logits": 0.2,
        "lambda_kernel": 0.9,
        "lambda_affinity": 0.09,
        "kernel_reduction": "mean",
        "affinity_balance": "class",
        "affinity_stride": 1,
    }
    loss = parser["distillation_loss"]
    for key in ("kernel_reduction", "affinity_balance", "affinity_stride"):
        assert loss[key] == f"@{key}", f"distillation_loss#{key} does not read the top-level key"
    assert parser["diagnostics_interval"] == 10
    assert "@distillation_diagnostics" in parser["train#trainer#train_handlers"]
    literal, _ = objective(student, "distill_paper_literal.yaml")
    assert literal == {
        "lambda_logits": 0.2,
        "lambda_kernel": 0.9,
        "lambda_affinity": 0.9,
        "kernel_reduction": "batchmean",
        "affinity_balance": "pooled",
        "affinity_stride": 1,
    }
