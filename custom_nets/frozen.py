"""A frozen network for distillation: eval mode, no gradients, BatchNorm folded into the convolutions before it,
run in the channels-last memory layout.

In eval mode ``BatchNorm2d`` is the affine map ``y = g (x - m) / sqrt(v + e) + b`` per channel, so after a
``Conv2d`` with weight ``W`` and bias ``c`` it can be folded into the convolution:

    W' = W * s[:, None, None, None],   c' = (c - m) * s + b,   s = g / sqrt(v + e),

(computed in float64, stored in the convolution's dtype) and replaced by ``nn.Identity``. The folded network
computes the same function with one pass over each feature map fewer; its outputs differ from the unfolded
network's by float rounding only.

A BatchNorm is folded when it directly follows a ``Conv2d`` inside an ``nn.Sequential`` (whose ``forward`` runs its
children in order), also across nested ``Sequential``\\s such as MONAI's ``Convolution`` (``conv``, then ``adn``
with the norm first): that is where every convolution of the teachers here is followed by its BatchNorm. Pairs
that a custom ``forward`` connects are left as they are.

:class:`FrozenTeacher` (what :func:`freeze_teacher` returns) also keeps the weights in the channels-last layout and
feeds the network channels-last input (oneDNN's faster convolutions on the CPU), computes under ``torch.no_grad``
and hands back ordinary contiguous tensors, so that the losses see the layout they expect.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["FrozenTeacher", "fold_batchnorm", "freeze_teacher"]


def _plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _edge(module: nn.Module, last: bool) -> Tuple[Optional[nn.Module], Optional[str], Optional[nn.Module]]:
    """``(parent, name, leaf)`` of the first (or last) module that a plain Sequential ``module`` runs."""
    parent, name, leaf = None, None, module
    while _plain_sequential(leaf) and len(leaf) > 0:
        names = list(leaf._modules)
        parent, name = leaf, names[-1 if last else 0]
        leaf = leaf._modules[name]
    return parent, name, leaf


def _conv_bn_pairs(network: nn.Module) -> List[Tuple[nn.Conv2d, nn.Module, str]]:
    """``(conv, parent of the BN, name of the BN)`` for every Conv2d -> BatchNorm2d edge inside plain Sequentials."""
    pairs = []
    for sequential in network.modules():
        if not _plain_sequential(sequential):
            continue
        children = list(sequential._modules.items())
        for (_, first), (second_name, second) in zip(children, children[1:]):
            _, _, conv = _edge(first, last=True)
            parent, name, bn = _edge(second, last=False)
            if parent is None:
                parent, name = sequential, second_name
            if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                pairs.append((conv, parent, name))
    return pairs


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    if bn.num_features != conv.out_channels:
        raise ValueError(f"cannot fold {bn} into {conv}: {bn.num_features} features vs {conv.out_channels} output channels.")
    dtype = conv.weight.dtype
    gamma = bn.weight.double() if bn.affine else torch.ones(bn.num_features, dtype=torch.float64, device=conv.weight.device)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(gamma)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    conv.weight.copy_((conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))).to(dtype))
    new_bias = ((bias - bn.running_mean.double()) * scale + beta).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(network: nn.Module) -> int:
    """Fold, in place, every ``BatchNorm2d`` that directly follows a ``Conv2d`` (module docstring) into it and
    replace the BatchNorm by ``nn.Identity``; returns the number folded.

    Raises:
        ValueError: ``network`` is in training mode (BatchNorm would use batch statistics, which cannot be folded).
    """
    if network.training:
        raise ValueError(f"fold_batchnorm needs an eval-mode network; call {type(network).__name__}.eval() first.")
    pairs = _conv_bn_pairs(network)
    for conv, parent, name in pairs:
        _fold(conv, parent._modules[name])
        parent._modules[name] = nn.Identity()
    return len(pairs)


class FrozenTeacher(nn.Module):
    """``network`` (eval mode, gradients off, BatchNorm folded) behind its own interface: ``forward(x) -> logits``
    and ``forward_features(x) -> (logits, {name: feature})``, computed under ``torch.no_grad`` in the channels-last
    layout (when ``channels_last``) and returned contiguous.

    The module stays in eval mode: ``train()`` is ignored, so a trainer that switches every module to training
    mode cannot turn dropout on.
    """

    def __init__(self, network: nn.Module, channels_last: bool = True) -> None:
        super().__init__()
        self.network = network
        self.channels_last = channels_last
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        super().train(False)
        self.network.eval()

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return self

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.network(self._input(x)).contiguous()

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        with torch.no_grad():
            logits, features = self.network.forward_features(self._input(x))
        return logits.contiguous(), {name: value.contiguous() for name, value in features.items()}


def freeze_teacher(network: nn.Module, fold_bn: bool = True, channels_last: bool = True) -> FrozenTeacher:
    """The teacher for distillation: ``network`` in eval mode with ``requires_grad`` off on every parameter, with
    ``fold_bn`` its BatchNorms folded into the convolutions before them (:func:`fold_batchnorm`), wrapped in a
    :class:`FrozenTeacher` (channels-last with ``channels_last``, no autograd graph, contiguous outputs).

    Its outputs equal the unfolded eval-mode network's within float rounding. Load the weights before freezing: the
    folded network has fewer modules, so a checkpoint of the network no longer loads into it.
    """
    network.eval()
    if fold_bn:
        fold_batchnorm(network)
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return FrozenTeacher(network, channels_last=channels_last)
