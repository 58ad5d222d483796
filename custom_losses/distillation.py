"""The paper's full objective (eq. 8): segmentation loss plus the three distillation modules."""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from monai.losses import DiceFocalLoss
from torch import nn

from .adaptive_affinity import AdaptiveAffinityLoss
from .kernel_matrix import KernelMatrixLoss
from .logits_kl import LogitsKLLoss
from .utils import at_least_float32, check_4d, check_pair

__all__ = ["DistillationLoss", "TERM_NAMES"]

TERM_NAMES = ("seg", "logits", "kernel", "affinity", "total")


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
    """``Loss = Seg + lambda_logits * LM + lambda_kernel * KM + lambda_affinity * AA`` (paper eq. 8).

    * ``Seg``: the student's segmentation loss against the ground truth, by default MONAI's
      ``DiceFocalLoss(softmax=True, to_onehot_y=True)`` (Dice + Focal) on integer labels ``(B, 1, H, W)``.
    * ``LM``: :class:`LogitsKLLoss` between student and teacher logits (eq. 7).
    * ``KM``: :class:`KernelMatrixLoss` for each ``(student_key, teacher_key)`` of ``kernel_pairs``,
      averaged over the pairs (eqs. 5-6). Each pair has its own 1x1 adapter, sized from
      ``student_channels[student_key]`` and ``teacher_channels[teacher_key]``.
    * ``AA``: :class:`AdaptiveAffinityLoss` on the student's logits with the teacher's argmax labels
      (eqs. 1-4), with its learnable size weights ``theta``.

    A module switched off (``use_logits``, ``use_kernel``, ``use_affinity``) is not built and not
    computed; its term is reported as 0. With all three off this is the "w/o" baseline (Seg alone), and
    the teacher's outputs may be ``None``. The adapters and ``theta`` are parameters of this module:
    optimise ``student.parameters()`` together with ``loss.parameters()``. Teacher tensors are detached.

    Everything is plain keyword arguments, so a bundle config builds it directly, e.g.::

        loss:
          _target_: custom_losses.DistillationLoss
          kernel_pairs: [[high, high]]
          student_channels: {high: 128}
          teacher_channels: {high: 1024}

    Args:
        lambda_logits, lambda_kernel, lambda_affinity: the weights ``lambda_1..3`` (paper: 0.2, 0.9, 0.9).
        use_logits, use_kernel, use_affinity: switch each distillation module on or off (Table 4 ablation).
        kernel_pairs: ``(student_key, teacher_key)`` feature pairs distilled by KM; default ``high -> high``.
        student_channels, teacher_channels: channel count of each feature key used by ``kernel_pairs``;
            required when ``use_kernel``.
        temperature, logits_direction: see :class:`LogitsKLLoss`.
        affinity_margin, affinity_sizes, affinity_adaptive: ``margin``, ``sizes``, ``adaptive`` of
            :class:`AdaptiveAffinityLoss`.
        kernel_normalize: ``normalize`` of :class:`KernelMatrixLoss`.
        kernel_reduction: ``reduction`` of :class:`KernelMatrixLoss` (``"batchmean"`` = eq. 6, ``"mean"`` = per
            entry, free of the batch size).
        affinity_balance, affinity_stride: ``balance`` and ``stride`` of :class:`AdaptiveAffinityLoss`
            (``"pooled"`` and ``1`` = eqs. 1-4 as written).
        seg_loss: the segmentation loss, called as ``seg_loss(student_logits, label)``; ``None`` for
            ``DiceFocalLoss(softmax=True, to_onehot_y=True)``.

    Call ``loss(student_logits, student_features, teacher_logits, teacher_features, label)`` for the
    total, or :meth:`forward_terms` with the same arguments for the dict of every term.
    """

    def __init__(
        self,
        lambda_logits: float = 0.2,
        lambda_kernel: float = 0.9,
        lambda_affinity: float = 0.9,
        use_logits: bool = True,
        use_kernel: bool = True,
        use_affinity: bool = True,
        kernel_pairs: Sequence[Sequence[str]] = (("high", "high"),),
        student_channels: Optional[Mapping[str, int]] = None,
        teacher_channels: Optional[Mapping[str, int]] = None,
        temperature: float = 1.0,
        logits_direction: str = "student_teacher",
        affinity_margin: float = 3.0,
        affinity_sizes: Sequence[int] = (1, 2, 3),
        affinity_adaptive: bool = True,
        kernel_normalize: bool = True,
        seg_loss: Optional[nn.Module] = None,
        kernel_reduction: str = "batchmean",
        affinity_balance: str = "pooled",
        affinity_stride: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("lambda_logits", lambda_logits),
            ("lambda_kernel", lambda_kernel),
            ("lambda_affinity", lambda_affinity),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        self.lambda_logits = float(lambda_logits)
        self.lambda_kernel = float(lambda_kernel)
        self.lambda_affinity = float(lambda_affinity)
        self.use_logits = bool(use_logits)
        self.use_kernel = bool(use_kernel)
        self.use_affinity = bool(use_affinity)

        self.seg_loss = seg_loss if seg_loss is not None else DiceFocalLoss(softmax=True, to_onehot_y=True)
        self.logits_loss = LogitsKLLoss(temperature, logits_direction) if self.use_logits else None
        self.affinity_loss = (
            AdaptiveAffinityLoss(
                affinity_margin, affinity_sizes, affinity_adaptive, balance=affinity_balance, stride=affinity_stride
            )
            if self.use_affinity
            else None
        )
        self.kernel_pairs: Tuple[Tuple[str, str], ...] = ()
        self.kernel_losses = nn.ModuleDict()
        if self.use_kernel:
            self.kernel_pairs = _kernel_pair_list(kernel_pairs)
            if not self.kernel_pairs:
                raise ValueError("use_kernel=True needs at least one pair in kernel_pairs.")
            for student_key, teacher_key in self.kernel_pairs:
                self.kernel_losses[self._pair_name(student_key, teacher_key)] = KernelMatrixLoss(
                    _channels_of(student_channels, student_key, "student_channels"),
                    _channels_of(teacher_channels, teacher_key, "teacher_channels"),
                    normalize=kernel_normalize,
                    reduction=kernel_reduction,
                )

    def term_weights(self) -> Dict[str, float]:
        """The weight of each active term in the total: ``{"seg": 1, "logits": lambda_logits, ...}``."""
        weights = {"seg": 1.0}
        for name, used, weight in (
            ("logits", self.use_logits, self.lambda_logits),
            ("kernel", self.use_kernel, self.lambda_kernel),
            ("affinity", self.use_affinity, self.lambda_affinity),
        ):
            if used:
                weights[name] = weight
        return weights

    @staticmethod
    def _pair_name(student_key: str, teacher_key: str) -> str:
        return f"{student_key}__{teacher_key}"

    def forward_terms(
        self,
        student_logits: torch.Tensor,
        student_features: Optional[Mapping[str, torch.Tensor]],
        teacher_logits: Optional[torch.Tensor],
        teacher_features: Optional[Mapping[str, torch.Tensor]],
        label: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """Every term of eq. 8: ``{"seg", "logits", "kernel", "affinity", "total"}``, unweighted except
        ``total``; switched-off terms are 0.

        Args:
            student_logits: ``(B, C, H, W)``.
            student_features: the student's named features (``forward_features``), used by KM.
            teacher_logits: ``(B, C, H', W')``, used by LM and AA.
            teacher_features: the teacher's named features, used by KM.
            label: ground truth ``(B, 1, H, W)`` with class indices.
        """
        check_4d(student_logits, "student_logits")
        check_4d(label, "label")
        expected_label_shape = (student_logits.shape[0], 1, *student_logits.shape[2:])
        if tuple(label.shape) != expected_label_shape:
            raise ValueError(
                f"label must have shape (B, 1, H, W) matching student_logits {tuple(student_logits.shape)}, "
                f"got {tuple(label.shape)}."
            )
        if self.use_logits or self.use_affinity:
            if teacher_logits is None:
                raise ValueError("teacher_logits is None but the logits or affinity module is on.")
            check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
            teacher_logits = teacher_logits.detach()

        zero = student_logits.new_zeros((), dtype=torch.float32)
        terms = {name: zero for name in TERM_NAMES}
        terms["seg"] = self.seg_loss(at_least_float32(student_logits), label)
        total = terms["seg"]
        if self.logits_loss is not None:
            terms["logits"] = self.logits_loss(student_logits, teacher_logits)
            total = total + self.lambda_logits * terms["logits"]
        if self.use_kernel:
            terms["kernel"] = self._kernel_term(student_features, teacher_features)
            total = total + self.lambda_kernel * terms["kernel"]
        if self.affinity_loss is not None:
            terms["affinity"] = self.affinity_loss(student_logits, teacher_logits)
            total = total + self.lambda_affinity * terms["affinity"]
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
        label: torch.Tensor,
    ) -> torch.Tensor:
        """The total of eq. 8 (see :meth:`forward_terms` for the arguments)."""
        return self.forward_terms(student_logits, student_features, teacher_logits, teacher_features, label)["total"]
