"""The real case as a sanity check: every trained model of a study on one real scan, TAPS beside them.

After the runs, each model with weights (``<run folder>/models/model.pt``: teachers and students) goes through its
bundle's own inference, ``python -m monai.bundle run --config_file "['inference.yaml', <profile file>]"
--bundle_root <run folder> --input <real case>`` (the study's overrides too), which writes
``<run folder>/real_case/Case00_seg.nii.gz`` in the geometry of the file; its Dice against the case's mask
(3D, whole gland, :func:`tools.data.evaluation.volume_metrics`) goes into ``real_case.md`` / ``real_case.csv``.
TAPS (:mod:`tools.peers.taps`), when installed, segments the same file once (``<out>/real_case/taps/``).

The case is ``../shared/data/real_case/Case00.nii.gz`` beside the checkout (``PROSTATE_RKD_SHARED`` moves
``../shared``), a real 3T endorectal-coil T2 volume with its mask. It is one scan of one site: the table is a
sanity check of whether models trained on simulated sites transfer at all, not a benchmark. When the case is
absent the table says so and nothing fails; a model whose inference fails gets a row saying why, with its log.

Resumability: a mask newer than the run's ``models/model.pt`` is reused (TAPS's mask is reused when present). Each
measured mask leaves ``real_case/Case00_metrics.json`` (Dice, HD95); a run without weights (its results committed
without ``models/`` and masks) is reported from that file.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tools.peers import taps

from . import runner
from .plan import Run
from .runner import PROFILES, Outcome, Settings, run_dir

__all__ = [
    "REAL_CASE_DIR",
    "IMAGE_NAME",
    "LABEL_NAME",
    "DISCLAIMER",
    "RealCaseRow",
    "RealCaseReport",
    "inference_command",
    "case_dice",
    "check_real_case",
    "summary_by_site",
    "write_real_case_table",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_CASE_DIR = Path(os.environ.get("PROSTATE_RKD_SHARED", REPO_ROOT.parent / "shared")) / "data" / "real_case"
"""``../shared/data/real_case`` beside the checkout (as tests/conftest.py reads it)."""
IMAGE_NAME = "Case00.nii.gz"
LABEL_NAME = "Case00_segmentation.nii.gz"
METRICS_NAME = "Case00_metrics.json"
DISCLAIMER = (
    "One real scan (3T, endorectal coil, T2, 128 x 128 x 64 at 1.09 x 1.09 x 1.62 mm; `../shared/data/real_case`): "
    "a sanity check of whether the models trained on simulated sites segment a real scan at all, not a benchmark. "
    "It was not used to choose anything."
)


@dataclass
class RealCaseRow:
    """One model on the real case: ``status`` ``done`` (``dice`` set), ``no model`` or ``failed`` (``message``)."""

    model: str
    run: str
    status: str
    dice: Optional[float] = None
    hd95: Optional[float] = None
    seconds: Optional[float] = None
    message: str = ""
    mask: Optional[Path] = None


@dataclass
class RealCaseReport:
    """The rows (study models, then TAPS) and a note when there is nothing to measure (no case, no TAPS)."""

    image: Path
    rows: List[RealCaseRow]
    note: str = ""
    taps_note: str = ""


def inference_command(run: Run, settings: Settings, image: Path, output_dir: Path) -> List[str]:
    """The bundle's inference of ``run``'s model on ``image``, masks into ``output_dir``."""
    configs = settings.bundles_dir / run.bundle / "configs"
    files = [configs / "inference.yaml"] + ([configs / PROFILES[settings.profile]] if PROFILES[settings.profile] else [])
    command = [
        settings.python, "-m", "monai.bundle", "run",
        "--config_file", "[" + ",".join(f"'{f}'" for f in files) + "]",
        "--bundle_root", str(run_dir(run, settings.out_dir)),
        "--input", str(image),
        "--output_dir", str(output_dir),
    ]
    return command + runner._cli_args(settings.overrides)


def case_dice(mask_path: Path, label_path: Path) -> Dict[str, float]:
    """Dice, HD95 and ASD (mm) of a predicted mask file against the reference mask file, which must share one grid.

    Raises:
        ValueError: naming both files, when their shapes or affines differ (a mask not in the file's geometry).
    """
    import nibabel as nib
    import numpy as np

    from tools.data.evaluation import volume_metrics, voxel_spacing

    pred, label = nib.load(str(mask_path)), nib.load(str(label_path))
    if pred.shape != label.shape or not np.allclose(pred.affine, label.affine, atol=1e-4):
        raise ValueError(
            f"{mask_path} (shape {pred.shape}) is not in the grid of {label_path} (shape {label.shape}); "
            f"affines\n{pred.affine}\nvs\n{label.affine}"
        )
    return volume_metrics(np.asarray(pred.dataobj), np.asarray(label.dataobj), voxel_spacing(label.affine))


def _fresh(mask: Path, weights: Path) -> bool:
    return mask.is_file() and mask.stat().st_mtime >= weights.stat().st_mtime


def _launch(launcher, command: Sequence[str], log: Path, env) -> tuple:
    try:
        code = launcher(command, log, env)
    except Exception as error:  # the launcher broke: this row fails, the others go on
        return -1, f"could not launch: {type(error).__name__}: {error}"
    return code, "" if code == 0 else f"exit code {code}"


def _measure(row: RealCaseRow, mask: Path, label: Path) -> RealCaseRow:
    if not mask.is_file():
        row.status, row.message = "failed", f"no mask written ({mask.name})"
        return row
    try:
        metrics = case_dice(mask, label)
    except Exception as error:  # a mask off the grid or unreadable: reported, not raised
        row.status, row.message = "failed", f"{type(error).__name__}: {str(error).splitlines()[0]}"
        return row
    row.status, row.dice, row.hd95, row.mask = "done", metrics["dice"], metrics["hd95"], mask
    return row


def _recorded(row: RealCaseRow, record: Path) -> RealCaseRow:
    """``row``, after writing its Dice and HD95 to ``record`` when it was measured."""
    if row.status == "done":
        record.write_text(json.dumps({"dice": row.dice, "hd95": row.hd95}, indent=1) + "\n")
    return row


def check_real_case(
    plan: Sequence[Run],
    outcomes: Sequence[Outcome],
    settings: Settings,
    case_dir: Optional[Path] = None,
    launcher: Optional[runner.Launcher] = None,
    with_taps: bool = True,
) -> RealCaseReport:
    """Every model of ``plan`` with weights, then TAPS (if installed and ``with_taps``), on the real case.

    ``launcher`` runs one command with its log (default :func:`tools.study.runner.launch_subprocess`, looked up at
    call time); the environment is the study's (threads). Never raises for a model or TAPS that fails.
    """
    case_dir = Path(case_dir or REAL_CASE_DIR)
    image, label = case_dir / IMAGE_NAME, case_dir / LABEL_NAME
    launcher = launcher or runner.launch_subprocess
    if not (image.is_file() and label.is_file()):
        return RealCaseReport(image, [], note=f"Real case not found: no {IMAGE_NAME} with {LABEL_NAME} in `{case_dir}`; "
                                             "nothing measured.")
    env = runner._environment(settings)
    rows: List[RealCaseRow] = []
    by_key = {o.run.key: o for o in outcomes}
    for run in plan:
        folder = run_dir(run, settings.out_dir)
        weights = folder / "models" / "model.pt"
        row = RealCaseRow(model=run.label, run=run.key, status="no model")
        output_dir = folder / "real_case"
        mask = output_dir / IMAGE_NAME.replace(".nii.gz", "_seg.nii.gz")
        record = output_dir / METRICS_NAME
        outcome = by_key.get(run.key)
        if outcome and outcome.status == "not run":
            # a report-only call: a run not evaluated yet may hold an interrupted training's checkpoint; not measured
            row.status = "not run"
            rows.append(row)
            continue
        if not weights.is_file() and not mask.is_file():
            if record.is_file():  # a run restored from its committed results: what its mask measured
                measured = json.loads(record.read_text())
                row.status, row.dice, row.hd95 = "done", measured["dice"], measured["hd95"]
                rows.append(row)
                continue
            row.message = "no models/model.pt" + (f" (the run {outcome.status})" if outcome and not outcome.ok else "")
            rows.append(row)
            continue
        if weights.is_file() and not _fresh(mask, weights):  # without weights, the mask they wrote is measured
            start = time.perf_counter()
            code, detail = _launch(launcher, inference_command(run, settings, image, output_dir),
                                   folder / "logs" / "real_case.log", env)
            row.seconds = time.perf_counter() - start
            if code != 0:
                row.status, row.message = "failed", f"inference failed ({detail}); log: {folder / 'logs' / 'real_case.log'}"
                rows.append(row)
                continue
        rows.append(_recorded(_measure(row, mask, label), record))
    taps_note = ""
    if not with_taps:
        taps_note = "TAPS not run (with_taps=False)."
    elif not taps.available():
        taps_note = taps.INSTALL_HINT
    else:
        folder = Path(settings.out_dir) / "real_case" / "taps"
        mask = folder / IMAGE_NAME.replace(".nii.gz", "_seg.nii.gz")
        row = RealCaseRow(model=taps.NAME, run="peer", status="failed")
        if not mask.is_file():
            start = time.perf_counter()
            code, detail = _launch(launcher, taps.command(image, mask, python=settings.python), folder / "logs" / "taps.log", env)
            row.seconds = time.perf_counter() - start
            if code != 0:
                row.message = f"TAPS failed ({detail}); log: {folder / 'logs' / 'taps.log'}"
        if not row.message:
            row = _measure(row, mask, label)
        rows.append(row)
    return RealCaseReport(image, rows, taps_note=taps_note)


def _cell(value: Optional[float], digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _site_and_seed(run_key: str) -> Optional[Tuple[str, int]]:
    """``RUNMC/seed1/<run name>`` -> ``("RUNMC", 1)``; ``None`` for a peer's key (``peer``)."""
    parts = run_key.split("/")
    if len(parts) == 3 and parts[1].startswith("seed") and parts[1][4:].isdigit():
        return parts[0], int(parts[1][4:])
    return None


def _trained_for(run_key: str) -> str:
    """``RUNMC/seed1/<run name>`` -> ``RUNMC held out, seed 1``; a peer's key (``peer``) as it is."""
    key = _site_and_seed(run_key)
    return run_key if key is None else f"{key[0]} held out, seed {key[1]}"


def summary_by_site(rows: Sequence[RealCaseRow]) -> List[str]:
    """Markdown lines: one row per model, one column per held-out site (its seeds' Dice, ``seed 0 / seed 1``),
    and the median over every measured run of the model; empty when no study run was measured.

    The long table below it lists the same numbers run by run; this one shows at a glance whether a model's
    result on the real case depends on which simulated site was left out of its training."""
    cells: Dict[str, Dict[str, Dict[int, float]]] = {}
    sites: List[str] = []
    for r in rows:
        key = _site_and_seed(r.run)
        if key is None or r.status != "done" or r.dice is None:
            continue
        site, seed = key
        if site not in sites:
            sites.append(site)
        cells.setdefault(r.model, {}).setdefault(site, {})[seed] = r.dice
    if not cells:
        return []
    lines = ["Dice by held-out site (seeds in order, `seed 0 / seed 1`; median over the model's runs):", "",
             "| model | " + " | ".join(sites) + " | median |", "|---|" + "---|" * (len(sites) + 1)]
    for model, by_site in cells.items():
        values = [by_site.get(site, {}) for site in sites]
        row = [" / ".join(_cell(v[seed]) for seed in sorted(v)) for v in values]
        median = statistics.median(d for v in by_site.values() for d in v.values())
        lines.append(f"| {model} | " + " | ".join(row) + f" | {_cell(median)} |")
    return lines + [""]


def write_real_case_table(report: RealCaseReport, out_dir: Path) -> Path:
    """``real_case.md`` and ``real_case.csv`` in ``out_dir``; returns the markdown file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "real_case.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "run", "status", "dice", "hd95_mm", "seconds", "message"])
        writer.writeheader()
        for r in report.rows:
            writer.writerow({"model": r.model, "run": r.run, "status": r.status, "dice": _cell(r.dice, 6),
                             "hd95_mm": _cell(r.hd95, 2), "seconds": _cell(r.seconds, 1), "message": r.message})
    lines = ["### The real case: a sanity check, not a benchmark", "", DISCLAIMER, ""]
    if report.note:
        lines += [report.note, ""]
    lines += summary_by_site(report.rows)
    if report.rows:
        lines += ["| model | trained for | Dice | HD95 (mm) | status |", "|---|---|---|---|---|"]
        for r in report.rows:
            status = r.status + (f": {r.message}" if r.message else "")
            lines.append(f"| {r.model} | {_trained_for(r.run)} | {_cell(r.dice)} | {_cell(r.hd95, 1)} | {status} |")
        lines.append("")
    if report.taps_note:
        lines += [report.taps_note, ""]
    path = out_dir / "real_case.md"
    path.write_text("\n".join(lines))
    return path
