"""The study's figures: per-site Dice without versus with distillation, and overlays like the paper's Fig. 3.

* ``dice_by_site.png``: one group of bars per target site, each student w/o and w/ each teacher (error bars: std
  over seeds when several), each teacher's Dice as a dashed line over the group.
* ``overlays_<SITE>.png``: unseen-site cases (columns) through the first student w/o and w/ the first teacher and
  the teacher (rows), on the axial slice with the largest ground-truth area; ground-truth contour red,
  prediction green, as in the paper's Fig. 3. The masks are the ones the evaluation wrote (``save_masks``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np

from .plan import ALL_MODULES, Run
from .runner import run_dir
from .tables import Row, RunResult, case_name, paper_site

__all__ = ["plot_dice_by_site", "largest_slice", "label_file_of", "plot_overlays"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_dice_by_site(rows: Sequence[Row], path: Path) -> Optional[Path]:
    """Bar chart of Table 2's student rows per target site, the teachers as dashed lines; ``None`` if no site."""
    sites = list(rows[0].cells) if rows else []
    if not sites:
        return None
    plt = _pyplot()
    bars = [row for row in rows if row.key[0] in ("wo", "w")]
    teachers = [row for row in rows if row.key[0] == "teacher"]
    width = 0.8 / max(len(bars), 1)
    fig, ax = plt.subplots(figsize=(max(5.5, 2.6 + len(sites) * (0.5 + 0.35 * len(bars))), 3.6))
    colours = plt.get_cmap("tab10")
    for b, row in enumerate(bars):
        xs, heights, errors = [], [], []
        for s, site in enumerate(sites):
            cell = row.cells[site]
            x = s - 0.4 + width * (b + 0.5)
            if cell.status == "done":
                xs.append(x)
                heights.append(cell.mean)
                errors.append(cell.std or 0.0)
            elif cell.status in ("failed", "not run"):
                ax.text(x, 0.02, cell.status, rotation=90, ha="center", va="bottom", fontsize=7)
        hatch = "" if row.key[0] == "w" else "//"
        ax.bar(xs, heights, width * 0.95, yerr=errors if any(errors) else None, label=row.label,
               color=colours(b), hatch=hatch, edgecolor="black", linewidth=0.5, capsize=2)
    for t, row in enumerate(teachers):
        for s, site in enumerate(sites):
            cell = row.cells[site]
            if cell.status == "done":
                ax.hlines(cell.mean, s - 0.45, s + 0.45, colors="black", linestyles=("--", ":")[t % 2],
                          label=row.label if s == 0 else None)
    ax.set_xticks(range(len(sites)))
    ax.set_xticklabels([f"{site}\n({paper_site(site)})" for site in sites])
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice on the unseen target site")
    ax.set_title("Students w/o vs w/ distillation", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def label_file_of(image_file: str) -> Optional[str]:
    """The ground-truth file beside ``CaseNN<ext>``: ``CaseNN_segmentation<ext>`` in any letter case, or ``None``."""
    folder, name = os.path.split(image_file)
    case = case_name(name)
    ext = name[len(case):]
    wanted = f"{case}_segmentation{ext}".lower()
    for candidate in os.listdir(folder or "."):
        if candidate.lower() == wanted:
            return os.path.join(folder, candidate)
    return None


def _canonical(path: str) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj, dtype=np.float32)


def largest_slice(label: np.ndarray) -> int:
    """Index along the last axis of the slice with the most foreground (the middle slice if there is none)."""
    areas = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return int(np.argmax(areas)) if areas.max() > 0 else label.shape[-1] // 2


def _overlay_runs(results: Mapping[str, RunResult], site: str, teachers: Sequence[str], students: Sequence[str]) -> List[RunResult]:
    """The first seed's runs shown for ``site``: first student w/o, w/ the first teacher, and that teacher."""
    if not students:
        return []
    seeds = sorted({r.run.seed for r in results.values() if r.run.site == site})
    if not seeds:
        return []
    wanted = [Run(site, seeds[0], students[0])]
    if teachers:
        wanted += [Run(site, seeds[0], students[0], teachers[0], ALL_MODULES), Run(site, seeds[0], teachers[0])]
    return [results[r.key] for r in wanted if r.key in results and results[r.key].status == "done"]


def _image_file(recorded: str, dataset_dir: Optional[Path]) -> str:
    """The evaluated image: the path the evaluation recorded or, when that is gone (results committed from another
    checkout), ``<dataset_dir>/<its site folder>/<its name>``."""
    if os.path.isfile(recorded) or dataset_dir is None:
        return recorded
    return str(Path(dataset_dir) / Path(recorded).parent.name / Path(recorded).name)


def plot_overlays(
    results: Mapping[str, RunResult], out_dir: Path, site: str, teachers: Sequence[str], students: Sequence[str],
    path: Path, max_cases: int = 4, dataset_dir: Optional[Path] = None,
) -> Optional[Path]:
    """``overlays_<SITE>.png``: up to ``max_cases`` cases of ``site`` (columns) through the runs of
    :func:`_overlay_runs` (rows); GT contour red, prediction green. ``None`` when nothing was evaluated, or
    when no run kept its masks (runs reused from committed results): the figure would show no prediction.
    ``dataset_dir`` is where to look for an image whose recorded path is gone (:func:`_image_file`)."""
    runs = _overlay_runs(results, site, teachers, students)
    if not runs or not runs[0].cases:
        return None
    if not any((run_dir(r.run, out_dir) / "eval" / "masks").is_dir() for r in runs):
        return None
    cases = [dict(c, file=_image_file(c["file"], dataset_dir)) for c in sorted(runs[0].cases, key=lambda c: c["case"])]
    cases = [c for c in cases if os.path.isfile(c["file"])][:max_cases]
    if not cases:
        return None  # the evaluated images are gone (e.g. another --data folder)
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), len(cases), figsize=(2.4 * len(cases), 2.5 * len(runs)), squeeze=False)
    for c, case in enumerate(cases):
        image = _canonical(case["file"])
        label_file = label_file_of(case["file"])
        label = _canonical(label_file) if label_file else np.zeros_like(image)
        z = largest_slice(label)
        for r, result in enumerate(runs):
            ax = axes[r][c]
            ax.axis("off")
            ax.imshow(np.rot90(image[..., z]), cmap="gray")
            if label[..., z].any():
                ax.contour(np.rot90(label[..., z] > 0), levels=[0.5], colors="red", linewidths=1.0)
            mask_file = run_dir(result.run, out_dir) / "eval" / "masks" / f"{case['case']}_seg.nii.gz"
            dice = {k["case"]: k["dice"] for k in result.cases}.get(case["case"])
            if mask_file.is_file():
                mask = _canonical(str(mask_file))
                if mask.shape != image.shape:
                    raise ValueError(f"{mask_file}: mask shape {mask.shape} differs from its image {case['file']} {image.shape}.")
                if mask[..., z].any():
                    ax.contour(np.rot90(mask[..., z] > 0), levels=[0.5], colors="lime", linewidths=1.0)
                note = "" if dice is None else f" Dice {dice:.3f}"
            else:
                note = " (no mask saved)"
            name = result.run.label.replace(" (teacher)", "")
            ax.set_title(f"{case['case']}: {name}\n{note.strip()}", fontsize=7)
    fig.suptitle(f"Unseen target site {site} ({paper_site(site)}), seed {runs[0].run.seed}\n"
                 f"ground truth red, prediction green; slice of largest gland area", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
