"""DeepLabV3+ (Chen et al., ECCV 2018) on an aligned Xception-65 backbone at output stride 8.

Pipeline, with ``s`` the stride of each map relative to the (padded) input::

    x -> conv3x3 s2 (32 ch)                                  s=2   ("low" feature)
      -> conv3x3 (64 ch)                                     s=2
      -> entry blocks 1, 2 (stride 2 each)                   s=4, 8  (block 1 output = decoder skip, 128 ch)
      -> entry block 3 (stride 1), 16 middle blocks (rate 2),
         exit block (rate 2), 3 separable convs (rate 4)     s=8   ("high" feature, 2048 ch)
      -> ASPP (1x1, 3x3 at rates 12/24/36, image pooling)    s=8   (256 ch)
      -> up x2, concat with 1x1 projection of the skip (48 ch), two conv3x3 (256 ch), 1x1 to classes
      -> bilinear up-sampling to the input size.

The strides that Xception-65 has in entry block 3 and the exit block are replaced by atrous rates
(as in DeepLab's ``output_stride`` handling): every convolution after a removed stride is dilated
by the product of the removed strides.

Where this differs from the EMKD code (Qin et al., TMI 2021) that the paper's teacher counts come
from: the skip projection is a 1x1 convolution as in the DeepLabV3+ paper (EMKD: 3x3, +49k
parameters), the image-pooling branch has no BatchNorm (see :class:`ASPP`), every separable
convolution of the exit block is followed by BatchNorm, and no ImageNet classifier is built
(EMKD's unused ``fc``: 2.05M parameters).
"""

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from .base import FeatureSegmentationNet, scale_channels

__all__ = ["SeparableConv2d", "XceptionBlock", "AlignedXception65", "ASPP", "DeepLabV3PlusDecoder", "DeepLabV3Plus"]


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1
) -> nn.Module:
    """``conv (no bias) -> BatchNorm -> ReLU`` with "same" padding ``dilation * (kernel_size - 1) / 2``."""
    return Convolution(
        2,
        in_channels,
        out_channels,
        strides=stride,
        kernel_size=kernel_size,
        dilation=dilation,
        act="RELU",
        norm="BATCH",
        bias=False,
    )


class SeparableConv2d(nn.Sequential):
    """``depthwise conv3x3 -> BN -> ReLU -> pointwise conv1x1 -> BN``, all convolutions without bias.

    The BN and ReLU after the depthwise convolution are the DeepLabV3+ modification of Xception.
    Padding is ``dilation``, so the output size is ``ceil(H / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size=3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class XceptionBlock(nn.Module):
    """Xception module: ``ReLU -> SeparableConv2d`` three times, plus a shortcut.

    ``out = residual(x) + shortcut(x)`` where ``residual`` has output widths ``channels`` and applies
    ``stride`` in its last separable convolution; ``shortcut`` is the identity when the shape is kept
    and ``conv1x1(stride) -> BN`` otherwise. The shortcut sees the block's input before any ReLU.

    Args:
        in_channels: input channels.
        channels: output channels of the three separable convolutions.
        stride: stride of the last separable convolution (and of the shortcut).
        dilation: atrous rate of all three separable convolutions.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"an Xception block has 3 separable convolutions, got channels={list(channels)}.")
        layers = []
        previous = in_channels
        for index, out_channels in enumerate(channels):
            layers.append(nn.ReLU())
            conv_stride = stride if index == len(channels) - 1 else 1
            layers.append(SeparableConv2d(previous, out_channels, stride=conv_stride, dilation=dilation))
            previous = out_channels
        self.residual = nn.Sequential(*layers)
        if in_channels == previous and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, previous, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(previous)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class AlignedXception65(nn.Module):
    """Aligned Xception-65 at output stride 8, without the ImageNet classifier.

    ``forward(x) -> (stride2, stride4, stride8)``: the output of the first convolution (``c(32)``
    channels), the ReLU of entry block 1 (``c(128)``, the decoder skip) and the backbone output
    (``c(2048)``), where ``c(n) = scale_channels(n, width, 8)``.

    Args:
        in_channels: input channels.
        width: channel multiplier.
        middle_repeats: number of middle-flow blocks (16 in Xception-65).
    """

    def __init__(self, in_channels: int = 1, width: float = 1.0, middle_repeats: int = 16) -> None:
        super().__init__()

        def c(channels: int) -> int:
            return scale_channels(channels, width, 8)

        self.out_channels: Dict[str, int] = {"stride2": c(32), "stride4": c(128), "stride8": c(2048)}
        # entry flow
        self.conv1 = _conv_bn_relu(in_channels, c(32), 3, stride=2)
        self.conv2 = _conv_bn_relu(c(32), c(64), 3)
        self.entry_block1 = XceptionBlock(c(64), [c(128)] * 3, stride=2)
        self.entry_block2 = XceptionBlock(c(128), [c(256)] * 3, stride=2)
        # output stride 8: entry block 3 loses its stride 2, later convolutions are dilated by 2
        self.entry_block3 = XceptionBlock(c(256), [c(728)] * 3, stride=1)
        # middle flow
        self.middle_flow = nn.Sequential(
            *[XceptionBlock(c(728), [c(728)] * 3, dilation=2) for _ in range(middle_repeats)]
        )
        # exit flow: the exit block loses its stride 2 as well, the separable convolutions after it use rate 4
        self.exit_block = XceptionBlock(c(728), [c(728), c(1024), c(1024)], stride=1, dilation=2)
        self.exit_convs = nn.Sequential(
            nn.ReLU(),
            SeparableConv2d(c(1024), c(1536), dilation=4),
            nn.ReLU(),
            SeparableConv2d(c(1536), c(1536), dilation=4),
            nn.ReLU(),
            SeparableConv2d(c(1536), c(2048), dilation=4),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stride2 = self.conv1(x)
        stride4 = self.entry_block1(self.conv2(stride2))
        x = self.entry_block2(stride4)
        x = self.entry_block3(x)
        x = self.middle_flow(x)
        x = self.exit_block(x)
        stride8 = self.exit_convs(x)
        return stride2, F.relu(stride4), stride8


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: five parallel branches, concatenated and projected.

    Branches: ``conv1x1-BN-ReLU``; ``conv3x3(rate r)-BN-ReLU`` for each ``r`` in ``rates``; and image
    pooling ``global average -> conv1x1 (with bias) -> ReLU``, broadcast back to ``H x W``.
    The projection is ``conv1x1-BN-ReLU -> Dropout(dropout)``.

    The image-pooling branch has no BatchNorm: on its ``B x C x 1 x 1`` map BatchNorm would fail in
    train mode at batch size 1 (one value per channel) and be a noisy estimate for small batches;
    a biased convolution keeps the branch's role and works at any batch size in either mode.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int], dropout: float = 0.5) -> None:
        super().__init__()
        self.branch_1x1 = _conv_bn_relu(in_channels, out_channels, 1)
        self.branch_atrous = nn.ModuleList([_conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates])
        self.branch_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True), nn.ReLU()
        )
        self.project = nn.Sequential(
            _conv_bn_relu((len(rates) + 2) * out_channels, out_channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch_1x1(x)]
        for branch in self.branch_atrous:
            branches.append(branch(x))
        pooled = self.branch_pool(x)
        branches.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(branches, dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """``cat[up(context), conv1x1-BN-ReLU(skip) (skip_projection ch)] -> 2 x (conv3x3-BN-ReLU -> Dropout) -> conv1x1``.

    ``up`` resizes the context map bilinearly to the skip's size. Dropout rates are 0.5 then 0.1.
    """

    def __init__(
        self, context_channels: int, skip_channels: int, skip_projection: int, channels: int, out_channels: int
    ) -> None:
        super().__init__()
        self.skip_project = _conv_bn_relu(skip_channels, skip_projection, 1)
        self.fuse = nn.Sequential(
            _conv_bn_relu(context_channels + skip_projection, channels, 3),
            nn.Dropout(0.5),
            _conv_bn_relu(channels, channels, 3),
            nn.Dropout(0.1),
            nn.Conv2d(channels, out_channels, kernel_size=1),
        )

    def forward(self, context: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        size = [skip.shape[2], skip.shape[3]]
        context = F.interpolate(context, size=size, mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([context, self.skip_project(skip)], dim=1))


class DeepLabV3Plus(FeatureSegmentationNet):
    """DeepLabV3+ with an aligned Xception-65 backbone at output stride 8 and ASPP rates 12/24/36.

    At ``width=1.0``, one input channel and two classes it has 54,748,178 parameters (54.75M); no
    ImageNet classifier is built, and every module takes part in ``forward``.

    Args:
        in_channels: number of input channels.
        out_channels: number of classes.
        width: channel multiplier for backbone, ASPP and decoder (``scale_channels(c, width, 8)``).
        atrous_rates: ASPP rates of the three 3x3 branches.
        aspp_dropout: dropout after the ASPP projection.

    ``forward_features`` returns ``(logits, {"low": ..., "high": ...})``: ``low`` is the output of the
    backbone's first convolution (stride 2, ``scale_channels(32, width, 8)`` channels, the tap used
    by the EMKD code the paper's teachers come from), ``high`` the backbone output
    (stride 8, ``scale_channels(2048, width, 8)`` channels), of the input padded to a multiple of 8.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        width: float = 1.0,
        atrous_rates: Sequence[int] = (12, 24, 36),
        aspp_dropout: float = 0.5,
    ) -> None:
        super().__init__(in_channels, out_channels, spatial_multiple=8)
        self.backbone = AlignedXception65(in_channels, width)
        backbone_channels = self.backbone.out_channels
        self.feature_channels: Dict[str, int] = {
            "low": backbone_channels["stride2"],
            "high": backbone_channels["stride8"],
        }
        aspp_channels = scale_channels(256, width, 8)
        self.aspp = ASPP(backbone_channels["stride8"], aspp_channels, atrous_rates, dropout=aspp_dropout)
        self.decoder = DeepLabV3PlusDecoder(
            context_channels=aspp_channels,
            skip_channels=backbone_channels["stride4"],
            skip_projection=scale_channels(48, width, 8),
            channels=aspp_channels,
            out_channels=out_channels,
        )

    def forward_padded(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        low, skip, high = self.backbone(x)
        logits = self.decoder(self.aspp(high), skip)
        logits = F.interpolate(logits, size=[x.shape[2], x.shape[3]], mode="bilinear", align_corners=False)
        return logits, {"low": low, "high": high}
