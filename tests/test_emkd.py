"""EMKD's distillation terms (custom_losses/emkd.py and the ``kd_logits`` / ``emkd_*`` terms of DistillationLoss):
values computed by hand on 2 x 2 maps, invariances, gradients, one-line shape errors, and two iterations of the
student bundle's ``distill_emkd.yaml``."""

import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.engines import IterationEvents

from custom_losses import (
    EMKD_TERMS,
    DistillationLoss,
    ImportanceMapLoss,
    LogitsKLLoss,
    RegionAffinityLoss,
    attention_map,
    region_contrast,
)
from tools.engines import DistillationModel, DistillationTrainer

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "prostate_mri_enet_student" / "configs"


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------ importance maps

# two channels on a 2 x 2 map; with p = 4 the channel mean of |F|^4 is [[1, 0], [0, 1/2]]
TEACHER_2x2 = t([[[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 0.0]]]])
STUDENT_2x2 = t([[[[1.0, 0.0], [0.0, 0.0]]]])  # one channel: |F|^4 = [[1, 0], [0, 0]]


def test_attention_map_by_hand():
    # v = [1, 0, 0, 1/2], ||v|| = sqrt(5) / 2: a = [2, 0, 0, 1] / sqrt(5); the sign of F does not count
    expected = t([[2.0, 0.0, 0.0, 1.0]]) / math.sqrt(5.0)
    torch.testing.assert_close(attention_map(TEACHER_2x2), expected)
    torch.testing.assert_close(attention_map(STUDENT_2x2), t([[1.0, 0.0, 0.0, 0.0]]))
    # p = 2: v = [1, 0, 0, 1/2] again here (|F|^2 of +-1 is 1), so the map is the same
    torch.testing.assert_close(attention_map(TEACHER_2x2, exponent=2), expected)
    # a zero feature gives a zero map, not NaN
    assert torch.equal(attention_map(torch.zeros(1, 3, 2, 2)), torch.zeros(1, 4))


def test_importance_loss_by_hand():
    # ||a_s - a_t||^2 = (1 - 2/sqrt5)^2 + 1/5 = 2 - 4/sqrt5 for the first sample, 0 for the second: mean over B = 2
    student = torch.cat([STUDENT_2x2, t([[[[3.0, 0.0], [0.0, 0.0]]]])])
    teacher = torch.cat([TEACHER_2x2, t([[[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])])
    loss = ImportanceMapLoss()(student, teacher)
    assert loss.item() == pytest.approx((2.0 - 4.0 / math.sqrt(5.0)) / 2, rel=1e-6)


def test_importance_loss_invariances():
    """Zero for the same feature seen with other channel counts or scales (no adapter needed); the student's
    feature is resized to the teacher's size first (a 4 x 4 block copy of a 2 x 2 map resizes back to it)."""
    torch.manual_seed(0)
    feature = torch.randn(3, 4, 6, 6)
    loss = ImportanceMapLoss()
    assert loss(feature, feature).item() == 0.0
    assert loss(feature, torch.cat([feature, feature], dim=1)).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(feature, 5.0 * feature).item() == pytest.approx(0.0, abs=1e-12)
    big = STUDENT_2x2.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 4 x 4
    assert loss(big, TEACHER_2x2).item() == pytest.approx(loss(STUDENT_2x2, TEACHER_2x2).item(), rel=1e-6)


def test_importance_loss_gradients_and_low_precision():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 5, 4, 4, requires_grad=True)
    ImportanceMapLoss()(student, teacher).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert list(ImportanceMapLoss().parameters()) == []
    value = ImportanceMapLoss()(student.detach().bfloat16(), teacher.detach().bfloat16())
    assert value.dtype == torch.float32 and torch.isfinite(value)


# ------------------------------------------------------------------------------------------------ region affinity

# labels [[0, 0], [0, 1]]: 3 background pixels, 1 foreground pixel
LABELS_2x2 = t([[[[0.0, 0.0], [0.0, 1.0]]]])
# channel 0 [[1, 1], [1, 4]], channel 1 [[0, 3], [0, -2]]: r0 = (3/3, 3/3) = (1, 1), r1 = (4, -2) / (1 + 1) = (2, -1)
FEATURE_2x2 = t([[[[1.0, 1.0], [1.0, 4.0]], [[0.0, 3.0], [0.0, -2.0]]]])


def test_region_contrast_by_hand():
    # cos((1, 1), (2, -1)) = 1 / (sqrt2 sqrt5)
    assert region_contrast(FEATURE_2x2, LABELS_2x2).item() == pytest.approx(1 / math.sqrt(10.0), rel=1e-6)
    # one channel, positive means on both regions: cos = 1
    assert region_contrast(torch.ones(1, 1, 2, 2), LABELS_2x2).item() == pytest.approx(1.0, rel=1e-6)
    # no foreground: r1 = 0, cos = 0; no background (floored count): r0 = 0, cos = 0, not NaN
    assert region_contrast(FEATURE_2x2, torch.zeros(1, 1, 2, 2)).item() == 0.0
    assert region_contrast(FEATURE_2x2, torch.ones(1, 1, 2, 2)).item() == 0.0
    # labels at 4 x 4 are resized to the feature's 2 x 2 by nearest neighbour (MetaTensor or plain, long or float)
    big = LABELS_2x2.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).long()
    assert region_contrast(FEATURE_2x2, big).item() == pytest.approx(1 / math.sqrt(10.0), rel=1e-6)
    value = region_contrast(FEATURE_2x2, MetaTensor(big.float()))
    assert type(value) is torch.Tensor and value.item() == pytest.approx(1 / math.sqrt(10.0), rel=1e-6)


def test_region_affinity_loss_by_hand():
    # student rc = 1/sqrt10, teacher (one positive channel) rc = 1: (1/sqrt10 - 1)^2; second sample equal: 0
    student = torch.cat([FEATURE_2x2, FEATURE_2x2])
    teacher = torch.cat([torch.ones(1, 4, 2, 2), FEATURE_2x2.repeat(1, 2, 1, 1)])  # same rc with channels repeated
    labels = torch.cat([LABELS_2x2, LABELS_2x2])
    loss = RegionAffinityLoss()(student, teacher, labels)
    assert loss.item() == pytest.approx((1 / math.sqrt(10.0) - 1.0) ** 2 / 2, rel=1e-6)


def test_region_affinity_invariances_and_gradients():
    torch.manual_seed(0)
    labels = (torch.rand(2, 1, 8, 8) > 0.6).long()
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = RegionAffinityLoss()
    assert loss(student, student.detach(), labels).item() == 0.0
    assert loss(student, 2.0 * student.detach(), labels).item() == pytest.approx(0.0, abs=1e-12)  # cosine: scale-free
    teacher = torch.randn(2, 6, 8, 8, requires_grad=True)  # other channels and resolution: labels resized for each
    value = loss(student, teacher, labels)
    value.backward()
    assert value.item() > 0 and student.grad.abs().sum() > 0 and teacher.grad is None


# ------------------------------------------------------------------------------------------------ shape errors


def test_emkd_shape_errors_are_one_line_and_name_the_tensor():
    feature = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError) as error:
        ImportanceMapLoss()(torch.zeros(2, 3, 4), feature)
    assert one_line(error) == "student_feature must have shape (B, C, H, W), got (2, 3, 4)."
    with pytest.raises(ValueError) as error:
        ImportanceMapLoss()(feature, torch.zeros(3, 3, 4, 4))
    assert "student_feature has shape (2, 3, 4, 4), teacher_feature has shape (3, 3, 4, 4)" in one_line(error)
    with pytest.raises(ValueError) as error:
        RegionAffinityLoss()(feature, feature, torch.zeros(2, 4, 4))
    assert one_line(error).startswith("labels must have shape (B, 1, H, W) with the batch size of student_feature")
    with pytest.raises(ValueError) as error:
        RegionAffinityLoss()(feature, feature, torch.zeros(1, 1, 4, 4))
    assert "got (1, 1, 4, 4)" in one_line(error)
    with pytest.raises(ValueError) as error:
        RegionAffinityLoss()(feature, feature, None)
    assert "labels is None" in one_line(error)
    with pytest.raises(ValueError, match="exponent must be > 0"):
        ImportanceMapLoss(exponent=0)


# ------------------------------------------------------------------------------------------------ DistillationLoss


def features(seed=0, batch=2):
    generator = torch.Generator().manual_seed(seed)
    student = {
        "low": torch.randn(batch, 3, 8, 8, generator=generator, requires_grad=True),
        "high": torch.randn(batch, 4, 2, 2, generator=generator, requires_grad=True),
    }
    teacher = {
        "low": torch.randn(batch, 5, 8, 8, generator=generator),
        "high": torch.randn(batch, 6, 2, 2, generator=generator),
    }
    logits = torch.randn(batch, 2, 16, 16, generator=generator, requires_grad=True)
    teacher_logits = torch.randn(batch, 2, 16, 16, generator=generator)
    labels = (torch.randn(batch, 1, 16, 16, generator=generator) > 0.5).long()
    return logits, student, teacher_logits, teacher, labels


def test_kd_logits_by_hand_is_hintons_kd_at_t4():
    """Student logits 0, teacher logits (2, 0) at every pixel: T^2 KL(p_t || p_s) with p_t = softmax((0.5, 0))."""
    student = torch.zeros(1, 2, 2, 2, requires_grad=True)
    teacher = torch.stack([torch.full((2, 2), 2.0), torch.zeros(2, 2)]).unsqueeze(0)
    p = 1 / (1 + math.exp(-0.5))
    expected = 16 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))
    loss = DistillationLoss(terms={"kd_logits": 1.0})
    terms = loss.forward_terms(student, None, teacher, None)
    assert terms["kd_logits"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["logits"].item() == 0.0  # the paper's LM is another term
    assert loss.kd_logits_loss.direction == "teacher_student" and loss.kd_logits_loss.temperature == 4.0
    reference = LogitsKLLoss(temperature=4.0, direction="teacher_student")(student, teacher)
    assert terms["kd_logits"].item() == pytest.approx(reference.item(), rel=1e-6)


def test_emkd_objective_sums_both_feature_levels_with_its_weights():
    logits, student, teacher_logits, teacher, labels = features()
    loss = DistillationLoss(terms=dict(EMKD_TERMS))
    assert loss.weights == {"kd_logits": 0.1, "emkd_importance": 0.9, "emkd_region_affinity": 0.9}
    assert loss.emkd_pairs == (("low", "low"), ("high", "high")) and loss.needs_labels
    assert list(loss.parameters()) == [] and loss.state_dict() == {}  # nothing to train or checkpoint
    terms = loss.forward_terms(logits, student, teacher_logits, teacher, labels)
    imd, rad = ImportanceMapLoss(), RegionAffinityLoss()
    importance = imd(student["low"], teacher["low"]) + imd(student["high"], teacher["high"])
    region = rad(student["low"], teacher["low"], labels) + rad(student["high"], teacher["high"], labels)
    kd = LogitsKLLoss(4.0, "teacher_student")(logits, teacher_logits)
    assert terms["emkd_importance"].item() == pytest.approx(importance.item(), rel=1e-6)
    assert terms["emkd_region_affinity"].item() == pytest.approx(region.item(), rel=1e-6)
    assert terms["kd_logits"].item() == pytest.approx(kd.item(), rel=1e-6)
    total = 0.1 * kd + 0.9 * importance + 0.9 * region
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-6)
    assert terms["kernel"].item() == terms["affinity"].item() == terms["logits"].item() == 0.0
    terms["total"].backward()
    assert logits.grad.abs().sum() > 0 and all(f.grad.abs().sum() > 0 for f in student.values())


def test_emkd_terms_are_zero_when_the_student_is_the_teacher():
    logits, student, _, _, labels = features()
    loss = DistillationLoss(terms=dict(EMKD_TERMS))
    same = {key: value.detach() for key, value in student.items()}
    terms = loss.forward_terms(logits, student, logits.detach(), same, labels)
    assert terms["total"].item() == pytest.approx(0.0, abs=1e-9)


def test_emkd_in_distillation_model_trains_the_student_only():
    from custom_nets import DeepLabV3Plus, ENet

    torch.manual_seed(0)
    student, teacher = ENet(1, 2, width=0.25), DeepLabV3Plus(1, 2, width=0.125).eval()
    model = DistillationModel(student, DistillationLoss(terms=dict(EMKD_TERMS)))
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"student"}
    image, labels = torch.randn(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) > 0.7).long()
    with torch.no_grad():
        teacher_logits, teacher_features = teacher.forward_features(image)
    _, terms = model(image, teacher_logits, teacher_features, labels)
    terms["total"].backward()
    assert all(torch.isfinite(terms[name]) and terms[name] > 0 for name in EMKD_TERMS)
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in teacher.parameters())


def test_emkd_configuration_and_input_errors_are_one_line():
    logits, student, teacher_logits, teacher, labels = features()
    loss = DistillationLoss(terms=dict(EMKD_TERMS))
    with pytest.raises(ValueError) as error:
        loss(logits, student, teacher_logits, teacher, None)
    assert one_line(error).startswith("labels is None but the emkd_region_affinity term is declared")
    with pytest.raises(ValueError) as error:
        loss(logits, student, teacher_logits, {"high": teacher["high"]}, labels)
    assert one_line(error) == "teacher_features has no feature 'low' (has ['high']) needed by emkd_pairs."
    with pytest.raises(ValueError) as error:
        loss(logits, student, None, teacher, labels)
    assert one_line(error) == "teacher_logits is None but the terms ['kd_logits'] are declared."
    with pytest.raises(ValueError) as error:
        DistillationLoss(terms={"emkd_importance": 0.9}, emkd_pairs=["low"])
    assert one_line(error).startswith("each emkd pair must be (student_key, teacher_key), got 'low'")
    with pytest.raises(ValueError, match="at least one pair in emkd_pairs"):
        DistillationLoss(terms={"emkd_region_affinity": 0.9}, emkd_pairs=[])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DistillationLoss(terms={"kd_logits": 0.1}, kd_temperature=0)
    # a term that is off never reads its inputs: EMKD pairs unused without EMKD terms, labels unused without RAD
    assert DistillationLoss(terms={"emkd_importance": 1.0}).forward_terms(logits, student, None, teacher)["total"] > 0


# ------------------------------------------------------------------------------------------------ the bundle config


def test_distill_emkd_yaml_runs_two_iterations():
    """train.yaml + distill.yaml + distill_emkd.yaml of the ENet student, teacher DeepLabV3+ (random weights, width
    0.125), two iterations on random 32 x 32 slices: the trainer reports EMKD's terms and trains the student."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in ("train.yaml", "distill.yaml", "distill_emkd.yaml")])
    parser.update(
        {
            "device": "$torch.device('cpu')",
            "network_width": 0.25,
            "teacher": "$custom_nets.DeepLabV3Plus(in_channels=1, out_channels=2, width=0.125)",
            "max_epochs": 1,
            "train#trainer#train_data_loader": "$@test_batches",
            "train#trainer#train_handlers": [],
            "test_batches": [],
        }
    )
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(2, 1, 32, 32, generator=generator) for _ in range(2)]
    parser["test_batches"] = [{"image": image, "label": (image > 0.5).float()} for image in images]
    trainer = parser.get_parsed_content("train#trainer")
    assert isinstance(trainer, DistillationTrainer)
    loss = parser.get_parsed_content("distillation_loss")
    assert loss.weights == dict(EMKD_TERMS) and loss.kd_logits_loss.temperature == 4.0
    student = parser.get_parsed_content("network")
    before = [p.detach().clone() for p in student.parameters()]
    seen = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    trainer.run()
    assert len(seen) == 2
    for output in seen:
        for name, weight in EMKD_TERMS.items():
            assert torch.isfinite(output[f"loss_{name}"]) and output[f"loss_{name}"] > 0, name
        assert output["loss_kernel"] == output["loss_affinity"] == output["loss_logits"] == 0.0
        weighted = sum(weight * output[f"loss_{name}"] for name, weight in EMKD_TERMS.items())
        assert output["loss"].item() == pytest.approx((output["loss_seg"] + weighted).item(), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters())), "the student did not train"
