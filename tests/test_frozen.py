"""custom_nets/frozen.py: BatchNorm folding and the frozen teacher keep the outputs within float rounding."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.blocks import Convolution
from torch import nn

from custom_nets import NETWORKS, FrozenTeacher, fold_batchnorm, freeze_teacher, load_frozen_teacher


def randomise_batchnorm(network: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their initial (identity) values."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return network


def test_fold_batchnorm_exact_on_a_tiny_network():
    """One conv -> BN in float64: the folded convolution's weight and bias are the hand-computed ones and the
    outputs agree to float64 rounding."""
    conv, bn = nn.Conv2d(2, 3, 3, padding=1, bias=True).double(), nn.BatchNorm2d(3, eps=1e-3).double()
    network = randomise_batchnorm(nn.Sequential(conv, bn, nn.ReLU())).eval()
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected_weight = conv.weight * scale[:, None, None, None]
    expected_bias = (conv.bias - bn.running_mean) * scale + bn.bias
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        before = network(x)
        assert fold_batchnorm(network) == 1
        after = network(x)
    assert isinstance(network[1], nn.Identity)
    torch.testing.assert_close(network[0].weight, expected_weight.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(network[0].bias, expected_bias.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-12)


def test_fold_batchnorm_across_nested_sequentials_and_not_elsewhere():
    class Custom(nn.Module):  # a conv and a BN joined by a custom forward: not folded
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1, bias=False), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x) + x)

    network = nn.Sequential(
        Convolution(2, 1, 3, kernel_size=3, act="RELU", norm="BATCH", bias=False),  # conv, then adn: BN first
        nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)),
        nn.Sequential(nn.BatchNorm2d(3), nn.ReLU()),  # follows the depthwise conv of the previous Sequential
        Custom(),
    )
    network = randomise_batchnorm(network).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        before = network(x)
        assert fold_batchnorm(network) == 2
        after = network(x)
    assert isinstance(network[3].bn, nn.BatchNorm2d)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


@pytest.mark.parametrize("name", ["DeepLabV3Plus", "NestedUNet"])
def test_frozen_teachers_match_the_eval_network(name):
    torch.manual_seed(0)
    network = randomise_batchnorm(NETWORKS[name][0](in_channels=1, out_channels=2, width=0.125)).eval()
    reference = copy.deepcopy(network)
    teacher = freeze_teacher(network)
    assert isinstance(teacher, FrozenTeacher) and not teacher.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())  # every BN of the teachers folds
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # ignored: a frozen teacher stays in eval mode
    assert not teacher.training and not teacher.network.training
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        logits, features = reference.forward_features(x)
    got_logits, got_features = teacher.forward_features(x.requires_grad_())
    assert not got_logits.requires_grad and got_logits.is_contiguous()
    torch.testing.assert_close(got_logits, logits, rtol=1e-4, atol=1e-5)
    assert set(got_features) == set(features)
    for key in features:
        assert got_features[key].is_contiguous()
        torch.testing.assert_close(got_features[key], features[key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(teacher(x), logits, rtol=1e-4, atol=1e-5)


def test_load_frozen_teacher_folds_after_loading(tmp_path):
    torch.manual_seed(0)
    network = randomise_batchnorm(NETWORKS["DeepLabV3Plus"][0](in_channels=1, out_channels=2, width=0.125))
    torch.save(network.state_dict(), tmp_path / "teacher.pt")
    fresh = NETWORKS["DeepLabV3Plus"][0](in_channels=1, out_channels=2, width=0.125)
    teacher = load_frozen_teacher(fresh, tmp_path / "teacher.pt")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        expected = network.eval()(x)
    torch.testing.assert_close(teacher(x), expected, rtol=1e-4, atol=1e-5)
    plain = load_frozen_teacher(NETWORKS["DeepLabV3Plus"][0](in_channels=1, out_channels=2, width=0.125),
                                tmp_path / "teacher.pt", fold_bn=False, channels_last=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    torch.testing.assert_close(plain(x), expected, rtol=1e-6, atol=1e-6)
