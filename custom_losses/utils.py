"""Shape checks and teacher-map resizing shared by the distillation losses."""

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["at_least_float32", "check_4d", "check_pair", "resize_map", "resize_labels"]


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 when it is float16/bfloat16 (or not floating); float32/float64 are kept."""
    if tensor.dtype in (torch.float32, torch.float64):
        return tensor
    return tensor.float()


def check_4d(tensor: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` is ``(B, C, H, W)``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(tensor.shape)}.")


def check_pair(
    student: torch.Tensor, teacher: torch.Tensor, student_name: str, teacher_name: str, same_channels: bool = True
) -> None:
    """Both tensors are ``(B, C, H, W)`` with the same ``B`` (and the same ``C`` when ``same_channels``).

    The spatial sizes may differ: the teacher's map is resized to the student's by the caller.
    """
    check_4d(student, student_name)
    check_4d(teacher, teacher_name)
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"batch sizes differ: {student_name} has shape {tuple(student.shape)}, "
            f"{teacher_name} has shape {tuple(teacher.shape)}."
        )
    if same_channels and student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f"class counts differ: {student_name} has shape {tuple(student.shape)}, "
            f"{teacher_name} has shape {tuple(teacher.shape)} (dim 1 must match)."
        )


def resize_map(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of a ``(B, C, H, W)`` logit or feature map to ``size``.

    Returns ``tensor`` itself when it already has that spatial size.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(tensor.shape[2:]) == size:
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer label map ``(B, 1, H, W)`` to ``size``; the dtype is kept."""
    size = (int(size[0]), int(size[1]))
    if tuple(labels.shape[2:]) == size:
        return labels
    resized = F.interpolate(labels.float(), size=size, mode="nearest")
    return resized.to(labels.dtype)
