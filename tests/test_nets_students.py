"""The three student networks: ENet, ESPNet, ERFNet (custom_nets/enet.py, espnet.py, erfnet.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from custom_nets.enet import ENet, ENetInitialBlock, ENetUpsamplingBottleneck
from custom_nets.erfnet import ERFNet, ERFNetDownsamplerBlock, NonBottleneck1D
from custom_nets.espnet import ESPBlock, ESPNet

STUDENTS = {"ENet": ENet, "ESPNet": ESPNet, "ERFNet": ERFNet}
SMALL_WIDTH = 0.25

# name -> (exact count, 1 input channel, 2 classes, width 1; the paper's / DESIGN.md's count)
PARAMETER_COUNTS = {
    "ENet": (353_545, 0.35e6),
    "ESPNet": (182_719, 0.184e6),
    "ERFNet": (2_062_872, 2.063e6),
}
# ``high`` channels at width 1: ENet and ERFNet end the encoder at 128 maps, ESPNet concatenates 2 x 128.
HIGH_CHANNELS = {"ENet": 128, "ESPNet": 256, "ERFNet": 128}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _small(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return STUDENTS[name](in_channels=1, out_channels=2, width=SMALL_WIDTH, **kwargs)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_parameter_count_matches_the_paper(name):
    exact, target = PARAMETER_COUNTS[name]
    count = _count(STUDENTS[name](in_channels=1, out_channels=2))
    assert count == exact
    assert abs(count - target) / target < 0.02


@pytest.mark.parametrize("name, emkd_count", [("ENet", 353_761), ("ESPNet", 183_725)])
def test_three_channel_count_equals_the_emkd_code(name, emkd_count):
    # The EMKD code repeats the grey image into 3 channels before ENet / ESPNet; with in_channels=3 the
    # layers here have the same shapes, so the count must be the one of that code (counted by hand).
    assert _count(STUDENTS[name](in_channels=3, out_channels=2)) == emkd_count


@pytest.mark.parametrize("name", sorted(STUDENTS))
@pytest.mark.parametrize("size", [(64, 64), (97, 131), (5, 7)])
def test_logits_have_the_input_size(name, size):
    net = _small(name).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 1, *size))
    assert logits.shape == (2, 2, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_feature_strides_and_channels(name):
    net = _small(name).eval()
    with torch.no_grad():
        logits, features = net.forward_features(torch.randn(1, 1, 97, 131))
    # padded to multiples of 8: 104 x 136
    assert logits.shape == (1, 2, 97, 131)
    assert set(features) == {"low", "high"}
    assert features["low"].shape == (1, 4, 52, 68)
    assert features["high"].shape == (1, HIGH_CHANNELS[name] // 4, 13, 17)


def _layout(net: nn.Module):
    """Every module's path and type, and each convolution's geometry (all but its channel counts)."""
    layout = []
    for path, module in net.named_modules():
        entry = (path, type(module).__name__)
        if isinstance(module, nn.modules.conv._ConvNd):
            entry += (module.kernel_size, module.stride, module.padding, module.dilation, module.bias is None)
        layout.append(entry)
    return layout


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_width_shrinks_channels_not_topology(name):
    full = STUDENTS[name](in_channels=1, out_channels=2, width=1.0)
    small = _small(name)
    assert _layout(small) == _layout(full)
    assert _count(small) < _count(full) / 8
    assert small.forward_features(torch.randn(1, 1, 16, 16))[1]["low"].shape[1] == 4


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_torchscript_matches_eager_at_batch_one(name):
    net = _small(name).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 97, 131)
    with torch.no_grad():
        eager_logits, eager_features = net.forward_features(x)
        script_logits, script_features = scripted.forward_features(x)
        torch.testing.assert_close(scripted(x), eager_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(script_logits, eager_logits, rtol=1e-5, atol=1e-5)
    for key in ("low", "high"):
        torch.testing.assert_close(script_features[key], eager_features[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_bfloat16_autocast_gives_finite_logits(name):
    net = _small(name).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, features = net.forward_features(torch.randn(1, 1, 97, 131))
    assert logits.shape == (1, 2, 97, 131)
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()
    assert all(torch.isfinite(f.float()).all() for f in features.values())


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_every_parameter_is_used(name):
    net = _small(name).train()
    net(torch.randn(2, 1, 32, 32)).sum().backward()
    unused = [path for path, p in net.named_parameters() if p.grad is None]
    assert unused == []


def test_esp_block_hierarchical_feature_fusion():
    # 7 outputs: n = 7 // 5 = 1 map per dilated branch, the dilation-1 branch gets 7 - 4 = 3.
    # reduce picks input channel 0 (r = x_0) and each branch convolution is the identity (centre tap 1),
    # so before BN the block holds x + cat(r, r, r, r, 2r, 3r, 4r) (HFF sums d2, d4, d8, d16 cumulatively).
    block = ESPBlock(7, 7, residual=True).eval()
    with torch.no_grad():
        block.reduce.conv.weight.zero_()
        block.reduce.conv.weight[0, 0] = 1.0
        for branch in block.branches:
            branch.conv.weight.zero_()
            branch.conv.weight[:, :, 1, 1] = 1.0  # each branch reads the single reduced map
    captured = {}
    block.norm_act.register_forward_pre_hook(lambda module, args: captured.setdefault("merged", args[0]))
    x = torch.randn(2, 7, 9, 11)
    with torch.no_grad():
        block(x)
    r = x[:, :1]
    expected = x + torch.cat([r, r, r, r, 2 * r, 3 * r, 4 * r], dim=1)
    torch.testing.assert_close(captured["merged"], expected)


@pytest.mark.parametrize(
    "block", [ENetInitialBlock(2, 6), ERFNetDownsamplerBlock(2, 6)], ids=["ENetInitialBlock", "ERFNetDownsampler"]
)
def test_downsampler_concatenates_the_max_pooled_input(block):
    block.eval()
    captured = {}
    block.norm.register_forward_pre_hook(lambda module, args: captured.setdefault("merged", args[0]))
    x = torch.randn(1, 2, 6, 10)
    with torch.no_grad():
        out = block(x)
    assert out.shape == (1, 6, 3, 5)
    torch.testing.assert_close(captured["merged"][:, 4:], F.max_pool2d(x, 2, 2), rtol=0, atol=0)
    torch.testing.assert_close(captured["merged"][:, :4], block.conv(x), rtol=0, atol=0)


def test_enet_upsampling_bottleneck_unpools_to_the_max_positions():
    x = torch.rand(1, 2, 4, 6) + 0.5  # positive, so the final PReLU passes it through
    pooled, indices = F.max_pool2d_with_indices(x, kernel_size=2, stride=2)
    up = ENetUpsamplingBottleneck(2, 1, 2, dropout=0.0).eval()
    with torch.no_grad():
        up.main_projection.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        up.expand.adn.N.weight.zero_()  # extension branch contributes exactly 0
        out = up(pooled, indices)
    is_max = x == F.max_unpool2d(pooled, indices, kernel_size=2, stride=2)
    assert out.shape == x.shape
    assert torch.equal(out != 0, is_max)
    eps = up.main_projection.adn.N.eps
    torch.testing.assert_close(out[is_max], x[is_max] / (1.0 + eps) ** 0.5)


def test_non_bottleneck_1d_dilates_rows_then_columns():
    # All weights 1, biases 0, BN at its initial (identity) statistics, input all ones: every ReLU is
    # active, so the gradient of one output pixel marks the receptive field of the factorised branch,
    # {-1, 0, 1} + {-d, 0, d} in each direction (here d = 4, so offsets +-2 are outside it).
    dilation, size, centre = 4, 15, 7
    block = NonBottleneck1D(1, dilation=dilation).eval()
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
    x = torch.ones(1, 1, size, size, requires_grad=True)
    block(x)[0, 0, centre, centre].backward()
    offsets = sorted({a + b for a in (-1, 0, 1) for b in (-dilation, 0, dilation)})
    expected = torch.zeros(size, size, dtype=torch.bool)
    for dy in offsets:
        for dx in offsets:
            expected[centre + dy, centre + dx] = True
    assert torch.equal(x.grad[0, 0] != 0, expected)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ENet(in_channels=4, width=0.25), "initial channels"),
        (lambda: ESPNet(width=0.05), "ESP blocks need"),
        (lambda: ESPBlock(8, 4, residual=False), "out_channels >= 5"),
        (lambda: ESPBlock(8, 10, residual=True), "residual ESP block"),
        (lambda: ERFNet(width=0.01), "growing channels"),
        (lambda: ENet(dropout=1.0), "dropout"),
    ],
)
def test_invalid_configurations_are_rejected(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_wrong_input_channels_are_rejected(name):
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        _small(name)(torch.randn(1, 3, 16, 16))
