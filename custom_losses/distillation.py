"""The distillation part of the objective (eq. 8): the weighted sum of the declared distillation terms.

The paper's terms (LM, KM, AA) and the terms of the Table 3 baselines (EMKD's logits KD, importance maps and region
affinity) are all named terms of one :class:`DistillationLoss`, so an objective is a choice of ``terms``.
"""

import numbers
from types import MappingProxyType
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .adaptive_affinity import AdaptiveAffinityLoss
from .emkd import ImportanceMapLoss, RegionAffinityLoss
from .kernel_matrix import KernelMatrixLoss
from .logits_kl import LogitsKLLoss
from .utils import check_4d, check_pair

__all__ = ["DistillationLoss", "DISTILLATION_TERMS", "PAPER_TERMS", "EMKD_TERMS"]

DISTILLATION_TERMS = ("logits", "kernel", "affinity", "kd_logits", "emkd_importance", "emkd_region_affinity")
"""The terms a :class:`DistillationLoss` can declare: the paper's LM (eq. 7), KM (eqs. 5-6), AA (eqs. 1-4); EMKD's
logits KD at a temperature, importance-map and region-affinity distillation (Table 3's baseline)."""

PAPER_TERMS: Mapping[str, float] = MappingProxyType({"logits": 0.2, "kernel": 0.9, "affinity": 0.9})
"""The paper's weights (eq. 8: lambda_1..3), all three terms on."""

EMKD_TERMS: Mapping[str, float] = MappingProxyType(
    {"kd_logits": 0.1, "emkd_importance": 0.9, "emkd_region_affinity": 0.9}
)
"""EMKD's weights (``EagleMIT/EMKD`` ``train_kd.py``: ``alpha = 0.1``, ``beta1 = 0.9``, ``beta2 = 0.9``)."""


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


def _pair_list(feature_pairs: Sequence[Sequence[str]], argument: str = "kernel_pairs") -> Tuple[Tuple[str, str], ...]:
    pairs = []
    for pair in feature_pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(
                f"each {argument[:-1].replace('_', ' ')} must be (student_key, teacher_key), got {pair!r} in "
                f"{argument}={feature_pairs!r}."
            )
        student_key, teacher_key = str(pair[0]), str(pair[1])
        for key in (student_key, teacher_key):
            if not key or "." in key:
                raise ValueError(f"feature keys must be non-empty and contain no '.', got {key!r} in {pair!r}.")
        pairs.append((student_key, teacher_key))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"{argument} has duplicates: {feature_pairs!r}.")
    return tuple(pairs)


def _feature(features: Optional[Mapping[str, torch.Tensor]], key: str, name: str, argument: str) -> torch.Tensor:
    if features is None or key not in features:
        known = sorted(features) if features is not None else None
        raise ValueError(f"{name} has no feature {key!r} (has {known}) needed by {argument}.")
    return features[key]


def _channels_of(channels: Optional[Mapping[str, int]], key: str, argument: str) -> int:
    if channels is None or key not in channels:
        known = sorted(channels) if channels is not None else []
        raise ValueError(f"{argument} has no entry for feature key {key!r} (has {known}); it sizes the KM adapter.")
    return int(channels[key])


class DistillationLoss(nn.Module):
    """The distillation terms of an objective, weighted: ``sum over the declared terms of weight * term``.

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

    The terms of EMKD (Qin et al., TMI 2021; :data:`EMKD_TERMS` has its weights), Table 3's baseline:

    * ``kd_logits``: Hinton's KD, :class:`LogitsKLLoss` with ``direction="teacher_student"`` at ``kd_temperature``,
      ``T^2 mean_i KL(p^t_i || p^s_i)`` (EMKD ``prediction_map_distillation``, T = 4).
    * ``emkd_importance``: :class:`~custom_losses.emkd.ImportanceMapLoss` for each pair of ``emkd_pairs``, **summed**
      over the pairs as EMKD sums its low and high terms.
    * ``emkd_region_affinity``: :class:`~custom_losses.emkd.RegionAffinityLoss` on the ground-truth ``labels`` for each
      pair of ``emkd_pairs``, summed over the pairs.

    Neither EMKD feature term has parameters: each compares a per-network summary (an attention map, a cosine), so
    student and teacher channel counts may differ without an adapter.

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
        emkd_pairs: ``(student_key, teacher_key)`` feature pairs of ``emkd_importance`` and ``emkd_region_affinity``;
            default ``low -> low`` and ``high -> high`` (EMKD).
        kd_temperature: the temperature of ``kd_logits`` (EMKD: 4).
        emkd_exponent: the exponent ``p`` of the importance maps (EMKD: 4).
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
        ValueError: an unknown term name, a weight that is negative or not a number, bad ``kernel_pairs`` or
            ``emkd_pairs``, or a missing channel count.

    Call ``loss(student_logits, student_features, teacher_logits, teacher_features, labels)`` for the weighted
    total, or :meth:`forward_terms` with the same arguments for the dict of every term; ``labels`` (the ground
    truth) is read by ``emkd_region_affinity`` only (:attr:`needs_labels`).
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
        emkd_pairs: Sequence[Sequence[str]] = (("low", "low"), ("high", "high")),
        kd_temperature: float = 4.0,
        emkd_exponent: float = 4.0,
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
            self.kernel_pairs = _pair_list(kernel_pairs, "kernel_pairs")
            if not self.kernel_pairs:
                raise ValueError("the kernel term needs at least one pair in kernel_pairs.")
            for student_key, teacher_key in self.kernel_pairs:
                self.kernel_losses[self._pair_name(student_key, teacher_key)] = KernelMatrixLoss(
                    _channels_of(student_channels, student_key, "student_channels"),
                    _channels_of(teacher_channels, teacher_key, "teacher_channels"),
                    normalize=kernel_normalize,
                    reduction=kernel_reduction,
                )
        self.kd_logits_loss = (
            LogitsKLLoss(kd_temperature, "teacher_student") if "kd_logits" in self.weights else None
        )
        self.importance_loss = ImportanceMapLoss(emkd_exponent) if "emkd_importance" in self.weights else None
        self.region_affinity_loss = RegionAffinityLoss() if "emkd_region_affinity" in self.weights else None
        self.emkd_pairs: Tuple[Tuple[str, str], ...] = ()
        if self.importance_loss is not None or self.region_affinity_loss is not None:
            self.emkd_pairs = _pair_list(emkd_pairs, "emkd_pairs")
            if not self.emkd_pairs:
                raise ValueError("the emkd_* terms need at least one pair in emkd_pairs.")

    @property
    def needs_teacher(self) -> bool:
        """Whether any term is declared, i.e. whether :meth:`forward_terms` reads the teacher's outputs."""
        return bool(self.weights)

    @property
    def needs_labels(self) -> bool:
        """Whether :meth:`forward_terms` reads the ground-truth ``labels`` (``emkd_region_affinity`` is declared)."""
        return self.region_affinity_loss is not None

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
        labels: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Every term, ``{*DISTILLATION_TERMS, "total"}``: the terms unweighted (0 when absent from ``terms``),
        ``total`` their weighted sum.

        Args:
            student_logits: ``(B, C, H, W)``.
            student_features: the student's named features (``forward_features``), read by KM and EMKD's feature
                terms.
            teacher_logits: ``(B, C, H', W')``, read by LM, AA and ``kd_logits``; may be ``None`` when none is
                declared.
            teacher_features: the teacher's named features, read by KM and EMKD's feature terms; may be ``None``
                when none is declared.
            labels: the ground-truth label map ``(B, 1, H, W)``, read by ``emkd_region_affinity`` only.
        """
        check_4d(student_logits, "student_logits")
        if self.logits_loss is not None or self.affinity_loss is not None or self.kd_logits_loss is not None:
            if teacher_logits is None:
                declared = [t for t in ("logits", "affinity", "kd_logits") if t in self.weights]
                raise ValueError(f"teacher_logits is None but the terms {declared} are declared.")
            check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
            teacher_logits = teacher_logits.detach()
        if self.needs_labels and labels is None:
            raise ValueError(
                "labels is None but the emkd_region_affinity term is declared (it reads the ground truth)."
            )

        zero = student_logits.new_zeros((), dtype=torch.float32)
        terms = {name: zero for name in DISTILLATION_TERMS}
        if self.logits_loss is not None:
            terms["logits"] = self.logits_loss(student_logits, teacher_logits)
        if self.kernel_pairs:
            terms["kernel"] = self._kernel_term(student_features, teacher_features)
        if self.affinity_loss is not None:
            terms["affinity"] = self.affinity_loss(student_logits, teacher_logits)
        if self.kd_logits_loss is not None:
            terms["kd_logits"] = self.kd_logits_loss(student_logits, teacher_logits)
        if self.importance_loss is not None:
            pairs = self._emkd_features(student_features, teacher_features)
            terms["emkd_importance"] = torch.stack([self.importance_loss(s, t) for s, t in pairs]).sum()
        if self.region_affinity_loss is not None:
            pairs = self._emkd_features(student_features, teacher_features)
            terms["emkd_region_affinity"] = torch.stack(
                [self.region_affinity_loss(s, t, labels) for s, t in pairs]
            ).sum()
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
            student = _feature(student_features, student_key, "student_features", "kernel_pairs")
            teacher = _feature(teacher_features, teacher_key, "teacher_features", "kernel_pairs")
            kernel_loss = self.kernel_losses[self._pair_name(student_key, teacher_key)]
            losses.append(kernel_loss(student, teacher.detach()))
        return torch.stack(losses).mean()

    def _emkd_features(
        self,
        student_features: Optional[Mapping[str, torch.Tensor]],
        teacher_features: Optional[Mapping[str, torch.Tensor]],
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        return [
            (
                _feature(student_features, student_key, "student_features", "emkd_pairs"),
                _feature(teacher_features, teacher_key, "teacher_features", "emkd_pairs").detach(),
            )
            for student_key, teacher_key in self.emkd_pairs
        ]

    def forward(
        self,
        student_logits: torch.Tensor,
        student_features: Optional[Mapping[str, torch.Tensor]],
        teacher_logits: Optional[torch.Tensor],
        teacher_features: Optional[Mapping[str, torch.Tensor]],
        labels: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The weighted total (see :meth:`forward_terms` for the arguments)."""
        return self.forward_terms(student_logits, student_features, teacher_logits, teacher_features, labels)["total"]
