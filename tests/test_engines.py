"""tools.engines: the DistillationTrainer on tiny 2D networks and random tensors (a few iterations each): its events
and postprocessing, Seg from the trainer's loss_function, AMP (bfloat16 autocast on the CPU), the teacher skipped
when no term is declared, the SupervisedTrainer options it honours; and the bundles' distill.yaml building it with
train.yaml's ``loss`` as Seg."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.engines import IterationEvents
from monai.engines.utils import default_prepare_batch
from monai.losses import DiceFocalLoss, DiceLoss
from torch import nn

from custom_losses import DISTILLATION_TERMS, DistillationLoss
from tools.engines import DistillationModel, DistillationTrainer, loss_terms

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "prostate_mri_enet_student" / "configs"


class TinyNet(nn.Module):
    """A two-layer segmenter with ``forward_features`` (``high``: its hidden feature map)."""

    def __init__(self, width: int = 3, classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, width, 3, padding=1)
        self.head = nn.Conv2d(width, classes, 1)
        self.calls = 0

    def forward_features(self, x):
        self.calls += 1
        feature = torch.relu(self.body(x))
        return self.head(feature), {"high": feature}

    def forward(self, x):
        return self.forward_features(x)[0]


def batches(count: int = 2, batch: int = 2, size: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        image = torch.randn(batch, 1, size, size, generator=generator)
        out.append({"image": image, "label": (image > 0).long()})
    return out


def make_trainer(terms=None, teacher="tiny", lr=0.1, **kwargs):
    torch.manual_seed(0)
    student = TinyNet()
    teacher = TinyNet(width=4) if teacher == "tiny" else teacher
    loss = DistillationLoss(
        terms=terms, student_channels={"high": 3}, teacher_channels={"high": 4}, kernel_reduction="mean"
    )
    model = DistillationModel(student, loss)
    kwargs.setdefault("loss_function", DiceFocalLoss(softmax=True, to_onehot_y=True))
    trainer = DistillationTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=kwargs.pop("data", batches()),
        network=model,
        optimizer=kwargs.pop("optimizer", None) or torch.optim.SGD(model.parameters(), lr=lr),
        teacher=teacher,
        **kwargs,
    )
    return trainer, model, teacher


def test_events_fire_in_order_and_postprocessing_runs():
    def mark(output):
        output["postprocessed"] = True  # decollated: one dict per image of the batch
        return output

    trainer, _, _ = make_trainer(postprocessing=mark)
    fired = []
    for event in ("FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED"):
        trainer.add_event_handler(getattr(IterationEvents, event), lambda e, name=event: fired.append(name))
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    trainer.run()
    assert fired == ["FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED"] * 2
    assert len(outputs) == 2
    for output in outputs:  # decollated on MODEL_COMPLETED, then postprocessed per item
        assert isinstance(output, list) and len(output) == 2
        assert all(item["postprocessed"] for item in output)
        assert output[0]["pred"].shape == (2, 8, 8)
        assert set(loss_terms(output)) == {"loss", "loss_seg"} | {f"loss_{term}" for term in DISTILLATION_TERMS}
        assert {"loss_logits", "loss_kernel", "loss_affinity", "loss_kd_logits", "loss_emkd_importance"} <= set(
            loss_terms(output)
        )


def test_seg_is_the_trainers_loss_function_and_the_total_is_eq_8():
    dice = DiceLoss(softmax=True, to_onehot_y=True)
    data = batches(count=1)
    trainer, model, teacher = make_trainer(loss_function=dice, lr=0.0, data=data)
    seen = {}
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: seen.update(e.state.output))
    trainer.run()
    image, label = data[0]["image"], data[0]["label"]
    with torch.no_grad():
        logits, features = model.student.forward_features(image)
        teacher_logits, teacher_features = teacher.forward_features(image)
        terms = model.loss.forward_terms(logits, features, teacher_logits, teacher_features)
        seg = dice(logits, label)
    assert seen["loss_seg"].item() == pytest.approx(seg.item(), rel=1e-6)
    for name in ("logits", "kernel", "affinity"):
        assert seen[f"loss_{name}"].item() == pytest.approx(terms[name].item(), rel=1e-5)
    total = seg + 0.2 * terms["logits"] + 0.9 * terms["kernel"] + 0.9 * terms["affinity"]
    assert seen["loss"].item() == pytest.approx(total.item(), rel=1e-5)


def test_amp_autocasts_on_the_cpu_and_steps_through_the_scaler():
    trainer, model, _ = make_trainer(amp=True, amp_kwargs={"dtype": torch.bfloat16})
    before = [p.detach().clone() for p in model.parameters()]
    dtypes, losses = [], []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: dtypes.append(e.state.output["pred"].dtype))
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    # MONAI's run() builds torch.cuda.amp.GradScaler(), disabled without CUDA: an enabled CPU scaler instead
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0, growth_interval=1)
    trainer.add_event_handler(Events.STARTED, lambda e: setattr(e, "scaler", scaler))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    assert dtypes == [torch.bfloat16] * 2, "the student did not run under autocast"
    assert all(torch.isfinite(loss) for loss in losses)
    assert scaler.get_scale() == 64.0, "the scaler did not step and update twice"
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "no optimizer step"


def test_no_term_never_runs_the_teacher_and_needs_none():
    trainer, model, teacher = make_trainer(terms={})
    trainer.run()
    assert teacher.calls == 0 and model.student.calls == 2
    trainer, _, _ = make_trainer(terms={}, teacher=None)
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(loss_terms(e.state.output)))
    trainer.run()
    assert outputs[0]["loss"] == pytest.approx(outputs[0]["loss_seg"]) and outputs[0]["loss_affinity"] == 0.0
    only_kernel, _, teacher = make_trainer(terms={"kernel": 0.9})
    only_kernel.run()
    assert teacher.calls == 2


def test_trainer_freezes_the_teacher_and_checks_its_arguments():
    teacher = TinyNet(width=4).train()
    make_trainer(teacher=teacher)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match=r"declares terms \['affinity', 'kernel', 'logits'\] but teacher is None"):
        make_trainer(teacher=None)
    with pytest.raises(TypeError, match="must be a tools.engines.DistillationModel"):
        DistillationTrainer(
            device="cpu", max_epochs=1, train_data_loader=batches(), network=TinyNet(),
            optimizer=torch.optim.SGD(TinyNet().parameters(), lr=0.1), loss_function=DiceLoss(), teacher=None,
        )
    with pytest.raises(ValueError, match="compile=True"):
        make_trainer(compile=True)


def test_trainer_honours_prepare_batch_options_set_to_none_and_accumulation():
    calls = []

    def prepare_batch(batch, device, non_blocking, **kwargs):
        calls.append((non_blocking, kwargs))
        return default_prepare_batch(batch, device, non_blocking, **kwargs)

    class Recording(torch.optim.SGD):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.zero_grads, self.steps = [], 0

        def zero_grad(self, set_to_none=True):
            self.zero_grads.append(set_to_none)
            super().zero_grad(set_to_none=set_to_none)

        def step(self, closure=None):
            self.steps += 1
            return super().step(closure)

    torch.manual_seed(0)
    student = TinyNet()
    model = DistillationModel(student, DistillationLoss(terms={"logits": 0.2}))
    optimizer = Recording(model.parameters(), lr=0.1)
    trainer = DistillationTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=batches(count=4), network=model,
        optimizer=optimizer, loss_function=DiceLoss(softmax=True, to_onehot_y=True), teacher=TinyNet(),
        prepare_batch=prepare_batch, non_blocking=True, to_kwargs={"copy": True}, optim_set_to_none=False,
        accumulation_steps=2,
    )
    trainer.run()
    assert calls == [(True, {"copy": True})] * 4
    assert optimizer.zero_grads == [False, False] and optimizer.steps == 2


def test_distill_yaml_builds_the_trainer_with_train_yamls_loss_as_seg():
    """distill.yaml over train.yaml, with ``loss`` changed to Dice alone: the trainer it builds is a
    DistillationTrainer whose Seg is that very loss; two iterations on random slices."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml"), str(CONFIGS / "distill.yaml")])
    parser.update(
        {
            "device": "$torch.device('cpu')",
            "network_width": 0.25,
            "loss": {"_target_": "DiceLoss", "softmax": True, "to_onehot_y": True},
            "teacher": "$custom_nets.DeepLabV3Plus(in_channels=1, out_channels=2, width=0.125)",
            "max_epochs": 1,
            "train#trainer#train_data_loader": "$@test_batches",
            "train#trainer#train_handlers": [],
            "test_batches": [],
        }
    )
    parser["test_batches"] = batches(count=2, size=32)
    trainer = parser.get_parsed_content("train#trainer")
    loss = parser.get_parsed_content("loss")
    assert isinstance(trainer, DistillationTrainer) and trainer.loss_function is loss
    assert isinstance(loss, DiceLoss)
    assert parser.get_parsed_content("distillation_loss").weights == {"logits": 0.2, "kernel": 0.9, "affinity": 0.09}
    seen = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    trainer.run()
    assert len(seen) == 2
    for output in seen:  # Seg of the student's very logits is train.yaml's loss: Dice alone
        assert output["loss_seg"].item() == pytest.approx(loss(output["pred"], output["label"]).item(), rel=1e-6)
        assert output["loss"].item() > output["loss_seg"].item() > 0
