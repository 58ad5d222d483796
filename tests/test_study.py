"""``tools.study`` (issue 5): the run grid, the commands it gives the bundles, resumability, failure reporting,
the tables (mean ± std over seeds, the paper's numbers beside ours) and the figures.

Everything but the last test runs on fake run folders and a fake launcher (no training). The last test runs the
default grid (DeepLabV3+ teacher, ENet w/o and w/) for real on a tiny simulated set through ``python -m
tools.study run``; it is marked slow (about a minute on the shared 2-core machine).
"""

from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import yaml

from tools.data.layout import SITES
from tools.study import plan as study_plan
from tools.study import runner as study_runner
from tools.study.__main__ import run as cli_run
from tools.study.figures import label_file_of, largest_slice, plot_dice_by_site, plot_overlays
from tools.study.plan import ABLATION_GRID, MODULE_TERMS, STUDENTS, TEACHERS, Run, make_plan
from tools.study.runner import (
    Settings,
    compare_evaluations,
    evaluate_command,
    evaluate_seen_command,
    execute,
    parse_overrides,
    run_dir,
    train_command,
)
from tools.study.tables import (
    PAPER_TABLE2,
    PAPER_TABLE3,
    PAPER_TABLE4,
    Cell,
    RunResult,
    collect,
    distillation_gains,
    domain_shift_markdown,
    markdown_table,
    paper_site,
    paper_table2_markdown,
    table2_rows,
    table4_rows,
    write_domain_shift,
    write_table,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER = REPO_ROOT.parent / "shared" / "paper.md"
ALL = ("AAM", "KMM", "LM")


# ----------------------------------------------------------------------------------------------- helpers


def write_eval(folder: Path, dice: Dict[str, float], eval_dir: str = "eval") -> None:
    """A finished evaluation as MONAI's MetricsSaver writes it: per-case ``test_*_raw.csv`` and ``metrics.csv``."""
    eval_dir = folder / eval_dir
    eval_dir.mkdir(parents=True, exist_ok=True)
    per_metric = {"dice": dice, "hd95": {c: 10 * (1 - d) for c, d in dice.items()}, "asd": {c: 2 * (1 - d) for c, d in dice.items()}}
    for metric, values in per_metric.items():
        with open(eval_dir / f"test_{metric}_raw.csv", "w") as f:
            f.write("filename,class0,mean\n")
            for case, value in values.items():
                f.write(f"/data/BIDMC/{case}.nii.gz,{value},{value}\n")
    with open(eval_dir / "metrics.csv", "w") as f:
        for metric, values in per_metric.items():
            f.write(f"test_{metric},{np.mean(list(values.values()))}\n")


class FakeLauncher:
    """Records each command; ``run evaluating`` writes an evaluation with Dice ``dice(run folder)``; commands
    whose run folder is in ``fail`` (with stage ``training``/``evaluating``) exit 1."""

    def __init__(self, fail: Sequence[tuple] = (), dice=lambda folder: {"Case00": 0.5, "Case02": 0.7}):
        self.calls: List[tuple] = []
        self.fail = set(fail)
        self.dice = dice

    def __call__(self, command, log_path, env):
        stage = command[command.index("run") + 1]
        folder = Path(command[command.index("--bundle_root") + 1])
        self.calls.append((stage, folder.name, env.get("OMP_NUM_THREADS")))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"fake {stage}\n")
        if (folder.name, stage) in self.fail:
            return 1
        if stage == "training":  # what a student's distillation reads
            (folder / "models").mkdir(parents=True, exist_ok=True)
            (folder / "models" / "model.pt").write_text("fake weights\n")
        if stage == "evaluating":
            output = Path(command[command.index("--output_dir") + 1])
            write_eval(folder, self.dice(folder), output.name)
        return 0


def settings_for(tmp_path: Path, **kwargs) -> Settings:
    return Settings(tmp_path / "study", tmp_path / "data", **kwargs)


def config_list(command: List[str]) -> List[str]:
    text = command[command.index("--config_file") + 1]
    return [Path(p.strip("'")).name for p in text.strip("[]").split(",")]


def arg(command: List[str], key: str) -> str:
    return command[command.index(f"--{key}") + 1]


# -------------------------------------------------------------------------------------------------- plan


def test_default_plan_is_teacher_then_student_without_and_with():
    plan = make_plan(*[study_plan.resolve_sites("BIDMC"), [0], ["deeplabv3plus"], ["enet"], study_plan.resolve_modules("full")])
    assert [r.key for r in plan] == [
        "BIDMC/seed0/prostate_mri_deeplabv3plus_teacher",
        "BIDMC/seed0/prostate_mri_enet_student__wo",
        "BIDMC/seed0/prostate_mri_enet_student__w_deeplabv3plus",
    ]
    assert [r.variant for r in plan] == ["teacher", "wo", "w"]
    assert [r.depends_on for r in plan] == [None, None, plan[0].key]
    assert plan[2].terms == ("affinity", "kernel", "logits") and plan[1].terms == ()


def test_full_grid_counts_and_dependency_order():
    sites = study_plan.resolve_sites("all")
    assert sites == list(SITES)
    plan = make_plan(sites, [0, 1], list(TEACHERS), list(STUDENTS))
    # per site and seed: 2 teachers + 3 students x (w/o + w/ each of 2 teachers)
    assert len(plan) == 6 * 2 * (2 + 3 * 3)
    assert len({r.key for r in plan}) == len(plan)
    position = {r.key: i for i, r in enumerate(plan)}
    for r in plan:
        if r.depends_on:
            assert position[r.depends_on] < position[r.key], r.key
    teacher_runs = [r for r in plan if r.variant == "teacher"]
    assert len(teacher_runs) == 6 * 2 * 2  # each teacher once per (site, seed), shared by the three students


def test_ablation_grid_maps_to_distill_terms():
    plan = make_plan(["HK"], [0], ["unetpp", "deeplabv3plus"], ["espnet", "enet"], study_plan.resolve_modules("ablation"))
    ablation = [r for r in plan if r.variant == "ablation"]
    assert len(ablation) == 6  # "none" is the w/o run and "all" the w/ run, both already in Table 2
    assert {r.network for r in ablation} == {"espnet"} and {r.teacher for r in ablation} == {"unetpp"}
    expected = {
        "LM": {"logits"}, "AAM": {"affinity"}, "KMM": {"kernel"},
        "KMM+LM": {"kernel", "logits"}, "AAM+LM": {"affinity", "logits"}, "AAM+KMM": {"affinity", "kernel"},
    }
    for r in ablation:
        assert set(r.terms) == expected[r.combo], r.combo
    assert {r.combo for r in ablation} == set(expected)
    grid = {label: Run("HK", 0, "espnet", "unetpp" if modules else None, modules) for label, modules in ABLATION_GRID}
    assert grid["none"].variant == "wo" and grid["none"].key in {r.key for r in plan}
    assert grid["all"].variant == "w" and grid["all"].key in {r.key for r in plan}
    assert grid["KMM+LM"].name == "prostate_mri_espnet_student__ablation_unetpp_kmm_lm"


def test_the_ablation_can_be_limited_to_some_targets():
    modules = study_plan.resolve_modules("ablation")
    every = make_plan(["BIDMC", "HK"], [0, 1], ["deeplabv3plus"], ["enet"], modules)
    one = make_plan(["BIDMC", "HK"], [0, 1], ["deeplabv3plus"], ["enet"], modules, ablation_sites=["BIDMC"])
    assert {(r.site, r.seed) for r in one if r.variant == "ablation"} == {("BIDMC", 0), ("BIDMC", 1)}
    assert len([r for r in one if r.variant == "ablation"]) == 2 * 6
    assert [r for r in every if not (r.variant == "ablation" and r.site == "HK")] == one
    with pytest.raises(ValueError, match="ablation site 'UCL' is not a target site"):
        make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"], modules, ablation_sites=["UCL"])


def test_the_other_students_can_be_limited_to_some_targets_and_get_the_default_objective_only():
    sites = ["RUNMC", "BIDMC", "HK"]
    objectives = ["default", "paper_literal", "emkd"]
    plan = make_plan(sites, [0], ["deeplabv3plus", "unetpp"], ["enet", "espnet", "erfnet"], (), objectives,
                     student_sites=["BIDMC", "HK"])
    for student in ("espnet", "erfnet"):
        runs = [r for r in plan if r.network == student]
        assert {r.site for r in runs} == {"BIDMC", "HK"}
        assert sorted(r.name.split("__", 1)[1] for r in runs if r.site == "HK") == ["w_deeplabv3plus", "w_unetpp", "wo"]
    enet = [r for r in plan if r.network == "enet"]
    assert {r.site for r in enet} == set(sites)
    assert {r.objective for r in enet} == set(objectives)  # Table 3 is one pair: the first student, first teacher
    assert [r for r in enet if r.objective != "default"] == [r for r in plan if r.objective != "default"]
    assert len(plan) == 3 * (2 + 1 + 2 + 2) + 2 * 2 * 3  # teachers, ENet w/o, w/ x 2, 2 objectives; the others
    with pytest.raises(ValueError, match="student site 'UCL' is not a target site"):
        make_plan(sites, [0], ["deeplabv3plus"], ["enet", "espnet"], student_sites=["UCL"])


def test_module_terms_are_declared_in_every_students_distill_yaml():
    for bundle in STUDENTS.values():
        config = yaml.safe_load((REPO_ROOT / "bundles" / bundle / "configs" / "distill.yaml").read_text())
        assert set(MODULE_TERMS.values()) == set(config["distill_terms"]), bundle


def test_argument_parsing_and_errors():
    assert study_plan.resolve_sites("S1,isbi,HK") == ["RUNMC", "HK"]
    assert study_plan.resolve_sites(("BIDMC", "S6")) == ["BIDMC", "HK"]
    assert study_plan.resolve_seeds((0, 1, 2)) == [0, 1, 2] and study_plan.resolve_seeds("3,4") == [3, 4]
    assert study_plan.resolve_networks("DeepLabV3+,unet++", "teacher") == ["deeplabv3plus", "unetpp"]
    assert study_plan.resolve_networks("prostate_mri_erfnet_student", "student") == ["erfnet"]
    assert study_plan.resolve_networks("all", "student") == ["enet", "espnet", "erfnet"]
    assert study_plan.resolve_modules("lm+kmm, AAM") == [("KMM", "LM"), ("AAM",)]
    with pytest.raises(ValueError, match="unknown module 'XYZ'"):
        study_plan.resolve_modules("XYZ")
    with pytest.raises(ValueError, match="unknown teacher 'enet'"):
        study_plan.resolve_networks("enet", "teacher")
    with pytest.raises(ValueError, match="seeds must be integers"):
        study_plan.resolve_seeds("a")
    with pytest.raises(ValueError, match="needs both a teacher and at least one module"):
        Run("BIDMC", 0, "enet", "deeplabv3plus", ())
    with pytest.raises(ValueError, match="cannot have a teacher"):
        Run("BIDMC", 0, "unetpp", "deeplabv3plus", ALL)


# ---------------------------------------------------------------------------------------------- commands


def test_commands_use_the_bundles_configs_and_the_run_folders(tmp_path):
    settings = settings_for(tmp_path, overrides=parse_overrides("max_epochs=1,progress=false,image_size=32"))
    teacher, wo, w = make_plan(["UCL"], [3], ["unetpp"], ["erfnet"])
    ablation = Run("UCL", 3, "erfnet", "unetpp", ("AAM", "LM"))

    command = train_command(teacher, settings)
    assert command[:5] == [sys.executable, "-m", "monai.bundle", "run", "training"]
    assert config_list(command) == ["train.yaml", "profile_cpu.yaml"]
    assert arg(command, "bundle_root") == str(tmp_path / "study" / "runs" / "UCL" / "seed3" / "prostate_mri_unetpp_teacher")
    assert (arg(command, "target_site"), arg(command, "seed"), arg(command, "progress")) == ("UCL", "3", "False")
    assert (arg(command, "max_epochs"), arg(command, "image_size")) == ("1", "32")

    assert config_list(train_command(wo, settings)) == ["train.yaml", "profile_cpu.yaml"]
    assert "--teacher_ckpt" not in train_command(wo, settings)

    command = train_command(ablation, settings)
    assert config_list(command) == ["train.yaml", "distill.yaml", "profile_cpu.yaml"]
    assert arg(command, "teacher_ckpt") == str(run_dir(teacher, settings.out_dir) / "models" / "model.pt")
    assert arg(command, "teacher_bundle") == str(REPO_ROOT / "bundles" / "prostate_mri_unetpp_teacher")
    assert ast.literal_eval(arg(command, "distill_terms")) == {"logits": 0.2, "affinity": 0.09}  # distill.yaml's weights
    default = {"logits": 0.2, "kernel": 0.9, "affinity": 0.09}
    assert ast.literal_eval(arg(train_command(w, settings), "distill_terms")) == default
    paper_weights = settings_for(tmp_path, overrides={"distill_terms": {"logits": 0.2, "kernel": 0.9, "affinity": 0.9}})
    command = train_command(ablation, paper_weights)  # the study's own weights, still only the run's terms
    assert ast.literal_eval(arg(command, "distill_terms")) == {"logits": 0.2, "affinity": 0.9}
    assert command.count("--distill_terms") == 1

    command = evaluate_command(w, settings)
    assert command[4] == "evaluating"
    assert config_list(command) == ["train.yaml", "profile_cpu.yaml", "evaluate.yaml"]  # the student alone
    assert arg(command, "output_dir") == str(run_dir(w, settings.out_dir) / "eval")
    assert arg(command, "save_masks") == "True"

    paper = settings_for(tmp_path, profile="paper")
    assert config_list(train_command(w, paper)) == ["train.yaml", "distill.yaml"]
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        settings_for(tmp_path, profile="gpu")


def test_parse_overrides():
    assert parse_overrides("max_epochs=1, image_size=32,progress=false,lr=1e-3") == {
        "max_epochs": 1, "image_size": 32, "progress": False, "lr": 1e-3}
    assert parse_overrides({"a": 1}) == {"a": 1} and parse_overrides(None) == {}
    with pytest.raises(ValueError, match="not key=value"):
        parse_overrides("max_epochs")


# ------------------------------------------------------------------------------ resumability and failures


def test_finished_runs_are_skipped_and_interrupted_ones_resume(tmp_path):
    settings = settings_for(tmp_path, threads=1)
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"])
    launcher = FakeLauncher()
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["done"] * 3
    assert [c[0] for c in launcher.calls] == ["training", "evaluating", "evaluating"] * 3
    assert {c[2] for c in launcher.calls} == {"1"}  # threads reach the commands' environment

    launcher.calls.clear()
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["skipped"] * 3 and launcher.calls == []

    # interrupted during evaluation: training is not repeated; interrupted during training: it runs again
    # (the bundle resumes from its newest checkpoint by itself); a run evaluated before the seen evaluation
    # existed gets only that evaluation
    teacher, student_wo, student_w = (run_dir(r, settings.out_dir) for r in plan)
    (teacher / "eval_seen" / "metrics.csv").unlink()
    (student_wo / "eval" / "metrics.csv").unlink()
    (student_w / "eval" / "metrics.csv").unlink()
    (student_w / "trained").unlink()
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["done", "done", "done"]
    assert [c[:2] for c in launcher.calls] == [("evaluating", teacher.name), ("evaluating", student_wo.name),
                                               ("training", student_w.name), ("evaluating", student_w.name)]


def test_a_training_resumed_from_a_stopped_attempt_says_which_checkpoint(tmp_path, monkeypatch):
    """A stopped attempt never records its seconds: the run's timing.json, runs.csv and README say it resumed."""
    launcher = FakeLauncher()
    monkeypatch.setattr(study_runner, "launch_subprocess", launcher)
    monkeypatch.setattr(sys, "argv", ["python -m tools.study", "run"])
    (tmp_path / "data").mkdir()
    out = tmp_path / "study"
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"])
    student_w = run_dir(plan[2], out)
    models = student_w / "models"  # what a distillation stopped after its 12th epoch leaves
    models.mkdir(parents=True)
    for name in ("distill_checkpoint_epoch=3.pt", "distill_checkpoint_epoch=12.pt", "checkpoint_checkpoint_epoch=9.pt"):
        (models / name).write_bytes(b"state")
    assert study_runner.resume_checkpoint(student_w, distilled=True) == "distill_checkpoint_epoch=12.pt"
    assert study_runner.resume_checkpoint(student_w, distilled=False) == "checkpoint_checkpoint_epoch=9.pt"
    assert study_runner.resume_checkpoint(run_dir(plan[1], out), distilled=False) is None
    cli_run(data=str(tmp_path / "data"), out=str(out), progress=False)
    timing = json.loads((student_w / "timing.json").read_text())
    assert timing["train_resumed_from"] == ["distill_checkpoint_epoch=12.pt"] and "train_s" in timing
    assert "train_resumed_from" not in json.loads((run_dir(plan[1], out) / "timing.json").read_text())
    with open(out / "runs.csv") as f:
        resumed = {r["run"].split("/")[-1]: r["train_resumed_from"] for r in csv.DictReader(f)}
    assert resumed == {"prostate_mri_deeplabv3plus_teacher": "", "prostate_mri_enet_student__wo": "",
                       "prostate_mri_enet_student__w_deeplabv3plus": "distill_checkpoint_epoch=12.pt"}
    readme = (out / "README.md").read_text()
    assert "(resumed from distill_checkpoint_epoch=12.pt) |" in readme
    assert "a lower bound: 1 run(s) resumed training" in readme


def test_a_kept_teacher_without_weights_is_retrained_only_for_unfinished_students(tmp_path):
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"])
    execute(plan, settings, FakeLauncher(), progress=False, echo=lambda line: None)
    teacher, student_wo, student_w = (run_dir(r, settings.out_dir) for r in plan)
    shutil.rmtree(teacher / "models")  # as a committed study keeps it: results, no weights

    # every student finished: nothing needs the weights, nothing runs
    launcher = FakeLauncher()
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["skipped"] * 3 and launcher.calls == []

    # a new student: the teacher trains again first, its old results are set aside and compared
    shutil.rmtree(student_w)
    lines: List[str] = []
    outcomes = execute(plan, settings, launcher, progress=False, echo=lines.append)
    assert [o.status for o in outcomes] == ["done", "skipped", "done"]
    assert [c[:2] for c in launcher.calls] == [("training", teacher.name), ("evaluating", teacher.name),
                                               ("evaluating", teacher.name), ("training", student_w.name),
                                               ("evaluating", student_w.name), ("evaluating", student_w.name)]
    assert (teacher / "before_retraining" / "eval" / "test_dice_raw.csv").is_file()
    assert (teacher / "before_retraining" / "timing.json").is_file()
    reproduction = json.loads((teacher / "reproduction.json").read_text())
    assert reproduction["identical"] and reproduction["eval"]["max_abs_difference"] == 0.0
    assert reproduction["eval"]["cases"] == 2 and reproduction["eval"]["new_mean"] == 0.6
    assert "equal to the recorded ones" in outcomes[0].message and "equal to the recorded" in lines[0]

    # the same again with weights that evaluate differently: reported, with the difference
    shutil.rmtree(teacher / "models")
    shutil.rmtree(teacher / "before_retraining")
    shutil.rmtree(student_w)
    launcher = FakeLauncher(dice=lambda folder: {"Case00": 0.4, "Case02": 0.7})
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None)
    reproduction = json.loads((teacher / "reproduction.json").read_text())
    assert not reproduction["identical"]
    assert reproduction["eval"]["max_abs_difference"] == pytest.approx(0.1)
    assert reproduction["eval"]["recorded_mean"] == pytest.approx(0.6)
    assert reproduction["eval"]["new_mean"] == pytest.approx(0.55)
    assert "differ" in outcomes[0].message and "0.6000 -> 0.5500" in outcomes[0].message


def test_runs_asked_for_are_retrained_once_and_compared(tmp_path):
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC", "HK"], [0], ["deeplabv3plus"], ["enet"])
    execute(plan, settings, FakeLauncher(), progress=False, echo=lambda line: None)
    bidmc = [r.key for r in plan if r.site == "BIDMC"]
    launcher = FakeLauncher(dice=lambda folder: {"Case00": 0.5, "Case02": 0.8})
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None, retrain=bidmc)
    assert [o.status for o in outcomes] == ["done"] * 3 + ["skipped"] * 3
    assert [c[0] for c in launcher.calls] == ["training", "evaluating", "evaluating"] * 3  # teacher before students
    assert all("BIDMC" in str(o.folder) for o in outcomes[:3]) and launcher.calls[0][1] == plan[0].name
    for run in plan[:3]:
        reproduction = json.loads((run_dir(run, settings.out_dir) / "reproduction.json").read_text())
        assert reproduction["eval"]["max_abs_difference"] == pytest.approx(0.1) and not reproduction["identical"]
    assert "differ from the recorded ones (unseen mean 0.6000 -> 0.6500" in outcomes[0].message
    launcher.calls.clear()  # once: a second call with the same request skips them
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None, retrain=bidmc)
    assert [o.status for o in outcomes] == ["skipped"] * 6 and launcher.calls == []
    with pytest.raises(ValueError, match="retrain: 'UCL/seed0/prostate_mri_enet_student__wo' is not a run of the plan"):
        execute(plan, settings, launcher, progress=False, retrain=["UCL/seed0/prostate_mri_enet_student__wo"])


def test_retrained_runs_are_tabled_beside_their_recorded_results(tmp_path):
    from tools.study.retraining import retraining_markdown

    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC", "HK"], [0, 1], ["deeplabv3plus"], ["enet"])
    execute(plan, settings, FakeLauncher(), progress=False, echo=lambda line: None)
    assert retraining_markdown(plan, settings.out_dir) == []  # nothing retrained: no section
    bidmc = [r.key for r in plan if r.site == "BIDMC"]
    seed_of = lambda folder: int(folder.parent.name[len("seed"):])  # seed 0 repeats, seed 1 does not
    launcher = FakeLauncher(dice=lambda folder: {"Case00": 0.5, "Case02": 0.7 + 0.2 * seed_of(folder)})
    execute(plan, settings, launcher, progress=False, echo=lambda line: None, retrain=bidmc)
    lines = retraining_markdown(plan, settings.out_dir)
    assert len(lines) == 2 + 3  # header, separator, one row per BIDMC model; HK was not retrained
    teacher_row = lines[2].split(" | ")
    # recorded 0.6 for both seeds; after: 0.6 (seed 0) and 0.7 (seed 1), both for unseen and seen
    assert teacher_row[0] == "| DeepLabV3+ (teacher)" and teacher_row[1:4] == ["BIDMC", "2", "0.600"]
    assert teacher_row[4:7] == ["0.650", "0.600", "0.650"]
    assert teacher_row[7:] == ["0.200", "1 of 2 |"]

    broken = run_dir(plan[0], settings.out_dir) / "reproduction.json"
    broken.write_text(json.dumps({"identical": True, "eval": {}}))
    with pytest.raises(ValueError, match=f"{broken}: not a retrained-run comparison"):
        retraining_markdown(plan, settings.out_dir)


def test_retrain_sites_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="cannot go with --report_only"):
        cli_run(data=str(tmp_path / "data"), out=str(tmp_path / "study"), retrain_sites="BIDMC", report_only=True)
    with pytest.raises(ValueError, match="retrain site 'HK' is not a target site"):
        cli_run(data=str(tmp_path / "data"), out=str(tmp_path / "study"), retrain_sites="HK")
    assert not (tmp_path / "study").exists()


def test_comparing_evaluations_refuses_a_file_without_dice_columns(tmp_path):
    write_eval(tmp_path / "before", {"Case00": 0.5})
    write_eval(tmp_path / "before", {"Case00": 0.5}, "eval_seen")
    write_eval(tmp_path / "after", {"Case00": 0.5})
    (tmp_path / "after" / "eval_seen").mkdir()
    (tmp_path / "after" / "eval_seen" / "test_dice_raw.csv").write_text("case,dice\nCase00,0.5\n")
    with pytest.raises(ValueError, match=r"after/eval_seen/test_dice_raw.csv: expected the columns"):
        compare_evaluations(tmp_path / "before", tmp_path / "after")


def test_the_seen_evaluation_uses_the_source_validation_cases(tmp_path):
    settings = settings_for(tmp_path)
    run = make_plan(["HK"], [1], ["deeplabv3plus"], ["enet"])[2]
    unseen, seen = evaluate_command(run, settings), evaluate_seen_command(run, settings)
    assert arg(seen, "evaluate_key") == "validation" and "--evaluate_key" not in unseen
    assert Path(arg(seen, "output_dir")) == run_dir(run, settings.out_dir) / "eval_seen"
    assert arg(seen, "save_masks") == "False" and arg(seen, "target_site") == "HK"
    assert config_list(seen) == config_list(unseen)


class ConcurrencyLauncher(FakeLauncher):
    """A FakeLauncher whose training waits until another command is running too, at most ``seconds`` (so that the
    overlap of two workers is seen however slowly the machine schedules them), and that records how many commands
    ran at once, and each command's start and end as ``(event, stage, run folder)``."""

    def __init__(self, seconds: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        import threading

        self.lock, self.active, self.peak, self.events = threading.Lock(), 0, 0, []
        self.seconds = seconds

    def __call__(self, command, log_path, env):
        import time

        folder = Path(command[command.index("--bundle_root") + 1])
        stage = command[command.index("run") + 1]
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.events.append(("start", stage, folder))
        deadline = time.monotonic() + self.seconds
        while stage == "training" and self.active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        code = super().__call__(command, log_path, env)
        with self.lock:
            self.active -= 1
            self.events.append(("end", stage, folder))
        return code


def test_workers_run_independent_runs_at_once_and_students_after_their_teacher(tmp_path):
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC", "HK"], [0], ["deeplabv3plus"], ["enet"])
    launcher = ConcurrencyLauncher()
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None, workers=2)
    assert [o.status for o in outcomes] == ["done"] * len(plan) and [o.run for o in outcomes] == list(plan)
    assert launcher.peak == 2
    events = launcher.events
    students = [r for r in plan if r.depends_on]
    assert len(students) == 2
    for run in students:
        teacher = run_dir(Run(run.site, run.seed, run.teacher), settings.out_dir)
        teacher_end = max(i for i, e in enumerate(events) if e[0] == "end" and e[2] == teacher)
        student_start = events.index(("start", "training", run_dir(run, settings.out_dir)))
        assert student_start > teacher_end
    # the teacher and the student without distillation of a site overlap (they are independent)
    teacher, wo = (run_dir(r, settings.out_dir) for r in plan[:2])
    assert events.index(("start", "training", wo)) < events.index(("end", "training", teacher))


def test_one_worker_keeps_the_plan_order_and_bad_workers_are_refused(tmp_path):
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC"], [0, 1], ["deeplabv3plus"], ["enet"])
    launcher = ConcurrencyLauncher(seconds=0.0)
    execute(plan, settings, launcher, progress=False, echo=lambda line: None, workers=1)
    assert launcher.peak == 1
    trained = [e[2] for e in launcher.events if e[:2] == ("start", "training")]
    assert trained == [run_dir(r, settings.out_dir) for r in plan]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        execute(plan, settings, launcher, progress=False, workers=0)


def test_a_failed_run_names_its_log_and_the_others_go_on(tmp_path):
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"])
    launcher = FakeLauncher(fail=[("prostate_mri_deeplabv3plus_teacher", "training")])
    lines = []
    outcomes = execute(plan, settings, launcher, progress=False, echo=lines.append)
    teacher, wo, w = outcomes
    assert teacher.status == "failed"
    assert teacher.log == run_dir(plan[0], settings.out_dir) / "logs" / "train.log" and teacher.log.is_file()
    assert "training failed (exit code 1)" in teacher.message
    assert wo.status == "done"
    assert w.status == "failed" and w.log == teacher.log and plan[0].key in w.message
    assert [c[1] for c in launcher.calls].count(w.folder.name) == 0  # the student of a failed teacher never ran
    assert any(str(teacher.log) in line for line in lines)

    results = collect(plan, settings.out_dir, outcomes)
    rows = table2_rows(results, ["deeplabv3plus"], ["enet"])
    assert [row.cells["BIDMC"].text() for row in rows] == ["failed", "0.600", "failed"]


def test_an_evaluation_failure_is_reported_with_the_evaluation_log(tmp_path):
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"])
    launcher = FakeLauncher(fail=[("prostate_mri_enet_student__wo", "evaluating")])
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert outcomes[1].log.name == "evaluate.log" and (outcomes[1].folder / "trained").is_file()


def test_a_teacher_whose_evaluation_failed_still_teaches(tmp_path):
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"])
    launcher = FakeLauncher(fail=[("prostate_mri_deeplabv3plus_teacher", "evaluating")])
    teacher_models = run_dir(plan[0], settings.out_dir) / "models"
    teacher_models.mkdir(parents=True)
    (teacher_models / "model.pt").write_bytes(b"weights")  # what the teacher's training would leave
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["failed", "done", "done"]
    assert ("training", plan[2].name) in [c[:2] for c in launcher.calls]


def test_cli_exit_code_and_readme_on_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(study_runner, "launch_subprocess", FakeLauncher(fail=[("prostate_mri_enet_student__wo", "training")]))
    monkeypatch.setattr(sys, "argv", ["python -m tools.study", "run"])
    (tmp_path / "data").mkdir()
    out = tmp_path / "study"
    out.mkdir()
    committed = {"README.md": "committed report\n", "table2.md": "committed table\n", "table4.md": "committed t4\n"}
    for name, text in committed.items():
        (out / name).write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        cli_run(data=str(tmp_path / "data"), out=str(out), progress=False)
    assert exit_info.value.code == 1
    for name, text in committed.items():  # a call with a failed run leaves the folder's report untouched
        assert (out / name).read_text() == text, name
    assert not (out / "runs.csv").exists() and not (out / ".report.partial").exists()
    report = out / "report_of_failed_call"
    readme = (report / "README.md").read_text()
    assert "| ENet w/o | failed | 0.701 |" in readme
    assert "runs/BIDMC/seed0/prostate_mri_enet_student__wo/logs/train.log" in readme
    for name in ("table2.md", "table2.csv", "per_case.csv", "runs.csv", "dice_by_site.png", "invocations.csv"):
        assert (report / name).is_file(), name
    assert not (report / "table4.md").exists()


def test_a_successful_call_replaces_the_report_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(study_runner, "launch_subprocess", FakeLauncher())
    monkeypatch.setattr(sys, "argv", ["python -m tools.study", "run"])
    (tmp_path / "data").mkdir()
    out = tmp_path / "study"
    (out / "report_of_failed_call").mkdir(parents=True)
    for name in ("README.md", "table4.md", "table4.csv", "notes.txt"):
        (out / name).write_text("old\n")
    cli_run(data=str(tmp_path / "data"), out=str(out), progress=False)
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Study `study`") and "| done |" in readme
    assert not (out / "table4.md").exists() and not (out / "table4.csv").exists()  # stale: this call had no ablation
    assert (out / "notes.txt").read_text() == "old\n"  # not a report file: left alone
    assert (out / "table2.md").is_file() and not (out / ".report.partial").exists()
    with open(out / "invocations.csv") as f:
        assert len(list(csv.DictReader(f))) == 1
    cli_run(data=str(tmp_path / "data"), out=str(out), progress=False)  # a rerun keeps the invocation history
    with open(out / "invocations.csv") as f:
        assert [r["executed"] for r in csv.DictReader(f)] == ["3", "0"]
    # each trained run recorded the training interpreter's versions; runs.csv and the README show them
    from importlib import metadata

    (out / "overlays_BIDMC.png").write_bytes(b"drawn when the masks existed")  # the fake runs keep no masks:
    cli_run(data=str(tmp_path / "data"), out=str(out), progress=False)  # a figure drawn before is kept, not redrawn
    assert (out / "overlays_BIDMC.png").read_bytes() == b"drawn when the masks existed"
    assert "![Overlays on BIDMC](overlays_BIDMC.png)" in (out / "README.md").read_text()
    record = json.loads((out / "runs" / "BIDMC" / "seed0" / "prostate_mri_enet_student__wo" / "environment.json").read_text())
    assert record["torch"] == metadata.version("torch") and record["monai"] == metadata.version("monai")
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    import torch

    assert record["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability() and record["cpu"]
    with open(out / "runs.csv") as f:
        environments = {r["environment"] for r in csv.DictReader(f)}
    assert len(environments) == 1 and f"torch {metadata.version('torch')}" in environments.pop()
    assert "training environment(s) (1;" in (out / "README.md").read_text()
    assert "## Retrained runs" not in (out / "README.md").read_text()
    cli_run(data=str(tmp_path / "data"), out=str(out), progress=False, retrain_sites="BIDMC")
    readme = (out / "README.md").read_text()  # the same fake Dice again: repeated, and shown beside the recorded
    assert "## Retrained runs" in readme and "| ENet w/o | BIDMC | 1 | 0.600 | 0.600 | 0.600 | 0.600 | 0.000 | 1 of 1 |" in readme


def test_a_report_only_call_trains_nothing_and_shows_the_rest_as_not_run(tmp_path, monkeypatch):
    launcher = FakeLauncher()
    monkeypatch.setattr(study_runner, "launch_subprocess", launcher)
    monkeypatch.setattr(sys, "argv", ["python -m tools.study", "run"])
    (tmp_path / "data").mkdir()
    out = tmp_path / "study"
    cli_run(data=str(tmp_path / "data"), out=str(out), progress=False)  # teacher, w/o and w/ from DeepLabV3+
    launcher.calls.clear()
    cli_run(data=str(tmp_path / "data"), out=str(out), teachers="all", progress=False, report_only=True)
    assert not [c for c in launcher.calls if c[0] in ("training", "evaluating")]  # (the real case may infer)
    with open(out / "runs.csv") as f:
        status = {r["run"].split("/")[-1]: (r["status"], r["this_call"]) for r in csv.DictReader(f)}
    assert status["prostate_mri_enet_student__w_deeplabv3plus"] == ("done", "skipped")
    assert status["prostate_mri_unetpp_teacher"] == ("not run", "not run")
    assert status["prostate_mri_enet_student__w_unetpp"] == ("not run", "not run")
    readme = (out / "README.md").read_text()
    assert "(0 run(s) executed, 3 reused, 0 failed, 2 not run yet: the study is not complete)" in readme
    with open(out / "real_case.csv") as f:
        real_case = {r["run"].split("/")[-1]: r["status"] for r in csv.DictReader(f)}
    assert real_case["prostate_mri_unetpp_teacher"] == "not run"
    with open(out / "invocations.csv") as f:
        assert [(r["executed"], r["skipped"]) for r in csv.DictReader(f)] == [("3", "0"), ("0", "3")]


# ------------------------------------------------------------------------------------------------ tables


def fake_study(tmp_path: Path, seeds=(0, 1, 2)):
    """Finished fake runs: Dice of a run = base(variant) + 0.1 * seed on two cases (+-0.05 around it)."""
    base = {"teacher": 0.8, "wo": 0.5, "w": 0.6, "ablation": 0.55}
    plan = make_plan(["BIDMC", "RUNMC"], list(seeds), ["deeplabv3plus"], ["enet"], [("LM",)])
    for r in plan:
        d = base[r.variant] + 0.1 * r.seed - (0.2 if r.site == "RUNMC" else 0.0)
        write_eval(run_dir(r, tmp_path), {"Case00": d - 0.05, "Case02": d + 0.05})
    return plan


def test_mean_and_std_over_seeds_and_the_paper_beside_ours(tmp_path):
    plan = fake_study(tmp_path)
    results = collect(plan, tmp_path)
    rows = table2_rows(results, ["deeplabv3plus"], ["enet"])
    assert [row.label for row in rows] == ["DeepLabV3+ (teacher)", "ENet w/o", "ENet w/ DeepLabV3+"]
    assert list(rows[0].cells) == ["RUNMC", "BIDMC"]  # the paper's site order
    # seeds 0, 1, 2: teacher 0.8, 0.9, 1.0 -> mean 0.9, sample std 0.1
    assert rows[0].cells["BIDMC"].text() == "0.900 ± 0.100"
    assert rows[1].cells["RUNMC"].text() == "0.400 ± 0.100"
    assert rows[2].cells["BIDMC"].mean == pytest.approx(0.7)
    assert rows[0].paper == {"RUNMC": 0.895, "BIDMC": 0.878}
    assert rows[2].paper == {"RUNMC": 0.810, "BIDMC": 0.796}
    text = markdown_table(rows)
    assert text.splitlines()[0] == "| model | RUNMC (S1) | paper S1 | BIDMC (S5) | paper S5 |"
    assert "| ENet w/ DeepLabV3+ | 0.500 ± 0.100 | 0.810 | 0.700 ± 0.100 | 0.796 |" in text

    md, csv_path = write_table(rows, tmp_path / "table2.md", "Table 2")
    with open(csv_path) as f:
        lines = list(csv.DictReader(f))
    teacher_bidmc = next(l for l in lines if l["row"] == "teacher/deeplabv3plus" and l["site"] == "BIDMC")
    assert (teacher_bidmc["n_seeds"], teacher_bidmc["paper_site"], teacher_bidmc["paper"]) == ("3", "S5", "0.878")
    assert float(teacher_bidmc["mean"]) == pytest.approx(0.9) and float(teacher_bidmc["std"]) == pytest.approx(0.1)


def test_domain_shift_table_pairs_seen_and_unseen_dice_per_seed(tmp_path):
    plan = fake_study(tmp_path, seeds=(0, 1))
    for r in plan:  # seen = unseen + 0.1 for the teacher, + 0.05 for the rest, except seed 1 of ENet w/o (no seen)
        if r.variant == "wo" and r.seed == 1:
            continue
        d = {"teacher": 0.8, "wo": 0.5, "w": 0.6, "ablation": 0.55}[r.variant] + 0.1 * r.seed
        d -= 0.2 if r.site == "RUNMC" else 0.0
        d += 0.1 if r.variant == "teacher" else 0.05
        write_eval(run_dir(r, tmp_path), {"Case10": d - 0.01, "Case11": d + 0.01}, "eval_seen")
    results = collect(plan, tmp_path)
    teacher = next(r for r in results.values() if r.run.variant == "teacher" and r.run.seed == 1 and r.run.site == "BIDMC")
    assert teacher.dice == pytest.approx(0.9) and teacher.seen_dice == pytest.approx(1.0)
    rows = table2_rows(results, ["deeplabv3plus"], ["enet"])
    text = domain_shift_markdown(rows)
    assert text.splitlines()[0] == "| model | RUNMC (S1) | BIDMC (S5) | mean gap |"
    # teacher BIDMC: seen (0.9 + 1.0) / 2, unseen (0.8 + 0.9) / 2, gap -0.1
    assert "| DeepLabV3+ (teacher) | 0.750 / 0.650 (-0.100) | 0.950 / 0.850 (-0.100) | -0.100 |" in text
    # ENet w/o has the seen evaluation of seed 0 only: the cell pairs that seed alone
    assert "| ENet w/o | 0.350 / 0.300 (-0.050) | 0.550 / 0.500 (-0.050) | -0.050 |" in text
    md, csv_path = write_domain_shift(rows, tmp_path / "domain_shift.md", ["a note"])
    assert md.read_text().startswith("# Domain shift") and "a note" in md.read_text()
    with open(csv_path) as f:
        lines = list(csv.DictReader(f))
    wo_bidmc = next(l for l in lines if l["row"] == "wo/enet" and l["site"] == "BIDMC")
    assert wo_bidmc["n_seeds"] == "1" and float(wo_bidmc["gap_mean"]) == pytest.approx(-0.05)
    assert len(lines) == 6  # three rows x two sites


def test_domain_shift_is_na_without_seen_evaluations(tmp_path):
    plan = fake_study(tmp_path, seeds=(0,))
    rows = table2_rows(collect(plan, tmp_path), ["deeplabv3plus"], ["enet"])
    assert "| ENet w/o | n/a | n/a | n/a |" in domain_shift_markdown(rows)


def test_single_seed_has_no_std_and_table4_rows(tmp_path):
    plan = fake_study(tmp_path, seeds=(0,))
    results = collect(plan, tmp_path)
    assert table2_rows(results, ["deeplabv3plus"], ["enet"])[1].cells["BIDMC"].text() == "0.500"
    rows = table4_rows(results, "deeplabv3plus", "enet")
    assert [row.label for row in rows] == ["Teacher: DeepLabV3+", "Student: ENet", "+LM", "+AAM + KMM + LM"]
    assert [row.cells["BIDMC"].text() for row in rows] == ["0.800", "0.500", "0.550", "0.600"]
    assert [row.paper["BIDMC"] for row in rows] == [0.878, 0.701, 0.619, 0.796]
    other = Run("BIDMC", 0, "enet", "deeplabv3plus", ALL, "paper_literal")  # Table 3's: not Table 4's "all" row
    write_eval(run_dir(other, tmp_path), {"Case00": 0.1, "Case02": 0.1})
    rows = table4_rows(collect(plan + [other], tmp_path), "deeplabv3plus", "enet")
    assert rows[-1].cells["BIDMC"].text() == "0.600" and len(rows[-1].cells["BIDMC"].results) == 1
    assert Cell().text() == "" and Cell([RunResult(plan[0], "not run")]).text() == "not run"

    (gain,) = distillation_gains(table2_rows(results, ["deeplabv3plus"], ["enet"]))
    assert (gain.student, gain.teacher) == ("ENet", "DeepLabV3+")
    assert gain.ours["BIDMC"] == pytest.approx((0.5, 0.6)) and gain.ours["RUNMC"] == pytest.approx((0.3, 0.4))
    assert gain.deltas["BIDMC"] == pytest.approx(0.1)
    assert gain.paper == {"RUNMC": (0.714, 0.810), "BIDMC": (0.701, 0.796)}


def test_per_case_csv(tmp_path):
    from tools.study.tables import per_case_rows

    plan = fake_study(tmp_path, seeds=(0,))
    rows = per_case_rows(collect(plan, tmp_path))
    assert len(rows) == len(plan) * 2
    row = next(r for r in rows if r["variant"] == "w" and r["site"] == "BIDMC" and r["case"] == "Case02")
    assert row["dice"] == pytest.approx(0.65) and row["hd95"] == pytest.approx(3.5) and row["asd"] == pytest.approx(0.7)
    assert row["teacher"] == "deeplabv3plus" and row["modules"] == "AAM+KMM+LM"


def test_the_papers_numbers():
    # the same cells reported twice in the paper agree as transcribed
    assert PAPER_TABLE4["all"] == PAPER_TABLE2[("w", "enet", "deeplabv3plus")] == PAPER_TABLE3[next(iter(PAPER_TABLE3))]
    assert PAPER_TABLE4["none"] == PAPER_TABLE2[("wo", "enet")]
    assert PAPER_TABLE4["teacher"] == PAPER_TABLE2[("teacher", "deeplabv3plus")]
    assert [paper_site(s) for s in SITES] == ["S1", "S2", "S3", "S4", "S5", "S6"]
    text = paper_table2_markdown(["HK", "BMC"])
    assert text.splitlines()[0] == "| model | S6 (HK) | S2 (BMC) |"
    assert "| UNet++ (teacher) | 0.871 | 0.893 |" in text and "| ESPNet w/ UNet++ | 0.808 | 0.594 |" in text
    if PAPER.is_file():  # every transcribed row is a row of the paper's text
        paper_rows = {tuple(line.rstrip("\t").split("\t")[1:]) for line in PAPER.read_text().splitlines() if "\t" in line}
        for values in [*PAPER_TABLE2.values(), *PAPER_TABLE3.values(), *PAPER_TABLE4.values()]:
            assert tuple(f"{v:.3f}" for v in values) in paper_rows, values


# ----------------------------------------------------------------------------------------------- figures


def test_figures(tmp_path):
    import nibabel as nib

    plan = fake_study(tmp_path / "study", seeds=(0,))
    data = tmp_path / "data" / "BIDMC"
    data.mkdir(parents=True)
    image = np.random.default_rng(0).normal(size=(16, 16, 5)).astype(np.float32)
    label = np.zeros((16, 16, 5), np.uint8)
    label[4:9, 4:9, 1:4] = 1
    label[3:10, 3:10, 3] = 1  # slice 3 has the largest gland area
    assert largest_slice(label) == 3 and largest_slice(np.zeros((2, 2, 4))) == 2
    for case in ("Case00", "Case02"):
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(data / f"{case}.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(data / f"{case}_Segmentation.nii.gz"))
    assert label_file_of(str(data / "Case00.nii.gz")) == str(data / "Case00_Segmentation.nii.gz")
    for r in plan:  # point the fake per-case CSVs at the fake images, save a mask per case
        folder = run_dir(r, tmp_path / "study")
        for raw in (folder / "eval").glob("test_*_raw.csv"):
            raw.write_text(raw.read_text().replace("/data/BIDMC", str(data)))
        (folder / "eval" / "masks").mkdir()
        for case in ("Case00", "Case02"):
            nib.save(nib.Nifti1Image(np.roll(label, 1, axis=0), np.eye(4)), str(folder / "eval" / "masks" / f"{case}_seg.nii.gz"))
    results = collect(plan, tmp_path / "study")
    bars = plot_dice_by_site(table2_rows(results, ["deeplabv3plus"], ["enet"]), tmp_path / "bars.png")
    overlay = plot_overlays(results, tmp_path / "study", "BIDMC", ["deeplabv3plus"], ["enet"], tmp_path / "overlays.png")
    for path in (bars, overlay):
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_overlays(results, tmp_path / "study", "HK", ["deeplabv3plus"], ["enet"], tmp_path / "none.png") is None
    for r in plan:  # results committed from another checkout: the recorded image paths are gone
        for raw in (run_dir(r, tmp_path / "study") / "eval").glob("test_*_raw.csv"):
            raw.write_text(raw.read_text().replace(str(data), "/elsewhere/BIDMC"))
    results = collect(plan, tmp_path / "study")
    assert plot_overlays(results, tmp_path / "study", "BIDMC", ["deeplabv3plus"], ["enet"], tmp_path / "gone.png") is None
    found = plot_overlays(results, tmp_path / "study", "BIDMC", ["deeplabv3plus"], ["enet"], tmp_path / "found.png",
                          dataset_dir=tmp_path / "data")
    assert found.is_file() and found.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in plan:  # results kept without their masks: no prediction to draw, no figure
        shutil.rmtree(run_dir(r, tmp_path / "study") / "eval" / "masks")
    assert plot_overlays(results, tmp_path / "study", "BIDMC", ["deeplabv3plus"], ["enet"], tmp_path / "bare.png",
                         dataset_dir=tmp_path / "data") is None


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_end_to_end_tiny(tmp_path):
    from tools.data.synth import synthesize

    synthesize(tmp_path / "data", cases_per_site=2, size=48, seed=0)
    out = tmp_path / "study"
    command = [sys.executable, "-m", "tools.study", "run", "--data", str(tmp_path / "data"), "--out", str(out),
               "--override", "image_size=32,max_epochs=1,val_interval=1,num_samples=2,lr_step_size=10",
               "--progress", "False", "--workers", "2"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "| ENet w/ DeepLabV3+ |" in result.stdout  # the table is printed at the end
    assert "The real case: a sanity check, not a benchmark" in result.stdout  # every model on ../shared/data/real_case
    assert (out / "real_case.md").is_file() and (out / "real_case.csv").is_file()
    with open(out / "table2.csv") as f:
        cells = list(csv.DictReader(f))
    assert [c["status"] for c in cells] == ["done"] * 3
    assert all(0.0 <= float(c["mean"]) <= 1.0 for c in cells)
    with open(out / "per_case.csv") as f:
        per_case = list(csv.DictReader(f))
    assert len(per_case) == 3 * 2 and {r["case"] for r in per_case} == {"Case00", "Case02"}
    w = run_dir(Run("BIDMC", 0, "enet", "deeplabv3plus", ALL), out)
    assert "distill_checkpoint_epoch=1.pt" in os.listdir(w / "models")  # trained through distill.yaml
    masks = sorted(n for n in os.listdir(w / "eval" / "masks") if n.endswith(".nii.gz"))
    assert masks == ["Case00_seg.nii.gz", "Case02_seg.nii.gz"]  # (beside each: its quality report, .json)
    assert (out / "overlays_BIDMC.png").is_file() and (out / "dice_by_site.png").is_file()
    # every run evaluated on the source sites' validation cases too (one case per source site here)
    with open(w / "eval_seen" / "test_dice_raw.csv") as f:
        seen_cases = [row["filename"] for row in csv.DictReader(f)]
    assert len(seen_cases) == 5 and not any("/BIDMC/" in name for name in seen_cases)
    with open(out / "domain_shift.csv") as f:
        shift = list(csv.DictReader(f))
    assert [row["label"] for row in shift] == ["DeepLabV3+ (teacher)", "ENet w/o", "ENet w/ DeepLabV3+"]
    assert "## Domain shift: seen vs unseen sites" in (out / "README.md").read_text()
    with open(out / "runs.csv") as f:  # every run, teacher included, has its flip rate on the source slices
        assert all(0.0 <= float(row["flip_rate"]) <= 1.0 for row in csv.DictReader(f))
    assert "## Degenerate masks: flip rate" in (out / "README.md").read_text()

    rerun = subprocess.run(command, capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=300)
    assert rerun.returncode == 0 and rerun.stdout.count(": skipped") == 3, rerun.stdout[-3000:]


def test_git_commit_ignores_the_study_folder_it_rewrites(tmp_path):
    from tools.study.report import git_commit

    repo = tmp_path / "repo"
    (repo / "results" / "study").mkdir(parents=True)
    (repo / "results" / "study" / "README.md").write_text("committed report\n")
    (repo / "code.py").write_text("x = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "results" / "study" / "README.md").write_text("a new report\n")
    assert git_commit(repo, exclude=repo / "results" / "study") == sha
    assert git_commit(repo) == f"{sha} (with uncommitted changes)"
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo, exclude=repo / "results" / "study") == f"{sha} (with uncommitted changes)"


# ------------------------------------------------------------------------------------------------ flip rate


def test_flip_rates_are_measured_once_per_weights_and_kept_without_them(tmp_path, monkeypatch):
    import torch
    from monai.bundle import ConfigParser

    from tools.bundles import bundle_dir
    from tools.data.synth import synthesize
    from tools.distill_select import validation_flip_rate
    from tools.study import flip_rates as study_flip_rates

    synthesize(tmp_path / "data", cases_per_site=2, size=48, seed=0)
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"])
    teacher, student_wo, student_w = plan
    folder = run_dir(student_wo, settings.out_dir)
    (folder / "models").mkdir(parents=True)
    (folder / "eval_seen").mkdir()
    parser = ConfigParser()
    configs = Path(bundle_dir(student_wo.bundle)) / "configs"
    parser.read_config([str(configs / "train.yaml"), str(configs / "profile_cpu.yaml")])
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def", instantiate=True).state_dict(), folder / "models" / "model.pt")
    (run_dir(teacher, settings.out_dir) / "models").mkdir(parents=True)  # unreadable weights: reported, not raised
    (run_dir(teacher, settings.out_dir) / "models" / "model.pt").write_text("not a checkpoint\n")
    (run_dir(teacher, settings.out_dir) / "eval_seen").mkdir()

    lines: List[str] = []
    values = study_flip_rates.measure_flip_rates(plan, settings, echo=lines.append)
    expected = validation_flip_rate(str(folder), str(tmp_path / "data"), "BIDMC", student_wo.bundle)
    assert 0.0 < values[student_wo.key] <= 1.0
    assert values[student_wo.key] == pytest.approx(expected, abs=1e-6)
    assert values[teacher.key] is None and values[student_w.key] is None
    assert len(lines) == 1 and lines[0].startswith(f"study: flip rate of {teacher.key} not measured: ")
    assert json.loads((folder / "eval_seen" / "flip_rate.json").read_text())["flip_rate"] == values[student_wo.key]

    def fail(*args):
        raise AssertionError("measured again")

    monkeypatch.setattr(study_flip_rates, "_measure", fail)
    assert study_flip_rates.measure_flip_rates(plan[1:2], settings)[student_wo.key] == values[student_wo.key]
    (folder / "models" / "model.pt").unlink()  # a run reused without weights keeps what it recorded
    assert study_flip_rates.measure_flip_rates(plan[1:2], settings)[student_wo.key] == values[student_wo.key]


def test_flip_rate_table_means_over_seeds_and_marks_the_unmeasured():
    plan = make_plan(["BIDMC", "HK"], [0, 1], ["deeplabv3plus"], ["enet"])
    values = {r.key: None for r in plan}
    wo = [r for r in plan if r.variant == "wo"]
    values[wo[0].key], values[wo[1].key] = 0.1, 0.2  # BIDMC seeds 0 and 1
    values[wo[2].key] = 0.4  # HK seed 0 only
    from tools.study.flip_rates import flip_rate_markdown

    lines = flip_rate_markdown(plan, values, ["BIDMC", "HK"])
    assert lines[0] == "| model | BIDMC | HK | mean |"
    assert "| ENet w/o | 0.150 | 0.400 (1 of 2) | 0.275 |" in lines
    assert "| DeepLabV3+ (teacher) | n/a | n/a | n/a |" in lines
