"""The five networks of ``custom_nets`` (two teachers, three students).

The contract every network keeps (``custom_nets.NETWORKS``) is tested once, parametrised over the registry:
parameter counts against the paper, logits at the input's size for any H and W, ``low``/``high`` feature
strides and channels, width scaling, input checks, train mode at batch 1, bfloat16 autocast, TorchScript,
and no dead layers. Building-block tests of each architecture follow. Forward passes use small widths and
small inputs; width 1.0 is only built to count parameters and compare topology.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from monai.networks.utils import convert_to_torchscript
from torch import nn

from custom_nets import NETWORKS, feature_channels
from custom_nets.deeplabv3plus import ASPP, DeepLabV3Plus, SeparableConv2d, XceptionBlock
from custom_nets.enet import ENet, ENetInitialBlock, ENetUpsamplingBottleneck
from custom_nets.erfnet import ERFNet, ERFNetDownsamplerBlock, NonBottleneck1D
from custom_nets.espnet import ESPBlock, ESPNet

# name -> exact parameter count (1 input channel, 2 classes, width 1), the paper's / DESIGN.md's count, the
# small width the forward tests use, the total stride of the ``high`` feature map, and the ``low``/``high``
# channels at width 1 (ENet and ERFNet end the encoder at 128 maps, ESPNet concatenates 2 x 128; UNet++'s low
# map is X^{1,0}, DeepLabV3+'s the first convolution)
FACTS = {
    "ESPNet": dict(count=182_719, paper=0.184e6, small_width=0.25, high_stride=8, channels=(16, 256)),
    "ENet": dict(count=353_545, paper=0.353e6, small_width=0.25, high_stride=8, channels=(16, 128)),
    "ERFNet": dict(count=2_062_872, paper=2.063e6, small_width=0.25, high_stride=8, channels=(16, 128)),
    "NestedUNet": dict(count=36_628_546, paper=36.63e6, small_width=0.125, high_stride=16, channels=(128, 1024)),
    "DeepLabV3Plus": dict(count=54_699_602, paper=54.75e6, small_width=0.125, high_stride=8, channels=(32, 2048)),
}
NAMES = list(NETWORKS)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small(name: str, train: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = NETWORKS[name][0](in_channels=1, out_channels=2, width=FACTS[name]["small_width"])
    return model.train(train)


@pytest.fixture(scope="module")
def full_width():
    """Width-1 networks, built once (for counts and topology only)."""
    cache = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            cache[name] = NETWORKS[name][0](in_channels=1, out_channels=2)
        return cache[name]

    return get


def test_the_registry_holds_the_papers_five_networks():
    assert {name: role for name, (_, role) in NETWORKS.items()} == {
        "ESPNet": "student", "ENet": "student", "ERFNet": "student", "NestedUNet": "teacher", "DeepLabV3Plus": "teacher",
    }
    assert set(FACTS) == set(NETWORKS)


# ---------------------------------------------------------------- the contract, for every network


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_the_paper(name, full_width):
    count = n_params(full_width(name))
    assert count == FACTS[name]["count"]
    assert abs(count - FACTS[name]["paper"]) / FACTS[name]["paper"] < 0.02, f"{name}: {count} vs the paper's count"


def _topology(model: nn.Module):
    """Every module's path and type, and each convolution's geometry (all but its channel counts)."""
    layout = []
    for path, module in model.named_modules():
        entry = (path, type(module).__name__)
        if isinstance(module, nn.modules.conv._ConvNd):
            entry += (module.kernel_size, module.stride, module.padding, module.dilation, module.groups > 1,
                      module.bias is None)
        layout.append(entry)
    return layout


@pytest.mark.parametrize("name", NAMES)
def test_width_shrinks_channels_not_topology(name, full_width):
    full, reduced, width = full_width(name), small(name), FACTS[name]["small_width"]
    assert _topology(reduced) == _topology(full)
    assert n_params(reduced) < n_params(full) * width / 2  # channels scale by width, most weights by width^2
    low, high = FACTS[name]["channels"]
    assert feature_channels(full) == {"low": low, "high": high}
    assert feature_channels(reduced)["high"] < high
    with pytest.raises(ValueError, match="width"):
        NETWORKS[name][0](width=0.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(64, 64), (97, 131), (5, 7), (50, 17)])
def test_logits_have_the_input_size(name, size):
    with torch.no_grad():
        logits = small(name)(torch.randn(2, 1, *size))
    assert logits.shape == (2, 2, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_feature_strides_and_channels(name):
    model = small(name)
    height, width = 97, 131
    multiple = model.spatial_multiple
    padded = (math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple)
    channels = feature_channels(model)
    with torch.no_grad():
        logits, features = model.forward_features(torch.randn(2, 1, height, width))
    assert logits.shape == (2, 2, height, width)
    assert set(features) == {"low", "high"}
    assert features["low"].shape == (2, channels["low"], padded[0] // 2, padded[1] // 2)
    stride = FACTS[name]["high_stride"]
    assert features["high"].shape == (2, channels["high"], padded[0] // stride, padded[1] // stride)


@pytest.mark.parametrize("name", NAMES)
def test_odd_input_equals_cropped_zero_padded_input(name):
    model = small(name)
    x = torch.randn(1, 1, 21, 30)
    multiple = model.spatial_multiple
    padded = torch.zeros(1, 1, math.ceil(21 / multiple) * multiple, math.ceil(30 / multiple) * multiple)
    padded[:, :, :21, :30] = x
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[:, :, :21, :30])


@pytest.mark.parametrize("name", NAMES)
def test_rejects_wrong_input_shape(name):
    model = small(name)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(1, 32, 32))


@pytest.mark.parametrize("name", NAMES)
def test_every_module_and_parameter_is_used(name):
    """No dead layers: every leaf module runs in forward and every parameter gets a gradient."""
    model = small(name, train=True)
    called = set()
    leaves = {path: module for path, module in model.named_modules() if len(list(module.children())) == 0}
    hooks = [module.register_forward_hook(lambda m, i, o, path=path: called.add(path)) for path, module in leaves.items()]
    model(torch.randn(2, 1, 32, 40)).square().mean().backward()
    for hook in hooks:
        hook.remove()
    assert set(leaves) - called == set()
    assert [path for path, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", NAMES)
def test_train_mode_batch_one(name):
    """Batch 1 in train mode works (DeepLabV3+: the image-pooling branch has no BatchNorm)."""
    y = small(name, train=True)(torch.randn(1, 1, 33, 40))
    assert y.shape == (1, 2, 33, 40)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_autocast_is_finite(name):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, features = small(name).forward_features(torch.randn(1, 1, 37, 45))
    assert logits.shape == (1, 2, 37, 45) and logits.dtype == torch.bfloat16
    for tensor in [logits, features["low"], features["high"]]:
        assert torch.isfinite(tensor.float()).all()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_eager_and_round_trips(name, tmp_path):
    model = small(name)
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


# ---------------------------------------------------------------- parameter counts from the definitions


@pytest.mark.parametrize("name, emkd_count", [("ENet", 353_761), ("ESPNet", 183_725)])
def test_three_channel_count_equals_the_emkd_code(name, emkd_count):
    # The EMKD code repeats the grey image into 3 channels before ENet / ESPNet; with in_channels=3 the
    # layers here have the same shapes, so the count must be the one of that code (counted by hand).
    assert n_params(NETWORKS[name][0](in_channels=3, out_channels=2)) == emkd_count


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


def test_teacher_counts_follow_from_their_definitions(full_width):
    assert n_params(full_width("NestedUNet")) == _nested_unet_params(1, 2)
    assert n_params(full_width("DeepLabV3Plus")) == _deeplabv3plus_params(1, 2)


# ---------------------------------------------------------------- student building blocks


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
    backbone = DeepLabV3Plus(width=FACTS["DeepLabV3Plus"]["small_width"]).backbone
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


def test_aspp_rates_beyond_the_map_are_1x1():
    """On a 12x12 map (the CPU profile's 96x96 input at output stride 8) rates 12/24/36 only ever read the centre tap:
    each atrous branch equals the same branch with its off-centre weights zeroed. Rates 3/6/9 read the neighbours."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 12, 12)
    for rates, centre_only in (((12, 24, 36), True), ((3, 6, 9), False)):
        aspp = ASPP(16, 8, rates).eval()
        with torch.no_grad():
            before = aspp(x)
            for branch in aspp.branch_atrous:
                conv = branch.conv
                mask = torch.zeros_like(conv.weight)
                mask[..., 1, 1] = 1
                conv.weight.mul_(mask)
            after = aspp(x)
        assert torch.equal(before, after) is centre_only, rates
