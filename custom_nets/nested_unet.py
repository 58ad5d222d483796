"""UNet++ (Zhou et al., DLMIA 2018): a U-Net whose skip pathways are nested dense convolution blocks.

Node ``X^{i,j}`` sits at depth ``i`` (stride ``2**i``) and column ``j``::

    X^{i,0} = H(pool(X^{i-1,0}))                                       (encoder, X^{0,0} = H(x))
    X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, up(X^{i+1,j-1})])            (j >= 1)

where ``H`` is a VGG block (conv3x3-BN-ReLU twice), ``pool`` a 2x2 max-pool and ``up`` a bilinear
x2 up-sampling. The logits are a 1x1 convolution of ``X^{0,4}`` (no deep supervision).
"""

from typing import Dict, Tuple

import torch
from monai.networks.blocks import Convolution
from torch import nn

from .base import FeatureSegmentationNet, scale_channels

__all__ = ["VGGBlock", "NestedUNet"]


class VGGBlock(nn.Sequential):
    """Two ``conv3x3 (with bias) -> BatchNorm -> ReLU`` units: ``in_channels -> out_channels -> out_channels``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            Convolution(2, in_channels, out_channels, kernel_size=3, act="RELU", norm="BATCH", bias=True),
            Convolution(2, out_channels, out_channels, kernel_size=3, act="RELU", norm="BATCH", bias=True),
        )


class NestedUNet(FeatureSegmentationNet):
    """UNet++ with widths ``(64, 128, 256, 512, 1024) * width``, BatchNorm and bilinear up-sampling.

    At ``width=1.0``, one input channel and two classes it has 36,628,546 parameters (36.63M).

    Args:
        in_channels: number of input channels.
        out_channels: number of classes.
        width: channel multiplier; channels are ``scale_channels(c, width, 8)``, the topology is unchanged.

    ``forward_features`` returns ``(logits, {"low": X^{1,0}, "high": X^{4,0}})``: ``low`` has
    ``scale_channels(128, width, 8)`` channels at stride 2, ``high`` ``scale_channels(1024, width, 8)``
    channels at stride 16 (of the input padded to a multiple of 16). (The EMKD code taps ``X^{3,0}``,
    stride 8, as its deep feature; here ``high`` is the deepest encoder node.)
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, width: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, spatial_multiple=16)
        c0, c1, c2, c3, c4 = (scale_channels(c, width, 8) for c in (64, 128, 256, 512, 1024))
        self.feature_channels: Dict[str, int] = {"low": c1, "high": c4}

        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.up = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)

        # encoder (column 0)
        self.conv0_0 = VGGBlock(in_channels, c0)
        self.conv1_0 = VGGBlock(c0, c1)
        self.conv2_0 = VGGBlock(c1, c2)
        self.conv3_0 = VGGBlock(c2, c3)
        self.conv4_0 = VGGBlock(c3, c4)
        # nested skip pathways: node (i, j) takes j maps of width c_i and one up-sampled map of width c_{i+1}
        self.conv0_1 = VGGBlock(c0 + c1, c0)
        self.conv1_1 = VGGBlock(c1 + c2, c1)
        self.conv2_1 = VGGBlock(c2 + c3, c2)
        self.conv3_1 = VGGBlock(c3 + c4, c3)
        self.conv0_2 = VGGBlock(2 * c0 + c1, c0)
        self.conv1_2 = VGGBlock(2 * c1 + c2, c1)
        self.conv2_2 = VGGBlock(2 * c2 + c3, c2)
        self.conv0_3 = VGGBlock(3 * c0 + c1, c0)
        self.conv1_3 = VGGBlock(3 * c1 + c2, c1)
        self.conv0_4 = VGGBlock(4 * c0 + c1, c0)

        self.final = nn.Conv2d(c0, out_channels, kernel_size=1)

    def forward_padded(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        x0_0 = self.conv0_0(x)
        x1_0 = self.conv1_0(self.pool(x0_0))
        x0_1 = self.conv0_1(torch.cat([x0_0, self.up(x1_0)], dim=1))

        x2_0 = self.conv2_0(self.pool(x1_0))
        x1_1 = self.conv1_1(torch.cat([x1_0, self.up(x2_0)], dim=1))
        x0_2 = self.conv0_2(torch.cat([x0_0, x0_1, self.up(x1_1)], dim=1))

        x3_0 = self.conv3_0(self.pool(x2_0))
        x2_1 = self.conv2_1(torch.cat([x2_0, self.up(x3_0)], dim=1))
        x1_2 = self.conv1_2(torch.cat([x1_0, x1_1, self.up(x2_1)], dim=1))
        x0_3 = self.conv0_3(torch.cat([x0_0, x0_1, x0_2, self.up(x1_2)], dim=1))

        x4_0 = self.conv4_0(self.pool(x3_0))
        x3_1 = self.conv3_1(torch.cat([x3_0, self.up(x4_0)], dim=1))
        x2_2 = self.conv2_2(torch.cat([x2_0, x2_1, self.up(x3_1)], dim=1))
        x1_3 = self.conv1_3(torch.cat([x1_0, x1_1, x1_2, self.up(x2_2)], dim=1))
        x0_4 = self.conv0_4(torch.cat([x0_0, x0_1, x0_2, x0_3, self.up(x1_3)], dim=1))

        logits = self.final(x0_4)
        return logits, {"low": x1_0, "high": x4_0}
