"""Running the plan: each run is ``python -m monai.bundle run training`` then ``run evaluating`` on the bundle's
own config files, as subprocesses, into its own run folder.

Run folder: ``<out>/runs/<SITE>/seed<K>/<run name>`` (:attr:`tools.study.plan.Run.key`) is the run's
``--bundle_root``, so that its ``models/``, ``logs/`` (TensorBoard) and ``eval/`` land there; the config files are
the checkout's ``bundles/<bundle>/configs``. The study adds ``logs/train.log`` and ``logs/evaluate.log`` (the
commands' output, command line first), ``trained`` (written when training exited 0), ``timing.json`` and
``environment.json`` (the training interpreter's Python and package versions, :func:`environment_record`). Each
run is evaluated twice with the bundle's ``evaluate.yaml``: on every case of the held-out site (``eval/``, the
tables' unseen Dice) and on the source sites' validation cases (``eval_seen/``, ``--evaluate_key validation``:
the seen Dice of the domain-shift table).

Resumability: a run whose ``eval/`` and ``eval_seen/`` hold their metrics and per-case CSVs is skipped. Otherwise
training runs again unless ``trained`` exists (the bundle resumes from the newest checkpoint in ``models/`` by
itself; ``timing.json`` then lists that checkpoint under ``train_resumed_from``, since the stopped attempt's
seconds were never recorded), and each evaluation runs again unless its folder is complete.

Parallel runs: with ``workers`` > 1, :func:`execute` keeps that many runs going at once; a run starts when a
worker is free and its teacher run (if any) has finished, in plan order otherwise.
Nothing checks that a finished run used today's configs or overrides: delete a run folder to redo that run
(and the folders of the students of a teacher you redo).

Retraining for students: a teacher run whose results are kept without its weights (a study committed across
sessions keeps evaluations, not ``models/``) is trained and evaluated again when a student of the plan that is not
yet evaluated needs its weights. Its previous evaluations, timing and environment move to ``before_retraining/``,
and ``reproduction.json`` compares the new per-case Dice with them (:func:`compare_evaluations`): on the machine
and environment that trained it they are equal bit for bit; on another machine they can differ (the students
then learn from the new weights, and the table reads the new evaluation).
A run that fails (non-zero exit) is reported with its log; the runs that need its weights (the students of a
failed teacher) fail without running; every other run goes on.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml
from monai.bundle import ConfigParser

from custom_losses import DISTILLATION_TERMS
from tools.bundles import BUNDLES_DIR, latest_checkpoint

from .plan import DEFAULT_OBJECTIVE, OBJECTIVES, Run

__all__ = [
    "PROFILES",
    "EVAL_FILES",
    "ENVIRONMENT_FILE",
    "Settings",
    "Outcome",
    "Launcher",
    "parse_overrides",
    "run_dir",
    "is_evaluated",
    "is_seen_evaluated",
    "train_command",
    "distill_terms",
    "evaluate_command",
    "evaluate_seen_command",
    "shell_text",
    "launch_subprocess",
    "execute",
    "existing_outcomes",
    "environment_record",
    "compare_evaluations",
    "REPRODUCTION_FILE",
    "read_raw_metric",
]

PROFILES: Dict[str, Optional[str]] = {"cpu": "profile_cpu.yaml", "paper": None}
"""Profile -> the override file merged after ``train.yaml`` (and ``distill.yaml``); the paper's profile is the
bundles' defaults."""

EVAL_FILES = ("metrics.csv", "test_dice_raw.csv", "test_hd95_raw.csv", "test_asd_raw.csv")
"""What a finished evaluation leaves in ``<run folder>/eval`` (MONAI's MetricsSaver)."""

SEEN_EVAL_DIR = "eval_seen"
"""Where a run's evaluation on the source sites' validation cases goes (the same files as :data:`EVAL_FILES`)."""

TRAINED_MARKER = "trained"

RECORDED_DIR = "before_retraining"
"""Where a retrained run's previous ``eval/``, ``eval_seen/``, ``timing.json`` and ``environment.json`` go."""

REPRODUCTION_FILE = "reproduction.json"
"""A retrained run's comparison of its new per-case Dice with the recorded ones (:func:`compare_evaluations`)."""


@dataclass
class Settings:
    """How the runs of a study are executed.

    Attributes:
        out_dir: the study folder ``results/<run>``; run folders go under ``out_dir/runs``.
        dataset_dir: the six-site collection.
        profile: a key of :data:`PROFILES`.
        overrides: extra ``--key value`` config overrides passed to every training and evaluation command.
        threads: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of the commands (``None``: inherited).
        save_masks: evaluation writes the predicted masks (``eval/masks``), for the overlay figures.
        bundles_dir: where the bundles' config files are read.
        python: the interpreter that runs ``-m monai.bundle``.
    """

    out_dir: Path
    dataset_dir: Path
    profile: str = "cpu"
    overrides: Dict[str, Any] = field(default_factory=dict)
    threads: Optional[int] = None
    save_masks: bool = True
    bundles_dir: Path = BUNDLES_DIR
    python: str = sys.executable

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; expected one of {list(PROFILES)}.")
        self.out_dir = Path(self.out_dir)
        self.dataset_dir = Path(self.dataset_dir)
        self.bundles_dir = Path(self.bundles_dir)


@dataclass
class Outcome:
    """What became of one run: ``status`` is ``done`` (trained and evaluated now), ``skipped`` (evaluated
    before), ``failed`` or ``not run`` (a report-only call, :func:`existing_outcomes`); ``log`` is the log to read
    for a failure; ``seconds`` the wall time of this call."""

    run: Run
    status: str
    folder: Path
    log: Optional[Path] = None
    message: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")


Launcher = Callable[[Sequence[str], Path, Mapping[str, str]], int]
"""``launcher(command, log_path, env) -> exit code``: runs one command, its output going to ``log_path``."""


# ------------------------------------------------------------------------------------------------ commands


def parse_overrides(overrides: Any) -> Dict[str, Any]:
    """Config overrides from ``"max_epochs=1,image_size=32"`` or a mapping; values are read as YAML
    (``1`` -> int, ``false`` -> bool, ``[a, b]`` -> list), so ``progress=false`` really is false."""
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    items = overrides if isinstance(overrides, (list, tuple)) else str(overrides).split(",")
    parsed: Dict[str, Any] = {}
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not key=value (in --override {overrides!r}).")
        parsed[key.strip()] = _number_or_yaml(value.strip())
    return parsed


def _number_or_yaml(text: str) -> Any:
    """``1e-3`` -> 0.001 (which YAML 1.1 leaves a string), else the YAML value of ``text``."""
    try:
        return float(text) if any(c in text.lower() for c in ".e") and not text.lower() in ("true", "false") else int(text)
    except ValueError:
        return yaml.safe_load(text)


def _cli_value(value: Any) -> str:
    """A config value as ``python -m monai.bundle`` (fire) reads it back: ``True``/``False`` capitalised,
    ``None`` as ``None``, lists and dicts as Python literals."""
    if isinstance(value, (bool, type(None), list, tuple, dict)):
        return repr(value)
    return str(value)


def _cli_args(overrides: Mapping[str, Any]) -> List[str]:
    args: List[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", _cli_value(value)]
    return args


def run_dir(run: Run, out_dir: Path) -> Path:
    """``<out_dir>/runs/<SITE>/seed<K>/<run name>``: the run's ``--bundle_root``."""
    return Path(out_dir) / "runs" / run.key


def is_evaluated(folder: Path, eval_dir: str = "eval") -> bool:
    """Whether ``<folder>/<eval_dir>`` holds every file of a finished evaluation (:data:`EVAL_FILES`)."""
    return all((Path(folder) / eval_dir / name).is_file() for name in EVAL_FILES)


def is_seen_evaluated(folder: Path) -> bool:
    """Whether the evaluation on the source sites' validation cases (:data:`SEEN_EVAL_DIR`) finished."""
    return is_evaluated(folder, SEEN_EVAL_DIR)


def _config_paths(run: Run, settings: Settings, stage: str) -> List[Path]:
    configs = settings.bundles_dir / run.bundle / "configs"
    files = [configs / "train.yaml"]
    if stage == "train" and run.teacher:
        files.append(configs / "distill.yaml")
        files += [configs / name for name in OBJECTIVES[run.objective]]
    if PROFILES[settings.profile]:
        files.append(configs / PROFILES[settings.profile])
    if stage == "evaluate":
        files.append(configs / "evaluate.yaml")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"config file(s) of bundle {run.bundle!r} not found: {', '.join(missing)}.")
    return files


def _config_files(run: Run, settings: Settings, stage: str) -> List[str]:
    return ["[" + ",".join(f"'{f}'" for f in _config_paths(run, settings, stage)) + "]"]


def _is_terms_override(key: str) -> bool:
    return key == "distill_terms" or key.startswith("distill_terms#")


def distill_terms(run: Run, settings: Settings) -> Dict[str, float]:
    """The ``--distill_terms`` of a distillation run: the run's terms at the weights of its merged configs
    (``distill.yaml``, the objective's config, the profile, then the study's ``distill_terms`` overrides).

    The run's terms are Table 4's modules (:attr:`Run.terms`) for the default objective, and for another objective
    the terms its config sets (e.g. EMKD's ``kd_logits``, ``emkd_importance``, ``emkd_region_affinity``).

    Raises:
        ValueError: a term of the run has no weight in the configs.
    """
    parser = ConfigParser()
    parser.read_config([str(f) for f in _config_paths(run, settings, "train")])
    terms = run.terms if run.objective == DEFAULT_OBJECTIVE else tuple(parser["distill_terms"])
    for key, value in settings.overrides.items():
        if _is_terms_override(key):
            parser[key] = value
    weights = parser["distill_terms"]
    missing = [term for term in terms if term not in weights]
    if missing:
        raise ValueError(f"run {run.key}: distill_terms {dict(weights)} has no weight for {missing} ({run.label}).")
    return {term: weights[term] for term in DISTILLATION_TERMS if term in terms}


def _common_args(run: Run, settings: Settings) -> List[str]:
    return [
        "--bundle_root", str(run_dir(run, settings.out_dir)),
        "--dataset_dir", str(settings.dataset_dir),
        "--target_site", run.site,
        "--progress", "False",
    ]


def train_command(run: Run, settings: Settings) -> List[str]:
    """``python -m monai.bundle run training`` of ``run``: ``train.yaml`` (+ ``distill.yaml`` and the objective's
    config (:data:`tools.study.plan.OBJECTIVES`), with the teacher's bundle, its weights from the teacher's run folder
    and the run's :func:`distill_terms`) + the profile."""
    command = [settings.python, "-m", "monai.bundle", "run", "training", "--config_file"]
    command += _config_files(run, settings, "train") + _common_args(run, settings) + ["--seed", str(run.seed)]
    if run.teacher:
        teacher_run = Run(run.site, run.seed, run.teacher)
        command += [
            "--teacher_name", teacher_run.bundle,
            "--teacher_bundle", str(settings.bundles_dir / teacher_run.bundle),
            "--teacher_ckpt", str(run_dir(teacher_run, settings.out_dir) / "models" / "model.pt"),
        ]
        command += ["--distill_terms", _cli_value(distill_terms(run, settings))]
        return command + _cli_args({k: v for k, v in settings.overrides.items() if not _is_terms_override(k)})
    return command + _cli_args(settings.overrides)


def _evaluate(run: Run, settings: Settings, output_dir: Path, extra: Sequence[str]) -> List[str]:
    command = [settings.python, "-m", "monai.bundle", "run", "evaluating", "--config_file"]
    command += _config_files(run, settings, "evaluate") + _common_args(run, settings)
    return command + list(extra) + ["--output_dir", str(output_dir)] + _cli_args(settings.overrides)


def evaluate_command(run: Run, settings: Settings) -> List[str]:
    """``python -m monai.bundle run evaluating`` of ``run`` on every case of its target site (``eval/``)."""
    folder = run_dir(run, settings.out_dir)
    return _evaluate(run, settings, folder / "eval", ["--save_masks", _cli_value(settings.save_masks)])


def evaluate_seen_command(run: Run, settings: Settings) -> List[str]:
    """``python -m monai.bundle run evaluating`` of ``run`` on the source sites' validation cases
    (``--evaluate_key validation``, into :data:`SEEN_EVAL_DIR`, no masks)."""
    folder = run_dir(run, settings.out_dir)
    return _evaluate(run, settings, folder / SEEN_EVAL_DIR, ["--evaluate_key", "validation", "--save_masks", "False"])


# ----------------------------------------------------------------------------------------------- execution


def launch_subprocess(command: Sequence[str], log_path: Path, env: Mapping[str, str]) -> int:
    """Run ``command`` in ``log_path``'s run folder, stdout and stderr appended to ``log_path``; its exit code."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write("$ " + shell_text(command) + "\n")
        log.flush()
        process = subprocess.run(list(command), stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=str(log_path.parents[1]))
    return process.returncode


def shell_text(command: Sequence[str]) -> str:
    """``command`` as one line to paste in a shell; arguments with spaces, quotes or brackets in double quotes
    (the ``--config_file "['a.yaml','b.yaml']"`` form of the bundles' READMEs)."""
    return " ".join(f'"{arg}"' if any(c in arg for c in " '[]") else arg for arg in command)


def _environment(settings: Settings) -> Dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if settings.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(settings.threads))
    return env


def _update_timing(folder: Path, change: Callable[[Dict[str, Any]], None]) -> None:
    """Read ``folder/timing.json`` (``{}`` when absent), let ``change`` edit it in place, write it back."""
    path = folder / "timing.json"
    timing = json.loads(path.read_text()) if path.is_file() else {}
    change(timing)
    path.write_text(json.dumps(timing, indent=1) + "\n")


def _write_timing(folder: Path, stage: str, seconds: float) -> None:
    """Add ``seconds`` to ``<stage>_s`` of ``timing.json``."""
    key = f"{stage}_s"
    _update_timing(folder, lambda timing: timing.update({key: round(timing.get(key, 0.0) + seconds, 2)}))


RESUMED_KEY = "train_resumed_from"
"""``timing.json`` key: the checkpoints that training attempts resumed from, oldest first. An attempt that was
stopped (the study killed between sessions) never records its seconds, so a resumed run's ``train_s`` counts only
the attempts that finished or failed; this key says so."""


def resume_checkpoint(folder: Path, distilled: bool) -> Optional[str]:
    """File name of the checkpoint the bundle's training will resume from, or ``None``: the newest
    ``models/distill_checkpoint_epoch=N.pt`` for a distillation run (``distill.yaml``), the newest
    ``models/checkpoint_checkpoint_epoch=N.pt`` otherwise (``train.yaml``)."""
    newest = latest_checkpoint(str(folder / "models"), "distill" if distilled else "checkpoint")
    return None if newest is None else Path(newest).name


def _record_resume(run: Run, folder: Path) -> None:
    """Append the checkpoint the coming training attempt resumes from (if any) to ``timing.json``."""
    checkpoint = resume_checkpoint(folder, distilled=run.teacher is not None)
    if checkpoint is not None:
        _update_timing(folder, lambda timing: timing.update({RESUMED_KEY: timing.get(RESUMED_KEY, []) + [checkpoint]}))


ENVIRONMENT_FILE = "environment.json"
ENVIRONMENT_PACKAGES = ("torch", "monai", "numpy", "scipy", "nibabel", "itk", "scikit-image", "pytorch-ignite")
"""The packages whose versions a run records: training is bitwise repeatable in one environment, not across them."""

_ENVIRONMENT_SCRIPT = """
import json, platform
from importlib import metadata
record = {"python": platform.python_version(), "platform": platform.system() + " " + platform.machine()}
try:  # the processor: the same package versions trained differently in another working session
    with open("/proc/cpuinfo") as handle:
        record["cpu"] = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
except (OSError, StopIteration):
    record["cpu"] = platform.processor() or "unknown"
try:  # the instruction set torch's CPU kernels dispatch to (e.g. AVX2, AVX512)
    import torch
    record["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
except Exception as error:
    record["torch_cpu_capability"] = f"unknown ({type(error).__name__})"
for package in PACKAGES:
    try:
        record[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
        record[package] = "not installed"
print(json.dumps(record))
"""


def environment_record(python: str = sys.executable) -> Dict[str, str]:
    """``{"python", "platform", "cpu" (the processor's model name), "torch_cpu_capability" (the instruction set of
    torch's CPU kernels), <package>: <version>}`` of the interpreter ``python`` (the one that trains;
    :data:`ENVIRONMENT_PACKAGES`, read from its installed metadata), or ``{"error": ...}``."""
    script = f"PACKAGES = {list(ENVIRONMENT_PACKAGES)!r}\n" + _ENVIRONMENT_SCRIPT
    try:
        result = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120)
        return json.loads(result.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        return {"error": f"could not ask {python}: {error!r}"}


def _write_environment(folder: Path, settings: Settings) -> None:
    """``<run folder>/environment.json``: :func:`environment_record` of ``settings.python``."""
    record = environment_record(settings.python)
    (folder / ENVIRONMENT_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def _weights_ready(folder: Path) -> bool:
    """Whether a run's training finished (``trained``) and left ``models/model.pt`` (what a student's
    distillation reads; a teacher whose evaluation failed still teaches)."""
    return (folder / TRAINED_MARKER).is_file() and (folder / "models" / "model.pt").is_file()


def read_raw_metric(path: Path) -> Dict[str, float]:
    """``{image file: value}`` from one of MONAI's MetricsSaver ``test_<metric>_raw.csv`` (its ``mean`` column)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "filename" not in reader.fieldnames or "mean" not in reader.fieldnames:
            raise ValueError(f"{path}: expected the columns 'filename' and 'mean' of MONAI's MetricsSaver, got "
                             f"{reader.fieldnames}.")
        return {row["filename"]: float(row["mean"]) for row in reader}


def _per_case_dice(eval_dir: Path) -> Dict[str, float]:
    """Case file name -> Dice of ``<eval_dir>/test_dice_raw.csv`` (the name, not the path, which names the clone
    that evaluated it)."""
    return {Path(name).name: value for name, value in read_raw_metric(eval_dir / "test_dice_raw.csv").items()}


def compare_evaluations(recorded: Path, folder: Path) -> Dict[str, Any]:
    """Compare the per-case Dice of ``folder``'s ``eval/`` and ``eval_seen/`` with those under ``recorded``.

    Returns, per evaluation folder, ``cases`` (how many in both), ``max_abs_difference`` (the largest
    ``|new - recorded|`` over those cases), ``recorded_mean`` and ``new_mean``; ``case_sets_differ`` is true when a
    case is in one and not the other; ``identical`` is true when every case is in both with a difference below
    ``1e-6`` (MetricsSaver writes seven significant digits).
    """
    comparison: Dict[str, Any] = {"identical": True}
    for name in ("eval", SEEN_EVAL_DIR):
        before, after = _per_case_dice(Path(recorded) / name), _per_case_dice(Path(folder) / name)
        common = sorted(set(before) & set(after))
        if not common:
            raise ValueError(f"{Path(folder) / name}: no case in common with {Path(recorded) / name}.")
        largest = max(abs(after[case] - before[case]) for case in common)
        differ = set(before) != set(after)
        comparison[name] = {
            "cases": len(common), "max_abs_difference": round(largest, 7), "case_sets_differ": differ,
            "recorded_mean": round(sum(before[c] for c in common) / len(common), 7),
            "new_mean": round(sum(after[c] for c in common) / len(common), 7),
        }
        comparison["identical"] &= not differ and largest < 1e-6
    return comparison


def _set_aside_for_retraining(folder: Path) -> None:
    """Move a kept run's results to :data:`RECORDED_DIR` (not over an earlier, interrupted retraining's) and drop its
    ``trained`` marker, so that :func:`_run_one` trains and evaluates it again."""
    recorded = folder / RECORDED_DIR
    if not recorded.is_dir():
        recorded.mkdir()
        for name in ("eval", SEEN_EVAL_DIR, "timing.json", ENVIRONMENT_FILE):
            if (folder / name).exists():
                (folder / name).rename(recorded / name)
    (folder / TRAINED_MARKER).unlink(missing_ok=True)


def _reproduction_text(comparison: Mapping[str, Any]) -> str:
    if comparison["identical"]:
        return "retrained: per-case Dice equal to the recorded ones"
    unseen, seen = comparison["eval"], comparison[SEEN_EVAL_DIR]
    return (f"retrained: per-case Dice differ from the recorded ones (unseen mean "
            f"{unseen['recorded_mean']:.4f} -> {unseen['new_mean']:.4f}, largest difference "
            f"{unseen['max_abs_difference']:.4f}; seen {seen['recorded_mean']:.4f} -> {seen['new_mean']:.4f}); "
            f"see {REPRODUCTION_FILE}")


def _run_one(run: Run, settings: Settings, launcher: Launcher, env: Mapping[str, str]) -> Outcome:
    folder = run_dir(run, settings.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    outcome = _train_and_evaluate(run, folder, settings, launcher, env)
    if outcome.ok and (folder / RECORDED_DIR).is_dir():
        comparison = compare_evaluations(folder / RECORDED_DIR, folder)
        (folder / REPRODUCTION_FILE).write_text(json.dumps(comparison, indent=1, sort_keys=True) + "\n")
        outcome.message = _reproduction_text(comparison)
    return outcome


def _train_and_evaluate(run: Run, folder: Path, settings: Settings, launcher: Launcher,
                        env: Mapping[str, str]) -> Outcome:
    start = time.perf_counter()
    stages = (("train", train_command, lambda: (folder / TRAINED_MARKER).is_file()),
              ("evaluate", evaluate_command, lambda: is_evaluated(folder)),
              ("evaluate_seen", evaluate_seen_command, lambda: is_seen_evaluated(folder)))
    for stage, make_command, finished in stages:
        if finished():
            continue
        log = folder / "logs" / f"{stage}.log"
        if stage == "train":
            _write_environment(folder, settings)
            _record_resume(run, folder)
        stage_start = time.perf_counter()
        try:
            code = launcher(make_command(run, settings), log, env)
        except Exception as error:  # the launcher itself broke (e.g. no interpreter): this run fails, the others go on
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as handle:
                handle.write(f"study: could not launch {stage}: {error!r}\n")
            code, detail = -1, f"{type(error).__name__}: {error}"
        else:
            detail = f"exit code {code}"
        _write_timing(folder, stage, time.perf_counter() - stage_start)
        if code != 0:
            what = {"train": "training", "evaluate": "evaluation",
                    "evaluate_seen": "evaluation on the source sites' validation cases"}[stage]
            return Outcome(run, "failed", folder, log, f"{what} failed ({detail})", time.perf_counter() - start)
        if stage == "train":
            (folder / TRAINED_MARKER).write_text("training exited 0\n")
    for eval_dir, stage in (("eval", "evaluate"), (SEEN_EVAL_DIR, "evaluate_seen")):
        if not is_evaluated(folder, eval_dir):
            missing = [name for name in EVAL_FILES if not (folder / eval_dir / name).is_file()]
            return Outcome(run, "failed", folder, folder / "logs" / f"{stage}.log",
                           f"evaluation exited 0 but wrote no {eval_dir}/{', '.join(missing)}",
                           time.perf_counter() - start)
    return Outcome(run, "done", folder, folder / "logs" / "evaluate.log", "", time.perf_counter() - start)


def execute(
    plan: Sequence[Run],
    settings: Settings,
    launcher: Optional[Launcher] = None,
    progress: bool = True,
    echo: Optional[Callable[[str], None]] = None,
    workers: int = 1,
    retrain: Sequence[str] = (),
) -> List[Outcome]:
    """Run ``plan``; one :class:`Outcome` per run, in plan order.

    ``launcher`` runs one command (default :func:`launch_subprocess`). Finished runs (:func:`is_evaluated` and
    :func:`is_seen_evaluated`) are skipped. A failed run is reported with its log; a run whose teacher failed before
    writing its weights fails too, naming the teacher's log, without running; every other run goes on. A finished
    teacher run without ``models/model.pt`` whose unfinished students are in the plan is retrained first (module
    docstring; its outcome is ``done``, its message says whether the per-case Dice reproduced). ``retrain``: keys
    of finished runs to train again the same way, once (a run that has a ``reproduction.json`` was retrained
    already and is skipped), e.g. so that the runs a table compares were all trained on one machine.
    ``workers`` runs go at once (each in its own thread launching its subprocesses); a run starts once its teacher
    run has finished, otherwise in plan order, so ``workers=1`` runs the plan in order. ``progress`` shows a tqdm
    bar over runs; one line per run (``echo``, default the bar's ``write`` or ``print``) gives its status and
    elapsed time, in the order the runs finish.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    from tqdm import tqdm

    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    launcher = launcher or launch_subprocess
    env = _environment(settings)
    outcomes: Dict[str, Outcome] = {}
    by_key = {run.key: run for run in plan}
    unknown = sorted(set(retrain) - set(by_key))
    if unknown:
        raise ValueError(f"retrain: {unknown[0]!r} is not a run of the plan.")
    bar = tqdm(total=len(plan), desc="study", unit="run", disable=not progress, dynamic_ncols=True)
    write = echo or (bar.write if progress else print)
    keys = {run.key for run in plan}
    finished = {run.key for run in plan
                if is_evaluated(run_dir(run, settings.out_dir)) and is_seen_evaluated(run_dir(run, settings.out_dir))}
    retrain = {key for key in retrain if key in finished
               and not (run_dir(by_key[key], settings.out_dir) / REPRODUCTION_FILE).is_file()}
    weights_needed = {run.depends_on for run in plan
                      if run.depends_on and (run.key not in finished or run.key in retrain)}
    pending = list(plan)
    running: Dict[Any, Run] = {}

    def record(run: Run, outcome: Outcome) -> None:
        outcomes[run.key] = outcome
        line = f"[{len(outcomes)}/{len(plan)}] {run.key}: {outcome.status}"
        if outcome.status == "done":
            line += f" in {_minutes(outcome.seconds)}" + (f" ({outcome.message})" if outcome.message else "")
        if outcome.status == "failed":
            line += f" - {outcome.message}; log: {outcome.log}"
        write(line)
        bar.update(1)

    def ready(run: Run) -> bool:
        return not run.depends_on or run.depends_on not in keys or run.depends_on in outcomes

    with ThreadPoolExecutor(max_workers=int(workers)) as pool:
        while pending or running:
            for run in [r for r in pending if ready(r)]:
                if len(running) >= int(workers):
                    break
                pending.remove(run)
                folder = run_dir(run, settings.out_dir)
                dependency = outcomes.get(run.depends_on) if run.depends_on else None
                if run.key in retrain or (run.key in finished and run.key in weights_needed
                                          and not _weights_ready(folder)):
                    _set_aside_for_retraining(folder)
                    bar.set_postfix_str(run.key, refresh=True)
                    running[pool.submit(_run_one, run, settings, launcher, env)] = run
                elif run.key in finished:
                    record(run, Outcome(run, "skipped", folder, message="evaluated before"))
                elif dependency is not None and not dependency.ok and not _weights_ready(dependency.folder):
                    record(run, Outcome(run, "failed", folder, dependency.log, f"its teacher run {run.depends_on} failed"))
                else:
                    bar.set_postfix_str(run.key, refresh=True)
                    running[pool.submit(_run_one, run, settings, launcher, env)] = run
            if not running:
                if pending and not any(ready(r) for r in pending):  # cannot happen with make_plan's order
                    raise RuntimeError(f"no run can start: {[r.key for r in pending]} wait for runs not in the plan.")
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                record(running.pop(future), future.result())
    bar.close()
    return [outcomes[run.key] for run in plan]


def existing_outcomes(plan: Sequence[Run], settings: Settings) -> List[Outcome]:
    """What :func:`execute` would reuse, without running anything: ``skipped`` for each run whose evaluations are
    complete, ``not run`` for the others (a report between the calls of a study that spans sessions)."""
    outcomes = []
    for run in plan:
        folder = run_dir(run, settings.out_dir)
        finished = is_evaluated(folder) and is_seen_evaluated(folder)
        outcomes.append(Outcome(run, "skipped" if finished else "not run", folder,
                                message="evaluated before" if finished else "not trained yet"))
    return outcomes


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"
