"""The distillation part of the paper's objective (eq. 8): the weighted sum of the declared distillation terms."""

import numbers
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .adaptive_affinity import AdaptiveAffinityLoss
from .kernel_matrix import KernelMatrixLoss
from .logits_kl import LogitsKLLoss
from .utils import check_4d, check_pair

__all__ = ["DistillationLoss", "DISTILLATION_TERMS", "PAPER_TERMS"]

DISTILLATION_TERMS = ("logits", "kernel", "affinity")
"""The terms a :class:`DistillationLoss` can declare: LM (eq. 7), KM (eqs. 5-6), AA (eqs. 1-4)."""

PAPER_TERMS: Mapping[str, float] = MappingProxyType({"logits": 0.2, "kernel": 0.9, "affinity": 0.9})
"""The paper's weights (eq. 8: lambda_1..3), all three terms on."""


def _term_weights(terms: Mapping[str, float]) -> Dict[str, float]:
    if not isinstance(terms, Mapping):
        raise TypeError(f"terms must be a mapping of term name to weight, got {type(terms).__name__}: {terms!r}.")
    weights = {}
    for name, weight in terms.items():
        if name not in DISTILLATION_TERMS:
            expected = list(DISTILLATION_TERMS)
            raise ValueError(f"unknown distillation term {name!r} in terms; expected some of {expected}.")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValueError(f"terms[{name!r}] must be a number, got {weight!r}.")
        if not weight >= 0:  # also refuses NaN
            raise ValueError(f"terms[{name!r}] must be >= 0, got {weight}.")
        weights[name] = float(weight)
    return {name: weights[name] for name in DISTILLATION_TERMS if name in weights}


def _kernel_pair_list(kernel_pairs: Sequence[Sequence[str]]) -> Tuple[Tuple[str, str], ...]:
    pairs = []
    for pair in kernel_pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(
                f"each kernel pair must be (student_key, teacher_key), got {pair!r} in kernel_pairs={kernel_pairs!r}."
            )
        student_key, teacher_key = str(pair[0]), str(pair[1])
        for key in (student_key, teacher_key):
            if not key or "." in key:
                raise ValueError(f"feature keys must be non-empty and contain no '.', got {key!r} in {pair!r}.")
        pairs.append((student_key, teacher_key))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"kernel_pairs has duplicates: {kernel_pairs!r}.")
    return tuple(pairs)


def _channels_of(channels: Optional[Mapping[str, int]], key: str, argument: str) -> int:
    if channels is None or key not in channels:
        known = sorted(channels) if channels is not None else []
        raise ValueError(f"{argument} has no entry for feature key {key!r} (has {known}); it sizes the KM adapter.")
    return int(channels[key])


class DistillationLoss(nn.Module):
    """The distillation terms of eq. 8, weighted: ``sum over the declared terms of weight * term``.

    eq. 8 is ``Loss = Seg + lambda_1 LM + lambda_2 KM + lambda_3 AA``. Seg is not computed here: it is the
    trainer's own ``loss_function`` (the bundle's ``loss``, the same in a plain and a distilled run), and
    :class:`tools.engines.DistillationTrainer` adds it to this module's total. The terms, declared in ``terms`` as
    ``{name: weight}`` (torchdistill's weighted sub-terms):

    * ``logits`` (LM): :class:`LogitsKLLoss` between student and teacher logits (eq. 7).
    * ``kernel`` (KM): :class:`KernelMatrixLoss` for each ``(student_key, teacher_key)`` of ``kernel_pairs``,
      averaged over the pairs (eqs. 5-6). Each pair has its own 1x1 adapter, sized from
      ``student_channels[student_key]`` and ``teacher_channels[teacher_key]``.
    * ``affinity`` (AA): :class:`AdaptiveAffinityLoss` on the student's logits with the teacher's argmax labels
      (eqs. 1-4), with its learnable size weights ``theta``.

    A term absent from ``terms`` is off: not built, not computed, reported as 0 (Table 4's ablation is a choice of
    terms). ``terms={}`` is the "w/o" baseline: the total is 0 and no teacher output is read (``needs_teacher``
    is false). A term with weight 0 is computed and reported but does not train. The adapters and ``theta`` are
    parameters of this module: optimise ``student.parameters()`` together with ``loss.parameters()``. Teacher
    tensors are detached.

    Everything is plain keyword arguments, so a bundle config builds it directly, e.g.::

        distillation_loss:
          _target_: custom_losses.DistillationLoss
          terms: {logits: 0.2, kernel: 0.9, affinity: 0.9}
          kernel_pairs: [[high, high]]
          student_channels: {high: 128}
          teacher_channels: {high: 1024}

    Args:
        terms: ``{term: weight}`` for terms among :data:`DISTILLATION_TERMS`, weights ``>= 0``; ``None`` for
            :data:`PAPER_TERMS` (0.2 LM, 0.9 KM, 0.9 AA).
        kernel_pairs: ``(student_key, teacher_key)`` feature pairs distilled by KM; default ``high -> high``.
        student_channels, teacher_channels: channel count of each feature key used by ``kernel_pairs``;
            required when ``kernel`` is a term.
        temperature, logits_direction: see :class:`LogitsKLLoss`.
        affinity_margin, affinity_sizes, affinity_adaptive: ``margin``, ``sizes``, ``adaptive`` of
            :class:`AdaptiveAffinityLoss`.
        kernel_normalize: ``normalize`` of :class:`KernelMatrixLoss`.
        kernel_reduction: ``reduction`` of :class:`KernelMatrixLoss` (``"batchmean"`` = eq. 6, ``"mean"`` = per
            entry, free of the batch size).
        affinity_balance, affinity_stride: ``balance`` and ``stride`` of :class:`AdaptiveAffinityLoss`
            (``"pooled"`` and ``1`` = eqs. 1-4 as written).

    Raises:
        ValueError: an unknown term name, a weight that is negative or not a number, bad ``kernel_pairs`` or a
            missing channel count.

    Call ``loss(student_logits, student_features, teacher_logits, teacher_features)`` for the weighted total,
    or :meth:`forward_terms` with the same arguments for the dict of every term.
    """

    def __init__(
        self,
        terms: Optional[Mapping[str, float]] = None,
        kernel_pairs: Sequence[Sequence[str]] = (("high", "high"),),
        student_channels: Optional[Mapping[str, int]] = None,
        teacher_channels: Optional[Mapping[str, int]] = None,
        temperature: float = 1.0,
        logits_direction: str = "student_teacher",
        affinity_margin: float = 3.0,
        affinity_sizes: Sequence[int] = (1, 2, 3),
        affinity_adaptive: bool = True,
        kernel_normalize: bool = True,
        kernel_reduction: str = "batchmean",
        affinity_balance: str = "pooled",
        affinity_stride: int = 1,
    ) -> None:
        super().__init__()
        self.weights: Dict[str, float] = _term_weights(PAPER_TERMS if terms is None else terms)
        self.logits_loss = LogitsKLLoss(temperature, logits_direction) if "logits" in self.weights else None
        self.affinity_loss = (
            AdaptiveAffinityLoss(
                affinity_margin, affinity_sizes, affinity_adaptive, balance=affinity_balance, stride=affinity_stride
            )
            if "affinity" in self.weights
            else None
        )
        self.kernel_pairs: Tuple[Tuple[str, str], ...] = ()
        self.kernel_losses = nn.ModuleDict()
        if "kernel" in self.weights:
            self.kernel_pairs = _kernel_pair_list(kernel_pairs)
            if not self.kernel_pairs:
                raise ValueError("the kernel term needs at least one pair in kernel_pairs.")
            for student_key, teacher_key in self.kernel_pairs:
                self.kernel_losses[self._pair_name(student_key, teacher_key)] = KernelMatrixLoss(
                    _channels_of(student_channels, student_key, "student_channels"),
                    _channels_of(teacher_channels, teacher_key, "teacher_channels"),
                    normalize=kernel_normalize,
                    reduction=kernel_reduction,
                )

    @property
    def needs_teacher(self) -> bool:
        """Whether any term is declared, i.e. whether :meth:`forward_terms` reads the teacher's outputs."""
        return bool(self.weights)

    def extra_repr(self) -> str:
        return f"terms={self.weights}"

    @staticmethod
    def _pair_name(student_key: str, teacher_key: str) -> str:
        return f"{student_key}__{teacher_key}"

    def forward_terms(
        self,
        student_logits: torch.Tensor,
        student_features: Optional[Mapping[str, torch.Tensor]],
        teacher_logits: Optional[torch.Tensor],
        teacher_features: Optional[Mapping[str, torch.Tensor]],
    ) -> Dict[str, torch.Tensor]:
        """Every term, ``{"logits", "kernel", "affinity", "total"}``: the terms unweighted (0 when absent from
        ``terms``), ``total`` their weighted sum.

        Args:
            student_logits: ``(B, C, H, W)``.
            student_features: the student's named features (``forward_features``), read by KM.
            teacher_logits: ``(B, C, H', W')``, read by LM and AA; may be ``None`` when neither is declared.
            teacher_features: the teacher's named features, read by KM; may be ``None`` when KM is not declared.
        """
        check_4d(student_logits, "student_logits")
        if self.logits_loss is not None or self.affinity_loss is not None:
            if teacher_logits is None:
                raise ValueError("teacher_logits is None but the logits or affinity term is declared.")
            check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
            teacher_logits = teacher_logits.detach()

        zero = student_logits.new_zeros((), dtype=torch.float32)
        terms = {name: zero for name in DISTILLATION_TERMS}
        if self.logits_loss is not None:
            terms["logits"] = self.logits_loss(student_logits, teacher_logits)
        if self.kernel_pairs:
            terms["kernel"] = self._kernel_term(student_features, teacher_features)
        if self.affinity_loss is not None:
            terms["affinity"] = self.affinity_loss(student_logits, teacher_logits)
        total = zero
        for name, weight in self.weights.items():
            total = total + weight * terms[name]
        terms["total"] = total
        return terms

    def _kernel_term(
        self,
        student_features: Optional[Mapping[str, torch.Tensor]],
        teacher_features: Optional[Mapping[str, torch.Tensor]],
    ) -> torch.Tensor:
        losses = []
        for student_key, teacher_key in self.kernel_pairs:
            for features, key, name in (
                (student_features, student_key, "student_features"),
                (teacher_features, teacher_key, "teacher_features"),
            ):
                if features is None or key not in features:
                    known = sorted(features) if features is not None else None
                    raise ValueError(f"{name} has no feature {key!r} (has {known}) needed by kernel_pairs.")
            kernel_loss = self.kernel_losses[self._pair_name(student_key, teacher_key)]
            losses.append(kernel_loss(student_features[student_key], teacher_features[teacher_key].detach()))
        return torch.stack(losses).mean()

    def forward(
        self,
        student_logits: torch.Tensor,
        student_features: Optional[Mapping[str, torch.Tensor]],
        teacher_logits: Optional[torch.Tensor],
        teacher_features: Optional[Mapping[str, torch.Tensor]],
    ) -> torch.Tensor:
        """The weighted total (see :meth:`forward_terms` for the arguments)."""
        return self.forward_terms(student_logits, student_features, teacher_logits, teacher_features)["total"]
