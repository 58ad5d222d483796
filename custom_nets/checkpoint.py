"""Loading trained weights into a network with errors that name the file and the mismatch."""

from __future__ import annotations

import os
from typing import Mapping, Union

import torch
from torch import nn

__all__ = ["load_weights", "load_frozen_teacher", "feature_channels"]


def _state_dict_of(checkpoint: object, path: str) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        checkpoint = checkpoint["model"]  # a full training checkpoint: {"model", "optimizer", ...}
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path}: not a state_dict of tensors (got {type(checkpoint).__name__}).")
    return checkpoint


def load_weights(network: nn.Module, path: Union[str, os.PathLike], role: str = "network") -> nn.Module:
    """Load ``path`` (a state_dict, or a checkpoint dict with a ``"model"`` entry) into ``network`` strictly.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a state_dict, or its keys or shapes do not match ``network``
            (e.g. a checkpoint of another architecture or another ``width``); the message names the file
            and the first mismatches.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{role} checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or not a torch file
        raise ValueError(f"{path}: cannot read {role} checkpoint ({type(error).__name__}: {error}).") from None
    state = _state_dict_of(checkpoint, path)
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        details = []
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} shape mismatches, e.g. {k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}")
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {missing[0]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
        raise ValueError(
            f"{path}: {role} checkpoint does not fit {type(network).__name__} ({'; '.join(details)}); "
            "is it from another network or another width?"
        )
    network.load_state_dict(state)
    return network


def load_frozen_teacher(
    network: nn.Module,
    path: Union[str, os.PathLike],
    device: Union[str, torch.device] = "cpu",
    fold_bn: bool = True,
    channels_last: bool = True,
) -> nn.Module:
    """The teacher for distillation: weights from ``path``, on ``device``, frozen by
    :func:`custom_nets.frozen.freeze_teacher` (eval mode, no gradients, BatchNorm folded with ``fold_bn``,
    channels-last with ``channels_last``): the outputs of the eval-mode network within float rounding, cheaper."""
    from .frozen import freeze_teacher

    load_weights(network, path, role="teacher")
    return freeze_teacher(network.to(device), fold_bn=fold_bn, channels_last=channels_last)


def feature_channels(network: nn.Module, in_channels: int = 1, size: int = 64) -> dict:
    """Channel count of each feature of ``network.forward_features``, from one forward pass on zeros."""
    was_training = network.training
    network.eval()
    try:
        parameter = next(network.parameters())
        with torch.no_grad():
            _, features = network.forward_features(torch.zeros(1, in_channels, size, size, device=parameter.device))
    finally:
        network.train(was_training)
    return {name: int(value.shape[1]) for name, value in features.items()}
