"""The real case in the study (tools.study.real_case) and the TAPS peer (tools.peers.taps).

The study tests use fake run folders and a fake launcher that writes masks (no training, no inference); the last
test runs TAPS itself on ../shared/data/real_case and is skipped when lavlab-taps is not installed.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tools.peers import taps
from tools.study import real_case as study_real_case
from tools.study import runner as study_runner
from tools.study.__main__ import run as cli_run
from tools.study.plan import make_plan
from tools.study.real_case import case_dice, check_real_case, inference_command, write_real_case_table
from tools.study.runner import Outcome, Settings, run_dir


def shifted(mask: np.ndarray, voxels: int) -> np.ndarray:
    """``mask`` moved by ``voxels`` along x (zeros come in)."""
    out = np.zeros_like(mask)
    out[voxels:] = mask[: mask.shape[0] - voxels]
    return out


class MaskLauncher:
    """Fake launcher: a bundle inference writes ``<output_dir>/Case00_seg.nii.gz`` = the real mask shifted by
    ``shift[run folder name]`` voxels (missing: exit 1); the TAPS command writes the mask itself."""

    def __init__(self, case_dir: Path, shift: dict):
        self.case_dir, self.shift, self.calls = case_dir, shift, []

    def __call__(self, command, log_path, env):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("fake\n")
        label = nib.load(str(self.case_dir / "Case00_segmentation.nii.gz"))
        mask = np.asarray(label.dataobj).astype(np.uint8)
        if "tools.peers.taps" in command:
            self.calls.append(("taps", env.get("OMP_NUM_THREADS")))
            output = Path(command[command.index("tools.peers.taps") + 2])
            output.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(mask, label.affine), str(output))
            return 0
        folder = Path(command[command.index("--bundle_root") + 1])
        self.calls.append((folder.name, env.get("OMP_NUM_THREADS")))
        if folder.name not in self.shift:
            return 1
        out = Path(command[command.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(shifted(mask, self.shift[folder.name]), label.affine), str(out / "Case00_seg.nii.gz"))
        return 0


def fake_models(plan, out_dir: Path, skip=()):
    for run in plan:
        if run.name in skip:
            continue
        (run_dir(run, out_dir) / "models").mkdir(parents=True, exist_ok=True)
        (run_dir(run, out_dir) / "models" / "model.pt").write_bytes(b"weights")


def expected_dice(case_dir: Path, voxels: int) -> float:
    mask = np.asarray(nib.load(str(case_dir / "Case00_segmentation.nii.gz")).dataobj) > 0
    moved = shifted(mask.astype(np.uint8), voxels) > 0
    return 2 * (mask & moved).sum() / (mask.sum() + moved.sum())


def test_inference_command_uses_the_bundles_inference_and_profile(tmp_path):
    settings = Settings(tmp_path / "study", tmp_path / "data", overrides={"image_size": 32, "in_plane_mode": "spacing"})
    teacher = make_plan()[0]
    command = inference_command(teacher, settings, Path("/x/Case00.nii.gz"), tmp_path / "o")
    assert command[1:4] == ["-m", "monai.bundle", "run"] and "training" not in command
    files = command[command.index("--config_file") + 1]
    assert files.endswith("prostate_mri_deeplabv3plus_teacher/configs/inference.yaml',"
                          f"'{settings.bundles_dir}/prostate_mri_deeplabv3plus_teacher/configs/profile_cpu.yaml']")
    assert command[command.index("--bundle_root") + 1] == str(run_dir(teacher, settings.out_dir))
    assert command[command.index("--input") + 1] == "/x/Case00.nii.gz"
    assert command[command.index("--in_plane_mode") + 1] == "spacing" and command[command.index("--image_size") + 1] == "32"
    paper = inference_command(teacher, Settings(tmp_path, tmp_path, profile="paper"), Path("/x.nii.gz"), tmp_path)
    assert "profile_cpu.yaml" not in paper[paper.index("--config_file") + 1]


def test_every_model_and_taps_on_the_real_case(real_case_dir, tmp_path, monkeypatch):
    plan = make_plan()  # teacher, ENet w/o, ENet w/
    settings = Settings(tmp_path / "study", tmp_path / "data", threads=1)
    fake_models(plan, settings.out_dir, skip=[plan[2].name])
    outcomes = [Outcome(plan[0], "done", run_dir(plan[0], settings.out_dir)),
                Outcome(plan[1], "done", run_dir(plan[1], settings.out_dir)),
                Outcome(plan[2], "failed", run_dir(plan[2], settings.out_dir), message="training failed")]
    monkeypatch.setattr(taps, "available", lambda: True)
    launcher = MaskLauncher(real_case_dir, {plan[0].name: 0, plan[1].name: 3})
    report = check_real_case(plan, outcomes, settings, case_dir=real_case_dir, launcher=launcher)
    assert [r.status for r in report.rows] == ["done", "done", "no model", "done"]
    assert report.rows[0].dice == pytest.approx(1.0) and report.rows[0].hd95 == pytest.approx(0.0)
    assert report.rows[1].dice == pytest.approx(expected_dice(real_case_dir, 3))
    assert "the run failed" in report.rows[2].message
    assert report.rows[3].model.startswith("TAPS") and report.rows[3].dice == pytest.approx(1.0)
    assert {threads for _, threads in launcher.calls} == {"1"}
    md = write_real_case_table(report, settings.out_dir).read_text()
    assert "a sanity check, not a benchmark" in md and "| ENet w/o | BIDMC held out, seed 0 | 0.895 |" in md
    assert "| peer | 1.000 |" in md
    with open(settings.out_dir / "real_case.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["done", "done", "no model", "done"]

    # a second call reuses the masks newer than the weights; retrained weights are run again
    launcher.calls.clear()
    check_real_case(plan, outcomes, settings, case_dir=real_case_dir, launcher=launcher)
    assert launcher.calls == []
    weights = run_dir(plan[1], settings.out_dir) / "models" / "model.pt"
    mask = run_dir(plan[1], settings.out_dir) / "real_case" / "Case00_seg.nii.gz"
    weights.touch()
    import os

    os.utime(mask, (weights.stat().st_mtime - 10, weights.stat().st_mtime - 10))
    check_real_case(plan, outcomes, settings, case_dir=real_case_dir, launcher=launcher)
    assert [c[0] for c in launcher.calls] == [plan[1].name]

    # a run restored from committed results (neither weights nor mask, its metrics file) is reported from that file
    launcher.calls.clear()
    weights.unlink()
    mask.unlink()
    report = check_real_case(plan, outcomes, settings, case_dir=real_case_dir, launcher=launcher)
    assert launcher.calls == [] and [r.status for r in report.rows] == ["done", "done", "no model", "done"]
    assert report.rows[1].dice == pytest.approx(expected_dice(real_case_dir, 3))
    (mask.parent / "Case00_metrics.json").unlink()
    report = check_real_case(plan, outcomes, settings, case_dir=real_case_dir, launcher=launcher)
    assert report.rows[1].status == "no model" and "no models/model.pt" in report.rows[1].message


def test_a_report_only_call_does_not_measure_an_unfinished_runs_checkpoint(real_case_dir, tmp_path, monkeypatch):
    """A study stopped mid-training leaves ``models/model.pt`` of an early epoch; until the run is evaluated, a
    report-only call lists it as not run instead of measuring that checkpoint on the real case."""
    plan = make_plan()
    settings = Settings(tmp_path / "study", tmp_path / "data")
    fake_models(plan, settings.out_dir)
    monkeypatch.setattr(taps, "available", lambda: False)
    launcher = MaskLauncher(real_case_dir, {run.name: 0 for run in plan})
    outcomes = [Outcome(plan[0], "skipped", run_dir(plan[0], settings.out_dir))] + [
        Outcome(run, "not run", run_dir(run, settings.out_dir)) for run in plan[1:]]
    report = check_real_case(plan, outcomes, settings, case_dir=real_case_dir, launcher=launcher)
    assert [r.status for r in report.rows] == ["done", "not run", "not run"]
    assert [c[0] for c in launcher.calls] == [plan[0].name]


def test_a_failed_inference_and_a_mask_off_the_grid_are_rows_not_errors(real_case_dir, tmp_path, monkeypatch):
    plan = make_plan()
    settings = Settings(tmp_path / "study", tmp_path / "data")
    fake_models(plan, settings.out_dir)
    monkeypatch.setattr(taps, "available", lambda: False)

    def launcher(command, log_path, env):
        folder = Path(command[command.index("--bundle_root") + 1])
        if folder.name == plan[0].name:
            return 3
        out = Path(command[command.index("--output_dir") + 1])
        out.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), str(out / "Case00_seg.nii.gz"))
        return 0

    report = check_real_case(plan, [], settings, case_dir=real_case_dir, launcher=launcher)
    assert [r.status for r in report.rows] == ["failed"] * 3
    assert "exit code 3" in report.rows[0].message and "real_case.log" in report.rows[0].message
    assert "is not in the grid of" in report.rows[1].message
    assert report.taps_note == taps.INSTALL_HINT
    md = write_real_case_table(report, tmp_path).read_text()
    assert "TAPS not installed: pip install --no-deps lavlab-taps==1.1.2 onnxruntime" in md


def test_an_absent_real_case_is_stated_and_nothing_fails(tmp_path):
    plan = make_plan()
    settings = Settings(tmp_path / "study", tmp_path / "data")
    fake_models(plan, settings.out_dir)

    def launcher(*args):
        raise AssertionError("nothing runs without the case")

    report = check_real_case(plan, [], settings, case_dir=tmp_path / "nowhere", launcher=launcher)
    assert report.rows == [] and "Real case not found" in report.note and "nowhere" in report.note
    assert "Real case not found" in write_real_case_table(report, tmp_path).read_text()


def test_case_dice_reads_files_and_checks_the_grid(real_case_dir, tmp_path):
    label = real_case_dir / "Case00_segmentation.nii.gz"
    assert case_dice(label, label) == {"dice": 1.0, "hd95": 0.0, "asd": 0.0}
    reference = nib.load(str(label))
    moved = tmp_path / "moved.nii.gz"
    affine = reference.affine.copy()
    affine[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(reference.dataobj), affine), str(moved))
    with pytest.raises(ValueError, match="is not in the grid of"):
        case_dice(moved, label)


def test_the_study_prints_and_writes_the_real_case_table(real_case_dir, tmp_path, monkeypatch, capsys):
    """``python -m tools.study run`` (fake training and inference): real_case.md/.csv, its README section, and
    the table at the end of the output."""
    plan = make_plan()
    masks = MaskLauncher(real_case_dir, {r.name: 0 for r in plan})

    def launcher(command, log_path, env):
        if "tools.peers.taps" in command or "--input" in command:
            return masks(command, log_path, env)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(command[command.index("--bundle_root") + 1])
        if command[command.index("run") + 1] == "training":  # weights, as a training leaves them
            (folder / "models").mkdir(parents=True, exist_ok=True)
            (folder / "models" / "model.pt").write_bytes(b"weights")
            return 0
        output = Path(command[command.index("--output_dir") + 1])  # eval/ or eval_seen/
        output.mkdir(parents=True, exist_ok=True)  # an evaluation, as MONAI's MetricsSaver writes it
        for metric in ("dice", "hd95", "asd"):
            (output / f"test_{metric}_raw.csv").write_text("filename,class0,mean\n/d/BIDMC/Case00.nii.gz,0.5,0.5\n")
        (output / "metrics.csv").write_text("test_dice,0.5\ntest_hd95,0.5\ntest_asd,0.5\n")
        return 0

    monkeypatch.setattr(study_runner, "launch_subprocess", launcher)
    monkeypatch.setattr(study_real_case, "REAL_CASE_DIR", real_case_dir)
    monkeypatch.setattr(taps, "available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["python -m tools.study", "run"])
    (tmp_path / "data").mkdir()
    out = tmp_path / "study"
    cli_run(data=str(tmp_path / "data"), out=str(out), progress=False)
    printed = capsys.readouterr().out
    assert "The real case: a sanity check, not a benchmark" in printed
    assert "| ENet w/ DeepLabV3+ | BIDMC held out, seed 0 | 1.000 |" in printed and taps.INSTALL_HINT in printed
    readme = (out / "README.md").read_text()
    assert "## The real case: a sanity check, not a benchmark" in readme and "| DeepLabV3+ (teacher) | BIDMC held out, seed 0 | 1.000 |" in readme
    assert (out / "real_case.csv").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not taps.available(), reason=taps.INSTALL_HINT)
def test_taps_segments_the_real_case(real_case_dir, tmp_path):
    """TAPS's bundled model on the real case, in a process of its own as the study runs it: a mask in the file's
    geometry and, as DESIGN.md section 7 measured, a Dice near 0.9 (this is the peer's score, not ours)."""
    import subprocess

    image = tmp_path / "in" / "Case00.nii.gz"
    image.parent.mkdir()
    shutil.copyfile(real_case_dir / "Case00.nii.gz", image)
    output = tmp_path / "taps" / "Case00_seg.nii.gz"
    result = subprocess.run(taps.command(image, output), capture_output=True, text=True, timeout=600,
                            cwd=str(Path(__file__).resolve().parents[1]))
    assert result.returncode == 0, result.stdout + result.stderr
    mask, reference = nib.load(str(output)), nib.load(str(real_case_dir / "Case00_segmentation.nii.gz"))
    assert mask.shape == reference.shape and np.allclose(mask.affine, reference.affine, atol=1e-4)
    assert case_dice(output, real_case_dir / "Case00_segmentation.nii.gz")["dice"] > 0.85


def test_taps_adapter_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="nii"):
        taps.segment(tmp_path / "a.nii.gz", tmp_path / "b.png")
    with pytest.raises(FileNotFoundError, match="image not found"):
        taps.segment(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz")
    (tmp_path / "a.nii.gz").write_bytes(b"")
    monkeypatch.setattr(taps, "version", lambda: None)
    assert not taps.available()
    with pytest.raises(ImportError, match="pip install --no-deps lavlab-taps==1.1.2 onnxruntime"):
        taps.segment(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz")


def test_the_summary_pivots_runs_by_held_out_site_with_each_seed_and_the_median():
    Row = study_real_case.RealCaseRow
    rows = [
        Row("ENet w/o", "RUNMC/seed0/prostate_mri_enet_student__wo", "done", dice=0.5),
        Row("ENet w/o", "RUNMC/seed1/prostate_mri_enet_student__wo", "done", dice=0.25),
        Row("ENet w/o", "BIDMC/seed1/prostate_mri_enet_student__wo", "done", dice=0.125),
        Row("ENet w/o", "BIDMC/seed0/prostate_mri_enet_student__wo", "done", dice=0.0),
        Row("UNet++ (teacher)", "RUNMC/seed0/prostate_mri_unetpp_teacher", "done", dice=0.75),
        Row("UNet++ (teacher)", "RUNMC/seed1/prostate_mri_unetpp_teacher", "failed", message="exit code 1"),
        Row("TAPS", "peer", "done", dice=0.9),
    ]
    lines = study_real_case.summary_by_site(rows)
    assert lines[2:] == [
        "| model | RUNMC | BIDMC | median |",
        "|---|---|---|---|",
        "| ENet w/o | 0.500 / 0.250 | 0.000 / 0.125 | 0.188 |",  # seeds in order whatever the rows' order
        "| UNet++ (teacher) | 0.750 |  | 0.750 |",  # a failed run is left out, a site without runs is blank
        "",
    ]
    assert study_real_case.summary_by_site([rows[-1], rows[-2]]) == []  # no study run measured: no summary
