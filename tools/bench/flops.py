"""Multiply-accumulate (MAC) counting with forward hooks.

Counts the multiply-adds of ``nn.Conv*``, ``nn.ConvTranspose*`` and ``nn.Linear`` layers only (normalisation,
activations, pooling and interpolation are not counted, as in the usual "FLOPs" tables of segmentation papers).

* convolution: ``MACs = numel(output) * (C_in / groups) * prod(kernel)``
* transposed convolution: ``MACs = numel(input) * (C_out / groups) * prod(kernel)``
* linear: ``MACs = numel(output) * in_features``

One MAC is one multiply plus one add; ``FLOPs = 2 * MACs``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["count_macs"]


def _conv_macs(module: nn.modules.conv._ConvNd, inputs: torch.Tensor, output: torch.Tensor) -> int:
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return inputs.numel() * (module.out_channels // module.groups) * kernel
    return output.numel() * (module.in_channels // module.groups) * kernel


def count_macs(network: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``network`` on ``example`` (whole batch).

    The network runs once in eval mode without gradients; its mode is restored afterwards.
    """
    total = [0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.modules.conv._ConvNd):
            total[0] += _conv_macs(module, inputs[0], output)
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            network(example)
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)
    return total[0]
