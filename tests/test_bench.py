import torch
from torch import nn

from tools.bench.flops import count_macs


def test_count_macs_exact_on_hand_computed_layers():
    network = nn.Sequential(
        nn.Conv2d(2, 4, kernel_size=3, padding=1),  # out 1x4x6x6: 144 outputs x 2*9 = 2592
        nn.Conv2d(4, 4, kernel_size=3, padding=1, groups=4),  # 144 outputs x 1*9 = 1296
        nn.ConvTranspose2d(4, 3, kernel_size=2, stride=2),  # 144 inputs x 3*4 = 1728
        nn.Flatten(),
        nn.Linear(3 * 12 * 12, 5),  # 5 x 432 = 2160
    )
    assert count_macs(network, torch.zeros(1, 2, 6, 6)) == 2592 + 1296 + 1728 + 2160


def test_count_macs_scales_with_batch_and_restores_mode():
    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    network.train()
    single = count_macs(network, torch.zeros(1, 1, 8, 8))
    assert count_macs(network, torch.zeros(3, 1, 8, 8)) == 3 * single == 3 * 36 * 2 * 9
    assert network.training
