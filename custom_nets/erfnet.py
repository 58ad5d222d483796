"""ERFNet (Romera et al., "ERFNet: Efficient Residual Factorized ConvNet for Real-Time Semantic
Segmentation", IEEE T-ITS 2018).

Layers (channels at ``width=1``, output stride), as in the paper's Table I:

- encoder: downsampler 16 (stride 2); downsampler 64 (stride 4); 5 non-bottleneck-1D (dilation 1);
  downsampler 128 (stride 8); 2 x [non-bottleneck-1D with dilation 2, 4, 8, 16]
- decoder: upsampler 64 (stride 4); 2 non-bottleneck-1D; upsampler 16 (stride 2);
  2 non-bottleneck-1D; transposed convolution 2x2/2 to the classes (stride 1)

Spatial dropout in the non-bottleneck-1D blocks is 0.03 at 64 channels and 0.3 at 128 channels of
the encoder, none in the decoder (the paper's training from scratch). All convolutions have a bias;
BN uses eps 1e-3. With 1 input channel and 2 classes the network has 2,062,872 parameters: the
public EMKD code (Qin et al., TMI 2021), whose count the paper reports (2.06M), has 2,063,130, of which
258 are an encoder-only classifier that its full network never uses and that is not built here.

Features: ``low`` is the first downsampler's output (stride 2), ``high`` the encoder's output
(stride 8).
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from .base import FeatureSegmentationNet, scale_channels

__all__ = ["ERFNet", "ERFNetDownsamplerBlock", "ERFNetUpsamplerBlock", "NonBottleneck1D"]

_BATCH = ("batch", {"eps": 1e-3})


class ERFNetDownsamplerBlock(nn.Module):
    """``ReLU(BN(cat(conv3x3/2(x), maxpool2x2(x))))``: ``(B, in, H, W) -> (B, out, H/2, W/2)``.

    The convolution gives ``out - in`` maps, so ``out_channels > in_channels``; H and W must be even.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels <= in_channels:
            raise ValueError(
                f"ERFNetDownsamplerBlock needs out_channels > in_channels, got {out_channels} <= {in_channels}."
            )
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, kernel_size=3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([self.conv(x), F.max_pool2d(x, kernel_size=2, stride=2)], dim=1)
        return F.relu(self.norm(merged))


class NonBottleneck1D(nn.Module):
    """Factorised residual block at constant shape: ``ReLU(x + ext(x))``.

    ``ext`` = conv3x1 -> ReLU -> conv1x3 -> BN -> ReLU -> conv3x1 (dilation (d, 1)) -> ReLU ->
    conv1x3 (dilation (1, d)) -> BN -> spatial dropout (when ``dropout > 0``).
    """

    def __init__(self, channels: int, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.conv3x1_1 = self._conv(channels, (3, 1), (1, 1), act="relu", norm=None)
        self.conv1x3_1 = self._conv(channels, (1, 3), (1, 1), act="relu", norm=_BATCH)
        self.conv3x1_2 = self._conv(channels, (3, 1), (dilation, 1), act="relu", norm=None)
        self.conv1x3_2 = self._conv(
            channels, (1, 3), (1, dilation), act=None, norm=_BATCH, dropout=dropout if dropout > 0 else None
        )

    @staticmethod
    def _conv(
        channels: int,
        kernel_size: Tuple[int, int],
        dilation: Tuple[int, int],
        act: Optional[str],
        norm: Optional[tuple],
        dropout: Optional[float] = None,
    ) -> Convolution:
        return Convolution(
            spatial_dims=2,
            in_channels=channels,
            out_channels=channels,
            kernel_size=kernel_size,
            dilation=dilation,
            act=act,
            norm=norm,
            dropout=dropout,
            dropout_dim=2,
            bias=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x3_1(self.conv3x1_1(x))
        y = self.conv1x3_2(self.conv3x1_2(y))
        return F.relu(x + y)


class ERFNetUpsamplerBlock(Convolution):
    """``ReLU(BN(convT3x3/2(x)))`` with padding 1, output padding 1: ``(B, in, H, W) -> (B, out, 2H, 2W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=3,
            strides=2,
            padding=1,
            output_padding=1,
            is_transposed=True,
            act="relu",
            norm=_BATCH,
            bias=True,
        )


class ERFNet(FeatureSegmentationNet):
    """ERFNet for 2D segmentation (see the module docstring for the layers).

    Args:
        in_channels: input channels.
        out_channels: classes.
        width: channel multiplier (16/64/128 channels at 1.0); the topology does not change.
        dropout_64: spatial dropout of the encoder's 64-channel blocks (paper: 0.03).
        dropout_128: spatial dropout of the encoder's 128-channel blocks (paper: 0.3).

    ``forward_features`` returns ``(logits, {"low": (B, 16w, H/2, W/2), "high": (B, 128w, H/8, W/8)})``
    for the input padded to a multiple of 8.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        width: float = 1.0,
        dropout_64: float = 0.03,
        dropout_128: float = 0.3,
    ) -> None:
        super().__init__(in_channels, out_channels, spatial_multiple=8)
        c16 = scale_channels(16, width)
        c64 = scale_channels(64, width)
        c128 = scale_channels(128, width)
        if not in_channels < c16 < c64 < c128:
            raise ValueError(
                f"downsamplers need growing channels; width={width} with in_channels={in_channels} gives "
                f"{in_channels} -> {c16} -> {c64} -> {c128}."
            )

        self.initial = ERFNetDownsamplerBlock(in_channels, c16)
        self.encoder = nn.Sequential(
            ERFNetDownsamplerBlock(c16, c64),
            *[NonBottleneck1D(c64, 1, dropout_64) for _ in range(5)],
            ERFNetDownsamplerBlock(c64, c128),
            *[NonBottleneck1D(c128, dilation, dropout_128) for _ in range(2) for dilation in (2, 4, 8, 16)],
        )
        self.decoder = nn.Sequential(
            ERFNetUpsamplerBlock(c128, c64),
            NonBottleneck1D(c64),
            NonBottleneck1D(c64),
            ERFNetUpsamplerBlock(c64, c16),
            NonBottleneck1D(c16),
            NonBottleneck1D(c16),
        )
        self.output_conv = nn.ConvTranspose2d(c16, out_channels, kernel_size=2, stride=2)

    def forward_padded(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        low = self.initial(x)
        high = self.encoder(low)
        logits = self.output_conv(self.decoder(high))
        return logits, {"low": low, "high": high}
