"""Kernel Matrix Module (KMM): match the batch Gram matrices of student and teacher features (paper eqs. 5-6)."""

import torch
import torch.nn.functional as F
from torch import nn

from .utils import at_least_float32, check_pair, resize_map

__all__ = ["KernelMatrixLoss"]

_REDUCTIONS = ("batchmean", "mean", "sum")


class KernelMatrixLoss(nn.Module):
    """Full kernel (Gram) matrix transfer between a student's and a teacher's feature maps.

    A learnable 1x1 convolution (``adapter``) maps the student's feature ``(n, C_s, h, w)`` to the
    teacher's ``C_t`` channels and a bilinear resize (``align_corners=False``) brings it to the teacher's
    ``(H, W)``; the two commute, and the convolution is run at the smaller size. Each sample
    is then flattened to a row ``x^i`` of length ``C_t * H * W`` (L2-normalised when ``normalize``), and

    .. math::
        K_S = X_S X_S^T, \\quad K_T = X_T X_T^T \\quad (n \\times n, eq. 5)

        L_{KM} = \\frac{1}{n} \\sum_{i,j} (K_S - K_T)_{ij}^2 + \\frac{1}{n} \\sum_{i,j} |K_S - K_T|_{ij}
        \\quad (eq. 6, ``reduction="batchmean"``).

    ``reduction="batchmean"`` is eq. 6 as written: the sum over the ``n^2`` entries divided by ``n``, which is
    ``n`` times the per-entry mean and so grows linearly with the batch size (16x at the paper's batch 16).
    ``reduction="mean"`` divides by ``n^2`` instead, ``mean_{ij} (K_S - K_T)^2 + mean_{ij} |K_S - K_T|``, a
    value that does not depend on the batch size (``docs/distillation.md``); ``"sum"`` is the plain sum.
    The names follow ``torch.nn.KLDivLoss``.

    ``normalize=False`` is eq. 5 as written (raw inner products, whose scale grows with the feature
    size); ``normalize=True`` (default) compares cosine similarities, bounded in ``[-1, 1]``.

    The Gram matrix relates samples to each other, so a batch of ``n = 1`` carries no relation: the
    loss is then 0 (a zero still connected to the student's graph), with or without normalisation.

    The teacher's feature is detached; the Gram matrices are computed in (at least) float32 with autocast off.

    Args:
        student_channels: channels ``C_s`` of the student's feature.
        teacher_channels: channels ``C_t`` of the teacher's feature.
        normalize: L2-normalise each flattened sample before the Gram matrix.
        eps: floor of the norm in the normalisation.
        reduction: ``"batchmean"`` (eq. 6, default), ``"mean"`` (per entry, batch-size free) or ``"sum"``.

    Shapes:
        ``student_feature`` ``(n, C_s, h, w)``, ``teacher_feature`` ``(n, C_t, H, W)``.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        normalize: bool = True,
        eps: float = 1e-12,
        reduction: str = "batchmean",
    ):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        self.reduction = reduction
        if int(student_channels) < 1 or int(teacher_channels) < 1:
            raise ValueError(
                f"student_channels and teacher_channels must be >= 1, got {student_channels}, {teacher_channels}."
            )
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.normalize = bool(normalize)
        self.eps = float(eps)
        self.adapter = nn.Conv2d(self.student_channels, self.teacher_channels, kernel_size=1)

    def _gram(self, feature: torch.Tensor) -> torch.Tensor:
        rows = at_least_float32(feature.reshape(feature.shape[0], -1))
        if self.normalize:
            rows = F.normalize(rows, p=2.0, dim=1, eps=self.eps)
        return rows @ rows.t()

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        check_pair(student_feature, teacher_feature, "student_feature", "teacher_feature", same_channels=False)
        if student_feature.shape[1] != self.student_channels:
            raise ValueError(
                f"student_feature has shape {tuple(student_feature.shape)}, "
                f"expected {self.student_channels} channels (dim 1)."
            )
        if teacher_feature.shape[1] != self.teacher_channels:
            raise ValueError(
                f"teacher_feature has shape {tuple(teacher_feature.shape)}, "
                f"expected {self.teacher_channels} channels (dim 1)."
            )
        # the adapter belongs to the loss: a float16/bfloat16 feature is cast to its dtype (autocast still applies)
        student_feature = student_feature.to(self.adapter.weight.dtype)
        target_size = teacher_feature.shape[2:]
        # A 1x1 convolution and a bilinear resize commute exactly (both linear, bilinear weights sum to 1),
        # so the convolution runs at the smaller of the two spatial sizes.
        if student_feature.shape[2] * student_feature.shape[3] > target_size[0] * target_size[1]:
            adapted = self.adapter(resize_map(student_feature, target_size))
        else:
            adapted = resize_map(self.adapter(student_feature), target_size)
        n = adapted.shape[0]
        if n < 2:
            return at_least_float32(adapted).sum() * 0.0
        with torch.autocast(device_type=adapted.device.type, enabled=False):
            gram_student = self._gram(adapted)
            gram_teacher = self._gram(teacher_feature.detach())
            diff = gram_student - gram_teacher
            total = diff.pow(2).sum() + diff.abs().sum()
            if self.reduction == "batchmean":
                return total / n
            if self.reduction == "mean":
                return total / (n * n)
            return total
