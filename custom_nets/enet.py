"""ENet (Paszke et al., "ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation", 2016).

The layers of the paper's Table 1 for a ``(B, C_in, H, W)`` input (channels at ``width=1``, output stride):

- initial: cat(conv 3x3/2 with ``16 - C_in`` maps, max-pool 2x2 of the input) -> BN -> PReLU: 16, stride 2
- stage 1: 1.0 downsampling, 1.1-1.4 regular: 64, stride 4
- stage 2: 2.0 downsampling, 2.1-2.8: 128, stride 8
- stage 3: 3.1-3.8 (stage 2 without 2.0): 128, stride 8
- stage 4: 4.0 upsampling, 4.1-4.2 regular: 64, stride 4
- stage 5: 5.0 upsampling, 5.1 regular: 16, stride 2
- fullconv: transposed convolution 2x2/2: classes, stride 1

Stages 2 and 3 run ``regular, dilated 2, asymmetric 5, dilated 4, regular, dilated 8, asymmetric 5,
dilated 16``. Every bottleneck projects to ``channels // 4`` with a 1x1 convolution, transforms,
expands back with a 1x1 convolution followed by spatial dropout, adds the main branch and applies a
PReLU. Upsampling bottlenecks max-unpool with the indices of the matching downsampling bottleneck.

Block details follow the public EMKD code (Qin et al., TMI 2021), whose parameter count the paper
reports (0.353M), where that code differs from the ENet paper: the downsampling bottleneck's main
branch is max-pool then a 1x1 convolution + BN (the paper zero-pads the channels) and its extension
is 1x1 then 2x2/2 convolution (the paper: 2x2/2 then 3x3); the upsampling extension uses a 2x2/2
transposed convolution; convolutions have no bias; each PReLU has one shared slope. Unlike the EMKD
code, bottleneck 3.5 is used in ``forward`` (the EMKD forward skips it but its parameters are
counted), so the count is unchanged: 353,545 for 1 input channel and 2 classes (353,761 with the
EMKD code's 3 replicated input channels). Spatial dropout is 0.01 in stage 1 and 0.1 afterwards, as in the paper.

Features: ``low`` is the initial block's output (stride 2), ``high`` the output of bottleneck 3.8
(stride 8).
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from .base import FeatureSegmentationNet, scale_channels

__all__ = [
    "ENet",
    "ENetInitialBlock",
    "ENetBottleneck",
    "ENetDownsamplingBottleneck",
    "ENetUpsamplingBottleneck",
]

_PRELU = ("prelu", {"num_parameters": 1})
_BATCH = "batch"


def _conv_bn_prelu(
    in_channels: int,
    out_channels: int,
    kernel_size: Union[int, Sequence[int]],
    strides: int = 1,
    dilation: int = 1,
    padding: Optional[int] = None,
) -> Convolution:
    """``conv (no bias) -> BatchNorm -> PReLU``; ``padding=None`` keeps the size (divided by ``strides``)."""
    return Convolution(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        strides=strides,
        dilation=dilation,
        padding=padding,
        act=_PRELU,
        norm=_BATCH,
        bias=False,
    )


def _conv1x1_bn(in_channels: int, out_channels: int, dropout: float = 0.0) -> Convolution:
    """``conv 1x1 (no bias) -> BatchNorm [-> Dropout2d]``."""
    return Convolution(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=1,
        act=None,
        norm=_BATCH,
        dropout=dropout if dropout > 0 else None,
        dropout_dim=2,
        bias=False,
    )


class ENetInitialBlock(nn.Module):
    """``PReLU(BN(cat(conv3x3/2(x), maxpool2x2(x))))``: ``(B, C_in, H, W) -> (B, out_channels, H/2, W/2)``.

    The convolution gives ``out_channels - in_channels`` maps and the max-pool passes the
    ``in_channels`` input maps through, so ``out_channels > in_channels`` is required.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels <= in_channels:
            raise ValueError(
                f"ENetInitialBlock needs out_channels > in_channels, got {out_channels} <= {in_channels}."
            )
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(x, kernel_size=2, stride=2)
        convolved = self.conv(x)
        return self.act(self.norm(torch.cat([convolved, pooled], dim=1)))


class ENetBottleneck(nn.Module):
    """Regular, dilated or asymmetric bottleneck: ``PReLU(x + ext(x))`` at constant shape.

    ``ext`` = 1x1 projection to ``inner_channels`` -> transform -> 1x1 expansion -> spatial dropout;
    the transform is a 3x3 convolution with ``dilation`` or, with ``asymmetric=True``, a 5x1 then a
    1x5 convolution. The first two convolutions are followed by BN + PReLU, the last by BN.
    """

    def __init__(
        self, channels: int, inner_channels: int, dilation: int = 1, asymmetric: bool = False, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if asymmetric and dilation != 1:
            raise ValueError(f"an asymmetric bottleneck is not dilated, got dilation={dilation}.")
        self.project = _conv_bn_prelu(channels, inner_channels, kernel_size=1)
        transform: nn.Module
        if asymmetric:
            transform = nn.Sequential(
                nn.Conv2d(inner_channels, inner_channels, kernel_size=(5, 1), padding=(2, 0), bias=False),
                _conv_bn_prelu(inner_channels, inner_channels, kernel_size=(1, 5)),
            )
        else:
            transform = _conv_bn_prelu(inner_channels, inner_channels, kernel_size=3, dilation=dilation)
        self.transform = transform
        self.expand = _conv1x1_bn(inner_channels, channels, dropout)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extension = self.expand(self.transform(self.project(x)))
        return self.act(x + extension)


class ENetDownsamplingBottleneck(nn.Module):
    """Halves H and W: ``(B, in, H, W) -> ((B, out, H/2, W/2), indices)``.

    main = BN(conv1x1(maxpool2x2(x))); ext = 1x1 -> 2x2/2 -> 1x1 -> spatial dropout;
    output = PReLU(main + ext). ``indices`` are the max-pool's flat indices ``(B, in, H/2, W/2)``,
    for the matching :class:`ENetUpsamplingBottleneck`. H and W must be even.
    """

    def __init__(self, in_channels: int, inner_channels: int, out_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.main_projection = _conv1x1_bn(in_channels, out_channels)
        self.project = _conv_bn_prelu(in_channels, inner_channels, kernel_size=1)
        self.transform = _conv_bn_prelu(inner_channels, inner_channels, kernel_size=2, strides=2, padding=0)
        self.expand = _conv1x1_bn(inner_channels, out_channels, dropout)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled, indices = F.max_pool2d_with_indices(x, kernel_size=2, stride=2)
        main = self.main_projection(pooled)
        extension = self.expand(self.transform(self.project(x)))
        return self.act(main + extension), indices


class ENetUpsamplingBottleneck(nn.Module):
    """Doubles H and W: ``(B, in, H, W), indices -> (B, out, 2H, 2W)``.

    main = maxunpool2x2(BN(conv1x1(x)), indices); ext = 1x1 -> transposed 2x2/2 -> 1x1 -> spatial
    dropout; output = PReLU(main + ext). ``indices`` come from the downsampling bottleneck whose
    *input* had ``out`` channels and size ``(2H, 2W)``.
    """

    def __init__(self, in_channels: int, inner_channels: int, out_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.main_projection = _conv1x1_bn(in_channels, out_channels)
        self.project = _conv_bn_prelu(in_channels, inner_channels, kernel_size=1)
        self.transform = Convolution(
            spatial_dims=2,
            in_channels=inner_channels,
            out_channels=inner_channels,
            kernel_size=2,
            strides=2,
            padding=0,
            output_padding=0,
            is_transposed=True,
            act=_PRELU,
            norm=_BATCH,
            bias=False,
        )
        self.expand = _conv1x1_bn(inner_channels, out_channels, dropout)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        main = self.main_projection(x)
        if main.shape[1] != indices.shape[1] or main.shape[2:] != indices.shape[2:]:
            raise ValueError(
                "max-unpool indices of shape "
                + str(list(indices.shape))
                + " do not match the projected input "
                + str(list(main.shape))
                + "."
            )
        main = F.max_unpool2d(main, indices, kernel_size=2, stride=2)
        extension = self.expand(self.transform(self.project(x)))
        return self.act(main + extension)


def _stage_2_or_3(channels: int, inner_channels: int, dropout: float) -> List[nn.Module]:
    """Bottlenecks x.1-x.8 of stages 2 and 3: regular, d2, asym5, d4, regular, d8, asym5, d16."""
    return [
        ENetBottleneck(channels, inner_channels, dropout=dropout),
        ENetBottleneck(channels, inner_channels, dilation=2, dropout=dropout),
        ENetBottleneck(channels, inner_channels, asymmetric=True, dropout=dropout),
        ENetBottleneck(channels, inner_channels, dilation=4, dropout=dropout),
        ENetBottleneck(channels, inner_channels, dropout=dropout),
        ENetBottleneck(channels, inner_channels, dilation=8, dropout=dropout),
        ENetBottleneck(channels, inner_channels, asymmetric=True, dropout=dropout),
        ENetBottleneck(channels, inner_channels, dilation=16, dropout=dropout),
    ]


class ENet(FeatureSegmentationNet):
    """ENet for 2D segmentation (see the module docstring for the layer table).

    Args:
        in_channels: input channels.
        out_channels: classes.
        width: channel multiplier (16/64/128 channels at 1.0); the topology does not change.
        dropout: spatial dropout of stages 2-5 (paper: 0.1).
        early_dropout: spatial dropout of stage 1 (paper: 0.01).

    ``forward_features`` returns ``(logits, {"low": (B, 16w, H/2, W/2), "high": (B, 128w, H/8, W/8)})``
    for the input padded to a multiple of 8.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        width: float = 1.0,
        dropout: float = 0.1,
        early_dropout: float = 0.01,
    ) -> None:
        super().__init__(in_channels, out_channels, spatial_multiple=8)
        for name, value in (("dropout", dropout), ("early_dropout", early_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}.")
        c16 = scale_channels(16, width)
        c64 = scale_channels(64, width)
        c128 = scale_channels(128, width)
        if c16 <= in_channels:
            raise ValueError(
                f"width={width} gives {c16} initial channels, which must exceed in_channels={in_channels}."
            )

        inner16, inner64, inner128 = max(1, c16 // 4), max(1, c64 // 4), max(1, c128 // 4)

        self.initial = ENetInitialBlock(in_channels, c16)

        self.down1 = ENetDownsamplingBottleneck(c16, inner64, c64, early_dropout)
        self.stage1 = nn.Sequential(*[ENetBottleneck(c64, inner64, dropout=early_dropout) for _ in range(4)])

        self.down2 = ENetDownsamplingBottleneck(c64, inner128, c128, dropout)
        self.stage2 = nn.Sequential(*_stage_2_or_3(c128, inner128, dropout))
        self.stage3 = nn.Sequential(*_stage_2_or_3(c128, inner128, dropout))

        self.up4 = ENetUpsamplingBottleneck(c128, inner64, c64, dropout)
        self.stage4 = nn.Sequential(*[ENetBottleneck(c64, inner64, dropout=dropout) for _ in range(2)])

        self.up5 = ENetUpsamplingBottleneck(c64, inner16, c16, dropout)
        self.stage5 = ENetBottleneck(c16, inner16, dropout=dropout)

        self.fullconv = nn.ConvTranspose2d(c16, out_channels, kernel_size=2, stride=2, bias=False)

    def forward_padded(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        low = self.initial(x)
        y, indices1 = self.down1(low)
        y = self.stage1(y)
        y, indices2 = self.down2(y)
        y = self.stage2(y)
        high = self.stage3(y)
        y = self.stage4(self.up4(high, indices2))
        y = self.stage5(self.up5(y, indices1))
        logits = self.fullconv(y)
        return logits, {"low": low, "high": high}
