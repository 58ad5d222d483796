"""The preprocessing options measured through a bundle (docs/preprocessing.md): one student, one target site, one
seed, every combination of ``in_plane_mode`` x ``intensity_norm``.

For each combination, in its own run folder ``<work_dir>/runs/<in_plane_mode>-<intensity_norm>`` (the run's
``--bundle_root``):

1. ``python -m monai.bundle run training --config_file "['train.yaml', 'profile_cpu.yaml']" --in_plane_mode M
   --intensity_norm N ...`` (skipped when the folder holds ``trained``; the bundle resumes its own checkpoints);
2. ``run evaluating`` with ``evaluate.yaml`` and ``--evaluate_key validation`` into ``eval_validation/``: the
   source-site validation Dice, the only number the choice of the default may use;
3. the same with ``--evaluate_key test`` into ``eval/``: every case of the unseen target site;
4. the bundle's inference (``inference.yaml`` + the profile) on the real case, Dice against its mask
   (:mod:`tools.study.real_case`): one scan, a sanity check.

Each number is the mean over cases of the 3D Dice per volume (``test_dice`` of MONAI's MetricsSaver). The table
goes to ``<out_dir>/preprocessing.md`` and ``.csv``; the rule that picks the default is applied by
:func:`choose` (highest validation Dice; the paper's ``resize`` + ``zscore`` stays unless beaten by ``margin``).

A cell may also set ``background_fraction`` (the share of sampled training slices without prostate, a key of
``train.yaml``): ``measure(..., background_fractions=[0.1, 0.5])`` crosses it with the pairs, in run folders
``<in_plane_mode>-<intensity_norm>-bg<fraction>``; the current default cell is then the paper's pair at
:data:`DEFAULT_BACKGROUND_FRACTION`. For such cells the real case also reports the predicted and true gland volume
(mL) and the number of slices outside the true gland on which the model predicts prostate (:func:`case_extent`).
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tools.bundles import BUNDLES_DIR
from tools.data.transforms import IN_PLANE_MODES, INTENSITY_NORMS

__all__ = ["OptionResult", "combinations", "commands", "measure", "choose", "write_table", "case_extent"]

PAPER = ("resize", "zscore")
DEFAULT_BACKGROUND_FRACTION = 0.1
"""``background_fraction`` of train.yaml (and of the CPU profile until docs/preprocessing.md's re-selection)."""


@dataclass
class OptionResult:
    in_plane_mode: str
    intensity_norm: str
    validation: Optional[float] = None
    unseen: Optional[float] = None
    real_case: Optional[float] = None
    train_s: Optional[float] = None
    status: str = ""
    background_fraction: Optional[float] = None  # None: not overridden (the configs' value)
    real_pred_ml: Optional[float] = None
    real_true_ml: Optional[float] = None
    real_slices_outside: Optional[int] = None  # slices without true gland on which the model predicts prostate
    real_slices_without_gland: Optional[int] = None

    @property
    def name(self) -> str:
        base = f"{self.in_plane_mode}-{self.intensity_norm}"
        return base if self.background_fraction is None else f"{base}-bg{self.background_fraction:g}"

    @property
    def is_default(self) -> bool:
        """The current default cell: the paper's pair at the default ``background_fraction``."""
        return (self.in_plane_mode, self.intensity_norm) == PAPER and self.background_fraction in (
            None, DEFAULT_BACKGROUND_FRACTION)


def combinations(in_plane_modes: Sequence[str] = IN_PLANE_MODES, intensity_norms: Sequence[str] = INTENSITY_NORMS):
    """Every ``(in_plane_mode, intensity_norm)``, the paper's first."""
    pairs = list(itertools.product(in_plane_modes, intensity_norms))
    return sorted(pairs, key=lambda p: p != PAPER)


def _config(files: Sequence[Path]) -> str:
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def commands(bundle: str, root: Path, dataset_dir: Path, site: str, mode: str, norm: str, seed: int,
             image: Path, profile: str = "profile_cpu.yaml", python: str = sys.executable,
             background_fraction: Optional[float] = None) -> Dict[str, List[str]]:
    """The four commands of one combination (``train``, ``validation``, ``test``, ``real_case``);
    ``background_fraction``, when given, overrides the training's slice sampling (training only)."""
    c = BUNDLES_DIR / bundle / "configs"
    common = ["--bundle_root", str(root), "--in_plane_mode", mode, "--intensity_norm", norm]
    data = ["--dataset_dir", str(dataset_dir), "--target_site", site, "--progress", "False", "--seed", str(seed)]
    bundle_run = [python, "-m", "monai.bundle", "run"]
    evaluate = [*bundle_run, "evaluating", "--config_file", _config([c / "train.yaml", c / profile, c / "evaluate.yaml"])]
    sampling = [] if background_fraction is None else ["--background_fraction", str(background_fraction)]
    return {
        "train": [*bundle_run, "training", "--config_file", _config([c / "train.yaml", c / profile]), *common, *data,
                  *sampling],
        "validation": [*evaluate, *common, *data, "--evaluate_key", "validation", "--output_dir", str(root / "eval_validation")],
        "test": [*evaluate, *common, *data, "--evaluate_key", "test", "--output_dir", str(root / "eval")],
        "real_case": [*bundle_run, "--config_file", _config([c / "inference.yaml", c / profile]), *common,
                      "--input", str(image), "--output_dir", str(root / "real_case")],
    }


def _dice(folder: Path) -> Optional[float]:
    from tools.study.tables import read_metrics

    path = folder / "metrics.csv"
    return read_metrics(path).get("test_dice") if path.is_file() else None


def case_extent(mask_path: Path, label_path: Path) -> Dict[str, float]:
    """Predicted and true gland volume (mL) and, along the slice axis (the axis of the largest voxel spacing), how
    many slices without true gland hold predicted prostate (``slices_outside``) out of ``slices_without_gland``."""
    import nibabel as nib
    import numpy as np

    pred_img, label_img = nib.load(str(mask_path)), nib.load(str(label_path))
    pred, label = np.asarray(pred_img.dataobj) > 0, np.asarray(label_img.dataobj) > 0
    spacing = np.sqrt((label_img.affine[:3, :3] ** 2).sum(axis=0))
    axis = int(np.argmax(spacing))
    others = tuple(a for a in range(3) if a != axis)
    has_label, has_pred = label.any(axis=others), pred.any(axis=others)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {
        "pred_ml": float(pred.sum()) * voxel_ml,
        "true_ml": float(label.sum()) * voxel_ml,
        "slices_outside": int((has_pred & ~has_label).sum()),
        "slices_without_gland": int((~has_label).sum()),
    }


def measure(
    work_dir: Path,
    dataset_dir: Path,
    bundle: str = "prostate_mri_enet_student",
    site: str = "BIDMC",
    seed: int = 0,
    pairs: Optional[Sequence[Tuple[str, str]]] = None,
    threads: Optional[int] = 1,
    case_dir: Optional[Path] = None,
    progress=print,
    background_fractions: Optional[Sequence[Optional[float]]] = None,
) -> List[OptionResult]:
    """Train, evaluate and run the real case for every pair (x every ``background_fractions`` value, when given;
    resumable: finished steps are skipped)."""
    from tools.study.real_case import IMAGE_NAME, LABEL_NAME, REAL_CASE_DIR, case_dice
    from tools.study.runner import launch_subprocess

    case_dir = Path(case_dir or REAL_CASE_DIR)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
    results = []
    cells = [(mode, norm, fraction) for fraction in (background_fractions or [None]) for mode, norm in pairs or combinations()]
    for mode, norm, fraction in cells:
        result = OptionResult(mode, norm, background_fraction=fraction)
        root = Path(work_dir) / "runs" / result.name
        (root / "logs").mkdir(parents=True, exist_ok=True)
        steps = commands(bundle, root, dataset_dir, site, mode, norm, seed, case_dir / IMAGE_NAME,
                         background_fraction=fraction)
        done = {
            "train": (root / "trained").is_file(),
            "validation": (root / "eval_validation" / "metrics.csv").is_file(),
            "test": (root / "eval" / "metrics.csv").is_file(),
            "real_case": (root / "real_case" / IMAGE_NAME.replace(".nii.gz", "_seg.nii.gz")).is_file()
            or not (case_dir / IMAGE_NAME).is_file(),
        }
        for step, command in steps.items():
            if done[step]:
                continue
            start = time.perf_counter()
            code = launch_subprocess(command, root / "logs" / f"{step}.log", env)
            seconds = time.perf_counter() - start
            progress(f"{result.name}: {step} exit {code} in {seconds:.0f} s")
            if code != 0:
                result.status = f"{step} failed (log: {root / 'logs' / f'{step}.log'})"
                break
            if step == "train":
                (root / "trained").write_text(f"trained in {seconds:.0f} s\n")
        trained = (root / "trained").read_text().split() if (root / "trained").is_file() else []
        result.train_s = float(trained[2]) if len(trained) > 2 else None
        result.validation = _dice(root / "eval_validation")
        result.unseen = _dice(root / "eval")
        mask = root / "real_case" / IMAGE_NAME.replace(".nii.gz", "_seg.nii.gz")
        if mask.is_file():
            result.real_case = case_dice(mask, case_dir / LABEL_NAME)["dice"]
            extent = case_extent(mask, case_dir / LABEL_NAME)
            result.real_pred_ml, result.real_true_ml = extent["pred_ml"], extent["true_ml"]
            result.real_slices_outside = extent["slices_outside"]
            result.real_slices_without_gland = extent["slices_without_gland"]
        result.status = result.status or "done"
        results.append(result)
    return results


def choose(results: Sequence[OptionResult], margin: float = 0.01) -> Tuple[OptionResult, str]:
    """The rule of docs/preprocessing.md: the highest source-site validation Dice; the current default (the paper's
    ``resize`` + ``zscore``, at the default ``background_fraction`` when cells set it) stays unless the best beats it
    by at least ``margin``. Unseen-site and real-case numbers are not read."""
    measured = [r for r in results if r.validation is not None]
    if not measured:
        raise ValueError("no combination has a validation Dice.")
    best = max(measured, key=lambda r: r.validation)
    paper = next((r for r in measured if r.is_default), None)
    if paper is not None and best is not paper and best.validation - paper.validation < margin:
        return paper, (f"{best.name} has the highest validation Dice ({best.validation:.3f}) but beats the paper's "
                       f"{paper.name} ({paper.validation:.3f}) by less than {margin}: the paper's stays")
    return best, f"{best.name} has the highest validation Dice ({best.validation:.3f})"


def _cell(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.3f}"


def write_table(results: Sequence[OptionResult], out_dir: Path, command: str = "") -> Path:
    """``preprocessing.md`` / ``preprocessing.csv`` in ``out_dir``; returns the markdown file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampling = any(r.background_fraction is not None for r in results)

    def opt(value, fmt="{:.1f}"):
        return "" if value is None else fmt.format(value)

    with open(out_dir / "preprocessing.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        extra = ["background_fraction", "real_pred_ml", "real_true_ml", "real_slices_outside",
                 "real_slices_without_gland"] if sampling else []
        writer.writerow(["in_plane_mode", "intensity_norm", "validation_dice", "unseen_dice", "real_case_dice", "train_s",
                         "status", *extra])
        for r in results:
            row = [r.in_plane_mode, r.intensity_norm, _cell(r.validation), _cell(r.unseen), _cell(r.real_case),
                   "" if r.train_s is None else f"{r.train_s:.0f}", r.status]
            if sampling:
                row += [opt(r.background_fraction, "{:g}"), opt(r.real_pred_ml), opt(r.real_true_ml),
                        opt(r.real_slices_outside, "{}"), opt(r.real_slices_without_gland, "{}")]
            writer.writerow(row)
    chosen, why = choose(results)
    lines = [f"Produced by `{command}`." if command else "", ""]
    if sampling:
        lines += ["| background_fraction | in_plane_mode | intensity_norm | source-site validation Dice (chooses) | "
                  "unseen-site Dice | real case Dice (one scan) | real case volume predicted / true (mL) | "
                  "real-case slices outside the gland with predicted prostate |",
                  "|---|---|---|---|---|---|---|---|"]
    else:
        lines += ["| in_plane_mode | intensity_norm | source-site validation Dice (chooses) | unseen-site Dice | "
                  "real case Dice (one scan) |", "|---|---|---|---|---|"]
    for r in results:
        mark = " **(chosen)**" if r is chosen else ""
        cells = f"| {r.in_plane_mode} | {r.intensity_norm} | {_cell(r.validation)}{mark} | {_cell(r.unseen)} | {_cell(r.real_case)} |"
        if sampling:
            outside = "" if r.real_slices_outside is None else f"{r.real_slices_outside} of {r.real_slices_without_gland}"
            cells = (f"| {opt(r.background_fraction, '{:g}')} " + cells
                     + f" {opt(r.real_pred_ml)} / {opt(r.real_true_ml)} | {outside} |")
        lines.append(cells)
    lines += ["", f"Choice by the rule: {why}.", ""]
    path = out_dir / "preprocessing.md"
    path.write_text("\n".join(lines))
    return path
