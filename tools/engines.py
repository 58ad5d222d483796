"""Distillation as a MONAI engine: the trainer that distill.yaml runs (part of the bundles' runtime library).

* :class:`DistillationModel` holds everything that trains during distillation, the student and the trainable
  parts of :class:`~custom_losses.DistillationLoss` (KM adapters, AA size weights; EMKD's terms have none), as one
  ``nn.Module``: the optimizer's parameters, and what DDP wraps for multi-GPU training.
* :class:`DistillationTrainer` is MONAI's ``SupervisedTrainer`` with a frozen teacher: one step of eq. 8,
  ``Seg + sum_i lambda_i term_i``, where Seg is the trainer's own ``loss_function`` (the bundle's ``loss``) and
  the weighted terms come from the model's ``DistillationLoss``. It fires the same iteration events and honours
  the same options (AMP, ``to_kwargs``, ``non_blocking``, ``optim_set_to_none``, ``accumulation_steps``), so
  ``postprocessing``, decollation and handlers hung on ``MODEL_COMPLETED`` work as in a plain run.
* :func:`loss_terms` is the ``output_transform`` that gives StatsHandler / TensorBoardStatsHandler every term
  (``loss``, ``loss_seg`` and ``loss_<term>`` for each of :data:`custom_losses.DISTILLATION_TERMS`) and the
  ``diag_*`` diagnostics.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch import nn

from custom_losses import DISTILLATION_TERMS, DistillationLoss
from custom_losses.diagnostics import DIAGNOSE_FLAG, flip_rate, term_gradients

__all__ = ["DistillationModel", "DistillationTrainer", "loss_terms", "LOSS_TERM_KEYS", "DIAGNOSTIC_PREFIX"]

LOSS_TERM_KEYS = {"total": Keys.LOSS, "seg": "loss_seg", **{name: f"loss_{name}" for name in DISTILLATION_TERMS}}
"""Term -> key of the trainer's output holding it (``loss`` is the total of eq. 8, the others unweighted)."""
DIAGNOSTIC_PREFIX = "diag_"
"""Prefix of the diagnostics' keys in the trainer's output (:mod:`custom_losses.diagnostics`), on diagnosed
iterations only."""


class DistillationModel(nn.Module):
    """The student and the trainable parts of the distillation terms (KM adapters, AA weights) as one module.

    ``forward(image, teacher_logits=None, teacher_features=None, labels=None) -> (student_logits, terms)`` where
    ``terms`` is :meth:`DistillationLoss.forward_terms` of the student's ``forward_features(image)`` (``labels``, the
    ground truth, is read by EMKD's region affinity only). ``student`` must provide ``forward_features``.
    ``state_dict`` holds ``student.*`` and ``loss.*``; the bundles save the student alone.
    """

    def __init__(self, student: nn.Module, loss: DistillationLoss) -> None:
        super().__init__()
        if not hasattr(student, "forward_features"):
            raise TypeError(f"student {type(student).__name__} has no forward_features(x) -> (logits, features).")
        if not isinstance(loss, DistillationLoss):
            raise TypeError(f"loss must be a custom_losses.DistillationLoss, got {type(loss).__name__}.")
        self.student = student
        self.loss = loss

    def forward(
        self,
        image: torch.Tensor,
        teacher_logits: Optional[torch.Tensor] = None,
        teacher_features: Optional[Mapping[str, torch.Tensor]] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        student_logits, student_features = self.student.forward_features(image)
        terms = self.loss.forward_terms(student_logits, student_features, teacher_logits, teacher_features, labels)
        return student_logits, terms


def _distillation_model(network: nn.Module) -> DistillationModel:
    """``network`` itself, or the module a DDP / DataParallel wrapper holds, when it is a DistillationModel."""
    model = network.module if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else network
    if not isinstance(model, DistillationModel):
        raise TypeError(
            f"the trainer's network must be a tools.engines.DistillationModel (optionally DDP-wrapped), "
            f"got {type(model).__name__}."
        )
    return model


def _accumulation(engine: SupervisedTrainer) -> Tuple[int, bool, bool]:
    """``(steps, zero_grad now, optimizer step now)`` of gradient accumulation, as ``SupervisedTrainer`` decides."""
    steps = int(getattr(engine, "accumulation_steps", 1))
    if steps == 1:
        return 1, True, True
    length = engine.state.epoch_length
    index = (engine.state.iteration - 1) % length if length is not None else engine.state.iteration - 1
    last = length is not None and index + 1 == length
    return steps, index % steps == 0, (index + 1) % steps == 0 or last


class DistillationTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` for distillation: the ``network`` is a :class:`DistillationModel` (possibly
    DDP-wrapped), ``loss_function`` is Seg and ``teacher`` a frozen network with ``forward_features``.

    Each iteration, in the order of ``SupervisedTrainer._iteration`` and with its events:

    1. ``prepare_batch(batch, device, non_blocking, **to_kwargs)`` gives ``(image, label)``;
    2. under ``torch.autocast(<device type>, **amp_kwargs)`` when ``amp`` (bfloat16 by default on the CPU): the
       teacher's ``forward_features(image)`` in eval mode under ``torch.no_grad()``, skipped when the loss declares
       no term; the student and the distillation terms (``network(image, teacher_logits, teacher_features, label)``);
       ``FORWARD_COMPLETED``; Seg ``= loss_function(student_logits, label).mean()`` and the total
       ``Seg + DistillationLoss total``; ``LOSS_COMPLETED``;
    3. on iterations a :class:`~custom_losses.DistillationDiagnostics` handler asks for (the state's
       ``DIAGNOSE_FLAG``), each weighted term's gradient norm on the student, its cosine with Seg's and the flip
       rate of the student's masks, before the backward;
    4. backward of the total (scaled by ``engine.scaler`` when ``amp``), ``BACKWARD_COMPLETED``, optimizer step
       (``zero_grad(set_to_none=optim_set_to_none)`` before; ``accumulation_steps`` as ``SupervisedTrainer``);
       ``MODEL_COMPLETED``, on which decollation, ``postprocessing`` and metrics run.

    ``engine.state.output`` holds ``image``, ``label``, ``pred`` (the student's logits), ``loss`` (the total) and
    :data:`LOSS_TERM_KEYS`' ``loss_seg`` and ``loss_<term>`` for every term (unweighted, detached, 0 for an
    undeclared term), plus the ``diag_*`` values on diagnosed iterations. The ``inferer`` is not used: the
    student runs on the whole batch, as with train.yaml's ``SimpleInferer``.

    Args:
        args, kwargs: those of ``monai.engines.SupervisedTrainer`` (``compile`` must stay false).
        teacher: the teacher, put in eval mode with ``requires_grad`` off here; ``None`` only when the loss declares
            no term (Seg alone).

    Raises:
        TypeError: ``network`` is not a :class:`DistillationModel` or ``teacher`` has no ``forward_features``.
        ValueError: a term is declared but ``teacher`` is ``None``, or ``compile=True``.
    """

    def __init__(self, *args: Any, teacher: Optional[nn.Module] = None, **kwargs: Any) -> None:
        if kwargs.get("compile", False):
            raise ValueError("DistillationTrainer does not support compile=True (the student is called directly).")
        super().__init__(*args, **kwargs)
        loss = _distillation_model(self.network).loss
        if teacher is None and loss.needs_teacher:
            raise ValueError(f"the distillation loss declares terms {sorted(loss.weights)} but teacher is None.")
        if teacher is not None:
            if not hasattr(teacher, "forward_features"):
                raise TypeError(f"teacher {type(teacher).__name__} has no forward_features(x) -> (logits, features).")
            teacher.eval()
            for parameter in teacher.parameters():
                parameter.requires_grad_(False)
        self.teacher = teacher

    def _teacher_outputs(
        self, image: torch.Tensor, loss: DistillationLoss
    ) -> Tuple[Optional[torch.Tensor], Optional[Dict[str, torch.Tensor]]]:
        if not loss.needs_teacher:
            return None, None
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher.forward_features(image)

    @staticmethod
    def _diagnostics(
        model: DistillationModel, terms: Mapping[str, torch.Tensor], student_logits: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """:func:`~custom_losses.diagnostics.term_gradients` of Seg and each declared term on the student's
        parameters, and the :func:`~custom_losses.flip_rate` of the student's argmax labels."""
        weights = {"seg": 1.0, **model.loss.weights}
        values = term_gradients(terms, weights, model.student.parameters())
        values["flip_rate"] = flip_rate(student_logits.detach().argmax(dim=1))
        return values

    def _iteration(self, engine: DistillationTrainer, batchdata: Dict[str, Any]) -> Dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) != 2 and (batch[2] or batch[3]):
            raise ValueError("DistillationTrainer: prepare_batch must give (image, label), no extra network inputs.")
        inputs, targets = batch[0], batch[1]
        model = _distillation_model(engine.network)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}

        steps, zero_grad, step = _accumulation(engine)
        engine.network.train()
        if zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        amp = bool(engine.amp and getattr(engine, "scaler", None) is not None)
        autocast = torch.autocast(inputs.device.type, **engine.amp_kwargs) if amp else contextlib.nullcontext()
        with autocast:
            teacher_logits, teacher_features = engine._teacher_outputs(inputs, model.loss)
            student_logits, terms = engine.network(inputs, teacher_logits, teacher_features, targets)
            engine.state.output[Keys.PRED] = student_logits
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            terms = {"seg": engine.loss_function(student_logits, targets).mean(), **terms}
            terms["total"] = terms["seg"] + terms["total"]
            engine.state.output[Keys.LOSS] = terms["total"]
            for name, key in LOSS_TERM_KEYS.items():
                if name != "total":
                    engine.state.output[key] = terms[name].detach()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if getattr(engine.state, DIAGNOSE_FLAG, False):  # asked by a DistillationDiagnostics handler
            for name, value in engine._diagnostics(model, terms, student_logits).items():
                engine.state.output[f"{DIAGNOSTIC_PREFIX}{name}"] = value

        loss = terms["total"] / steps if steps > 1 else terms["total"]
        if amp:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if step:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if step:
                engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def loss_terms(output: Any) -> Dict[str, float]:
    """``output_transform`` for StatsHandler / TensorBoardStatsHandler: every loss term present in the trainer's
    output (a dict, or the decollated list of dicts) as floats, and the ``diag_*`` diagnostics when present."""
    first = output[0] if isinstance(output, (list, tuple)) else output
    keys = [key for key in LOSS_TERM_KEYS.values() if key in first]
    keys += sorted(key for key in first if isinstance(key, str) and key.startswith(DIAGNOSTIC_PREFIX))
    return {key: float(first[key]) for key in keys}
