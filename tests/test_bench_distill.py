"""The cost-of-distillation and inference benchmarks (tools/bench/distill.py, tools/bench/inference.py) at tiny sizes.

Nothing here asserts a speed: the tests check that the timed steps compute what the bundles compute, that the
parts partition the step, and that the inference benchmark writes a mask in the input's geometry.
"""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from custom_losses import EMKD_TERMS
from tools.bench.distill import (
    LOSS_PARTS,
    OBJECTIVE_CONFIGS,
    PART_NAMES,
    TERMS,
    StepSpec,
    build_setup,
    distill_step,
    distill_step_before,
    instrumented_distill_step,
    measure_distillation_cost,
    objective_options,
    peak_step_memory_mb,
    profile_spec,
    write_distill_tables,
)
from tools.bench.inference import (
    MODELS_SECTION,
    bundle_for_network,
    measure_inference,
    parse_network,
    run_bundle_inference,
    synthetic_volume,
    update_models_md,
    write_inference_table,
    write_random_weights,
)

TINY = dict(size=32, batch=2, student="ENet", teacher="DeepLabV3Plus", student_width=0.5, teacher_width=0.125)


@pytest.fixture(autouse=True)
def one_thread():
    """Single-threaded torch: on the shared 2-core machine, two threads make small ops erratically slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ distillation


def _gradients(setup) -> dict:
    return {name: p.grad.clone() for name, p in setup.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("objective", ["default", "emkd"])
def test_instrumented_step_computes_the_bundle_step(objective):
    """Cut at the student's outputs, the step gives the gradients of DistillationTrainer's joint backward, for the
    student, the KM adapter and the AA weights alike (EMKD: the student alone); learning rate 0 keeps both setups
    at the same weights."""
    spec = StepSpec(**TINY, learning_rate=0.0, objective=objective)
    real, cut = build_setup(spec, plain=False), build_setup(spec, plain=False)
    torch.manual_seed(1)  # the same dropout masks in both students
    distill_step(real)
    torch.manual_seed(1)
    seconds = instrumented_distill_step(cut)
    expected, got = _gradients(real), _gradients(cut)
    assert set(got) == set(expected)
    declared = tuple(cut.model.loss.weights)
    if objective == "default":
        assert declared == ("logits", "kernel", "affinity")
        assert any(name.startswith("loss.kernel_losses") for name in got) and "loss.affinity_loss.theta" in got
    else:
        assert declared == tuple(EMKD_TERMS) and not any(name.startswith("loss.") for name in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)

    assert set(seconds) == set(PART_NAMES) | {"total"}
    assert all(value >= 0 for value in seconds.values()), seconds
    assert sum(seconds[name] for name in PART_NAMES) == pytest.approx(seconds["total"], rel=1e-9)
    for term in ("seg", *declared):
        assert seconds[f"{term}_forward"] > 0 and seconds[f"{term}_backward"] > 0, term
    for term in set(TERMS) - {"seg", *declared}:  # terms that are off are never computed
        assert seconds[f"{term}_forward"] == 0.0, term
    assert seconds["teacher_forward"] > 0 and seconds["student_backward"] > 0


def test_objectives_are_the_bundles_configs():
    """Each objective is read from the student bundles' configs: distill.yaml's default, the paper's text, EMKD."""
    assert set(OBJECTIVE_CONFIGS) == {"default", "paper_literal", "emkd"}
    default, literal, emkd = (objective_options(name) for name in ("default", "paper_literal", "emkd"))
    assert default["terms"] == {"logits": 0.2, "kernel": 0.9, "affinity": 0.09}
    assert (default["kernel_reduction"], default["affinity_balance"]) == ("mean", "class")
    assert literal["terms"] == {"logits": 0.2, "kernel": 0.9, "affinity": 0.9}
    assert (literal["kernel_reduction"], literal["affinity_balance"]) == ("batchmean", "pooled")
    assert emkd["terms"] == dict(EMKD_TERMS) and emkd["kd_temperature"] == 4
    with pytest.raises(ValueError, match="unknown objective 'mskd'"):
        StepSpec(**TINY, objective="mskd")


def test_teacher_stays_frozen_and_in_eval_mode():
    setup = build_setup(StepSpec(**TINY), plain=False)
    before = {k: v.clone() for k, v in setup.teacher.state_dict().items()}
    distill_step(setup)
    instrumented_distill_step(setup)
    assert not setup.teacher.training
    assert all(not p.requires_grad and p.grad is None for p in setup.teacher.parameters())
    for key, value in setup.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics included


def test_measure_distillation_cost_structure():
    """Two repeats: each median is then the mean of two rounds, so the median shares, like each round's, sum to 1."""
    cost = measure_distillation_cost(StepSpec(**TINY), profile="tiny", repeats=2, warmup=0, memory=False)
    assert cost.plain_s > 0 and cost.distill_s > 0 and cost.ratio == pytest.approx(cost.distill_s / cost.plain_s)
    assert set(cost.shares) == set(PART_NAMES)
    assert all(0.0 <= share <= 1.0 for share in cost.shares.values()), cost.shares
    assert sum(cost.shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert cost.loss_share == pytest.approx(sum(cost.shares[p] for p in LOSS_PARTS), abs=1e-9)
    assert 0 < cost.loss_forward_share < cost.loss_share < 1
    assert cost.target_met == (cost.loss_share < 0.10)
    assert cost.threads == 1
    assert cost.distill_before_s > 0 and cost.ratio_before == pytest.approx(cost.distill_before_s / cost.plain_s)
    assert cost.teacher_before_s == pytest.approx(cost.distill_before_s - cost.distill_s + cost.part_s["teacher_forward"])


def test_the_frozen_teacher_gives_the_unfolded_teachers_step():
    """The bench's teacher is frozen as load_teacher freezes it (BN folded, channels-last); the step with the unfolded
    copy computes the same gradients within float rounding."""
    spec = StepSpec(**TINY, learning_rate=0.0)
    setup = build_setup(spec, plain=False, before=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in setup.teacher.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in setup.teacher_before.modules())
    torch.manual_seed(1)
    distill_step(setup)
    after = _gradients(setup)
    torch.manual_seed(1)
    distill_step_before(setup)
    before = _gradients(setup)
    assert after
    for name in after:
        torch.testing.assert_close(after[name], before[name], rtol=1e-3, atol=1e-5, msg=name)


def test_peak_memory_of_a_step_grows_with_the_batch():
    """The CPU measurement runs in a new process per step; 16 slices need more memory than 1."""
    small = peak_step_memory_mb(StepSpec(**{**TINY, "size": 96, "batch": 1}), "plain", threads=1)
    large = peak_step_memory_mb(StepSpec(**{**TINY, "size": 96, "batch": 16}), "plain", threads=1)
    assert 0 <= small["delta_mib"] < large["delta_mib"] < large["process_peak_mib"]
    with pytest.raises(ValueError, match="kind"):
        peak_step_memory_mb(StepSpec(**TINY), "train")


def test_profiles_and_spec_checks():
    paper, cpu = profile_spec("paper"), profile_spec("cpu", teacher_width=0.5)
    assert (paper.size, paper.batch, paper.teacher_width) == (384, 16, 1.0)
    assert (cpu.size, cpu.batch, cpu.teacher_width) == (96, 16, 0.5)
    with pytest.raises(ValueError, match="profile"):
        profile_spec("gpu")
    with pytest.raises(ValueError, match="UNet"):
        StepSpec(teacher="UNet")


def test_write_distill_tables(tmp_path):
    costs = [
        measure_distillation_cost(StepSpec(**TINY, objective=name), profile="tiny", repeats=1, warmup=0, memory=False)
        for name in ("default", "emkd")
    ]
    md_path, csv_path = write_distill_tables(costs, tmp_path, command="cmd", load_average=(1.0, 2.0, 3.0))
    rows = list(csv.DictReader(open(csv_path)))
    assert [(r["profile"], r["objective"]) for r in rows] == [("tiny", "default"), ("tiny", "emkd")]
    assert rows[0]["load_average_start"] == "1.00 2.00 3.00" and rows[1]["terms"] == " ".join(EMKD_TERMS)
    assert float(rows[0]["ratio"]) == pytest.approx(costs[0].ratio, rel=1e-3)
    text = md_path.read_text()
    assert "| tiny | default | 2x1x32x32 |" in text and "| tiny | emkd | 2x1x32x32 |" in text
    assert "| LM+KM+AA |" in text and "| KD+IMD+RAD |" in text and "- tiny, emkd: KD+IMD+RAD take" in text
    assert "1.00 / 2.00 / 3.00" in text and "`cmd`" in text
    assert "## The frozen teacher: before and after" in text and float(rows[0]["ratio_before"]) > 0


# ------------------------------------------------------------------------------------------------ inference


def test_synthetic_volume_is_a_simulated_case_stored_lps(tmp_path):
    from tools.data.synth import synthesize_case

    path = synthetic_volume(tmp_path / "v.nii.gz", size=32, slices=6)
    image = nib.load(str(path))
    assert image.shape == (32, 32, 6) and nib.aff2axcodes(image.affine) == ("L", "P", "S")
    case = synthesize_case("HCRUDB", 0, seed=0, size=32)
    data = np.asarray(image.dataobj)
    starts = [s for s in range(case.image.shape[2] - 5) if np.array_equal(data[::-1, ::-1, 0], case.image[:, :, s])]
    assert len(starts) == 1
    start = starts[0]
    np.testing.assert_array_equal(data[::-1, ::-1], case.image[:, :, start : start + 6])
    for voxel in ((0, 0, 0), (31, 5, 2), (7, 30, 5)):  # the same world position as the simulated voxel
        i, j, k = voxel
        # NIfTI stores the affine in float32: positions of ~100 mm agree to its precision (~1e-5 mm)
        np.testing.assert_allclose(image.affine @ [i, j, k, 1], case.affine @ [31 - i, 31 - j, start + k, 1], atol=1e-4)
    assert case.label[:, :, start : start + 6].any()
    with pytest.raises(ValueError, match="slices"):
        synthetic_volume(tmp_path / "w.nii.gz", size=32, slices=500)


def test_bundle_for_network():
    assert parse_network("ENet") == ("ENet", False, None) and parse_network("ENet:onnx@cpu") == ("ENet", True, "cpu")
    with pytest.raises(ValueError, match="runtime"):
        parse_network("ENet:tensorrt")
    assert bundle_for_network("ENet") == "prostate_mri_enet_student"
    assert bundle_for_network("DeepLabV3Plus") == "prostate_mri_deeplabv3plus_teacher"
    with pytest.raises(ValueError, match="UNet"):
        bundle_for_network("UNet")


def test_bundle_inference_writes_the_mask_in_the_input_geometry(tmp_path):
    """A 40x40x6 volume at image_size 32: resized for the network, the mask comes back at 40x40x6 with its affine."""
    volume = synthetic_volume(tmp_path / "in" / "case.nii.gz", size=40, slices=6)
    write_random_weights("prostate_mri_enet_student", tmp_path / "root")
    run = run_bundle_inference("prostate_mri_enet_student", volume, tmp_path / "root", tmp_path / "out", image_size=32)
    assert run.mask == tmp_path / "out" / "case_seg.nii.gz"
    mask, image = nib.load(str(run.mask)), nib.load(str(volume))
    assert mask.shape == image.shape == (40, 40, 6)
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    parts = (run.data_s, run.inference_s, run.postprocessing_s)
    assert all(p > 0 for p in parts)
    assert sum(parts) <= run.file_to_mask_s + 1e-6 and run.file_to_mask_s < run.bundle_s


def test_measure_inference_tables_and_models_section(tmp_path):
    figures = measure_inference(
        ["ENet:onnx", "ENet", "DeepLabV3Plus"], size=32, slices=6, repeats=1, warmup=0,
        widths={"DeepLabV3Plus": 0.125}, work_dir=tmp_path / "work",
    )
    onnx, student, teacher = figures
    assert (student.role, teacher.role, student.width, teacher.width) == ("student", "teacher", 1.0, 0.125)
    assert (onnx.runtime, student.runtime, onnx.network) == ("onnx", "torch", "ENet")
    assert student.volume_shape == (32, 32, 6) and student.threads == 1
    for figure in (onnx, student):
        assert list(figure.stages)[:2] == ["pre:LoadImaged", "check"] and list(figure.stages)[-2:] == [
            "post:SaveImaged", "post:MaskQualityReportd"]  # the mask, then its quality report beside it
        assert "inference" in figure.stages and all(v >= 0 for v in figure.stages.values())
    work = tmp_path / "work" / "prostate_mri_enet_student"
    assert (work / "models" / "model.onnx").is_file()
    torch_mask, onnx_mask = (nib.load(str(work / f"eval_{i}" / "volume_seg.nii.gz")) for i in (0, 1))
    assert torch_mask.shape == onnx_mask.shape == (32, 32, 6)

    md_path, csv_path = write_inference_table(figures, tmp_path, command="cmd")
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["network"] for r in rows] == ["ENet", "ENet", "DeepLabV3Plus"] and rows[0]["volume_shape"] == "32x32x6"
    assert [r["runtime"] for r in rows] == ["onnx", "torch", "torch"]
    text = md_path.read_text()
    assert "post:SaveImaged" in text and "ENet (width 1, ONNX Runtime, 32x32)" in text

    models_md = tmp_path / "models.md"
    models_md.write_text("# Networks\n\n| table |\n")
    update_models_md(models_md, figures)
    update_models_md(models_md, figures)  # replaces its section, never duplicates it
    text = models_md.read_text()
    assert text.startswith("# Networks\n\n| table |\n") and text.count(MODELS_SECTION) == 1
    assert "[inference.md](inference.md)" in text
