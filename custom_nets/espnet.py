"""ESPNet (Mehta et al., "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic
Segmentation", ECCV 2018): the full network (ESPNet-C encoder + the light-weight RUM decoder).

Encoder (channels at ``width=1``, ``C_in`` input channels, ``p`` and ``q`` the depth multipliers):

- level 1: conv 3x3/2 + BN + PReLU -> ``f1`` (16, stride 2); ``l1 = BR(cat(f1, avgpool(x)))`` (16 + C_in)
- level 2: ESP downsampler (64, stride 4) -> ``p`` ESP blocks;
  ``l2 = BR(cat(blocks, downsampler, avgpool(avgpool(x))))`` (128 + C_in)
- level 3: ESP downsampler (128, stride 8) -> ``q`` ESP blocks; ``l3 = BR(cat(downsampler, blocks))`` (256)

``BR`` is BN + per-channel PReLU and ``avgpool`` a 3x3/2 average pool (input reinforcement).

Decoder, with ``C`` classes (the reverse upsampling modules, RUM):

- ``u3 = convT2x2/2(BN(conv1x1(l3 -> C)))`` (stride 4)
- ``u2 = BR(convT2x2/2(ESP(BR(cat(conv1x1(l2 -> C), u3)))))`` (C, stride 2)
- ``logits = convT2x2/2(CBR3x3(cat(u2, l1)))`` (C, stride 1)

The decoder's ESP block outputs ``max(C, 5)`` maps: the original code gives it ``C`` outputs, which is
zero channels per branch for ``C < 5`` (``C // 5``); the public EMKD code (Qin et al., TMI 2021),
whose count the paper reports, uses 5 for its 2 classes, which is what ``max(C, 5)`` gives here.
With ``p=2, q=3``, 1 input channel and 2 classes the network has 182,719 parameters (183,725 with the
EMKD code's 3 replicated input channels).

Features: ``low = f1`` (stride 2), ``high = l3`` (stride 8).
"""

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution
from torch import nn

from .base import FeatureSegmentationNet, scale_channels

__all__ = ["ESPNet", "ESPBlock"]

_BATCH = ("batch", {"eps": 1e-3})
ESP_DILATIONS = (1, 2, 4, 8, 16)


def _prelu(channels: int) -> tuple:
    return ("prelu", {"num_parameters": channels})


def _bn_prelu(channels: int) -> ADN:
    """``BR``: BatchNorm (eps 1e-3) -> per-channel PReLU."""
    return ADN(ordering="NA", in_channels=channels, act=_prelu(channels), norm=_BATCH, norm_dim=2)


def _conv(in_channels: int, out_channels: int, kernel_size: int, strides: int = 1, dilation: int = 1) -> Convolution:
    """Bias-free convolution with 'same' padding (the output is the input size divided by ``strides``)."""
    return Convolution(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        strides=strides,
        dilation=dilation,
        bias=False,
        conv_only=True,
    )


def _conv_bn_prelu(in_channels: int, out_channels: int, kernel_size: int, strides: int = 1) -> Convolution:
    """``CBR``: bias-free convolution -> BN (eps 1e-3) -> per-channel PReLU."""
    return Convolution(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        strides=strides,
        act=_prelu(out_channels),
        norm=_BATCH,
        bias=False,
    )


def _up2(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Bias-free 2x2/2 transposed convolution (doubles H and W)."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)


def _reinforce(x: torch.Tensor, times: int) -> torch.Tensor:
    """Input reinforcement: ``times`` 3x3/2 average pools (padding 1) of the image."""
    for _ in range(times):
        x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1)
    return x


class ESPBlock(nn.Module):
    """Efficient spatial pyramid: reduce -> split -> transform -> hierarchical fusion -> merge.

    ``r = reduce(x)`` has ``n = out_channels // 5`` maps (a 1x1 convolution, or a 3x3/2 one when
    ``stride=2``); five 3x3 convolutions with dilations 1, 2, 4, 8, 16 give ``d1`` (``out_channels - 4n``
    maps) and ``d2, d4, d8, d16`` (``n`` maps each); hierarchical feature fusion (HFF) sums the
    dilated maps cumulatively:

    ``y = cat(d1, d2, d2 + d4, d2 + d4 + d8, d2 + d4 + d8 + d16)``

    and the block returns ``BR(x + y)`` when ``residual`` (requires ``in == out`` and ``stride == 1``),
    else ``BR(y)``; ``BR`` is BN (eps 1e-3) + per-channel PReLU. With ``stride=2`` this is the
    ESP downsampler (``DownSamplerB`` of the reference code).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__()
        branches = len(ESP_DILATIONS)
        if out_channels < branches:
            raise ValueError(f"an ESP block needs out_channels >= {branches}, got {out_channels}.")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}.")
        if residual and (in_channels != out_channels or stride != 1):
            raise ValueError(
                "a residual ESP block needs in_channels == out_channels and stride 1, got "
                f"{in_channels} -> {out_channels}, stride {stride}."
            )
        reduced = out_channels // branches
        first = out_channels - (branches - 1) * reduced
        self.reduce = _conv(in_channels, reduced, kernel_size=3 if stride == 2 else 1, strides=stride)
        self.branches = nn.ModuleList(
            [
                _conv(reduced, first if dilation == 1 else reduced, kernel_size=3, dilation=dilation)
                for dilation in ESP_DILATIONS
            ]
        )
        self.residual = residual
        self.norm_act = _bn_prelu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        outputs: List[torch.Tensor] = []
        for branch in self.branches:
            y = branch(reduced)
            if len(outputs) >= 2:  # HFF: from the third branch on, add the previous fused map
                y = y + outputs[-1]
            outputs.append(y)
        merged = torch.cat(outputs, dim=1)
        if self.residual:
            merged = x + merged
        return self.norm_act(merged)


class ESPNet(FeatureSegmentationNet):
    """ESPNet with its decoder (see the module docstring for the layers).

    Args:
        in_channels: input channels.
        out_channels: classes.
        width: channel multiplier (16/64/128 channels at 1.0); the topology does not change.
            ESP blocks need at least 5 channels, so ``64 * width >= 5``.
        p: ESP blocks at level 2 (paper: 2 for ESPNet).
        q: ESP blocks at level 3 (paper: 3 for ESPNet).

    ``forward_features`` returns ``(logits, {"low": (B, 16w, H/2, W/2), "high": (B, 256w, H/8, W/8)})``
    for the input padded to a multiple of 8.
    """

    def __init__(
        self, in_channels: int = 1, out_channels: int = 2, width: float = 1.0, p: int = 2, q: int = 3
    ) -> None:
        super().__init__(in_channels, out_channels, spatial_multiple=8)
        if p < 1 or q < 1:
            raise ValueError(f"p and q must be >= 1, got p={p}, q={q}.")
        c16 = scale_channels(16, width)
        c64 = scale_channels(64, width)
        c128 = scale_channels(128, width)
        if c64 < len(ESP_DILATIONS):
            raise ValueError(f"width={width} gives {c64} level-2 channels; ESP blocks need >= {len(ESP_DILATIONS)}.")
        level1_channels = c16 + in_channels
        level2_channels = 2 * c64 + in_channels
        level3_channels = 2 * c128

        # encoder (ESPNet-C without its classifier)
        self.level1 = _conv_bn_prelu(in_channels, c16, kernel_size=3, strides=2)
        self.level1_merge = _bn_prelu(level1_channels)
        self.level2_down = ESPBlock(level1_channels, c64, stride=2, residual=False)
        self.level2 = nn.Sequential(*[ESPBlock(c64, c64) for _ in range(p)])
        self.level2_merge = _bn_prelu(level2_channels)
        self.level3_down = ESPBlock(level2_channels, c128, stride=2, residual=False)
        self.level3 = nn.Sequential(*[ESPBlock(c128, c128) for _ in range(q)])
        self.level3_merge = _bn_prelu(level3_channels)

        # decoder (reverse upsampling modules)
        fusion_channels = max(out_channels, len(ESP_DILATIONS))
        self.level3_classifier = _conv(level3_channels, out_channels, kernel_size=1)
        self.level3_norm = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.level3_up = _up2(out_channels, out_channels)
        self.level2_classifier = _conv(level2_channels, out_channels, kernel_size=1)
        self.level2_fusion = nn.Sequential(
            _bn_prelu(2 * out_channels), ESPBlock(2 * out_channels, fusion_channels, residual=False)
        )
        self.level2_up = nn.Sequential(_up2(fusion_channels, out_channels), _bn_prelu(out_channels))
        self.level1_fusion = _conv_bn_prelu(out_channels + level1_channels, out_channels, kernel_size=3)
        self.classifier = _up2(out_channels, out_channels)

    def forward_padded(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        low = self.level1(x)
        level1 = self.level1_merge(torch.cat([low, _reinforce(x, 1)], dim=1))
        down2 = self.level2_down(level1)
        level2 = self.level2_merge(torch.cat([self.level2(down2), down2, _reinforce(x, 2)], dim=1))
        down3 = self.level3_down(level2)
        high = self.level3_merge(torch.cat([down3, self.level3(down3)], dim=1))

        up3 = self.level3_up(self.level3_norm(self.level3_classifier(high)))
        fused2 = self.level2_fusion(torch.cat([self.level2_classifier(level2), up3], dim=1))
        up2 = self.level2_up(fused2)
        logits = self.classifier(self.level1_fusion(torch.cat([up2, level1], dim=1)))
        return logits, {"low": low, "high": high}
