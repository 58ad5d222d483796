"""Tests for the teacher networks: ``NestedUNet`` (UNet++) and ``DeepLabV3Plus`` (aligned Xception-65).

Forward passes use small widths and small inputs; width 1.0 is only built to count parameters and
compare topology.
"""

import math

import pytest
import torch
from monai.networks.utils import convert_to_torchscript
from torch import nn

from custom_nets.deeplabv3plus import ASPP, DeepLabV3Plus, SeparableConv2d, XceptionBlock
from custom_nets.nested_unet import NestedUNet

SMALL_WIDTH = 0.125
# (class, total stride of "high", paper/EMKD parameter count in millions)
TEACHERS = {"nested_unet": (NestedUNet, 16, 36.63), "deeplabv3plus": (DeepLabV3Plus, 8, 54.75)}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module", params=sorted(TEACHERS))
def teacher(request):
    """``(name, class, high stride, reference M params, small eval-mode model)``."""
    cls, high_stride, ref_m = TEACHERS[request.param]
    torch.manual_seed(0)
    model = cls(in_channels=1, out_channels=2, width=SMALL_WIDTH).eval()
    return request.param, cls, high_stride, ref_m, model


@pytest.fixture(scope="module")
def full_width_models():
    return {name: cls() for name, (cls, _, _) in TEACHERS.items()}


# ---------------------------------------------------------------- parameter counts


def _nested_unet_params(in_channels: int, out_channels: int) -> int:
    """UNet++ count from its definition: VGG block = 2 x (conv3x3 with bias + BN)."""

    def vgg(cin: int, cout: int) -> int:
        return (9 * cin * cout + cout + 2 * cout) + (9 * cout * cout + cout + 2 * cout)

    c = [64, 128, 256, 512, 1024]
    total = vgg(in_channels, c[0]) + sum(vgg(c[i - 1], c[i]) for i in range(1, 5))
    for j in range(1, 5):
        for i in range(0, 5 - j):
            total += vgg(j * c[i] + c[i + 1], c[i])
    return total + c[0] * out_channels + out_channels


def _deeplabv3plus_params(in_channels: int, out_channels: int) -> int:
    """DeepLabV3+ count from its definition (separable conv = depthwise + BN + pointwise + BN)."""

    def sep(cin: int, cout: int) -> int:
        return 9 * cin + 2 * cin + cin * cout + 2 * cout

    def cbr(cin: int, cout: int, k: int) -> int:
        return k * k * cin * cout + 2 * cout

    def block(cin: int, chs, projected: bool) -> int:
        total, prev = 0, cin
        for ch in chs:
            total += sep(prev, ch)
            prev = ch
        return total + (cin * prev + 2 * prev if projected else 0)

    backbone = cbr(in_channels, 32, 3) + cbr(32, 64, 3)
    backbone += block(64, [128] * 3, True) + block(128, [256] * 3, True) + block(256, [728] * 3, True)
    backbone += 16 * block(728, [728] * 3, False)
    backbone += block(728, [728, 1024, 1024], True) + sep(1024, 1536) + sep(1536, 1536) + sep(1536, 2048)
    aspp = cbr(2048, 256, 1) + 3 * cbr(2048, 256, 3) + (2048 * 256 + 256) + cbr(5 * 256, 256, 1)
    decoder = cbr(128, 48, 1) + cbr(256 + 48, 256, 3) + cbr(256, 256, 3) + 256 * out_channels + out_channels
    return backbone + aspp + decoder


def test_parameter_counts_match_definition_and_paper(full_width_models):
    expected = {"nested_unet": _nested_unet_params(1, 2), "deeplabv3plus": _deeplabv3plus_params(1, 2)}
    for name, model in full_width_models.items():
        count = n_params(model)
        assert count == expected[name], name
        ref = TEACHERS[name][2] * 1e6
        assert abs(count - ref) / ref < 0.02, f"{name}: {count} params vs reference {ref:.0f}"
    assert n_params(full_width_models["nested_unet"]) == 36_628_546
    assert n_params(full_width_models["deeplabv3plus"]) == 54_699_602


def _topology(model: nn.Module):
    """Module types and conv geometry, independent of channel counts."""
    signature = []
    for module in model.modules():
        entry = [type(module).__name__]
        if isinstance(module, nn.Conv2d):
            entry += [module.kernel_size, module.stride, module.dilation, module.padding, module.groups > 1]
        signature.append(tuple(entry))
    return signature


def test_width_shrinks_channels_not_topology(full_width_models, teacher):
    name, cls, _, _, small = teacher
    full = full_width_models[name]
    assert _topology(small) == _topology(full)
    assert n_params(small) < n_params(full) / 40
    assert small.feature_channels["high"] < full.feature_channels["high"]
    with pytest.raises(ValueError, match="width"):
        cls(width=0.0)


# ---------------------------------------------------------------- shapes and features


@pytest.mark.parametrize("size", [(97, 131), (33, 40), (16, 24), (50, 17)])
def test_logits_at_input_resolution(teacher, size):
    _, _, _, _, model = teacher
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 2, *size)
    assert torch.isfinite(y).all()


def test_feature_strides_and_channels(teacher):
    _, _, high_stride, _, model = teacher
    height, width = 97, 131
    multiple = model.spatial_multiple
    padded = (math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple)
    with torch.no_grad():
        logits, features = model.forward_features(torch.randn(2, 1, height, width))
    assert logits.shape == (2, 2, height, width)
    assert set(features) == {"low", "high"}
    assert features["low"].shape == (2, model.feature_channels["low"], padded[0] // 2, padded[1] // 2)
    assert features["high"].shape == (
        2,
        model.feature_channels["high"],
        padded[0] // high_stride,
        padded[1] // high_stride,
    )


def test_odd_input_equals_cropped_zero_padded_input(teacher):
    _, _, _, _, model = teacher
    x = torch.randn(1, 1, 21, 30)
    multiple = model.spatial_multiple
    padded = torch.zeros(1, 1, math.ceil(21 / multiple) * multiple, math.ceil(30 / multiple) * multiple)
    padded[:, :, :21, :30] = x
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[:, :, :21, :30])


def test_rejects_wrong_input_shape(teacher):
    _, _, _, _, model = teacher
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(1, 32, 32))


# ---------------------------------------------------------------- modes, precision, export


def test_every_module_and_parameter_is_used(teacher):
    """No dead layers: every leaf module runs in forward and every parameter gets a gradient."""
    _, cls, _, _, _ = teacher
    torch.manual_seed(0)
    model = cls(width=SMALL_WIDTH).train()
    called = set()
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: called.add(name))
        for name, module in model.named_modules()
        if len(list(module.children())) == 0
    ]
    leaves = {name for name, module in model.named_modules() if len(list(module.children())) == 0}
    model(torch.randn(2, 1, 32, 40)).square().mean().backward()
    for hook in hooks:
        hook.remove()
    assert leaves - called == set()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_train_mode_batch_one(teacher):
    """Batch 1 in train mode works (DeepLabV3+: the image-pooling branch has no BatchNorm)."""
    _, cls, _, _, _ = teacher
    model = cls(width=SMALL_WIDTH).train()
    y = model(torch.randn(1, 1, 33, 40))
    assert y.shape == (1, 2, 33, 40)
    assert torch.isfinite(y).all()


def test_bfloat16_autocast_is_finite(teacher):
    _, _, _, _, model = teacher
    x = torch.randn(1, 1, 37, 45)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, features = model.forward_features(x)
    assert logits.shape == (1, 2, 37, 45)
    for tensor in [logits, features["low"], features["high"]]:
        assert torch.isfinite(tensor.float()).all()


def test_torchscript_matches_eager_and_round_trips(teacher, tmp_path):
    name, _, _, _, model = teacher
    x = torch.randn(1, 1, 35, 29)
    path = tmp_path / f"{name}.ts"
    scripted = convert_to_torchscript(model, filename_or_obj=str(path), verify=True, inputs=[x], atol=1e-5)
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        logits, features = model.forward_features(x)
        s_logits, s_features = scripted.forward_features(x)
        l_logits = loaded(x)
    torch.testing.assert_close(s_logits, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(l_logits, logits, rtol=0, atol=1e-5)
    for key in ("low", "high"):
        torch.testing.assert_close(s_features[key], features[key], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- DeepLabV3+ building blocks


def test_separable_conv_geometry():
    conv = SeparableConv2d(6, 10, stride=2, dilation=1)
    assert n_params(conv) == 9 * 6 + 2 * 6 + 6 * 10 + 2 * 10
    assert conv(torch.randn(2, 6, 16, 12)).shape == (2, 10, 8, 6)
    dilated = SeparableConv2d(6, 10, dilation=4)
    assert dilated(torch.randn(2, 6, 16, 12)).shape == (2, 10, 16, 12)


def test_xception_block_shortcuts():
    torch.manual_seed(0)
    identity = XceptionBlock(8, [8, 8, 8]).eval()
    assert isinstance(identity.shortcut, nn.Identity)
    # with the residual's last BatchNorm zeroed, the block is exactly its (identity) shortcut
    last_bn = identity.residual[-1][-1]
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)
    x = torch.randn(2, 8, 10, 10)
    torch.testing.assert_close(identity(x), x, rtol=0, atol=0)

    projected = XceptionBlock(8, [16, 16, 24], stride=2).eval()
    assert not isinstance(projected.shortcut, nn.Identity)
    assert projected(x).shape == (2, 24, 5, 5)


def test_backbone_output_stride_8_dilations():
    """Output stride 8: no stride after entry block 2; middle flow at rate 2, exit convolutions at rate 4."""
    backbone = DeepLabV3Plus(width=SMALL_WIDTH).backbone
    after_stride8 = [backbone.entry_block3, backbone.middle_flow, backbone.exit_block, backbone.exit_convs]
    for part in after_stride8:
        for conv in (m for m in part.modules() if isinstance(m, nn.Conv2d)):
            assert conv.stride == (1, 1)
    middle = {m.dilation for m in backbone.middle_flow.modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    exit_block = {m.dilation for m in backbone.exit_block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    exit_convs = {m.dilation for m in backbone.exit_convs.modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    assert middle == {(2, 2)} and exit_block == {(2, 2)} and exit_convs == {(4, 4)}
    assert len(backbone.middle_flow) == 16


def test_aspp_image_pooling_branch_is_global_mean_projection():
    torch.manual_seed(0)
    aspp = ASPP(4, 3, rates=(1, 2, 3)).train()
    x = torch.randn(1, 4, 6, 5)
    conv = aspp.branch_pool[1]
    expected = torch.relu(conv.weight[:, :, 0, 0] @ x.mean(dim=(2, 3))[0] + conv.bias)
    pooled = aspp.branch_pool(x)
    torch.testing.assert_close(pooled[0, :, 0, 0], expected)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in aspp.branch_pool.modules())
    assert aspp(x).shape == (1, 3, 6, 5)  # train mode, batch 1
