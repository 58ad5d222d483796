"""Adaptive Affinity Module (AAM): pairwise KL affinities guided by the teacher's labels (paper eqs. 1-4)."""

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .utils import at_least_float32, check_4d, check_pair, resize_labels, resize_map

__all__ = ["AdaptiveAffinityLoss", "GradientReversal"]

_BALANCES = ("pooled", "class")


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; negates the gradient in the backward pass.

    A parameter fed through it is moved by gradient *ascent* on the loss when an optimizer minimises it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return -grad_output


def _half_offsets(size: int) -> List[Tuple[int, int]]:
    """4 of the 8 offsets ``(dy, dx)`` in ``{-size, 0, size}^2 \\ {(0, 0)}``, one of each pair ``{o, -o}``.

    A pixel pair ``(i, i + o)`` met through ``o`` is the pair ``(i + o, i)`` met through ``-o``, so the
    4 half offsets, each taken in both directions, visit exactly the pairs of the 8 offsets.
    """
    return [(0, size), (size, -size), (size, 0), (size, size)]


def _span(offset: int, length: int) -> Tuple[slice, slice]:
    """Slices of the centre pixels ``i`` and of their neighbours ``j = i + offset`` along one axis."""
    if offset >= 0:
        return slice(0, length - offset), slice(offset, length)
    return slice(-offset, length), slice(0, length + offset)


class AdaptiveAffinityLoss(nn.Module):
    """Affinity loss on the student's class probabilities, with pairs labelled by the teacher's prediction.

    Let ``p = softmax(z^s)`` over the classes (dim 1) of the student's logits, clamped to ``[eps, 1]``,
    and ``y = argmax(z^t)`` the teacher's label map. For a neighbourhood size ``s``, every pixel ``i``
    is paired with each neighbour ``j = i + o`` inside the image, for the 8 offsets
    ``o in {-s, 0, s}^2 \\ {(0, 0)}``. With

    .. math::
        W_{ij} = KL(p_i \\| p_j) = \\sum_c p_{i,c} (\\log p_{i,c} - \\log p_{j,c}),   (eq. 3)

    ``P+`` the pairs with ``y_i = y_j`` and ``P-`` those with ``y_i != y_j`` (all offsets and all batch
    items pooled), the loss of size ``s`` is

    .. math::
        L_s = \\frac{1}{|P_+|} \\sum_{P_+} W_{ij} + \\frac{1}{|P_-|} \\sum_{P_-} \\max(0, m - W_{ij})
        (eqs. 1, 2, 4)

    where an empty set contributes 0. The total is ``sum_s w_s L_s`` with ``w = softmax(theta)`` over
    the sizes. With ``adaptive=True``, ``theta`` is a parameter (initialised to zeros) that reaches
    the loss through :class:`GradientReversal`: an optimizer that minimises the total moves ``theta``
    by gradient ascent, so the weight goes to the sizes where the student does worst (Ke et al.,
    Adaptive Affinity Fields, ECCV 2018; here one weight per size, not per class and size). The
    weights form a distribution, so the min-max keeps the total bounded by the worst ``L_s``.
    With ``adaptive=False`` the weights stay uniform
    (``1 / len(sizes)``); ``sizes=(1,), adaptive=False`` (with the defaults ``balance="pooled"``, ``stride=1``)
    is exactly eqs. 1-4.

    Two options depart from eqs. 1-4 as written (``docs/distillation.md`` gives the measurements):

    * ``balance="class"`` splits ``P+`` by the class ``c`` of the pair and averages the per-class means,
      ``L_+ = mean_c (1/|P_+^c|) sum_{P_+^c} W_ij`` over the classes that have pairs. With ``"pooled"``
      (eq. 1) ``P+`` is ~99% background pairs on prostate slices, so a period-2 checkerboard inside the gland,
      which satisfies the margin of the ``P-`` pairs at odd distances, costs almost nothing on ``P+``.
    * ``stride > 1`` computes the loss on the student's logits average-pooled by ``stride`` (AAF applies it
      to stride-8 logits), with the teacher's map brought to that size; a full-resolution checkerboard
      averages out there and earns nothing on ``P-``.

    The teacher's logits are detached; when their spatial size differs from the student's they are
    resized bilinearly before the argmax. :meth:`forward_labels` takes a label map directly
    (resized with nearest neighbour). Computation is in (at least) float32 whatever the input dtype.

    Args:
        margin: the margin ``m`` of the separating force on ``P-`` pairs.
        sizes: neighbourhood sizes ``s`` (distinct positive integers).
        adaptive: learn the size weights by gradient ascent (``True``) or keep them uniform.
        eps: lower clamp of the probabilities, so that ``W`` stays finite (AAF's 1e-4).
        balance: ``"pooled"`` (eq. 1: one mean over all ``P+`` pairs) or ``"class"`` (mean of per-class means).
        stride: average-pool the student's logits by this factor before the loss (1: full resolution).

    Shapes:
        ``student_logits`` ``(B, C, H, W)``, ``teacher_logits`` ``(B, C, H', W')``,
        ``labels`` ``(B, 1, H', W')`` integer.
    """

    def __init__(
        self,
        margin: float = 3.0,
        sizes: Sequence[int] = (1, 2, 3),
        adaptive: bool = True,
        eps: float = 1e-4,
        balance: str = "pooled",
        stride: int = 1,
    ) -> None:
        super().__init__()
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) == 0 or any(s < 1 for s in sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(f"sizes must be distinct positive integers, got {sizes}.")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}.")
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}.")
        if balance not in _BALANCES:
            raise ValueError(f"balance must be one of {_BALANCES}, got {balance!r}.")
        if int(stride) != stride or int(stride) < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}.")
        self.margin = float(margin)
        self.sizes = sizes
        self.balance = balance
        self.stride = int(stride)
        self.adaptive = bool(adaptive)
        self.eps = float(eps)
        if self.adaptive:
            self.theta = nn.Parameter(torch.zeros(len(sizes)))
        else:
            self.register_parameter("theta", None)

    def size_weights(self) -> torch.Tensor:
        """The current weights ``w = softmax(theta)`` of the sizes, detached (for logging)."""
        if self.theta is None:
            return torch.full((len(self.sizes),), 1.0 / len(self.sizes))
        return torch.softmax(self.theta.detach(), dim=0)

    def size_losses(self, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(len(sizes),)`` tensor of the per-size losses ``L_s`` for labels already at the student's size."""
        expected = (student_logits.shape[0], 1, *student_logits.shape[2:])
        if tuple(labels.shape) != expected:
            raise ValueError(
                f"labels must have shape {expected} for student_logits {tuple(student_logits.shape)}, "
                f"got {tuple(labels.shape)}."
            )
        log_p = F.log_softmax(at_least_float32(student_logits), dim=1).clamp_min(math.log(self.eps))
        p = log_p.exp()
        labels = labels[:, 0].to(torch.int32)
        height, width = labels.shape[1:]
        # P+ is pooled into one set ("pooled", eq. 1) or split by the pair's class ("class"), one sum per class
        num_sets = student_logits.shape[1] if self.balance == "class" else 1
        losses = []
        for size in self.sizes:
            pos_sum = [log_p.new_zeros(()) for _ in range(num_sets)]
            neg_sum = log_p.new_zeros(())
            pos_count = [labels.new_zeros((), dtype=torch.long) for _ in range(num_sets)]
            neg_count = labels.new_zeros((), dtype=torch.long)
            for dy, dx in _half_offsets(size):
                if abs(dy) >= height or abs(dx) >= width:
                    continue  # no neighbour inside the image
                rows_a, rows_b = _span(dy, height)
                cols_a, cols_b = _span(dx, width)
                # pixels a and their neighbours b = a + (dy, dx); W_ab = KL(p_a || p_b), W_ba = KL(p_b || p_a)
                log_ratio = log_p[:, :, rows_a, cols_a] - log_p[:, :, rows_b, cols_b]
                w_ab = (p[:, :, rows_a, cols_a] * log_ratio).sum(dim=1)
                w_ba = -(p[:, :, rows_b, cols_b] * log_ratio).sum(dim=1)
                labels_a = labels[:, rows_a, cols_a]
                same = labels_a == labels[:, rows_b, cols_b]
                pos_w = torch.where(same, w_ab + w_ba, 0.0)
                for c in range(num_sets):
                    in_set = same if num_sets == 1 else same & (labels_a == c)
                    pos_sum[c] = pos_sum[c] + (pos_w if num_sets == 1 else torch.where(in_set, pos_w, 0.0)).sum()
                    pos_count[c] = pos_count[c] + 2 * in_set.sum()
                neg_sum = neg_sum + torch.where(
                    same, 0.0, F.relu(self.margin - w_ab) + F.relu(self.margin - w_ba)
                ).sum()
                neg_count = neg_count + 2 * (same.numel() - same.sum())
            # counts stay on the device (no host sync); an empty set divides 0 by 1 (and a class without
            # pairs is left out of the class average)
            pos_counts = torch.stack(pos_count)
            pos_means = torch.stack(pos_sum) / pos_counts.clamp_min(1)
            present = (pos_counts > 0).to(pos_means.dtype)
            pos_loss = (pos_means * present).sum() / present.sum().clamp_min(1)
            losses.append(pos_loss + neg_sum / neg_count.clamp_min(1))
        return torch.stack(losses)

    def _coarse(self, student_logits: torch.Tensor) -> torch.Tensor:
        """The student's logits average-pooled by ``stride`` (AAF's coarse logits); unchanged for ``stride=1``."""
        if self.stride == 1:
            return student_logits
        return F.avg_pool2d(at_least_float32(student_logits), self.stride, ceil_mode=True)

    def _weighted_total(self, size_losses: torch.Tensor) -> torch.Tensor:
        if self.theta is None:
            return size_losses.mean()
        weights = torch.softmax(GradientReversal.apply(self.theta), dim=0)
        return (weights * size_losses).sum()

    def forward_labels(self, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss with pairs labelled by an integer label map ``(B, 1, H', W')`` (e.g. the ground truth)."""
        check_4d(student_logits, "student_logits")
        check_4d(labels, "labels")
        if labels.shape[0] != student_logits.shape[0] or labels.shape[1] != 1:
            raise ValueError(
                f"labels must have shape (B, 1, H, W) with B of student_logits {tuple(student_logits.shape)}, "
                f"got {tuple(labels.shape)}."
            )
        if labels.is_floating_point():
            labels = labels.round().long()
        student_logits = self._coarse(student_logits)
        labels = resize_labels(labels.detach(), student_logits.shape[2:])
        return self._weighted_total(self.size_losses(student_logits, labels))

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
        student_logits = self._coarse(student_logits)
        teacher_logits = resize_map(at_least_float32(teacher_logits.detach()), student_logits.shape[2:])
        labels = teacher_logits.argmax(dim=1, keepdim=True)
        return self._weighted_total(self.size_losses(student_logits, labels))
