"""Everything a study writes under ``results/<run>/`` once its runs are done (or failed):

``table2.md/.csv``, ``table3.md/.csv`` (when objectives besides the default were planned), ``table4.md/.csv`` (when
ablation runs were planned), ``domain_shift.md/.csv`` (each model's seen vs unseen Dice), ``reading.md`` (the
pre-registered reading rules applied: :mod:`.reading`), ``real_case.md/.csv`` (every model on the
real case, TAPS beside them: :mod:`.real_case`), ``table1.md`` (the networks' cost, from
``tools.bench``), ``per_case.csv``, ``dice_by_site.png``, ``overlays_<SITE>.png``, ``runs.csv`` (status, time and
log of each run) and ``README.md`` (all of it with the command, wall time, git commit and the paper's numbers).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from .figures import plot_dice_by_site, plot_overlays
from .flip_rates import flip_rate_markdown
from .plan import DEFAULT_OBJECTIVE, DISPLAY_NAMES, Run
from .reading import study_verdicts, write_reading
from .real_case import RealCaseReport, write_real_case_table
from .retraining import retraining_markdown
from .runner import ENVIRONMENT_FILE, RESUMED_KEY, Outcome, Settings, run_dir
from .tables import (
    RunResult,
    collect,
    distillation_gains,
    domain_shift_rows,
    markdown_table,
    objective_ranking,
    paper_site,
    paper_table3_markdown,
    table2_rows,
    table3_markdown,
    table3_rows,
    table4_rows,
    write_domain_shift,
    write_per_case,
    write_table,
    write_table3,
)

__all__ = ["StudyInfo", "git_commit", "write_table1", "write_outputs", "publish_report", "REPORT_PATTERNS"]

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_TABLE = REPO_ROOT / "results" / "models.md"

SITE_ASSUMPTION = (
    "The paper's sites S1..S6 are taken to be RUNMC, BMC, HCRUDB, UCL, BIDMC, HK in that order (the order of the "
    "six-site benchmark of MS-Net/SAML that the paper uses; the paper does not name them): an assumption."
)


@dataclass
class StudyInfo:
    """What the README records about the invocation (``objectives``: those of the ``w/`` runs, ``default`` first)."""

    command: str
    data: str
    teachers: List[str]
    students: List[str]
    sites: List[str]
    seeds: List[int]
    objectives: List[str] = field(default_factory=lambda: [DEFAULT_OBJECTIVE])
    wall_seconds: float = 0.0
    started: str = ""
    load_start: Optional[tuple] = None
    load_end: Optional[tuple] = None
    notes: List[str] = field(default_factory=list)


def git_commit(repo: Path = REPO_ROOT, exclude: Optional[Path] = None) -> str:
    """``git rev-parse HEAD`` of the checkout, with `` (with uncommitted changes)`` when ``git status`` is not clean
    outside ``exclude`` (the study's own folder, whose committed report a study call rewrites)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        pathspec = ["--", "."]
        if exclude is not None and Path(exclude).resolve().is_relative_to(Path(repo).resolve()):
            pathspec.append(f":(exclude){Path(exclude).resolve().relative_to(Path(repo).resolve())}")
        dirty = subprocess.run(["git", "status", "--porcelain", *pathspec], cwd=repo, capture_output=True,
                               text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + (" (with uncommitted changes)" if dirty else "")


def write_table1(out_dir: Path, measure: bool = False) -> Optional[Path]:
    """``table1.md``: ``results/models.md`` of ``python -m tools.bench models`` copied; with ``measure`` the
    networks are measured now (``tools.bench.models``, into ``out_dir``). ``None`` when neither is available."""
    out_dir = Path(out_dir)
    target = out_dir / "table1.md"
    if measure:
        from tools.bench.models import benchmark_models, write_models_table

        md_path, _ = write_models_table(benchmark_models(), out_dir, command="python -m tools.study run --measure_models")
        shutil.copyfile(md_path, target)
        return target
    if MODELS_TABLE.is_file():
        text = MODELS_TABLE.read_text()
        target.write_text(f"<!-- copied from results/models.md (python -m tools.bench models); not re-measured -->\n{text}")
        return target
    return None


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _timing(folder: Path) -> Dict[str, float]:
    path = folder / "timing.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _environment(folder: Path) -> str:
    """The run's ``environment.json`` as one line (``python 3.11.7, torch 2.13.0+cpu, ...``); ``""`` when absent."""
    path = folder / ENVIRONMENT_FILE
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return f"unreadable {ENVIRONMENT_FILE}"
    return ", ".join(f"{key} {value}" for key, value in record.items())


def _write_runs_csv(plan: Sequence[Run], results: Mapping[str, RunResult], outcomes: Mapping[str, Outcome],
                    settings: Settings, path: Path, flip_rates: Mapping[str, Optional[float]]) -> List[dict]:
    rows = []
    for run in plan:
        folder = run_dir(run, settings.out_dir)
        timing = _timing(folder)
        outcome = outcomes.get(run.key)
        result = results[run.key]
        log = result.log or (outcome.log if outcome else None)
        rows.append({
            "run": run.key, "label": run.label, "status": result.status,
            "this_call": outcome.status if outcome else "",
            "dice": "" if result.dice is None else f"{result.dice:.6f}",
            "seen_dice": "" if result.seen_dice is None else f"{result.seen_dice:.6f}",
            "flip_rate": "" if flip_rates.get(run.key) is None else f"{flip_rates[run.key]:.6f}",
            "train_s": timing.get("train_s", ""),
            "train_resumed_from": ";".join(timing.get(RESUMED_KEY, [])),
            "evaluate_s": "" if "evaluate_s" not in timing else round(timing["evaluate_s"] + timing.get("evaluate_seen_s", 0.0), 2),
            "message": outcome.message if outcome else "",
            "log": "" if log is None else os.path.relpath(log, settings.out_dir),
            "environment": _environment(folder),
        })
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["run"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


INVOCATION_COLUMNS = ("started", "wall_s", "executed", "skipped", "failed", "load_start", "load_end", "command")


def record_invocation(out_dir: Path, info: StudyInfo, outcomes: Sequence[Outcome],
                      previous_dir: Optional[Path] = None) -> List[dict]:
    """Write ``<out_dir>/invocations.csv``: the rows of ``<previous_dir>/invocations.csv`` (default ``out_dir``)
    and this invocation (a rerun that only rewrites the tables keeps the wall time of the call that trained);
    every invocation so far, oldest first."""
    path = Path(out_dir) / "invocations.csv"
    previous = Path(previous_dir if previous_dir is not None else out_dir) / "invocations.csv"
    rows = []
    if previous.is_file():
        with open(previous, newline="") as handle:
            rows = list(csv.DictReader(handle))
    counts = {status: sum(1 for o in outcomes if o.status == status) for status in ("done", "skipped", "failed")}
    rows.append({
        "started": info.started, "wall_s": f"{info.wall_seconds:.1f}", "executed": counts["done"],
        "skipped": counts["skipped"], "failed": counts["failed"], "load_start": info.load_start,
        "load_end": info.load_end, "command": info.command,
    })
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=INVOCATION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _gains_text(rows) -> List[str]:
    """One plain sentence per student-teacher pair: the measured change of Dice with distillation, per site and on
    average, and the paper's change for the same sites."""
    lines = []
    for gain in distillation_gains(rows):
        if not gain.ours:
            lines.append(f"- {gain.student} distilled from {gain.teacher}: no target site with both runs done.")
            continue
        parts = []
        for site, (wo, w) in gain.ours.items():
            paper = gain.paper.get(site)
            paper_text = f"; paper {paper[0]:.3f} -> {paper[1]:.3f}, {paper[1] - paper[0]:+.3f}" if paper else ""
            parts.append(f"{site} ({paper_site(site)}) {wo:.3f} -> {w:.3f}, {w - wo:+.3f}{paper_text}")
        deltas = list(gain.deltas.values())
        mean = sum(deltas) / len(deltas)
        better = sum(1 for d in deltas if d > 0)
        verdict = "raised" if mean > 0 else "lowered" if mean < 0 else "did not change"
        lines.append(
            f"- {gain.student} w/o -> w/ {gain.teacher} (Dice): {'; '.join(parts)}. Distillation {verdict} the mean "
            f"Dice on the unseen site(s) by {abs(mean):.3f} (over {len(deltas)} site(s)); it was better on "
            f"{better} of {len(deltas)}."
        )
    return lines


def _table3_text(student: str, teacher: str, rows) -> List[str]:
    """A plain sentence on Table 3: the objectives ranked by mean Dice over the sites where all are done, the sites
    each is best on, the student alone beside them, and the default objective's rank."""
    pair = f"{DISPLAY_NAMES[student]} from {DISPLAY_NAMES[teacher]}"
    ranking = objective_ranking(rows)
    if ranking is None:
        return [f"- {pair}: no target site with every objective done."]
    n = len(ranking.sites)
    order = "; ".join(f"{ranking.labels[o]} {mean:.3f} (best on {len(ranking.wins[o])} of {n})"
                      for o, mean in ranking.means.items())
    wo = "" if ranking.wo is None else f"; {DISPLAY_NAMES[student]} w/o {ranking.wo:.3f}"
    rank = ""
    if DEFAULT_OBJECTIVE in ranking.means:
        position = list(ranking.means).index(DEFAULT_OBJECTIVE) + 1
        rank = f" The project's default objective ranks {position} of {len(ranking.means)}."
    return [f"- {pair}, mean Dice over {n} target site(s) ({', '.join(ranking.sites)}), best first: {order}{wo}.{rank} "
            "The spread across seeds is in the table's cells."]


def write_outputs(
    plan: Sequence[Run],
    outcomes: Sequence[Outcome],
    settings: Settings,
    info: StudyInfo,
    measure_models: bool = False,
    real_case: Optional[RealCaseReport] = None,
    report_dir: Optional[Path] = None,
    flip_rates: Optional[Mapping[str, Optional[float]]] = None,
) -> Dict[str, Path]:
    """Write every output of the study into ``report_dir`` (default ``settings.out_dir``); returns ``{name: path}``
    (``real_case`` when ``real_case`` is given: :func:`tools.study.real_case.check_real_case`; ``flip_rates``:
    :func:`tools.study.flip_rates.measure_flip_rates`, a runs.csv column and a README section).

    Run folders are read from ``settings.out_dir``; :func:`publish_report` moves a report written elsewhere
    into the study folder.
    """
    out = Path(report_dir) if report_dir is not None else settings.out_dir
    out.mkdir(parents=True, exist_ok=True)
    results = collect(plan, settings.out_dir, outcomes)
    by_key = {o.run.key: o for o in outcomes}
    written: Dict[str, Path] = {}
    seeds_note = (
        f"Dice on every case of the held-out target site (3D Dice per volume, mean over the site's cases); "
        f"{len(info.seeds)} seed(s): {', '.join(map(str, info.seeds))}"
        + (" (cells: mean ± sample std over seeds)." if len(info.seeds) > 1 else ".")
    )
    paper_note = ("`paper Sk` columns: the paper's reported Dice for the same cell (real data, 384x384, 100 epochs), "
                  "printed for context; not measured here.")

    rows2 = table2_rows(results, info.teachers, info.students)
    written["table2"], written["table2_csv"] = write_table(
        rows2, out / "table2.md", "Table 2: Dice on the unseen target site", [seeds_note, paper_note, SITE_ASSUMPTION])
    tables3 = []
    if any(r.objective != DEFAULT_OBJECTIVE for r in plan):
        pairs = [(s, t) for s in info.students for t in info.teachers
                 if len({r.objective for r in plan if r.network == s and r.teacher == t and r.variant == "w"}) > 1]
        tables3 = [(s, t, table3_rows(results, t, s)) for s, t in pairs]
        table3_note = ("Every objective is a config of the same student bundle merged after distill.yaml; data, "
                       "splits, profile, Seg, optimizer, teacher run and seeds are shared, and nothing was chosen on "
                       "the held-out site. `paper Sk` beside the default and paper_literal rows: the paper's own "
                       "method (its Table 3 row \"Student: Enet\", Table 2's ENet w/ DeepLabV3+); beside the w/o "
                       "row: its Table 2.")
        written["table3"], written["table3_csv"] = write_table3(tables3, out / "table3.md",
                                                                [seeds_note, table3_note, paper_note, SITE_ASSUMPTION])
    shift_rows = domain_shift_rows(rows2, tables3)
    shift_note = ("Seen: the source sites' validation cases of the same run (`eval_seen/`, `--evaluate_key "
                  "validation`); unseen: every case of the held-out site (Table 2). Cells: seen / unseen (unseen - "
                  "seen), means over the seeds that have both; `mean gap`: over the target sites. A negative gap is "
                  "the accuracy lost to the site the model never saw. The seen cases also chose the checkpoint (the "
                  "best of the validations during training), so the seen Dice leans optimistic by that choice.")
    written["domain_shift"], written["domain_shift_csv"] = write_domain_shift(
        shift_rows, out / "domain_shift.md", [shift_note])
    verdicts = study_verdicts(rows2, tables3)
    if verdicts:
        written["reading"] = write_reading(verdicts, out / "reading.md")
    rows4 = []
    if any(r.variant == "ablation" for r in plan):
        rows4 = table4_rows(results, info.teachers[0], info.students[0])
        title = f"Table 4: ablation, {DISPLAY_NAMES[info.students[0]]} distilled from {DISPLAY_NAMES[info.teachers[0]]}"
        written["table4"], written["table4_csv"] = write_table(rows4, out / "table4.md", title,
                                                               [seeds_note, paper_note, SITE_ASSUMPTION])
    if real_case is not None:
        written["real_case"] = write_real_case_table(real_case, out)
        written["real_case_csv"] = out / "real_case.csv"
    written["per_case"] = write_per_case(results, out / "per_case.csv")
    table1 = write_table1(out, measure_models)
    if table1:
        written["table1"] = table1
    flip_rates = dict(flip_rates or {})
    runs_rows = _write_runs_csv(plan, results, by_key, settings, out / "runs.csv", flip_rates)
    written["runs"] = out / "runs.csv"

    figure = plot_dice_by_site(rows2, out / "dice_by_site.png")
    if figure:
        written["dice_by_site"] = figure
    for site in info.sites:
        overlay = plot_overlays(results, settings.out_dir, site, info.teachers, info.students, out / f"overlays_{site}.png",
                                dataset_dir=settings.dataset_dir)
        previous = settings.out_dir / f"overlays_{site}.png"
        if overlay is None and previous.is_file() and previous.parent != out:  # no mask left to draw: keep the
            overlay = Path(shutil.copy2(previous, out / previous.name))  # figure drawn when the masks existed
        if overlay:
            written[f"overlays_{site}"] = overlay

    invocations = record_invocation(out, info, outcomes, previous_dir=settings.out_dir)
    written["invocations"] = out / "invocations.csv"
    written["readme"] = _write_readme(out, plan, results, runs_rows, settings, info, rows2, rows4, written, invocations,
                                      tables3, flip_rates)
    return written


REPORT_PATTERNS = ("README.md", "table*.md", "table*.csv", "domain_shift.md", "domain_shift.csv", "reading.md",
                   "per_case.csv",
                   "runs.csv", "invocations.csv",
                   "dice_by_site.png", "overlays_*.png", "real_case*")
"""The study's report files at the top of its folder (run folders and data live in ``runs/`` and ``data/``)."""


def publish_report(staging: Path, out_dir: Path, written: Mapping[str, Path]) -> Dict[str, Path]:
    """Move the report written into ``staging`` to ``out_dir``, replacing the previous report there.

    Report files of the previous report that this one does not have (e.g. ``table4.md`` of an earlier
    ablation) are removed, so that the folder holds one consistent report; other files are left alone. Each
    file is replaced with :func:`os.replace`. Returns ``written`` with its paths in ``out_dir``.
    """
    staging, out_dir = Path(staging), Path(out_dir)
    new_names = {path.name for path in staging.iterdir() if path.is_file()}
    for pattern in REPORT_PATTERNS:
        for old in out_dir.glob(pattern):
            if old.is_file() and old.name not in new_names:
                old.unlink()
    for name in sorted(new_names):
        os.replace(staging / name, out_dir / name)
    shutil.rmtree(staging)
    return {key: out_dir / Path(path).name for key, path in written.items()}


def _write_readme(out, plan, results, runs_rows, settings, info, rows2, rows4, written, invocations,
                  tables3=(), flip_rates=None) -> Path:
    compute = sum(float(r["train_s"] or 0) + float(r["evaluate_s"] or 0) for r in runs_rows)
    resumed = sum(1 for r in runs_rows if r.get("train_resumed_from"))
    failed = [r for r in runs_rows if r["status"] == "failed"]
    executed = sum(1 for r in runs_rows if r["this_call"] == "done")
    not_run = sum(1 for r in runs_rows if r["status"] == "not run")
    lines = [
        f"# Study `{settings.out_dir.name}`: relational distillation on unseen prostate MRI sites",
        "",
        "Produced by:",
        "",
        "```bash",
        info.command,
        "```",
        "",
        f"- git commit: `{git_commit(exclude=settings.out_dir)}`",
        f"- profile: `{settings.profile}`"
        + (" (the bundles' `configs/profile_cpu.yaml`)" if settings.profile == "cpu" else " (the bundles' defaults)")
        + (f"; overrides: `{settings.overrides}`" if settings.overrides else ""),
        f"- data: {info.data}",
        f"- target sites: {', '.join(f'{s} ({paper_site(s)})' for s in info.sites)}; seeds: {', '.join(map(str, info.seeds))}; "
        f"teachers: {', '.join(DISPLAY_NAMES[t] for t in info.teachers)}; students: {', '.join(DISPLAY_NAMES[s] for s in info.students)}"
        + (f"; objectives (Table 3): {', '.join(info.objectives)}" if tables3 else ""),
        f"- wall time of this invocation: {_minutes(info.wall_seconds)} ({executed} run(s) executed, "
        f"{len(plan) - executed - len(failed) - not_run} reused, {len(failed)} failed"
        + (f", {not_run} not run yet: the study is not complete" if not_run else "") + "); sum of the recorded run times "
        f"(train + evaluate, all invocations): {_minutes(compute)}"
        + (f" (a lower bound: {resumed} run(s) resumed training from a checkpoint of a stopped attempt, whose "
           "seconds were not recorded)" if resumed else ""),
        f"- machine: {os.cpu_count()} CPU core(s); load average (1, 5, 15 min) at start {info.load_start}, at end {info.load_end}"
        + (f"; torch threads per run: {settings.threads}" if settings.threads else ""),
    ]
    environments = Counter(r["environment"] for r in runs_rows if r.get("environment"))
    if environments:
        lines.append(f"- training environment(s) ({len(environments)}; `environment` in runs.csv; training repeats "
                     "bit for bit on one machine, but the same package versions trained differently in another "
                     "working session, docs/distillation.md section 10): "
                     + "; ".join(f"{env} ({count} run(s))" for env, count in environments.most_common()))
    lines += [f"- {note}" for note in info.notes]
    if invocations:
        lines += ["", "Every invocation on this study folder ([invocations.csv](invocations.csv); a rerun reuses the "
                  "finished runs and only rewrites the outputs):", "",
                  "| started | wall (s) | executed | reused | failed | load at start |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['started']} | {r['wall_s']} | {r['executed']} | {r['skipped']} | {r['failed']} | {r['load_start']} |"
                  for r in invocations]
    if "reading" in written:
        lines += ["", "## How the study reads", "", "[reading.md](reading.md): the rules of docs/distillation.md "
                  "section 10, fixed before the results, applied to the tables below.", "",
                  written["reading"].read_text().split("\n\n", 2)[-1].rstrip()]
    lines += ["", "## Table 2: Dice on the unseen target site", "", markdown_table(rows2)]
    gains = _gains_text(rows2)
    if gains:
        lines += ["Distillation on the unseen site, measured (w/ minus w/o, Dice):", ""] + gains + [""]
    if "domain_shift" in written:
        lines += ["## Domain shift: seen vs unseen sites", "", "[domain_shift.md](domain_shift.md), "
                  "[domain_shift.csv](domain_shift.csv); cells: source-site validation Dice / held-out-site Dice "
                  "(gap), means over seeds.", "", written["domain_shift"].read_text().split("\n\n", 2)[-1]]
    for student, teacher, rows3 in tables3:
        lines += [f"## Table 3: distillation objectives ({DISPLAY_NAMES[student]} from {DISPLAY_NAMES[teacher]})", "",
                  "[table3.md](table3.md), [table3.csv](table3.csv); cells: mean ± sample std over seeds (seed "
                  "count); `paper Sk`: the paper's Table 3.", "", table3_markdown(rows3)]
        lines += _table3_text(student, teacher, rows3) + [""]
    if rows4:
        lines += [f"## Table 4: ablation ({DISPLAY_NAMES[info.students[0]]} from {DISPLAY_NAMES[info.teachers[0]]})",
                  "", markdown_table(rows4)]
    if flip_rates and any(value is not None for value in flip_rates.values()):
        lines += ["## Degenerate masks: flip rate on the source sites' validation slices", "",
                  "`flip_rate` in runs.csv: the fraction of 4-neighbour pairs touching the predicted gland whose labels "
                  "differ, argmax of `models/model.pt` at the network's grid before post-processing "
                  "(`tools/study/flip_rates.py`); a filled gland gives about 0.1-0.2, the checkerboard of the "
                  "literal objective about 0.5 or more. Means over seeds; measured while a run's weights exist, so "
                  "runs reused without weights show `n/a` unless they recorded it.", ""]
        lines += flip_rate_markdown(plan, flip_rates, info.sites) + [""]
    retrained = retraining_markdown(plan, settings.out_dir)
    if retrained:
        lines += ["## Retrained runs: the results recorded before retraining beside the new ones", "",
                  "Runs trained again (`--retrain_sites`, or a kept teacher retrained for new students) keep their "
                  "previous evaluations in `before_retraining/` and the per-case comparison in `reproduction.json`; "
                  "the tables above read the new ones. Means over the retrained seeds (Dice); training repeats bit "
                  "for bit on one machine, not necessarily on another (docs/distillation.md section 10).", ""]
        lines += retrained + [""]
    if "real_case" in written:
        section = written["real_case"].read_text().replace("### The real case", "## The real case", 1)
        lines += [section, "Per model: [real_case.csv](real_case.csv); masks in `runs/<SITE>/seed<K>/<run>/real_case/`.", ""]
    lines += ["## Table 1: the networks", ""]
    if "table1" in written:
        lines += ["[table1.md](table1.md): parameters, GFLOPs and CPU latency per 384x384 slice, with each student's "
                  "speed ratio to each teacher (`python -m tools.bench models`).", ""]
    else:
        lines += ["Not available: run `python -m tools.bench models` (writes results/models.md) or pass `--measure_models`.", ""]
    lines += ["## Figures", ""]
    if "dice_by_site" in written:
        lines += ["![Dice per target site](dice_by_site.png)", ""]
    for site in info.sites:
        if f"overlays_{site}" in written:
            lines += [f"![Overlays on {site}](overlays_{site}.png)", ""]
    lines += ["## Runs", "", "Per run: [runs.csv](runs.csv) (status, Dice, seconds, log); per case: "
              "[per_case.csv](per_case.csv) (Dice, HD95 mm, ASD mm). Run folders: `runs/<SITE>/seed<K>/<run>/` "
              "(models, TensorBoard logs, `logs/train.log`, `logs/evaluate.log`, `eval/`).", "",
              "| run | status | Dice | train (s) | evaluate (s) |", "|---|---|---|---|---|"]
    for r in runs_rows:
        dice = f"{float(r['dice']):.3f}" if r["dice"] else ""
        train = f"{r['train_s']} (resumed from {r['train_resumed_from']})" if r.get("train_resumed_from") else r["train_s"]
        lines.append(f"| {r['run']} | {r['status']} | {dice} | {train} | {r['evaluate_s']} |")
    if failed:
        lines += ["", "### Failed runs", ""]
        lines += [f"- {r['run']}: {r['message'] or 'failed'}; log: `{r['log']}`" for r in failed]
    if not tables3:
        lines += ["", "## The paper's Table 3 (other methods, as reported; context only, not reproduced)", "",
                  paper_table3_markdown(info.sites)]
    else:
        lines += [""]
    lines += ["## Notes", "", f"- {SITE_ASSUMPTION}",
              "- Each cell is measured as is; nothing (simulator, seeds, protocol) was tuned toward the paper's numbers.",
              ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
