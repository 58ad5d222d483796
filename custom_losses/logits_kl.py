"""Logits Module (LM): pixel-wise KL divergence between student and teacher class probabilities (paper eq. 7)."""

import torch
import torch.nn.functional as F
from torch import nn

from .utils import at_least_float32, check_pair, resize_map

__all__ = ["LogitsKLLoss"]

_DIRECTIONS = ("student_teacher", "teacher_student")
_REDUCTIONS = ("mean", "sum", "none")


class LogitsKLLoss(nn.Module):
    """Pixel-wise KL divergence between the class distributions of a student and a teacher.

    With ``p^s = softmax(z^s / T)`` and ``p^t = softmax(z^t / T)`` taken over the class channel (dim 1)
    and ``N = B * H * W`` pixels of the student's logits, the default ``direction="student_teacher"``
    is the paper's eq. 7 times ``T^2``:

    .. math::
        L_{LM} = \\frac{T^2}{N} \\sum_{i=1}^{N} \\sum_c p^s_{i,c} (\\log p^s_{i,c} - \\log p^t_{i,c})
               = \\frac{T^2}{N} \\sum_i KL(p^s_i \\| p^t_i).

    ``direction="teacher_student"`` gives Hinton's ``KL(p^t_i || p^s_i)`` instead. Both use
    ``log_softmax``, so saturated logits give finite values; the computation is done in (at least) float32
    whatever the input dtype, and so is the result.

    The teacher's logits are detached. When their spatial size differs from the student's they are
    resized bilinearly to the student's size before the softmax.

    Args:
        temperature: softmax temperature ``T > 0``.
        direction: ``"student_teacher"`` (eq. 7, default) or ``"teacher_student"`` (Hinton et al.).
        reduction: ``"mean"`` over the ``N`` pixels (default), ``"sum"`` over them, or ``"none"``
            for the ``(B, H, W)`` map of ``T^2 * KL`` per pixel.

    Shapes:
        ``student_logits`` ``(B, C, H, W)``, ``teacher_logits`` ``(B, C, H', W')``.
    """

    def __init__(self, temperature: float = 1.0, direction: str = "student_teacher", reduction: str = "mean") -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}.")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        self.temperature = float(temperature)
        self.direction = direction
        self.reduction = reduction

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
        teacher_logits = resize_map(at_least_float32(teacher_logits.detach()), student_logits.shape[2:])
        log_p_s = F.log_softmax(at_least_float32(student_logits) / self.temperature, dim=1)
        log_p_t = F.log_softmax(teacher_logits / self.temperature, dim=1)
        if self.direction == "student_teacher":
            kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=1)
        else:
            kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
        kl = kl * (self.temperature**2)
        if self.reduction == "mean":
            return kl.mean()
        if self.reduction == "sum":
            return kl.sum()
        return kl
