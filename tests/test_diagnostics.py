"""Tests of custom_losses.diagnostics: the flip rate on tiny masks, the per-term gradients against hand-computed
values, the handler's schedule, and the diagnostics in a DistillationTrainer step's output."""

import math

import pytest
import torch
from ignite.engine import Engine, Events
from monai.losses import DiceFocalLoss
from torch import nn

from custom_losses import DistillationDiagnostics, DistillationLoss, flip_rate, term_gradients
from custom_losses.diagnostics import DIAGNOSE_FLAG
from tools.engines import DistillationModel, DistillationTrainer, loss_terms


def test_flip_rate_of_simple_masks():
    square = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    square[..., 3:7, 3:7] = 1  # s = 4: 16 flipping edges over 2*16 + 16/2 = 40 pairs touching the square
    assert flip_rate(square).item() == pytest.approx(2 / 5)
    assert flip_rate(square[:, 0]).item() == pytest.approx(2 / 5)  # (B, H, W) alike
    parity = (torch.arange(6)[:, None] + torch.arange(6)[None, :]) % 2
    assert flip_rate(parity[None]).item() == pytest.approx(1.0)
    stripes = (torch.arange(6)[None, :] % 2).expand(6, 6)[None]
    # horizontal pairs: 6 x 5, all flip; vertical pairs touching a stripe: 3 columns x 5, none flips
    assert flip_rate(stripes).item() == pytest.approx(30 / 45)
    assert flip_rate(torch.zeros(2, 1, 4, 4, dtype=torch.long)).item() == 0.0
    assert flip_rate(torch.ones(1, 1, 4, 4, dtype=torch.long)).item() == 0.0


def test_flip_rate_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) or \(B, H, W\), got \(1, 2, 4, 4\)"):
        flip_rate(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"got \(4, 4\)"):
        flip_rate(torch.zeros(4, 4))
    with pytest.raises(TypeError):
        flip_rate([[0, 1]])


def test_term_gradients_match_hand_computed_values():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    terms = {"seg": (w * torch.tensor([3.0, 0.0])).sum(), "affinity": (w * torch.tensor([0.0, 4.0])).sum(),
             "logits": (w * torch.tensor([1.0, 1.0])).sum(), "kernel": torch.zeros(())}  # no gradient: skipped
    out = term_gradients(terms, {"seg": 1.0, "affinity": 0.5, "logits": 2.0, "kernel": 0.9}, [w])
    assert set(out) == {"grad_norm_seg", "grad_norm_affinity", "grad_norm_logits", "grad_cos_affinity", "grad_cos_logits"}
    assert out["grad_norm_seg"].item() == pytest.approx(3.0)
    assert out["grad_norm_affinity"].item() == pytest.approx(2.0)  # 0.5 * (0, 4)
    assert out["grad_cos_affinity"].item() == pytest.approx(0.0)  # orthogonal
    assert out["grad_norm_logits"].item() == pytest.approx(2 * math.sqrt(2))
    assert out["grad_cos_logits"].item() == pytest.approx(1 / math.sqrt(2))
    assert w.grad is None  # nothing accumulated: the step's own backward is untouched
    with pytest.raises(ValueError, match="reference"):
        term_gradients(terms, {"affinity": 1.0}, [w])


def test_handler_asks_every_interval_iterations_from_the_first():
    seen = []
    engine = Engine(lambda e, batch: seen.append(getattr(e.state, DIAGNOSE_FLAG, False)))
    DistillationDiagnostics(interval=3).attach(engine)
    engine.run([0] * 7, max_epochs=1)
    assert seen == [True, False, False, True, False, False, True]
    off = Engine(lambda e, batch: seen.append(getattr(e.state, DIAGNOSE_FLAG, False)))
    DistillationDiagnostics(interval=0).attach(off)
    seen.clear()
    off.run([0] * 3, max_epochs=1)
    assert seen == [False] * 3
    with pytest.raises(ValueError):
        DistillationDiagnostics(interval=-1)


class TinyNet(nn.Module):
    def __init__(self, classes=2, width=3):
        super().__init__()
        self.body = nn.Conv2d(1, width, 3, padding=1)
        self.head = nn.Conv2d(width, classes, 1)

    def forward_features(self, x):
        feature = torch.relu(self.body(x))
        return self.head(feature), {"high": feature}

    def forward(self, x):
        return self.forward_features(x)[0]


def test_distillation_step_reports_diagnostics_when_asked():
    torch.manual_seed(0)
    student, teacher = TinyNet(), TinyNet(width=4)
    loss = DistillationLoss(student_channels={"high": 3}, teacher_channels={"high": 4}, kernel_reduction="mean")
    model = DistillationModel(student, loss)
    image = torch.randn(2, 1, 8, 8)
    label = (image > 0).long()
    engine = DistillationTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": image, "label": label}] * 3,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        loss_function=DiceFocalLoss(softmax=True, to_onehot_y=True),
        teacher=teacher,
    )
    DistillationDiagnostics(interval=2).attach(engine)
    outputs = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(loss_terms(e.state.output)))
    engine.run()
    diagnosed = {k for k in outputs[0] if k.startswith("diag_")}
    assert diagnosed == {
        "diag_flip_rate",
        *(f"diag_grad_norm_{t}" for t in ("seg", "logits", "kernel", "affinity")),
        *(f"diag_grad_cos_{t}" for t in ("logits", "kernel", "affinity")),
    }
    assert not any(k.startswith("diag_") for k in outputs[1]) and "diag_flip_rate" in outputs[2]
    assert {"loss", "loss_seg", "loss_affinity"} <= set(outputs[1])
    # the diagnostics measure the step's own gradients: weighted affinity term on the student, by hand
    student.zero_grad()
    teacher_logits, _ = teacher.forward_features(image)
    logits, features = student.forward_features(image)
    (0.9 * loss.affinity_loss(logits, teacher_logits.detach())).backward()
    by_hand = torch.cat([p.grad.reshape(-1) for p in student.parameters()]).norm().item()
    # learning rate 0: the third iteration saw these very weights
    assert outputs[2]["diag_grad_norm_affinity"] == pytest.approx(by_hand, rel=1e-4)
