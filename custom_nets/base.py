"""The contract shared by the five segmentation networks.

Every network in :mod:`custom_nets` is a 2D ``nn.Module`` with

* ``forward(x) -> logits`` where ``x`` is ``(B, in_channels, H, W)`` and ``logits`` is
  ``(B, out_channels, H, W)`` for *any* ``H, W``: the input is zero-padded at the bottom and
  right to the network's ``spatial_multiple`` and the logits are cropped back;
* ``forward_features(x) -> (logits, {"low": f_low, "high": f_high})`` where ``f_low`` is an early
  stride-2 map and ``f_high`` the deepest encoder map (stride 8 for the students, the encoder's
  last map for the teachers). Feature maps are those of the padded input; the distillation losses
  resize them as needed.

Subclasses implement ``forward_padded(x)``, which sees an input whose height and width are
multiples of ``spatial_multiple`` and returns ``(logits, features)`` at the padded size.
All code paths are TorchScript-scriptable.
"""

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureSegmentationNet", "scale_channels"]


def scale_channels(channels: int, width: float, divisor: int = 1) -> int:
    """Channel count ``channels * width`` rounded to a multiple of ``divisor`` (at least ``divisor``).

    ``width`` shrinks a network for CPU runs without changing its topology.
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    scaled = int(round(channels * width / divisor)) * divisor
    return max(divisor, scaled)


class FeatureSegmentationNet(nn.Module):
    """Base class: padding, cropping and input checks around ``forward_padded``.

    Args:
        in_channels: number of input channels.
        out_channels: number of classes (logit channels).
        spatial_multiple: the network's total down-sampling factor; H and W are padded up to it.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_multiple: int) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.spatial_multiple = spatial_multiple

    def forward_padded(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``(logits, {"low": ..., "high": ...})`` for an input ``(B, in_channels, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                "expected input of shape (B, " + str(self.in_channels) + ", H, W), got " + str(list(x.shape)) + "."
            )
        height = x.shape[2]
        width = x.shape[3]
        multiple = self.spatial_multiple
        pad_h = (multiple - height % multiple) % multiple
        pad_w = (multiple - width % multiple) % multiple
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [0, pad_w, 0, pad_h])
        logits, features = self.forward_padded(x)
        return logits[:, :, :height, :width], features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
