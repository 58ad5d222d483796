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


def test_quantization_rule_and_table(tmp_path):
    from tools.bench.quantization import QuantizationResult, write_quantization_table

    kept = QuantizationResult("a", "b", "BIDMC", 96, 6, 64, 0.60, 0.60, 0.595, 0.01)
    lost = QuantizationResult("c", "b", "BIDMC", 96, 6, 64, 0.60, 0.60, 0.58, 0.01)
    assert kept.keep_int8 and not lost.keep_int8 and lost.drop == pytest.approx(0.02)
    text = write_quantization_table([kept, lost], tmp_path, command="cmd", notes=["a note"]).read_text()
    assert "| a | b | BIDMC | 6 | 96 | 64 | 0.6000 | 0.6000 | 0.5950 | +0.0050 | within the rule |" in text
    assert "fails the rule" in text and "- a note" in text and (tmp_path / "quantization.csv").is_file()


def test_quantize_onnx_checks_the_calibration(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from custom_nets.quantization import quantize_onnx

    weight = numpy_helper.from_array(torch.randn(2, 1, 3, 3).numpy(), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [weight])
    model = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    with pytest.raises(ValueError, match=r"calibration slice of shape \[1, 1, 4, 4\], the model takes \[1, 1, 8, 8\]"):
        quantize_onnx(model, tmp_path / "q.onnx", [torch.zeros(1, 4, 4).numpy()])
    with pytest.raises(ValueError, match="no calibration slice"):
        quantize_onnx(model, tmp_path / "q.onnx", [])
    out = quantize_onnx(model, tmp_path / "q.onnx", [torch.randn(1, 8, 8).numpy() for _ in range(4)])
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(out).graph.node)
