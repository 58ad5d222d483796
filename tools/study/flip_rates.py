"""Each run's flip rate on the source sites' validation slices: the degeneracy measure of the study.

``flip rate`` (:func:`custom_losses.flip_rate`) is the fraction of 4-neighbour pairs touching the predicted foreground
whose labels differ, of the argmax of ``models/model.pt`` on every axial slice of the source validation volumes at
the network's grid, before any post-processing (:func:`tools.distill_select.validation_flip_rate`). A filled gland
gives about 0.1-0.2; the checkerboard that the paper's literal objective converges to gives about 0.5 and more
(docs/distillation.md sections 1 and 3).

It needs the run's weights, so it is measured after training, while ``models/model.pt`` is there, and kept in
``<run folder>/eval_seen/flip_rate.json`` (committed with the other results of a study that spans sessions). A
run reused without weights reports the value it recorded, or none.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .plan import Run
from .runner import PROFILES, SEEN_EVAL_DIR, Settings, run_dir

__all__ = ["FLIP_RATE_FILE", "measure_flip_rates", "flip_rate_markdown"]

FLIP_RATE_FILE = "flip_rate.json"
"""``<run folder>/eval_seen/flip_rate.json``: ``{"flip_rate": r}``."""


def _measure(run: Run, folder: Path, settings: Settings) -> float:
    from tools.distill_select import validation_flip_rate

    return validation_flip_rate(str(folder), str(settings.dataset_dir), run.site, run.bundle,
                                profile_file=PROFILES[settings.profile])


def measure_flip_rates(plan: Sequence[Run], settings: Settings,
                       echo: Callable[[str], None] = print) -> Dict[str, Optional[float]]:
    """``{run key: flip rate or None}`` for every run of ``plan``.

    A run whose ``models/model.pt`` is newer than its ``flip_rate.json`` (or has none) is measured now and the file
    written; a run without weights reports its file's value, or ``None`` when it has none. A measurement that fails
    (e.g. unreadable weights) is ``None`` with one line through ``echo``: a diagnostic does not fail the study.
    """
    values: Dict[str, Optional[float]] = {}
    for run in plan:
        folder = run_dir(run, settings.out_dir)
        weights, record = folder / "models" / "model.pt", folder / SEEN_EVAL_DIR / FLIP_RATE_FILE
        if weights.is_file() and (folder / SEEN_EVAL_DIR).is_dir() and (
                not record.is_file() or record.stat().st_mtime < weights.stat().st_mtime):
            try:
                value = _measure(run, folder, settings)
            except Exception as error:  # reported, and the run's flip rate stays unknown
                echo(f"study: flip rate of {run.key} not measured: {type(error).__name__}: "
                     f"{str(error).splitlines()[0] if str(error) else ''}")
                record.unlink(missing_ok=True)
            else:
                record.write_text(json.dumps({"flip_rate": round(value, 6)}) + "\n")
        values[run.key] = json.loads(record.read_text())["flip_rate"] if record.is_file() else None
    return values


def flip_rate_markdown(plan: Sequence[Run], values: Dict[str, Optional[float]], sites: Sequence[str]) -> List[str]:
    """Markdown lines: one row per model (``Run.label``), one column per target site, each cell the mean flip rate
    over the seeds measured (their count in brackets when fewer than the plan's), ``n/a`` when none was."""
    labels: Dict[str, Dict[str, List[Run]]] = {}
    for run in plan:
        labels.setdefault(run.label, {}).setdefault(run.site, []).append(run)
    lines = ["| model | " + " | ".join(sites) + " | mean |", "|---" * (len(sites) + 2) + "|"]
    for label, by_site in labels.items():
        cells, means = [], []
        for site in sites:
            runs = by_site.get(site, [])
            measured = [values[r.key] for r in runs if values.get(r.key) is not None]
            if not measured:
                cells.append("n/a")
                continue
            mean = statistics.fmean(measured)
            means.append(mean)
            cells.append(f"{mean:.3f}" + (f" ({len(measured)} of {len(runs)})" if len(measured) < len(runs) else ""))
        overall = f"{statistics.fmean(means):.3f}" if means else "n/a"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {overall} |")
    return lines
