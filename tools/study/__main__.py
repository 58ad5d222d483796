"""``python -m tools.study run``: the paper's study through the bundles, one command.

Examples::

    python -m tools.study run                       # BIDMC held out, DeepLabV3+ -> ENet, w/o and w/, CPU profile
    python -m tools.study run --all-sites           # the six target sites
    python -m tools.study run --modules ablation    # + Table 4 for the first teacher-student pair
    python -m tools.study run --sites all --seeds 0,1 --objectives default,paper_literal,emkd   # + Table 3
    python -m tools.study run --teachers all --students all --sites all --seeds 0,1,2 --out results/full
    python -m tools.study run --data /data/prostate --profile paper
    python -m tools.study plan --all-sites          # the runs and their commands, without running anything
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional


from tools.cli import fire_commands, one_line_errors

from .dataset import prepare_data
from .flip_rates import measure_flip_rates
from .plan import make_plan, resolve_modules, resolve_networks, resolve_objectives, resolve_seeds, resolve_sites
from .real_case import check_real_case
from .report import StudyInfo, publish_report, write_outputs
from .runner import (Settings, evaluate_command, execute, existing_outcomes, parse_overrides, shell_text,
                     train_command)


STAGING_DIR = ".report.partial"
"""Where a call writes its report before it replaces the one in the study folder."""
FAILED_REPORT_DIR = "report_of_failed_call"
"""Where the report of a call with a failed run goes; the study folder's own report is left untouched."""


LOCK_NAME = ".study.lock"
"""The file a ``run`` call holds locked (``flock``) in its study folder, so that a second call on the same folder
stops instead of training the same run folders at once."""


def hold_study_folder(out_dir: Path):
    """Lock ``out_dir/.study.lock`` for this process (released when the returned file is closed or the process
    ends, however it ends); a folder that another call holds raises one line naming that call's pid."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    handle = open(out_dir / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise OSError(f"{out_dir} is in use by another `tools.study run` (pid {holder}): wait for it to end, or "
                           "pass another --out.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _selection(sites, teachers, students, modules, seeds, all_sites, objectives, ablation_sites=None,
               student_sites=None):
    sites = resolve_sites("all" if all_sites else sites)
    teachers = resolve_networks(teachers, "teacher")
    students = resolve_networks(students, "student")
    objectives = resolve_objectives(objectives)
    ablation_sites = None if ablation_sites is None else resolve_sites(ablation_sites)
    student_sites = None if student_sites is None else resolve_sites(student_sites)
    plan = make_plan(sites, resolve_seeds(seeds), teachers, students, resolve_modules(modules), objectives,
                     ablation_sites, student_sites)
    return plan, sites, teachers, students, objectives


def run(
    profile: str = "cpu",
    data: str = "synthetic",
    sites: Any = "BIDMC",
    teachers: Any = "deeplabv3plus",
    students: Any = "enet",
    modules: Any = "full",
    objectives: Any = "default",
    seeds: Any = 0,
    out: Optional[str] = None,
    all_sites: bool = False,
    ablation_sites: Any = None,
    student_sites: Any = None,
    override: Any = None,
    threads: Optional[int] = 1,
    workers: int = 1,
    measure_models: bool = False,
    progress: bool = True,
    report_only: bool = False,
    retrain_sites: Any = None,
) -> None:
    """Train and evaluate every run of the study, then write its tables, figures and README under ``out``.

    Args:
        profile: ``cpu`` (the bundles' profile_cpu.yaml: 96x96, students and teachers 40 epochs, teachers at width
            0.25) or ``paper``.
        data: a folder of the six-site collection, or ``synthetic`` (the simulator's sites in ``out/data``,
            synthesized unless the files there are intact; see :mod:`tools.study.dataset`).
        sites: target sites held out in turn (``BIDMC``, ``S5``, ``ISBI``... comma-separated) or ``all``.
        teachers: ``deeplabv3plus``, ``unetpp`` (comma-separated) or ``all``.
        students: ``enet``, ``espnet``, ``erfnet`` (comma-separated) or ``all``.
        modules: ``full`` (Table 2), ``ablation`` (+ Table 4 for the first pair) or combinations like ``LM,KMM+LM``.
        objectives: the distillation objectives of the ``w/`` runs from the first teacher: ``default`` (Table 2's;
            always run, from every teacher), ``paper_literal``, ``emkd`` (comma-separated) or ``all``; more than
            ``default`` adds one run per objective, student, site and seed (the teacher and ``w/o`` runs are shared)
            and Table 3.
        seeds: training seeds, e.g. ``0`` or ``0,1,2``.
        out: the study folder (default ``results/<profile>_default``).
        all_sites: the six target sites (same as ``--sites all``).
        ablation_sites: the target sites of the ablation runs (``--modules``), e.g. ``BIDMC``; default: every site.
        student_sites: the target sites of the students after the first (``--students all``), e.g. ``BIDMC,HK``;
            default: every site. The first student runs on every target.
        override: config overrides for every run, e.g. ``"max_epochs=1,image_size=32"``.
        threads: OMP/MKL threads of each run (default 1: on a shared 2-core machine one thread per run was
            4-5x faster per training step than two; 0 or None: torch's default).
        workers: runs trained at once (default 1: in plan order). A run waits for its teacher run; with
            ``threads`` 1, ``--workers 2`` keeps both cores of a 2-core machine busy.
        measure_models: measure Table 1 now (``tools.bench``) instead of copying ``results/models.md``.
        progress: a progress bar over runs.
        report_only: train and evaluate no run: write the report of the runs already evaluated, the others
            shown as ``not run`` (a study that spans several sessions, between its calls); the real case is
            measured as in any call (a run whose weights are here and whose mask is older is inferred).
        retrain_sites: target sites whose finished runs are trained again, once, e.g. ``BIDMC`` (so that the
            runs a table compares were trained on one machine); each keeps its previous results in
            ``before_retraining/`` and compares them in ``reproduction.json``.

    The report (tables, figures, README) is written into ``out/.report.partial`` and replaces the one in
    ``out`` only when every run succeeded; when a run failed, ``out``'s report (e.g. the committed results) is
    left untouched, this call's report goes to ``out/report_of_failed_call``, and the exit status is 1.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}.")
    start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = _load()
    plan, sites, teachers, students, objectives = _selection(sites, teachers, students, modules, seeds, all_sites,
                                                             objectives, ablation_sites, student_sites)
    retrain_sites = [] if retrain_sites is None else resolve_sites(retrain_sites)
    if retrain_sites and report_only:
        raise ValueError("--retrain_sites trains runs; it cannot go with --report_only.")
    outside = [site for site in retrain_sites if site not in sites]
    if outside:
        raise ValueError(f"retrain site {outside[0]!r} is not a target site of the study ({sites}).")
    out_dir = Path(out or f"results/{profile}_default").resolve()
    lock = hold_study_folder(out_dir)  # noqa: F841 (held until this call returns)
    dataset_dir, data_text = prepare_data(data, out_dir)
    settings = Settings(out_dir, dataset_dir, profile, parse_overrides(override), threads)
    print(f"study: {len(plan)} run(s) into {out_dir}", flush=True)
    if report_only:
        outcomes = existing_outcomes(plan, settings)
        print(f"study: report only; {sum(o.status == 'skipped' for o in outcomes)} run(s) evaluated, "
              f"{sum(o.status == 'not run' for o in outcomes)} not run", flush=True)
    else:
        retrain = [r.key for r in plan if r.site in retrain_sites]
        outcomes = execute(plan, settings, progress=progress, workers=workers, retrain=retrain)
    flip_rates = measure_flip_rates(plan, settings)  # each run with weights on the source validation slices
    real_case = check_real_case(plan, outcomes, settings)  # every model on ../shared/data/real_case, TAPS beside
    info = StudyInfo(
        command="python -m tools.study " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        data=data_text, teachers=teachers, students=students, sites=sites,
        seeds=sorted({r.seed for r in plan}), objectives=objectives, started=started, load_start=load_start,
    )
    info.wall_seconds = time.perf_counter() - start
    info.load_end = _load()
    failed = [o for o in outcomes if o.status == "failed"]
    staging = out_dir / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    written = write_outputs(plan, outcomes, settings, info, measure_models=measure_models, real_case=real_case,
                            report_dir=staging, flip_rates=flip_rates)
    if failed:  # the previous report in out_dir stays as it was; this call's report goes beside it
        kept = out_dir / FAILED_REPORT_DIR
        shutil.rmtree(kept, ignore_errors=True)
        staging.rename(kept)
        written = {key: kept / Path(path).name for key, path in written.items()}
    else:
        written = publish_report(staging, out_dir, written)
    print()
    print(written["table2"].read_text())
    if "table3" in written:
        print(written["table3"].read_text())
    if "table4" in written:
        print(written["table4"].read_text())
    print(written["real_case"].read_text())
    for o in failed:
        print(f"FAILED {o.run.key}: {o.message}; log: {o.log}")
    print(f"study: {len(plan)} run(s), {len(failed)} failed, wall time {time.perf_counter() - start:.0f} s; "
          f"README: {written['readme']}")
    if failed:
        print(f"study: the report in {out_dir} was left as it was; this call's report is in {out_dir / FAILED_REPORT_DIR}")
        raise SystemExit(1)


def plan(
    profile: str = "cpu",
    data: str = "synthetic",
    sites: Any = "BIDMC",
    teachers: Any = "deeplabv3plus",
    students: Any = "enet",
    modules: Any = "full",
    objectives: Any = "default",
    seeds: Any = 0,
    out: Optional[str] = None,
    all_sites: bool = False,
    ablation_sites: Any = None,
    student_sites: Any = None,
    override: Any = None,
) -> None:
    """Print the runs ``run`` would execute with the same arguments, and their commands; runs nothing."""
    runs, *_ = _selection(sites, teachers, students, modules, seeds, all_sites, objectives, ablation_sites,
                          student_sites)
    out_dir = Path(out or f"results/{profile}_default").resolve()
    dataset_dir = out_dir / "data" if str(data).lower() == "synthetic" else Path(data).resolve()
    settings = Settings(out_dir, dataset_dir, profile, parse_overrides(override))
    for index, r in enumerate(runs, 1):
        print(f"[{index}/{len(runs)}] {r.key}  ({r.label}{', needs ' + r.depends_on if r.depends_on else ''})")
        for command in (train_command(r, settings), evaluate_command(r, settings)):
            print("    " + shell_text(command))


def _load():
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def main() -> None:
    fire_commands({"run": one_line_errors(run), "plan": one_line_errors(plan)}, name="tools.study")


if __name__ == "__main__":
    main()
