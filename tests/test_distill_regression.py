"""Regression test of issue 9: the default objective keeps a small student's masks clean where the paper's text
(``paper_literal``) degrades them, with AA as the only distillation module (Seg + lambda AA).

A width-0.25 ENet is optimised for 200 Adam steps (lr 1e-2) on one fixed batch of four 64 x 64 images, each a
small disc (5-7% foreground) blurred by a Gaussian of 3 px with noise 0.5, the teacher being the ground truth's
one-hot logits x 4. Measured here (seeds 0, 1, 2): flip rate 0.22 / 0.21 / 0.21 under the default (class-balanced
AA, lambda 0.09, the plain student's level: 0.23 at seed 0) against 0.32 / 0.47 / 0.37 under paper_literal
(pooled AA, lambda 0.9). About 70 s on one core: marked slow.
"""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss

from custom_losses import AdaptiveAffinityLoss, flip_rate
from custom_nets import ENet

SIZE = 64


def fixed_batch(n=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    kernel = torch.exp(-torch.arange(-6, 7).float() ** 2 / 18.0)
    kernel = kernel / kernel.sum()
    images, labels = [], []
    for _ in range(n):
        cy, cx = SIZE / 2 + torch.randn(2, generator=generator) * 2
        ry, rx = SIZE * 0.06 + torch.rand(2, generator=generator) * SIZE * 0.04
        label = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float()
        image = F.conv2d(label[None, None], kernel.view(1, 1, 1, -1), padding=(0, 6))
        image = F.conv2d(image, kernel.view(1, 1, -1, 1), padding=(6, 0))[0, 0]
        images.append(image + 0.5 * torch.randn(SIZE, SIZE, generator=generator))
        labels.append(label)
    return torch.stack(images)[:, None], torch.stack(labels)[:, None].long()


def optimise(balance: str, lambda_affinity: float, seed: int, steps: int = 200) -> float:
    torch.manual_seed(seed)
    image, label = fixed_batch()
    teacher = F.one_hot(label[:, 0], 2).permute(0, 3, 1, 2).float() * 4
    student = ENet(1, 2, width=0.25)
    affinity = AdaptiveAffinityLoss(balance=balance)
    seg = DiceFocalLoss(softmax=True, to_onehot_y=True)
    optimizer = torch.optim.Adam(list(student.parameters()) + list(affinity.parameters()), lr=1e-2)
    for _ in range(steps):
        logits = student(image)
        loss = seg(logits, label) + lambda_affinity * affinity(logits, teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return flip_rate(student(image).argmax(dim=1)).item()


@pytest.mark.slow
def test_default_affinity_keeps_masks_clean_where_the_paper_literal_one_degrades_them():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        default = optimise("class", 0.09, seed=1)
        literal = optimise("pooled", 0.9, seed=1)
    finally:
        torch.set_num_threads(threads)
    assert default < 0.27, f"default objective: flip rate {default:.3f}"
    assert literal > default + 0.08, f"paper_literal {literal:.3f} vs default {default:.3f}"
