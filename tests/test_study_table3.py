"""Table 3 in ``tools.study`` (issue 13): the objective dimension of the plan (``--objectives``), the commands it gives
the student bundles (the objective's config after distill.yaml), and Table 3 (one row per objective, the paper's
numbers beside ours, MSKD not run), on fake run folders and a fake launcher (no training).
"""

from __future__ import annotations

import ast
import csv
import sys
from pathlib import Path

import pytest

from test_study import FakeLauncher, arg, config_list, settings_for, write_eval
from tools.study import plan as study_plan
from tools.study import runner as study_runner
from tools.study.__main__ import run as cli_run
from tools.study.plan import ALL_MODULES, OBJECTIVES, STUDENTS, Run, make_plan, resolve_objectives
from tools.study.runner import evaluate_command, execute, run_dir, train_command
from tools.study.tables import (
    OBJECTIVE_NOTES,
    PAPER_TABLE2,
    PAPER_TABLE3,
    PAPER_TABLE3_ROWS,
    TABLE3_NOT_RUN,
    collect,
    domain_shift_rows,
    objective_ranking,
    per_case_rows,
    table2_rows,
    table3_markdown,
    table3_rows,
    write_table3,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER = REPO_ROOT.parent / "shared" / "paper.md"
THREE = ["default", "paper_literal", "emkd"]


# -------------------------------------------------------------------------------------------------- plan


def test_objectives_add_one_run_each_with_its_own_folder():
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"], (), resolve_objectives("default,paper_literal,emkd"))
    assert [r.key for r in plan] == [
        "BIDMC/seed0/prostate_mri_deeplabv3plus_teacher",
        "BIDMC/seed0/prostate_mri_enet_student__wo",
        "BIDMC/seed0/prostate_mri_enet_student__w_deeplabv3plus",
        "BIDMC/seed0/prostate_mri_enet_student__w_deeplabv3plus__paper_literal",
        "BIDMC/seed0/prostate_mri_enet_student__w_deeplabv3plus__emkd",
    ]
    assert [r.objective for r in plan] == ["default", "default", "default", "paper_literal", "emkd"]
    assert [r.depends_on for r in plan[2:]] == [plan[0].key] * 3  # one teacher run for every objective
    assert [r.label for r in plan[2:]] == ["ENet w/ DeepLabV3+", "ENet w/ DeepLabV3+ (paper_literal)",
                                           "ENet w/ DeepLabV3+ (EMKD)"]
    # two sites, two seeds, both teachers: one extra run per objective from the first teacher only (Table 3 is
    # about one pair); the second teacher's student gets the default objective; every key distinct
    grid = make_plan(["BIDMC", "HK"], [0, 1], ["deeplabv3plus", "unetpp"], ["enet"], (), THREE)
    assert len(grid) == 2 * 2 * (2 + 1 + 2 + 2) and len({r.key for r in grid}) == len(grid)
    assert {r.teacher for r in grid if r.objective != "default"} == {"deeplabv3plus"}
    assert {(r.teacher, r.objective) for r in grid if r.variant == "w"} == {
        ("deeplabv3plus", "default"), ("deeplabv3plus", "paper_literal"), ("deeplabv3plus", "emkd"), ("unetpp", "default")}


def test_the_default_plan_is_unchanged():
    for args in ((["BIDMC"], [0], ["deeplabv3plus"], ["enet"]),
                 (list(study_plan.SITES), [0, 1], ["deeplabv3plus", "unetpp"], list(STUDENTS))):
        before = make_plan(*args, study_plan.resolve_modules("ablation"))
        assert make_plan(*args, study_plan.resolve_modules("ablation"), resolve_objectives("default")) == before
        assert {r.objective for r in before} == {"default"}
    assert [r.name for r in make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"])] == [
        "prostate_mri_deeplabv3plus_teacher", "prostate_mri_enet_student__wo", "prostate_mri_enet_student__w_deeplabv3plus"]


def test_objective_names_and_errors():
    assert resolve_objectives(None) == resolve_objectives("default") == ["default"]
    assert resolve_objectives("EMKD") == ["default", "emkd"]  # the default is Table 2's w/ run: always in
    assert resolve_objectives(("emkd", "paper_literal")) == ["default", "emkd", "paper_literal"]
    assert resolve_objectives("all") == THREE == list(OBJECTIVES)
    with pytest.raises(ValueError) as error:
        resolve_objectives("default,mskd")
    message = str(error.value)
    assert message == ("unknown objective 'mskd' in --objectives; expected some of "
                       "['default', 'paper_literal', 'emkd'] or 'all'.")
    assert "\n" not in message
    with pytest.raises(ValueError, match="unknown objective 'kd'; expected one of"):
        Run("BIDMC", 0, "enet", "deeplabv3plus", ALL_MODULES, "kd")
    with pytest.raises(ValueError, match="objective 'emkd' needs a distillation run with all modules"):
        Run("BIDMC", 0, "enet", "deeplabv3plus", ("LM",), "emkd")
    with pytest.raises(ValueError, match="objective 'emkd' needs a distillation run"):
        Run("BIDMC", 0, "enet", objective="emkd")


def test_objective_configs_exist_in_every_student_bundle():
    from tools.bench.distill import OBJECTIVE_CONFIGS

    assert OBJECTIVE_CONFIGS is OBJECTIVES  # one map of names to configs, for the study and the benchmark
    for bundle in STUDENTS.values():
        for names in OBJECTIVES.values():
            for name in names:
                assert (REPO_ROOT / "bundles" / bundle / "configs" / name).is_file(), (bundle, name)


# ---------------------------------------------------------------------------------------------- commands


def test_commands_merge_the_objectives_config_after_distill_yaml(tmp_path):
    settings = settings_for(tmp_path)
    teacher, wo, default, literal, emkd = make_plan(["UCL"], [1], ["deeplabv3plus"], ["enet"], (), THREE)
    assert config_list(train_command(default, settings)) == ["train.yaml", "distill.yaml", "profile_cpu.yaml"]
    assert config_list(train_command(literal, settings)) == [
        "train.yaml", "distill.yaml", "distill_paper_literal.yaml", "profile_cpu.yaml"]
    assert config_list(train_command(emkd, settings)) == ["train.yaml", "distill.yaml", "distill_emkd.yaml",
                                                          "profile_cpu.yaml"]
    terms = {r.objective: ast.literal_eval(arg(train_command(r, settings), "distill_terms")) for r in (default, literal, emkd)}
    assert terms == {
        "default": {"logits": 0.2, "kernel": 0.9, "affinity": 0.09},  # distill.yaml
        "paper_literal": {"logits": 0.2, "kernel": 0.9, "affinity": 0.9},  # eq. 8's lambdas
        "emkd": {"kd_logits": 0.1, "emkd_importance": 0.9, "emkd_region_affinity": 0.9},  # EMKD's train_kd.py
    }
    for r in (literal, emkd):
        command = train_command(r, settings)
        assert arg(command, "bundle_root") == str(tmp_path / "study" / "runs" / "UCL" / "seed1" / r.name)
        assert arg(command, "teacher_ckpt") == str(run_dir(teacher, settings.out_dir) / "models" / "model.pt")
        # evaluation runs the student alone: the objective changes nothing there but the run folder
        assert config_list(evaluate_command(r, settings)) == ["train.yaml", "profile_cpu.yaml", "evaluate.yaml"]
    # the study's weight overrides reach an objective's own terms only
    weighted = settings_for(tmp_path, overrides={"distill_terms#kd_logits": 0.5, "distill_terms#affinity": 0.3})
    assert ast.literal_eval(arg(train_command(emkd, weighted), "distill_terms")) == {
        "kd_logits": 0.5, "emkd_importance": 0.9, "emkd_region_affinity": 0.9}
    assert ast.literal_eval(arg(train_command(literal, weighted), "distill_terms")) == {
        "logits": 0.2, "kernel": 0.9, "affinity": 0.3}
    paper = settings_for(tmp_path, profile="paper")
    assert config_list(train_command(emkd, paper)) == ["train.yaml", "distill.yaml", "distill_emkd.yaml"]


def test_objective_runs_execute_resume_and_have_per_case_rows(tmp_path):
    settings = settings_for(tmp_path)
    plan = make_plan(["BIDMC"], [0], ["deeplabv3plus"], ["enet"], (), THREE)
    launcher = FakeLauncher()
    outcomes = execute(plan, settings, launcher, progress=False, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["done"] * 5
    assert len({o.folder for o in outcomes}) == 5
    launcher.calls.clear()
    assert [o.status for o in execute(plan, settings, launcher, progress=False, echo=lambda line: None)] == ["skipped"] * 5
    assert launcher.calls == []
    rows = per_case_rows(collect(plan, settings.out_dir, outcomes))
    assert len(rows) == 5 * 2
    assert [(r["variant"], r["modules"], r["objective"]) for r in rows if r["case"] == "Case00"] == [
        ("teacher", "", ""), ("wo", "", ""), ("w", "AAM+KMM+LM", "default"), ("w", "", "paper_literal"), ("w", "", "emkd")]


# ------------------------------------------------------------------------------------------------ tables


def fake_objectives(out: Path, seeds=(0, 1), sites=("BIDMC", "RUNMC"), objectives=THREE):
    """Finished fake runs: Dice = base + 0.02 * seed (- 0.1 on RUNMC), on two cases at +-0.05 around it."""
    base = {"teacher": 0.8, "wo": 0.5, "default": 0.6, "paper_literal": 0.4, "emkd": 0.55}
    plan = make_plan(list(sites), list(seeds), ["deeplabv3plus"], ["enet"], (), list(objectives))
    for r in plan:
        d = base[r.variant if r.variant != "w" else r.objective] + 0.02 * r.seed - (0.1 if r.site == "RUNMC" else 0.0)
        write_eval(run_dir(r, out), {"Case00": d - 0.05, "Case02": d + 0.05})
    return plan


def test_table3_cells_and_the_papers_numbers(tmp_path):
    plan = fake_objectives(tmp_path)
    results = collect(plan, tmp_path)
    rows = table3_rows(results, "deeplabv3plus", "enet")
    assert [row.label for row in rows] == ["ENet w/o", "default", "paper_literal", "EMKD [27]", "MSKD [26]", "SAML [25]",
                                           "DRDG [24]"]
    assert table3_markdown(rows).splitlines() == [
        "| objective | RUNMC (S1) | paper S1 | BIDMC (S5) | paper S5 | configs / note |",
        "|---|---|---|---|---|---|",
        "| ENet w/o | 0.410 ± 0.014 (2 seeds) | 0.714 | 0.510 ± 0.014 (2 seeds) | 0.701 | reference: no distillation "
        "(Table 2) |",
        "| default | 0.510 ± 0.014 (2 seeds) | 0.810 | 0.610 ± 0.014 (2 seeds) | 0.796 | this project's objective: "
        "distill.yaml |",
        "| paper_literal | 0.310 ± 0.014 (2 seeds) | 0.810 | 0.410 ± 0.014 (2 seeds) | 0.796 | the paper's eq. 8 as "
        "written: distill.yaml + distill_paper_literal.yaml |",
        "| EMKD [27] | 0.460 ± 0.014 (2 seeds) | 0.635 | 0.560 ± 0.014 (2 seeds) | 0.544 | EMKD (Qin et al., TMI 2021): "
        "distill.yaml + distill_emkd.yaml |",
        "| MSKD [26] | not run | 0.762 | not run | 0.790 | not run: objective not identified (docs/distillation.md) |",
        "| SAML [25] | not run | 0.896 | not run | 0.873 | not run: domain generalisation, not a distillation objective |",
        "| DRDG [24] | not run | 0.709 | not run | 0.857 | not run: domain generalisation, not a distillation objective |",
    ]
    # Table 2's w/ row is the default objective's run, never another objective's
    assert table2_rows(results, ["deeplabv3plus"], ["enet"])[2].cells["BIDMC"].text() == "0.610 ± 0.014"

    ranking = objective_ranking(rows)
    assert ranking.sites == ["RUNMC", "BIDMC"] and list(ranking.means) == ["default", "emkd", "paper_literal"]
    assert ranking.means["default"] == pytest.approx(0.56) and ranking.wo == pytest.approx(0.46)
    assert ranking.wins == {"default": ["RUNMC", "BIDMC"], "emkd": [], "paper_literal": []}

    md, csv_path = write_table3([("enet", "deeplabv3plus", rows)], tmp_path / "table3.md", ["a note"])
    assert md.read_text().startswith("# Table 3: distillation objectives on the unseen target site\n\na note\n\n"
                                     "## ENet distilled from DeepLabV3+\n\n| objective |")
    with open(csv_path) as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 7 * 2
    emkd = next(l for l in lines if l["row"] == "objective/enet/deeplabv3plus/emkd" and l["site"] == "BIDMC")
    assert (emkd["pair"], emkd["status"], emkd["n_seeds"], emkd["values"], emkd["paper"]) == (
        "enet/deeplabv3plus", "done", "2", "0.550000 0.570000", "0.544")
    mskd = next(l for l in lines if l["row"] == "not_run/MSKD" and l["site"] == "RUNMC")
    assert (mskd["status"], mskd["paper"], mskd["note"]) == ("not run", "0.762",
                                                             "not run: objective not identified (docs/distillation.md)")


def test_domain_shift_rows_add_each_other_objective_once(tmp_path):
    plan = fake_objectives(tmp_path)
    results = collect(plan, tmp_path)
    rows2 = table2_rows(results, ["deeplabv3plus"], ["enet"])
    rows = domain_shift_rows(rows2, [("enet", "deeplabv3plus", table3_rows(results, "deeplabv3plus", "enet"))])
    assert [row.label for row in rows] == ["DeepLabV3+ (teacher)", "ENet w/o", "ENet w/ DeepLabV3+", "paper_literal",
                                           "EMKD [27]"]


def test_table3_one_seed_a_missing_objective_and_another_pair(tmp_path):
    plan = fake_objectives(tmp_path, seeds=(0,), sites=("HK",), objectives=["default", "emkd"])
    rows = table3_rows(collect(plan, tmp_path), "deeplabv3plus", "enet")
    assert [(row.label, row.cells["HK"].text(seeds=True), row.paper["HK"]) for row in rows] == [
        ("ENet w/o", "0.500 (1 seed)", 0.772), ("default", "0.600 (1 seed)", 0.876), ("EMKD [27]", "0.550 (1 seed)", 0.711),
        ("MSKD [26]", "", 0.658), ("SAML [25]", "", 0.883), ("DRDG [24]", "", 0.826)]
    # outside the paper's pair: no paper numbers, and only MSKD among the rows that were not run
    other = table3_rows(collect(plan, tmp_path), "unetpp", "enet")
    assert [row.label for row in other] == ["ENet w/o", "MSKD [26]"] and other[1].paper == {"HK": None}


def test_the_papers_table3_as_transcribed():
    assert set(TABLE3_NOT_RUN) | {PAPER_TABLE3_ROWS[o] for o in OBJECTIVES} == set(PAPER_TABLE3)
    assert set(OBJECTIVE_NOTES) == set(OBJECTIVES)
    assert PAPER_TABLE3[PAPER_TABLE3_ROWS["default"]] == PAPER_TABLE2[("w", "enet", "deeplabv3plus")]
    if PAPER.is_file():  # the rows of the paper's Table 3, in its order: Student: Enet, MSKD, EMKD, SAML, DRDG
        lines = PAPER.read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("Student: Enet\t0.810"))
        printed = [line.rstrip("\t").split("\t") for line in lines[start:start + 5]]
        assert [p[0].split(" [")[0] for p in printed] == ["Student: Enet", "MSKD", "EMKD", "SAML", "DRDG"]
        for p, values in zip(printed, PAPER_TABLE3.values()):
            assert p[1:] == [f"{v:.3f}" for v in values], p


# ----------------------------------------------------------------------------------------------- the CLI


def test_cli_writes_table3_only_when_objectives_ran(tmp_path, monkeypatch):
    def dice(folder):  # mean Dice: EMKD 0.7, default 0.6, paper_literal 0.5, every other run 0.4
        d = 0.7 if folder.name.endswith("__emkd") else 0.5 if folder.name.endswith("__paper_literal") else \
            0.6 if folder.name.endswith("__w_deeplabv3plus") else 0.4
        return {"Case00": d - 0.1, "Case02": d + 0.1}

    monkeypatch.setattr(study_runner, "launch_subprocess", FakeLauncher(dice=dice))
    monkeypatch.setattr(sys, "argv", ["python -m tools.study", "run", "--objectives", "default,paper_literal,emkd"])
    (tmp_path / "data").mkdir()
    out = tmp_path / "study"
    cli_run(data=str(tmp_path / "data"), out=str(out), objectives="default,paper_literal,emkd", progress=False)
    readme = (out / "README.md").read_text()
    assert "objectives (Table 3): default, paper_literal, emkd" in readme
    assert "## Table 3: distillation objectives (ENet from DeepLabV3+)" in readme and "[table3.md](table3.md)" in readme
    assert "| EMKD [27] | 0.700 (1 seed) | 0.544 |" in readme and "| MSKD [26] | not run | 0.790 |" in readme
    assert ("- ENet from DeepLabV3+, mean Dice over 1 target site(s) (BIDMC), best first: EMKD [27] 0.700 (best on 1 of 1); "
            "default 0.600 (best on 0 of 1); paper_literal 0.500 (best on 0 of 1); ENet w/o 0.400. The project's default "
            "objective ranks 2 of 3.") in readme
    assert "context only, not reproduced" not in readme  # the paper's numbers are in Table 3 itself
    # the reading rules (one seed: no spread, so any positive difference counts)
    assert "## How the study reads" in readme and "[reading.md](reading.md)" in readme
    assert ("| **EMKD [27] better than default (+0.100 vs spread 0.000); default better than paper_literal (+0.100 vs "
            "spread 0.000)** |") in readme
    assert "mean +0.200 over 1 site (BIDMC +0.200); positive beyond the seed spread on 1 of 1 (BIDMC) | **helps** |" in (
        out / "reading.md").read_text()
    assert (out / "table3.md").is_file() and (out / "table3.csv").is_file()
    with open(out / "per_case.csv") as f:
        assert {r["objective"] for r in csv.DictReader(f)} == {"", "default", "paper_literal", "emkd"}

    monkeypatch.setattr(sys, "argv", ["python -m tools.study", "run"])
    cli_run(data=str(tmp_path / "data"), out=str(out), progress=False)  # the default: no Table 3, its file removed
    readme = (out / "README.md").read_text()
    assert "## Table 3:" not in readme and "objectives" not in readme and "table3.md" not in readme
    assert not (out / "table3.md").exists() and not (out / "table3.csv").exists()
    assert "## The paper's Table 3 (other methods, as reported; context only, not reproduced)" in readme


def test_the_documented_table3_command_plans_60_runs():
    """docs/distillation.md 9.3's command: 6 sites x 2 seeds x (teacher, w/o, three objectives)."""
    from tools.study.__main__ import _selection

    docs = (REPO_ROOT / "docs" / "distillation.md").read_text()
    command = "python -m tools.study run --sites all --seeds 0,1 --objectives default,paper_literal,emkd"
    assert command + " --out results/cpu_all_sites" in docs
    plan, sites, teachers, students, objectives = _selection("all", "deeplabv3plus", "enet", "full", "0,1", False,
                                                             "default,paper_literal,emkd")
    assert (len(plan), sum(r.objective != "default" for r in plan), objectives) == (60, 24, THREE)


def test_the_command_that_completes_the_study_keeps_the_60_runs():
    """docs/distillation.md section 10: adding the UNet++ teacher and the BIDMC ablation plans 96 runs, among them
    the 60 of the DeepLabV3+ part with the same folders (so the committed runs are reused)."""
    from tools.study.__main__ import _selection

    docs = " ".join((REPO_ROOT / "docs" / "distillation.md").read_text().split())
    assert ("--teachers all --objectives default,paper_literal,emkd --modules ablation --ablation_sites BIDMC "
            "--workers 2 --out results/cpu_all_sites") in docs
    part, *_ = _selection("all", "deeplabv3plus", "enet", "full", "0,1", False, "default,paper_literal,emkd")
    whole, *_ = _selection("all", "all", "enet", "ablation", "0,1", False, "default,paper_literal,emkd", "BIDMC")
    assert len(whole) == 96 and {r.key for r in part} <= {r.key for r in whole}
    added = [r for r in whole if r.key not in {p.key for p in part}]
    assert sum(r.variant == "teacher" for r in added) == 12 and sum(r.variant == "ablation" for r in added) == 12
    assert {r.site for r in added if r.variant == "ablation"} == {"BIDMC"}
    assert {r.objective for r in added} == {"default"}
