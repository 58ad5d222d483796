"""GIN-IPA (tools.data.gin_ipa): exact values on tiny inputs, invariances, the training chain's key."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from tools.data.gin_ipa import GinLayer, RandGinIpad, blend_mask, gin, ipa_blend
from tools.data.transforms import training_random_transforms


def _layer(weight, bias):
    return GinLayer(torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32))


def test_gin_one_pointwise_layer_exact_values():
    image = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]])
    layer = _layer([[[[2.0]]]], [1.0])  # g(x) = 2x + 1, the last layer: no activation
    out = gin(image, [layer], alpha=1.0)
    raw = torch.tensor([[[3.0, 5.0], [1.0, -1.0]]])
    expected = raw * torch.linalg.vector_norm(image) / torch.linalg.vector_norm(raw)
    assert torch.allclose(out, expected, atol=1e-6)
    half = gin(image, [layer], alpha=0.5)
    mixed = 0.5 * raw + 0.5 * image
    assert torch.allclose(half, mixed * torch.linalg.vector_norm(image) / torch.linalg.vector_norm(mixed), atol=1e-6)


def test_gin_alpha_zero_is_the_identity_and_the_norm_is_kept():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 16, 16, generator=generator)
    layers = [_layer(torch.randn(2, 1, 3, 3, generator=generator), torch.randn(2, generator=generator)),
              _layer(torch.randn(1, 2, 1, 1, generator=generator), torch.randn(1, generator=generator))]
    assert torch.allclose(gin(image, layers, alpha=0.0), image, atol=1e-6)
    out = gin(image, layers, alpha=0.7)
    assert torch.isclose(torch.linalg.vector_norm(out), torch.linalg.vector_norm(image), rtol=1e-5)
    assert not torch.allclose(out, image)


def test_gin_leaky_relu_between_layers():
    image = torch.tensor([[[1.0, -1.0]]])
    first, last = _layer([[[[1.0]]]], [0.0]), _layer([[[[1.0]]]], [0.0])
    out = gin(image, [first, last], alpha=1.0)  # leaky(x) = (1, -0.01), rescaled to ||x|| = sqrt(2)
    raw = torch.tensor([[[1.0, -0.01]]])
    assert torch.allclose(out, raw * (2 ** 0.5) / torch.linalg.vector_norm(raw), atol=1e-6)


def test_gin_of_1x1_kernels_is_a_function_of_the_intensity_alone():
    """With 1x1 kernels only, GIN maps equal intensities to equal intensities: the geometry is kept exactly."""
    image = torch.zeros(1, 12, 12)
    image[0, 3:9, 3:9] = 1.0
    image[0, 5:7, 5:7] = 2.0
    transform = RandGinIpad(keys="image", prob=1.0, kernel_sizes=(1,), mask_cells=0)
    transform.set_random_state(3)
    out = transform({"image": image})["image"][0]
    for level in (0.0, 1.0, 2.0):
        values = out[image[0] == level]
        assert torch.allclose(values, values[0].expand_as(values), atol=1e-6)


def test_blend_mask_is_smooth_and_spans_zero_to_one():
    field = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    mask = blend_mask(field, (32, 32))
    assert mask.shape == (1, 32, 32)
    assert float(mask.min()) == pytest.approx(0.0) and float(mask.max()) == pytest.approx(1.0)
    assert float(mask[0, :, 1:].sub(mask[0, :, :-1]).abs().max()) < 0.2  # no jump between neighbours
    assert torch.equal(blend_mask(torch.zeros(3, 3), (4, 4)), torch.full((1, 4, 4), 0.5))


def test_ipa_blend_exact_and_shape_checks():
    first, second = torch.ones(1, 2, 2), torch.zeros(1, 2, 2)
    mask = torch.tensor([[[0.25, 1.0], [0.0, 0.5]]])
    assert torch.equal(ipa_blend(first, second, mask), mask)
    with pytest.raises(ValueError, match="do not match"):
        ipa_blend(first, torch.zeros(1, 3, 2), mask)


def test_rand_gin_ipa_changes_the_image_only_and_is_repeatable():
    generator = torch.Generator().manual_seed(1)
    image = MetaTensor(torch.randn(1, 24, 24, generator=generator))
    label = torch.zeros(1, 24, 24)
    label[0, 8:16, 8:16] = 1
    runs = []
    for seed in (5, 5, 6):
        transform = RandGinIpad(keys="image", prob=1.0)
        transform.set_random_state(seed)
        runs.append(transform({"image": image.clone(), "label": label.clone()}))
    assert torch.equal(runs[0]["image"], runs[1]["image"])
    assert not torch.allclose(runs[0]["image"], runs[2]["image"])
    assert not torch.allclose(runs[0]["image"], image)
    assert isinstance(runs[0]["image"], MetaTensor) and runs[0]["image"].dtype == torch.float32
    assert torch.equal(runs[0]["label"], label)
    assert torch.isfinite(runs[0]["image"]).all()


def test_rand_gin_ipa_probability_zero_is_the_identity():
    image = torch.randn(1, 8, 8)
    transform = RandGinIpad(keys="image", prob=0.0)
    assert torch.equal(transform({"image": image})["image"], image)


@pytest.mark.parametrize("kwargs, message", [
    ({"prob": 1.5}, "prob"),
    ({"layers": 1}, "layers >= 2"),
    ({"kernel_sizes": (2,)}, "odd"),
    ({"mask_cells": -1}, "mask_cells"),
])
def test_rand_gin_ipa_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandGinIpad(keys="image", **kwargs)


def test_rand_gin_ipa_refuses_a_3d_volume():
    transform = RandGinIpad(keys="image", prob=1.0)
    with pytest.raises(ValueError, match=r"2D images \(C, H, W\)"):
        transform({"image": torch.zeros(1, 4, 4, 4)})


def test_training_chain_adds_gin_ipa_only_when_asked():
    names = lambda chain: [type(t).__name__ for t in chain.transforms]  # noqa: E731
    assert "RandGinIpad" not in names(training_random_transforms())
    assert names(training_random_transforms(gin_ipa_prob=0.5))[-2] == "RandGinIpad"
    volume = {"image": MetaTensor(torch.from_numpy(np.random.default_rng(0).normal(size=(1, 16, 16, 6))).float()),
              "label": MetaTensor(torch.zeros(1, 16, 16, 6))}
    volume["label"][0, 5:10, 5:10, 2:4] = 1
    chain = training_random_transforms(num_samples=2, gin_ipa_prob=1.0, augment=False)
    chain.set_random_state(0)
    samples = chain(volume)
    assert len(samples) == 2 and all(s["image"].shape == (1, 16, 16) for s in samples)
