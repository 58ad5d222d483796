"""Tests of custom_losses: exact values on tiny inputs against explicit per-pixel loops, gradients,
numerical robustness, shape checks and resizing of teacher maps."""

import math
import textwrap

import pytest
import torch
import torch.nn.functional as F
import yaml
from monai.bundle import ConfigParser

from custom_losses import (
    DISTILLATION_TERMS,
    PAPER_TERMS,
    AdaptiveAffinityLoss,
    DistillationLoss,
    KernelMatrixLoss,
    LogitsKLLoss,
)

# ---------------------------------------------------------------------------------------------
# references written as explicit loops over pixels / pixel pairs / samples, on python floats


def softmax_list(values, temperature=1.0):
    scaled = [v / temperature for v in values]
    top = max(scaled)
    exps = [math.exp(v - top) for v in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def kl_list(p, q):
    return sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q) if pc > 0)


def pixel_probs(logits, b, y, x, temperature=1.0):
    return softmax_list([logits[b][c][y][x] for c in range(len(logits[b]))], temperature)


def reference_logits_kl(student, teacher, temperature=1.0, direction="student_teacher"):
    s, t = student.tolist(), teacher.tolist()
    batch, _, height, width = student.shape
    values = []
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                p_s = pixel_probs(s, b, y, x, temperature)
                p_t = pixel_probs(t, b, y, x, temperature)
                kl = kl_list(p_s, p_t) if direction == "student_teacher" else kl_list(p_t, p_s)
                values.append(kl * temperature**2)
    return sum(values) / len(values)


def reference_affinity_sizes(student, labels, sizes, margin=3.0, eps=1e-4):
    """[L_s for s in sizes] with every ordered pair (i, i + o), o in {-s,0,s}^2 \\ (0,0), visited by a loop."""
    s = student.tolist()
    lab = labels.tolist()
    batch, _, height, width = student.shape
    probs = [
        [[[max(p, eps) for p in pixel_probs(s, b, y, x)] for x in range(width)] for y in range(height)]
        for b in range(batch)
    ]
    result = []
    for size in sizes:
        pos, neg = [], []
        for b in range(batch):
            for y in range(height):
                for x in range(width):
                    for dy in (-size, 0, size):
                        for dx in (-size, 0, size):
                            if (dy, dx) == (0, 0):
                                continue
                            yj, xj = y + dy, x + dx
                            if not (0 <= yj < height and 0 <= xj < width):
                                continue
                            w = kl_list(probs[b][y][x], probs[b][yj][xj])
                            if lab[b][0][y][x] == lab[b][0][yj][xj]:
                                pos.append(w)
                            else:
                                neg.append(max(0.0, margin - w))
        result.append((sum(pos) / len(pos) if pos else 0.0) + (sum(neg) / len(neg) if neg else 0.0))
    return result


def reference_kernel(student_rows, teacher_rows, normalize):
    def prepare(rows):
        rows = [list(r) for r in rows]
        if normalize:
            rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in rows]
        return rows

    xs, xt = prepare(student_rows), prepare(teacher_rows)
    n = len(xs)
    total = 0.0
    for i in range(n):
        for j in range(n):
            k_s = sum(a * b for a, b in zip(xs[i], xs[j]))
            k_t = sum(a * b for a, b in zip(xt[i], xt[j]))
            total += (k_s - k_t) ** 2 + abs(k_s - k_t)
    return total / n


def identity_adapter(loss: KernelMatrixLoss) -> KernelMatrixLoss:
    with torch.no_grad():
        loss.adapter.weight.copy_(torch.eye(loss.teacher_channels, loss.student_channels)[:, :, None, None])
        loss.adapter.bias.zero_()
    return loss


def teacher_labels(teacher_logits):
    return teacher_logits.argmax(dim=1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# LogitsKLLoss (eq. 7)


def test_logits_kl_closed_form():
    # p_s = (1/2, 1/2), p_t = (1/4, 3/4) at every pixel of a 2x2 map
    student = torch.zeros(1, 2, 2, 2)
    teacher = torch.stack([torch.zeros(2, 2), torch.full((2, 2), math.log(3.0))])[None]
    expected_st = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    expected_ts = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert LogitsKLLoss()(student, teacher).item() == pytest.approx(expected_st, rel=1e-6)
    assert LogitsKLLoss(direction="teacher_student")(student, teacher).item() == pytest.approx(expected_ts, rel=1e-6)


@pytest.mark.parametrize("direction", ["student_teacher", "teacher_student"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_logits_kl_matches_pixel_loop(direction, temperature):
    torch.manual_seed(0)
    student = torch.randn(2, 3, 3, 3, dtype=torch.float64) * 2
    teacher = torch.randn(2, 3, 3, 3, dtype=torch.float64) * 2
    loss = LogitsKLLoss(temperature=temperature, direction=direction)(student, teacher)
    expected = reference_logits_kl(student, teacher, temperature, direction)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    per_pixel = LogitsKLLoss(temperature, direction, reduction="none")(student, teacher)
    assert per_pixel.shape == (2, 3, 3)
    summed = LogitsKLLoss(temperature, direction, reduction="sum")(student, teacher)
    assert summed.item() == pytest.approx(expected * 18, rel=1e-10)


def test_logits_kl_zero_for_equal_inputs():
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 5, 4) * 3
    for direction in ("student_teacher", "teacher_student"):
        assert LogitsKLLoss(2.0, direction)(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_logits_kl_teacher_gets_no_gradient():
    student = torch.randn(2, 2, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 2, 4, 4, requires_grad=True)
    LogitsKLLoss()(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_logits_kl_finite_for_saturated_and_low_precision(dtype):
    sign = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    student = (torch.stack([sign, -sign])[None] * 1e4).to(dtype).requires_grad_(True)
    teacher = (torch.stack([-sign, sign])[None] * 1e4).to(dtype)
    for direction in ("student_teacher", "teacher_student"):
        loss = LogitsKLLoss(direction=direction)(student, teacher)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() > 1e3  # the distributions are opposite
        assert torch.isfinite(student.grad).all()
        student.grad = None
    mild = torch.randn(2, 2, 4, 4).to(dtype)
    assert torch.isfinite(LogitsKLLoss()(mild, mild.flip(0)))


def test_logits_kl_shape_errors():
    loss = LogitsKLLoss()
    with pytest.raises(ValueError, match=r"batch sizes differ.*\(2, 2, 4, 4\).*\(3, 2, 4, 4\)"):
        loss(torch.zeros(2, 2, 4, 4), torch.zeros(3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"class counts differ.*\(2, 3, 4, 4\)"):
        loss(torch.zeros(2, 2, 4, 4), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*\(2, 4, 4\)"):
        loss(torch.zeros(2, 4, 4), torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError):
        LogitsKLLoss(temperature=0)
    with pytest.raises(ValueError):
        LogitsKLLoss(direction="both")


def test_logits_kl_resizes_teacher():
    torch.manual_seed(2)
    student = torch.randn(2, 2, 8, 8)
    # a teacher that is constant per image and class stays that constant under any resize
    constant = torch.randn(2, 2, 1, 1)
    small, full = constant.expand(2, 2, 4, 4), constant.expand(2, 2, 8, 8)
    assert LogitsKLLoss()(student, small).item() == pytest.approx(LogitsKLLoss()(student, full).item(), rel=1e-6)
    teacher = torch.randn(2, 2, 4, 4)
    upsampled = F.interpolate(teacher, size=(8, 8), mode="bilinear", align_corners=False)
    assert LogitsKLLoss()(student, teacher).item() == pytest.approx(LogitsKLLoss()(student, upsampled).item())


# ---------------------------------------------------------------------------------------------
# AdaptiveAffinityLoss (eqs. 1-4)


def test_affinity_closed_form_2x2():
    # left column p = (1/2, 1/2) labelled 0, right column p = (1/4, 3/4) labelled 1
    student = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])[None]
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])[None]
    # 4 vertical ordered pairs in P+ (W = 0); 8 horizontal/diagonal ordered pairs in P-, half of each direction
    kl_left_right = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_right_left = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    expected = 0.0 + 3.0 - (kl_left_right + kl_right_left) / 2
    loss = AdaptiveAffinityLoss(margin=3.0, sizes=(1,), adaptive=False)(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 3, 3), (1, 2, 2, 2), (2, 2, 3, 4)])
def test_affinity_eqs_1_to_4_match_pair_loop(shape):
    torch.manual_seed(3)
    student = torch.randn(*shape, dtype=torch.float64) * 3
    student[0, 0, 0, 0] = -30.0  # a probability below eps: the clamp is exercised
    teacher = torch.randn(*shape, dtype=torch.float64)
    expected = reference_affinity_sizes(student, teacher_labels(teacher), sizes=(1,), margin=3.0)[0]
    loss = AdaptiveAffinityLoss(margin=3.0, sizes=(1,), adaptive=False)(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_affinity_several_sizes_uniform_and_initial_adaptive():
    torch.manual_seed(4)
    student = torch.randn(2, 3, 3, 3, dtype=torch.float64) * 2
    teacher = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    per_size = reference_affinity_sizes(student, teacher_labels(teacher), sizes=(1, 2, 3), margin=1.5)
    assert per_size[2] == 0.0  # no neighbour at distance 3 inside a 3x3 image
    fixed = AdaptiveAffinityLoss(margin=1.5, sizes=(1, 2, 3), adaptive=False)
    learned = AdaptiveAffinityLoss(margin=1.5, sizes=(1, 2, 3), adaptive=True)
    assert fixed.size_losses(student, teacher_labels(teacher)).tolist() == pytest.approx(per_size, rel=1e-10)
    assert fixed(student, teacher).item() == pytest.approx(sum(per_size) / 3, rel=1e-10)
    # theta starts at zeros: the same uniform weights
    assert learned(student, teacher).item() == pytest.approx(sum(per_size) / 3, rel=1e-6)
    assert list(fixed.parameters()) == [] and fixed.theta is None


def test_affinity_empty_negative_set_and_uniform_student():
    torch.manual_seed(5)
    student = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    teacher = torch.zeros(1, 2, 3, 3)  # all labels 0: P- is empty
    expected = reference_affinity_sizes(student, teacher_labels(teacher), sizes=(1,))[0]
    loss = AdaptiveAffinityLoss(sizes=(1,), adaptive=False)(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-10) and expected > 0
    # equal probabilities everywhere: W = 0, so L = 0 on P+ and m on P-
    flat = torch.zeros(1, 2, 3, 3)
    checkerboard = (torch.arange(9).reshape(1, 3, 3) % 2).float()
    mixed = torch.stack([checkerboard, 1 - checkerboard], dim=1)
    assert AdaptiveAffinityLoss(margin=2.0, sizes=(1,), adaptive=False)(flat, mixed).item() == pytest.approx(2.0)
    assert AdaptiveAffinityLoss(margin=2.0, sizes=(1,), adaptive=False)(flat, teacher).item() == 0.0


def test_affinity_gradients_reach_student_and_theta_not_teacher():
    torch.manual_seed(6)
    student = torch.randn(2, 2, 6, 6, requires_grad=True)
    teacher = torch.randn(2, 2, 6, 6, requires_grad=True)
    loss_fn = AdaptiveAffinityLoss(sizes=(1, 2))
    loss_fn(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert loss_fn.theta.grad is not None and loss_fn.theta.grad.abs().sum() > 0
    assert teacher.grad is None


def test_affinity_gradient_matches_finite_differences():
    torch.manual_seed(7)
    student = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 2, (1, 1, 4, 4))
    loss_fn = AdaptiveAffinityLoss(margin=1.0, sizes=(1, 2), adaptive=False)
    assert torch.autograd.gradcheck(lambda x: loss_fn.forward_labels(x, labels), (student,))


def test_theta_moves_by_gradient_ascent_to_the_worst_size():
    torch.manual_seed(8)
    student = torch.randn(2, 2, 5, 5) * 2
    teacher = torch.randn(2, 2, 5, 5)
    loss_fn = AdaptiveAffinityLoss(margin=3.0, sizes=(1, 2))
    size_losses = loss_fn.size_losses(student, teacher_labels(teacher)).detach()
    assert abs(size_losses[0] - size_losses[1]) > 1e-3
    worst = int(size_losses.argmax())
    weights_before = loss_fn.size_weights()
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=1.0)
    optimizer.zero_grad()
    loss_fn(student, teacher).backward()
    optimizer.step()
    # d/dtheta_s of sum_k w_k L_k is w_s (L_s - sum_k w_k L_k); reversed, SGD adds it
    expected_theta = weights_before * (size_losses - (weights_before * size_losses).sum())
    assert loss_fn.theta.detach().tolist() == pytest.approx(expected_theta.tolist(), rel=1e-5)
    assert loss_fn.size_weights()[worst] > weights_before[worst]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_affinity_finite_for_saturated_and_low_precision(dtype):
    torch.manual_seed(9)
    sign = torch.randint(0, 2, (2, 1, 6, 6)).float() * 2 - 1
    student = (torch.cat([sign, -sign], dim=1) * 1e4).to(dtype).requires_grad_(True)
    teacher = (torch.cat([-sign, sign], dim=1) * 1e4).to(dtype)
    loss = AdaptiveAffinityLoss()(student, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    mild = torch.randn(2, 2, 6, 6).to(dtype)
    assert torch.isfinite(AdaptiveAffinityLoss()(mild, mild.flip(0)))


def test_affinity_shape_errors():
    loss = AdaptiveAffinityLoss()
    with pytest.raises(ValueError, match=r"batch sizes differ.*\(2, 2, 4, 4\).*\(1, 2, 4, 4\)"):
        loss(torch.zeros(2, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"class counts differ"):
        loss(torch.zeros(2, 2, 4, 4), torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match=r"labels must have shape \(B, 1, H, W\).*\(2, 2, 4, 4\)"):
        loss.forward_labels(torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 1, 4, 4\).*got \(2, 1, 2, 2\)"):
        loss.size_losses(torch.zeros(2, 2, 4, 4), torch.zeros(2, 1, 2, 2, dtype=torch.long))
    for bad in ((), (0, 1), (1, 1)):
        with pytest.raises(ValueError, match="sizes"):
            AdaptiveAffinityLoss(sizes=bad)


def test_affinity_resizes_teacher_logits_and_labels():
    torch.manual_seed(10)
    student = torch.randn(2, 2, 8, 8)
    loss_fn = AdaptiveAffinityLoss(sizes=(1, 2), adaptive=False)
    teacher = torch.randn(2, 2, 4, 4)
    upsampled = F.interpolate(teacher, size=(8, 8), mode="bilinear", align_corners=False)
    assert loss_fn(student, teacher).item() == pytest.approx(loss_fn(student, upsampled).item())
    labels = torch.randint(0, 2, (2, 1, 4, 4))
    blocks = labels.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2, by hand
    expected = sum(reference_affinity_sizes(student.double(), blocks, sizes=(1, 2))) / 2
    assert loss_fn.forward_labels(student, labels).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# KernelMatrixLoss (eqs. 5-6)


def test_kernel_closed_form():
    loss_fn = identity_adapter(KernelMatrixLoss(1, 1, normalize=True))
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).reshape(2, 1, 1, 2)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).reshape(2, 1, 1, 2)
    # normalised: K_S = [[1, 1], [1, 1]], K_T = I -> (2 + 2) / 2
    assert loss_fn(student, teacher).item() == pytest.approx(2.0)
    # raw (eq. 5 as written): K_S = [[1, 1], [1, 1]], K_T = [[1, 0], [0, 4]] -> (1 + 1 + 9 + 1 + 1 + 3) / 2
    loss_fn.normalize = False
    assert loss_fn(student, teacher).item() == pytest.approx(8.0)


@pytest.mark.parametrize("normalize", [True, False])
def test_kernel_matches_sample_loop(normalize):
    torch.manual_seed(11)
    loss_fn = KernelMatrixLoss(3, 2, normalize=normalize).double()
    student = torch.randn(3, 3, 2, 2, dtype=torch.float64)
    teacher = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    weight = loss_fn.adapter.weight[:, :, 0, 0].tolist()
    bias = loss_fn.adapter.bias.tolist()
    rows = []
    for i in range(3):  # 1x1 convolution by hand, flattened in (channel, y, x) order
        rows.append(
            [
                sum(weight[o][c] * student[i, c, y, x].item() for c in range(3)) + bias[o]
                for o in range(2)
                for y in range(2)
                for x in range(2)
            ]
        )
    expected = reference_kernel(rows, teacher.reshape(3, -1).tolist(), normalize)
    assert loss_fn(student, teacher).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("normalize", [True, False])
def test_kernel_zero_for_equal_features_with_identity_adapter(normalize):
    torch.manual_seed(12)
    loss_fn = identity_adapter(KernelMatrixLoss(4, 4, normalize=normalize))
    features = torch.randn(3, 4, 5, 5)
    assert loss_fn(features, features.clone()).item() == pytest.approx(0.0, abs=1e-5)


def test_kernel_single_sample_is_zero_and_connected():
    loss_fn = KernelMatrixLoss(2, 3, normalize=False)
    student = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = loss_fn(student, torch.randn(1, 3, 2, 2) * 10)
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad is not None


def test_kernel_gradients_reach_student_and_adapter_not_teacher():
    torch.manual_seed(13)
    loss_fn = KernelMatrixLoss(2, 3)
    student = torch.randn(3, 2, 4, 4, requires_grad=True)
    teacher = torch.randn(3, 3, 2, 2, requires_grad=True)
    loss_fn(student, teacher).backward()
    assert student.grad.abs().sum() > 0
    assert loss_fn.adapter.weight.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize("student_size,teacher_size", [(8, 4), (4, 8), (6, 6)])
def test_kernel_resizes_to_teacher_after_adapter(student_size, teacher_size):
    torch.manual_seed(14)
    loss_fn = KernelMatrixLoss(3, 5).double()
    student = torch.randn(4, 3, student_size, student_size, dtype=torch.float64)
    teacher = torch.randn(4, 5, teacher_size, teacher_size, dtype=torch.float64)
    # the order the contract states: adapter, then bilinear resize
    adapted = F.interpolate(loss_fn.adapter(student), size=(teacher_size,) * 2, mode="bilinear", align_corners=False)
    expected = reference_kernel(adapted.reshape(4, -1).tolist(), teacher.reshape(4, -1).tolist(), normalize=True)
    assert loss_fn(student, teacher).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_finite_for_low_precision(dtype):
    torch.manual_seed(15)
    student = (torch.randn(3, 4, 6, 6) * 100).to(dtype).requires_grad_(True)
    teacher = (torch.randn(3, 8, 3, 3) * 100).to(dtype)
    raw = KernelMatrixLoss(4, 8, normalize=False)(student, teacher)  # ~1e11: beyond float16, kept in float32
    assert raw.dtype == torch.float32 and torch.isfinite(raw)
    loss = KernelMatrixLoss(4, 8, normalize=True)(student, teacher)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(student.grad.float()).all()


def test_kernel_shape_errors():
    loss_fn = KernelMatrixLoss(4, 8)
    with pytest.raises(ValueError, match=r"batch sizes differ.*\(2, 4, 4, 4\).*\(3, 8, 2, 2\)"):
        loss_fn(torch.zeros(2, 4, 4, 4), torch.zeros(3, 8, 2, 2))
    with pytest.raises(ValueError, match=r"student_feature has shape \(2, 5, 4, 4\), expected 4 channels"):
        loss_fn(torch.zeros(2, 5, 4, 4), torch.zeros(2, 8, 2, 2))
    with pytest.raises(ValueError, match=r"teacher_feature has shape \(2, 7, 2, 2\), expected 8 channels"):
        loss_fn(torch.zeros(2, 4, 4, 4), torch.zeros(2, 7, 2, 2))


# ---------------------------------------------------------------------------------------------
# DistillationLoss (the weighted distillation terms of eq. 8; Seg is the trainer's, tests/test_engines.py)


def make_batch(seed=16, batch=2, classes=2, size=8):
    generator = torch.Generator().manual_seed(seed)
    student_logits = torch.randn(batch, classes, size, size, generator=generator, requires_grad=True)
    student_features = {
        "low": torch.randn(batch, 3, size // 2, size // 2, generator=generator, requires_grad=True),
        "high": torch.randn(batch, 4, size // 4, size // 4, generator=generator, requires_grad=True),
    }
    teacher_logits = torch.randn(batch, classes, size, size, generator=generator, requires_grad=True)
    teacher_features = {
        "low": torch.randn(batch, 5, size // 2, size // 2, generator=generator, requires_grad=True),
        "high": torch.randn(batch, 6, size // 8, size // 8, generator=generator, requires_grad=True),
    }
    return student_logits, student_features, teacher_logits, teacher_features


CHANNELS = {"student_channels": {"low": 3, "high": 4}, "teacher_channels": {"low": 5, "high": 6}}


def test_distillation_total_is_the_weighted_sum_of_the_terms():
    batch = make_batch()
    student_logits, student_features, teacher_logits, teacher_features = batch
    loss_fn = DistillationLoss(**CHANNELS)  # the paper's weights
    assert loss_fn.weights == dict(PAPER_TERMS) == {"logits": 0.2, "kernel": 0.9, "affinity": 0.9}
    terms = loss_fn.forward_terms(*batch)
    assert set(terms) == {*DISTILLATION_TERMS, "total"}
    kernel = loss_fn.kernel_losses["high__high"]
    expected = {
        "logits": LogitsKLLoss()(student_logits, teacher_logits),
        "kernel": kernel(student_features["high"], teacher_features["high"]),
        "affinity": AdaptiveAffinityLoss(adaptive=False)(student_logits, teacher_logits),  # theta = 0: uniform
    }
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-6), name
    total = 0.2 * expected["logits"] + 0.9 * expected["kernel"] + 0.9 * expected["affinity"]
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-6)
    assert loss_fn(*batch).item() == pytest.approx(total.item(), rel=1e-6)
    weighted = DistillationLoss(terms={"affinity": 0.5, "logits": 2.0}).forward_terms(*batch)
    assert weighted["total"].item() == pytest.approx((2.0 * expected["logits"] + 0.5 * expected["affinity"]).item())


def test_distillation_trains_student_adapters_and_theta_never_the_teacher():
    student_logits, student_features, teacher_logits, teacher_features = make_batch()
    loss_fn = DistillationLoss(kernel_pairs=[("low", "low"), ("high", "high")], **CHANNELS)
    names = {name for name, _ in loss_fn.named_parameters()}
    assert names == {
        "affinity_loss.theta",
        "kernel_losses.low__low.adapter.weight",
        "kernel_losses.low__low.adapter.bias",
        "kernel_losses.high__high.adapter.weight",
        "kernel_losses.high__high.adapter.bias",
    }
    loss_fn(student_logits, student_features, teacher_logits, teacher_features).backward()
    assert student_logits.grad.abs().sum() > 0
    assert all(f.grad.abs().sum() > 0 for f in student_features.values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss_fn.parameters())
    assert teacher_logits.grad is None and all(f.grad is None for f in teacher_features.values())


def test_distillation_kernel_pairs_are_averaged():
    batch = make_batch()
    _, student_features, _, teacher_features = batch
    loss_fn = DistillationLoss(kernel_pairs=[["low", "low"], ["high", "high"]], **CHANNELS)
    low = loss_fn.kernel_losses["low__low"](student_features["low"], teacher_features["low"])
    high = loss_fn.kernel_losses["high__high"](student_features["high"], teacher_features["high"])
    assert loss_fn.forward_terms(*batch)["kernel"].item() == pytest.approx((low + high).item() / 2, rel=1e-6)


def test_distillation_absent_terms_are_not_built_or_computed():
    student_logits, student_features, teacher_logits, teacher_features = make_batch()
    no_kernel = DistillationLoss(terms={"logits": 0.2, "affinity": 0.9})
    assert len(no_kernel.kernel_losses) == 0 and no_kernel.needs_teacher
    terms = no_kernel.forward_terms(student_logits, None, teacher_logits, None)  # features never read
    assert terms["kernel"].item() == 0.0 and terms["affinity"].item() > 0
    baseline = DistillationLoss(terms={})
    assert list(baseline.parameters()) == [] and not baseline.needs_teacher
    terms = baseline.forward_terms(student_logits, None, None, None)  # the "w/o" run: no teacher at all
    assert terms["total"].item() == terms["logits"].item() == terms["kernel"].item() == terms["affinity"].item() == 0.0
    only_kernel = DistillationLoss(terms={"kernel": 0.9}, **CHANNELS)
    assert only_kernel.logits_loss is None and only_kernel.affinity_loss is None
    only_kernel.forward_terms(student_logits, student_features, None, teacher_features)
    monitored = DistillationLoss(terms={"affinity": 0})  # weight 0: computed and reported, does not train
    terms = monitored.forward_terms(student_logits, None, teacher_logits, None)
    assert terms["affinity"].item() > 0 and terms["total"].item() == 0.0


def test_distillation_configuration_errors():
    with pytest.raises(ValueError, match=r"unknown distillation term 'seg' in terms; expected some of \['logits', "):
        DistillationLoss(terms={"seg": 1.0})
    with pytest.raises(ValueError, match=r"terms\['kernel'\] must be >= 0, got -1.0"):
        DistillationLoss(terms={"kernel": -1.0}, **CHANNELS)
    with pytest.raises(ValueError, match=r"terms\['logits'\] must be a number, got 'high'"):
        DistillationLoss(terms={"logits": "high"})
    with pytest.raises(TypeError, match="terms must be a mapping"):
        DistillationLoss(terms=["logits", "kernel"])
    with pytest.raises(ValueError, match=r"student_channels has no entry for feature key 'high'"):
        DistillationLoss(student_channels={"low": 3}, teacher_channels={"high": 6})
    with pytest.raises(ValueError, match="kernel pair"):
        DistillationLoss(kernel_pairs=["high"], **CHANNELS)
    student_logits, student_features, teacher_logits, teacher_features = make_batch()
    loss_fn = DistillationLoss(**CHANNELS)
    with pytest.raises(ValueError, match=r"teacher_features has no feature 'high'"):
        loss_fn(student_logits, student_features, teacher_logits, {"low": teacher_features["low"]})
    with pytest.raises(ValueError, match="class counts differ"):
        loss_fn(student_logits, student_features, teacher_logits[:, :1], teacher_features)
    with pytest.raises(ValueError, match="teacher_logits is None"):
        loss_fn(student_logits, student_features, None, teacher_features)


def test_distillation_from_bundle_yaml():
    config = yaml.safe_load(
        textwrap.dedent(
            """
            loss:
              _target_: custom_losses.DistillationLoss
              terms: {logits: 0.2, kernel: 0.9, affinity: 0.9}
              kernel_pairs: [[low, low], [high, high]]
              student_channels: {low: 3, high: 4}
              teacher_channels: {low: 5, high: 6}
              affinity_sizes: [1, 2]
            """
        )
    )
    parser = ConfigParser(config)
    loss_fn = parser.get_parsed_content("loss")
    assert isinstance(loss_fn, DistillationLoss)
    assert loss_fn.weights == {"logits": 0.2, "kernel": 0.9, "affinity": 0.9}
    assert loss_fn.kernel_pairs == (("low", "low"), ("high", "high"))
    assert loss_fn.affinity_loss.sizes == (1, 2)
    assert torch.isfinite(loss_fn(*make_batch()))


def test_distillation_finite_for_half_precision_inputs():
    student_logits, student_features, teacher_logits, teacher_features = make_batch()
    half = {k: v.detach().half() for k, v in student_features.items()}
    teacher_half = {k: v.detach().bfloat16() for k, v in teacher_features.items()}
    terms = DistillationLoss(**CHANNELS).forward_terms(
        student_logits.detach().half(), half, teacher_logits.detach().bfloat16(), teacher_half
    )
    assert all(torch.isfinite(value) for value in terms.values())


# ---------------------------------------------------------------------------------------------
# departures from the paper's text (docs/distillation.md): KM reduction, class-balanced AA, AA stride


def test_kernel_reductions_differ_by_n():
    torch.manual_seed(30)
    student = torch.randn(4, 3, 4, 4)
    teacher = torch.randn(4, 5, 2, 2)
    values = {}
    for reduction in ("batchmean", "mean", "sum"):
        loss_fn = KernelMatrixLoss(3, 5, reduction=reduction)
        torch.manual_seed(31)
        loss_fn.adapter.reset_parameters()
        values[reduction] = loss_fn(student, teacher).item()
    assert values["batchmean"] == pytest.approx(values["sum"] / 4, rel=1e-6)
    assert values["mean"] == pytest.approx(values["sum"] / 16, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        KernelMatrixLoss(3, 5, reduction="none")


def test_kernel_mean_is_free_of_the_batch_size():
    # the same sample pair repeated: every entry of K_S - K_T repeats, so the per-entry mean stays put
    loss_fn = identity_adapter(KernelMatrixLoss(1, 1, reduction="mean"))
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).reshape(2, 1, 1, 2)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).reshape(2, 1, 1, 2)
    small = loss_fn(student, teacher).item()
    large = loss_fn(student.repeat(8, 1, 1, 1), teacher.repeat(8, 1, 1, 1)).item()
    assert small == pytest.approx(1.0) and large == pytest.approx(small)  # (2 + 2) / 4
    loss_fn.reduction = "batchmean"
    assert loss_fn(student.repeat(8, 1, 1, 1), teacher.repeat(8, 1, 1, 1)).item() == pytest.approx(8 * 2.0)


def reference_affinity_class_balanced(student, labels, size, margin=3.0, eps=1e-4):
    """L_s with P+ split by class: mean over the classes present of the per-class mean W."""
    s, lab = student.tolist(), labels.tolist()
    batch, classes, height, width = student.shape
    probs = [
        [[[max(p, eps) for p in pixel_probs(s, b, y, x)] for x in range(width)] for y in range(height)]
        for b in range(batch)
    ]
    pos, neg = {}, []
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for dy in (-size, 0, size):
                    for dx in (-size, 0, size):
                        yj, xj = y + dy, x + dx
                        if (dy, dx) == (0, 0) or not (0 <= yj < height and 0 <= xj < width):
                            continue
                        w = kl_list(probs[b][y][x], probs[b][yj][xj])
                        if lab[b][0][y][x] == lab[b][0][yj][xj]:
                            pos.setdefault(lab[b][0][y][x], []).append(w)
                        else:
                            neg.append(max(0.0, margin - w))
    pos_term = sum(sum(v) / len(v) for v in pos.values()) / len(pos) if pos else 0.0
    return pos_term + (sum(neg) / len(neg) if neg else 0.0)


@pytest.mark.parametrize("shape", [(2, 2, 4, 4), (1, 3, 3, 5)])
def test_affinity_class_balance_matches_pair_loop(shape):
    torch.manual_seed(32)
    student = torch.randn(*shape, dtype=torch.float64) * 2
    teacher = torch.randn(*shape, dtype=torch.float64)
    for size in (1, 2):
        expected = reference_affinity_class_balanced(student, teacher_labels(teacher), size, margin=2.0)
        loss = AdaptiveAffinityLoss(margin=2.0, sizes=(size,), adaptive=False, balance="class")(student, teacher)
        assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_affinity_class_balance_prices_a_checkerboard_inside_a_small_foreground():
    """The audit's degenerate minimum on a 48x48 map with a disc of diameter 12 (5% foreground): under eq. 1
    (pooled P+) a saturated checkerboard inside the disc scores below a smooth mask (the disc blurred with a
    Gaussian of 2 px, like a teacher's soft output); with class-balanced P+ it scores far above it."""
    n = 48
    yy, xx = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
    labels = (((yy - n / 2) ** 2 + (xx - n / 2) ** 2) <= 36).long()[None, None]
    kernel = torch.exp(-torch.arange(-5, 6).float() ** 2 / 8.0)
    kernel = kernel / kernel.sum()
    smooth = F.conv2d(labels.float(), kernel.view(1, 1, 1, -1), padding=(0, 5))
    smooth = 6.0 * (F.conv2d(smooth, kernel.view(1, 1, -1, 1), padding=(5, 0)) - 0.5)
    parity = ((torch.arange(n)[:, None] + torch.arange(n)[None, :]) % 2 == 0)[None, None]
    board = torch.where(labels.bool(), torch.where(parity, 9.0, -9.0), smooth)
    logits = {name: torch.cat([-z, z], dim=1) for name, z in (("smooth", smooth), ("board", board))}
    pooled = AdaptiveAffinityLoss(sizes=(1, 2, 3), adaptive=False)
    balanced = AdaptiveAffinityLoss(sizes=(1, 2, 3), adaptive=False, balance="class")
    assert pooled.forward_labels(logits["board"], labels) < pooled.forward_labels(logits["smooth"], labels) - 0.3
    assert balanced.forward_labels(logits["board"], labels) > balanced.forward_labels(logits["smooth"], labels) + 0.5


def test_affinity_stride_pools_the_student_logits():
    torch.manual_seed(33)
    student = torch.randn(2, 2, 8, 8)
    labels = torch.randint(0, 2, (2, 1, 4, 4))
    strided = AdaptiveAffinityLoss(sizes=(1,), adaptive=False, stride=2)
    full = AdaptiveAffinityLoss(sizes=(1,), adaptive=False)
    pooled = F.avg_pool2d(student, 2)
    assert strided.forward_labels(student, labels).item() == pytest.approx(full.forward_labels(pooled, labels).item())
    teacher = torch.randn(2, 2, 8, 8)
    teacher_small = F.interpolate(teacher, size=(4, 4), mode="bilinear", align_corners=False)
    assert strided(student, teacher).item() == pytest.approx(full(pooled, teacher_small).item(), rel=1e-6)
    for bad in (dict(balance="edge"), dict(stride=0)):
        with pytest.raises(ValueError):
            AdaptiveAffinityLoss(**bad)


def test_distillation_passes_the_new_options_and_weights():
    loss_fn = DistillationLoss(kernel_reduction="mean", affinity_balance="class", affinity_stride=2, **CHANNELS)
    assert loss_fn.kernel_losses["high__high"].reduction == "mean"
    assert loss_fn.affinity_loss.balance == "class" and loss_fn.affinity_loss.stride == 2
    assert loss_fn.weights == {"logits": 0.2, "kernel": 0.9, "affinity": 0.9}
    assert DistillationLoss(terms={"affinity": 0.09, "logits": 0.2}).weights == {"logits": 0.2, "affinity": 0.09}
    assert torch.isfinite(loss_fn(*make_batch()))
