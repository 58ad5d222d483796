import pytest
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


def test_student_speed_section(tmp_path):
    """The speed benchmark at a tiny size: every variant of ENet timed (EMKD's stand-in from a checkout-shaped folder),
    the int8 model made and run, and the section written into models.md without touching the rest."""
    pytest.importorskip("onnxruntime")
    from tools.bench.speed import SHIPPED, SPEED_SECTION, load_emkd_network, measure_student_speed, write_speed_section

    emkd = tmp_path / "EMKD" / "networks"
    emkd.mkdir(parents=True)
    (emkd / "ENet.py").write_text(
        "import torch\n\nclass ENet(torch.nn.Module):\n    def __init__(self, nclass):\n        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(1, nclass, 3, padding=1)\n\n    def forward(self, x):\n"
        "        return self.conv(x)\n"
    )
    assert isinstance(load_emkd_network("ENet", tmp_path / "EMKD"), torch.nn.Module)
    with pytest.raises(FileNotFoundError, match="ERFNet.py"):
        load_emkd_network("ERFNet", tmp_path / "EMKD")
    figures = measure_student_speed(["ENet"], size=32, threads=(1,), repeats=1, warmup=0, emkd_dir=tmp_path / "EMKD",
                                    work_dir=tmp_path / "work")
    variants = {f.variant for f in figures}
    assert variants == {"EMKD eager", "PyTorch eager", "ORT disabled", "ORT basic", "ORT all", SHIPPED, "ORT int8"}
    assert all(f.latency_ms > 0 and f.threads == 1 and f.size == 32 for f in figures)
    assert (tmp_path / "work" / "prostate_mri_enet_student" / "models" / "model_int8.onnx").is_file()

    models_md = tmp_path / "models.md"
    models_md.write_text("# Networks\n\n| table |\n\n## Inference of one volume, file to mask\n\nkept\n")
    write_speed_section(figures, models_md, tmp_path / "speed.csv", load_average=(1.0, 2.0, 3.0))
    write_speed_section(figures, models_md, tmp_path / "speed.csv")  # replaces its own section only
    text = models_md.read_text()
    assert text.startswith("# Networks\n\n| table |\n") and text.count(SPEED_SECTION) == 1
    assert text.rstrip().endswith("kept") and f"| ENet | **{SHIPPED}** |" in text and "vs EMKD t1" in text
