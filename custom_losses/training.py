"""Glue between :class:`DistillationLoss` and MONAI's ignite ``SupervisedTrainer``.

* :class:`DistillationModel` holds everything that trains during distillation, the student and the
  loss's adapters and affinity weights, as one ``nn.Module``; wrap it in DDP for multi-GPU training.
* :class:`DistillationIteration` is the trainer's ``iteration_update``: one step of eq. 8 with a frozen
  teacher that stays in eval mode (its BatchNorm statistics never change) and runs without gradients.
* :func:`loss_terms` is the ``output_transform`` that gives loggers every term of eq. 8.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from monai.utils import CommonKeys as Keys
from torch import nn

from .diagnostics import DIAGNOSE_FLAG, flip_rate, term_gradients
from .distillation import TERM_NAMES, DistillationLoss

__all__ = ["DistillationModel", "DistillationIteration", "loss_terms", "LOSS_TERM_KEYS", "DIAGNOSTIC_PREFIX"]

# keys of the trainer's output that hold the terms of eq. 8 ("loss" is the total)
LOSS_TERM_KEYS = {"total": Keys.LOSS, **{name: f"loss_{name}" for name in TERM_NAMES if name != "total"}}
# prefix of the diagnostics' keys in the trainer's output (custom_losses.diagnostics), present on diagnosed iterations
DIAGNOSTIC_PREFIX = "diag_"


class DistillationModel(nn.Module):
    """The student and the trainable parts of the objective (KM adapters, AA weights) as one module.

    ``forward(image, label, teacher_logits, teacher_features) -> (student_logits, terms)`` where ``terms``
    is :meth:`DistillationLoss.forward_terms`. ``student`` must provide ``forward_features``.
    """

    def __init__(self, student: nn.Module, loss: DistillationLoss) -> None:
        super().__init__()
        if not hasattr(student, "forward_features"):
            raise TypeError(f"student {type(student).__name__} has no forward_features(x) -> (logits, features).")
        self.student = student
        self.loss = loss

    def forward(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        teacher_logits: Optional[torch.Tensor],
        teacher_features: Optional[Mapping[str, torch.Tensor]],
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        student_logits, student_features = self.student.forward_features(image)
        terms = self.loss.forward_terms(student_logits, student_features, teacher_logits, teacher_features, label)
        return student_logits, terms


class DistillationIteration:
    """``iteration_update`` for ``monai.engines.SupervisedTrainer`` whose ``network`` is a :class:`DistillationModel`
    (possibly DDP-wrapped).

    Each iteration: the teacher, kept in eval mode, computes ``forward_features`` under ``torch.no_grad()`` (skipped
    when every distillation module is off); the model computes the student's logits and the terms of eq. 8; the
    total is back-propagated and the optimizer steps. The output dict holds image, label, pred and every term.
    """

    def __init__(self, teacher: Optional[nn.Module]) -> None:
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for parameter in teacher.parameters():
                parameter.requires_grad_(False)

    @staticmethod
    def _loss_module(network: nn.Module) -> DistillationLoss:
        model = network.module if hasattr(network, "module") else network
        if not isinstance(model, DistillationModel):
            raise TypeError(f"the trainer's network must be a DistillationModel, got {type(model).__name__}.")
        return model.loss

    @classmethod
    def diagnose(
        cls, network: nn.Module, terms: Dict[str, torch.Tensor], student_logits: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """Each active term's gradient norm on the student's parameters and cosine with Seg's
        (:func:`~custom_losses.diagnostics.term_gradients`), and the flip rate of the student's argmax labels."""
        loss = cls._loss_module(network)
        model = network.module if hasattr(network, "module") else network
        values = term_gradients(terms, loss.term_weights(), model.student.parameters())
        values["flip_rate"] = flip_rate(student_logits.detach().argmax(dim=1))
        return values

    def __call__(self, engine: Any, batchdata: Dict[str, Any]) -> Dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image, label = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        loss = self._loss_module(engine.network)
        needs_teacher = loss.use_logits or loss.use_kernel or loss.use_affinity
        teacher_logits, teacher_features = None, None
        if needs_teacher:
            if self.teacher is None:
                raise ValueError("a distillation module is on but no teacher was given.")
            self.teacher.eval()
            with torch.no_grad():
                teacher_logits, teacher_features = self.teacher.forward_features(image)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        student_logits, terms = engine.network(image, label, teacher_logits, teacher_features)
        diagnostics = {}
        if getattr(engine.state, DIAGNOSE_FLAG, False):  # asked by a DistillationDiagnostics handler
            diagnostics = self.diagnose(engine.network, terms, student_logits)
        terms["total"].backward()
        engine.optimizer.step()
        output = {Keys.IMAGE: image, Keys.LABEL: label, Keys.PRED: student_logits}
        for name, key in LOSS_TERM_KEYS.items():
            output[key] = terms[name].detach()
        for name, value in diagnostics.items():
            output[f"{DIAGNOSTIC_PREFIX}{name}"] = value
        engine.state.output = output
        return output


def loss_terms(output: Any) -> Dict[str, float]:
    """``output_transform`` for StatsHandler / TensorBoardStatsHandler: every loss term present in the trainer's
    output (a dict, or the decollated list of dicts) as floats, and the ``diag_*`` diagnostics when present."""
    first = output[0] if isinstance(output, (list, tuple)) else output
    keys = [key for key in LOSS_TERM_KEYS.values() if key in first]
    keys += sorted(key for key in first if isinstance(key, str) and key.startswith(DIAGNOSTIC_PREFIX))
    return {key: float(first[key]) for key in keys}
