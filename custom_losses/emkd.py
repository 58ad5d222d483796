"""EMKD's feature terms: importance-map and region-affinity distillation (Qin et al., IEEE TMI 2021).

Reference code: ``EagleMIT/EMKD``, ``utils/loss_functions.py`` (``at``, ``importance_maps_distillation``,
``region_contrast``, ``region_affinity_distillation``), called from ``train_kd.py`` (``KDPL.training_step``) on the
``low`` and ``high`` features of the student and the teacher. EMKD's third term, logits KD with a temperature
(``prediction_map_distillation``), is :class:`~custom_losses.LogitsKLLoss` with ``direction="teacher_student"``.
Both terms here compare each network with itself first (a map per sample, a scalar per sample), so they need no
adapter when the student and the teacher have different channel counts.

* :func:`attention_map` and :class:`ImportanceMapLoss` - importance maps (attention transfer, Zagoruyko &
  Komodakis 2017) of a student and a teacher feature;
* :func:`region_contrast` and :class:`RegionAffinityLoss` - the cosine between the mean feature of the background
  and of the foreground of the ground truth, matched between student and teacher.

``docs/distillation.md`` ("Baselines (Table 3)") lists the reference's facts and every departure.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .utils import at_least_float32, check_4d, check_pair, resize_labels, resize_map

__all__ = ["attention_map", "ImportanceMapLoss", "region_contrast", "RegionAffinityLoss"]


def attention_map(feature: torch.Tensor, exponent: float = 4.0, eps: float = 1e-12) -> torch.Tensor:
    """The importance map of a feature ``F`` ``(B, C, H, W)``, flattened: ``(B, H * W)``.

    .. math::
        a(F)_b = \\frac{v_b}{\\max(\\lVert v_b \\rVert_2, \\epsilon)}, \\quad
        v_{b,i} = \\frac{1}{C} \\sum_{c=1}^{C} |F_{b,c,i}|^p

    (EMKD ``at(x, exp)``: ``F.normalize(x.pow(exp).mean(1).view(B, -1))``; ``|F|^p`` equals its ``F^p`` for the
    even ``p = 4`` it uses.) Computed in (at least) float32.
    """
    check_4d(feature, "feature")
    if not exponent > 0:
        raise ValueError(f"exponent must be > 0, got {exponent}.")
    values = at_least_float32(feature).abs().pow(exponent).mean(dim=1).flatten(1)
    return F.normalize(values, p=2.0, dim=1, eps=eps)


class ImportanceMapLoss(nn.Module):
    """Importance-map distillation (EMKD's IMD): squared L2 distance of the normalised attention maps.

    With :func:`attention_map` ``a`` and ``B`` samples,

    .. math::
        L_{IMD}(F^s, F^t) = \\frac{1}{B} \\sum_{b=1}^{B} \\lVert a(F^s)_b - a(F^t)_b \\rVert_2^2

    (EMKD ``importance_maps_distillation``: ``torch.sum((at(s) - at(t)).pow(2), dim=1).mean()``). Each map has unit
    norm and non-negative entries, so the value is ``2 - 2 <a(F^s)_b, a(F^t)_b>`` in ``[0, 2]`` whatever the channel
    counts ``C_s`` and ``C_t``. When the spatial sizes differ, the student's feature is resized bilinearly
    (``align_corners=False``) to the teacher's size before its map is taken, as the reference does. The teacher's
    feature is detached.

    Args:
        exponent: ``p`` of :func:`attention_map` (EMKD: 4).
        eps: floor of the norm in the normalisation.

    Shapes:
        ``student_feature`` ``(B, C_s, h, w)``, ``teacher_feature`` ``(B, C_t, H, W)``.
    """

    def __init__(self, exponent: float = 4.0, eps: float = 1e-12) -> None:
        super().__init__()
        if not exponent > 0:
            raise ValueError(f"exponent must be > 0, got {exponent}.")
        self.exponent = float(exponent)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return f"exponent={self.exponent:g}"

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        check_pair(student_feature, teacher_feature, "student_feature", "teacher_feature", same_channels=False)
        with torch.autocast(device_type=student_feature.device.type, enabled=False):
            student = resize_map(at_least_float32(student_feature), teacher_feature.shape[2:])
            a_s = attention_map(student, self.exponent, self.eps)
            a_t = attention_map(teacher_feature.detach(), self.exponent, self.eps)
            return (a_s - a_t).pow(2).sum(dim=1).mean()


def _check_labels(labels: torch.Tensor, feature: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.dim() != 4 or labels.shape[1] != 1 or labels.shape[0] != feature.shape[0]:
        raise ValueError(
            f"labels must have shape (B, 1, H, W) with the batch size of {name} {tuple(feature.shape)}, "
            f"got {tuple(labels.shape)}."
        )
    return labels.as_tensor() if hasattr(labels, "as_tensor") else labels  # a MONAI MetaTensor -> a plain tensor


def region_contrast(feature: torch.Tensor, labels: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """The cosine between the mean background and the mean foreground feature of each sample: ``(B,)``.

    With the ground truth ``y`` (0 background, 1 foreground) resized to the feature's ``(H, W)`` by nearest
    neighbour, ``M_0 = [y = 0]``, ``M_1 = [y = 1]``:

    .. math::
        r_0 = \\frac{\\sum_i F_{:,i} M_{0,i}}{\\max(\\sum_i M_{0,i}, 1)}, \\quad
        r_1 = \\frac{\\sum_i F_{:,i} M_{1,i}}{\\sum_i M_{1,i} + s}, \\quad
        rc(F) = \\cos(r_0, r_1)

    (EMKD ``region_contrast``: the same, with ``smooth = s = 1`` on the foreground only, and no floor on the
    background count, which is never 0 on its CT slices; the floor here only changes a sample with no background
    pixel at this resolution, whose ``r_0`` is then 0 instead of NaN.) ``cos`` is ``F.cosine_similarity``
    (``eps = 1e-8``), so a sample without foreground (``r_1 = 0``) has ``rc = 0``. Computed in (at least) float32.

    Args:
        feature: ``(B, C, H, W)``.
        labels: the ground-truth label map ``(B, 1, H', W')``, values 0 and 1 (another value is in neither region).
        smooth: ``s``, added to the foreground pixel count.
    """
    check_4d(feature, "feature")
    labels = resize_labels(_check_labels(labels, feature, "feature"), feature.shape[2:])
    feature = at_least_float32(feature)
    background = (labels == 0).to(feature.dtype)
    foreground = (labels == 1).to(feature.dtype)
    r0 = (feature * background).sum(dim=(2, 3)) / background.sum(dim=(2, 3)).clamp_min(1.0)
    r1 = (feature * foreground).sum(dim=(2, 3)) / (foreground.sum(dim=(2, 3)) + smooth)
    return F.cosine_similarity(r0, r1, dim=1)


class RegionAffinityLoss(nn.Module):
    """Region-affinity distillation (EMKD's RAD): match the background / foreground contrast of the features.

    With :func:`region_contrast` ``rc`` on the ground truth ``y`` and ``B`` samples,

    .. math::
        L_{RAD}(F^s, F^t; y) = \\frac{1}{B} \\sum_{b=1}^{B} \\left( rc(F^s)_b - rc(F^t)_b \\right)^2

    (EMKD ``region_affinity_distillation``: ``(region_contrast(s, gt) - region_contrast(t, gt)).pow(2).mean()``).
    Each network's contrast is taken in its own feature space, at its own resolution (the label map is resized to
    each feature's size; the reference resizes it to the student's and requires the teacher's to match), so
    ``C_s`` and ``C_t`` may differ and the value lies in ``[0, 4]``. The teacher's feature is detached.

    Args:
        smooth: ``smooth`` of :func:`region_contrast` (EMKD: 1).

    Shapes:
        ``student_feature`` ``(B, C_s, h, w)``, ``teacher_feature`` ``(B, C_t, H, W)``, ``labels`` ``(B, 1, H', W')``.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        if not smooth >= 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}.")
        self.smooth = float(smooth)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth:g}"

    def forward(
        self, student_feature: torch.Tensor, teacher_feature: torch.Tensor, labels: Optional[torch.Tensor]
    ) -> torch.Tensor:
        check_pair(student_feature, teacher_feature, "student_feature", "teacher_feature", same_channels=False)
        if labels is None:
            raise ValueError("labels is None: region affinity distillation needs the ground-truth label map.")
        _check_labels(labels, student_feature, "student_feature")
        with torch.autocast(device_type=student_feature.device.type, enabled=False):
            rc_s = region_contrast(student_feature, labels, self.smooth)
            rc_t = region_contrast(teacher_feature.detach(), labels, self.smooth)
            return (rc_s - rc_t).pow(2).mean()
