"""GIN-IPA: random shallow convolution networks as an appearance augmentation for unseen scanners.

Ouyang et al., *Causality-inspired single-source domain generalization for medical image segmentation*, IEEE TMI
2022 (GIN: global intensity non-linear augmentation; IPA: interventional pseudo-correlation augmentation; evaluated
on the six-site prostate MRI collection). The idea: the shape of the gland is what carries over between scanners,
its intensities and texture are not, so the network is trained on images whose intensities and local texture are
remapped by a network with random weights, which keeps the geometry.

* **GIN** ``g(x)``: ``L`` convolution layers (``L >= 2``) with ``interm_channels`` channels between them, each with a
  kernel size drawn from ``kernel_sizes`` and weights and biases drawn from ``N(0, 1)``, leaky ReLU (slope 0.01)
  after every layer but the last; then ``y = a * g(x) + (1 - a) * x`` with ``a ~ U(0, 1)``, rescaled to the
  Frobenius norm of ``x``: ``y * ||x|| / ||y||``.
* **IPA**: two independent GIN draws ``y1, y2`` blended by a smooth random mask ``m`` in ``[0, 1]``:
  ``m * y1 + (1 - m) * y2``. ``m`` is ``exp`` of a Gaussian random field on a coarse grid of control points
  (``mask_cells`` cells per side, upsampled bicubically to the image), rescaled to ``[0, 1]`` by its minimum and
  maximum (a constant field gives 0.5), so that different regions of one image get different intensity remaps (the reference: control points
  every 24 pixels on 192 x 192 images, 8 cells per side).

What is not taken from the reference: its three copies of every batch with a KL consistency term between their
predictions (a change of the training loss, not of the data); here each training slice is replaced by one IPA blend,
on which the segmentation loss is computed, as the reference computes its segmentation loss on its first blend.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type

__all__ = ["GinLayer", "gin", "blend_mask", "ipa_blend", "RandGinIpad"]

LEAKY_SLOPE = 0.01


class GinLayer:
    """One layer of a GIN network: ``weight`` ``(out, in, k, k)`` with ``k`` odd, ``bias`` ``(out,)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        if weight.ndim != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 != 1:
            raise ValueError(f"a GIN layer's weight must be (out, in, k, k) with k odd, got {tuple(weight.shape)}.")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"a GIN layer's bias must be ({weight.shape[0]},), got {tuple(bias.shape)}.")
        self.weight, self.bias = weight, bias


def gin(image: torch.Tensor, layers: Sequence[GinLayer], alpha: float, eps: float = 1e-8) -> torch.Tensor:
    """``a * g(x) + (1 - a) * x`` rescaled to ``||x||`` (Frobenius), for ``image`` ``(C, H, W)``.

    ``g`` runs ``layers`` in order with zero padding that keeps the size, leaky ReLU after each but the last; the
    first layer takes ``C`` channels and the last gives ``C``. An image of norm 0 is returned as it is.
    """
    if image.ndim != 3:
        raise ValueError(f"gin expects an image (C, H, W), got shape {tuple(image.shape)}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"gin's alpha must lie in [0, 1], got {alpha}.")
    if len(layers) < 1 or layers[0].weight.shape[1] != image.shape[0] or layers[-1].weight.shape[0] != image.shape[0]:
        raise ValueError(f"the GIN layers must take and give {image.shape[0]} channel(s).")
    x = image.unsqueeze(0).float()
    out = x
    for index, layer in enumerate(layers):
        size = layer.weight.shape[2]
        out = F.conv2d(out, layer.weight.float(), layer.bias.float(), padding=size // 2)
        if index < len(layers) - 1:
            out = F.leaky_relu(out, LEAKY_SLOPE)
    mixed = alpha * out + (1.0 - alpha) * x
    norm_in, norm_out = torch.linalg.vector_norm(x), torch.linalg.vector_norm(mixed)
    if norm_in == 0:
        return image.clone()
    return (mixed * (norm_in / (norm_out + eps)))[0].to(image.dtype)


def blend_mask(field: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """IPA's mask ``(1, H, W)`` in ``[0, 1]`` from a coarse Gaussian ``field`` ``(h, w)``: ``exp``, bicubic
    upsampling to ``size``, then ``(m - min) / (max - min)`` (a constant field gives 0.5 everywhere)."""
    if field.ndim != 2:
        raise ValueError(f"blend_mask expects a 2D field of control points, got shape {tuple(field.shape)}.")
    smooth = F.interpolate(torch.exp(field.float())[None, None], size=tuple(size), mode="bicubic",
                           align_corners=True)[0]
    low, high = smooth.min(), smooth.max()
    if high - low <= 1e-5 * high:  # a constant field, up to the interpolation's rounding
        return torch.full_like(smooth, 0.5)
    return (smooth - low) / (high - low)


def ipa_blend(first: torch.Tensor, second: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * first + (1 - mask) * second``; ``mask`` broadcasts over the channels."""
    if first.shape != second.shape or mask.shape[-2:] != first.shape[-2:]:
        raise ValueError(f"ipa_blend: shapes {tuple(first.shape)}, {tuple(second.shape)} and mask "
                         f"{tuple(mask.shape)} do not match.")
    return mask * first + (1.0 - mask) * second


class RandGinIpad(RandomizableTransform, MapTransform):
    """With probability ``prob``, replace each 2D image of ``keys`` ``(C, H, W)`` by a GIN-IPA blend (module doc).

    Args:
        keys: the image keys (labels must not be listed: they are not changed).
        prob: probability of the transform per call.
        layers: GIN depth (the reference: 4).
        interm_channels: channels between the layers (the reference: 2).
        kernel_sizes: kernel sizes drawn per layer (the reference: 1 and 3).
        mask_cells: control-point cells per side of IPA's mask (the reference: 8); 0 gives plain GIN (one draw,
            no blend).
    """

    backend = [torch.Tensor.__name__]

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        layers: int = 4,
        interm_channels: int = 2,
        kernel_sizes: Sequence[int] = (1, 3),
        mask_cells: int = 8,
        allow_missing_keys: bool = False,
    ):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandGinIpad: prob must lie in [0, 1], got {prob}.")
        if layers < 2 or interm_channels < 1:
            raise ValueError(f"RandGinIpad: needs layers >= 2 and interm_channels >= 1, got {layers}, {interm_channels}.")
        if not kernel_sizes or any(k < 1 or k % 2 != 1 for k in kernel_sizes):
            raise ValueError(f"RandGinIpad: kernel sizes must be odd and positive, got {list(kernel_sizes)}.")
        if mask_cells < 0:
            raise ValueError(f"RandGinIpad: mask_cells must be >= 0, got {mask_cells}.")
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.layers, self.interm_channels = layers, interm_channels
        self.kernel_sizes, self.mask_cells = tuple(kernel_sizes), mask_cells

    def _draw_layers(self, channels: int) -> list[GinLayer]:
        widths = [channels] + [self.interm_channels] * (self.layers - 1) + [channels]
        drawn = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            size = int(self.R.choice(self.kernel_sizes))
            weight = torch.from_numpy(self.R.standard_normal((c_out, c_in, size, size)).astype(np.float32))
            bias = torch.from_numpy(self.R.standard_normal(c_out).astype(np.float32))
            drawn.append(GinLayer(weight, bias))
        return drawn

    def _augment(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 3:
            raise ValueError(f"RandGinIpad expects 2D images (C, H, W), got shape {tuple(image.shape)}.")
        channels = image.shape[0]
        first = gin(image, self._draw_layers(channels), float(self.R.uniform(0.0, 1.0)))
        if self.mask_cells == 0:
            return first
        second = gin(image, self._draw_layers(channels), float(self.R.uniform(0.0, 1.0)))
        field = torch.from_numpy(self.R.standard_normal((self.mask_cells + 1, self.mask_cells + 1)).astype(np.float32))
        return ipa_blend(first, second, blend_mask(field, image.shape[-2:]).to(image.dtype))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            plain = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
            d[key] = convert_to_dst_type(self._augment(plain), dst=image)[0]  # type, dtype and meta of the input
        return d
