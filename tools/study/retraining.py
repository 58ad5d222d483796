"""The retrained runs of a study beside their recorded results: the README's "Retrained runs" section.

A finished run trained again (``--retrain_sites``, or a kept teacher retrained for new students) keeps its previous
evaluations in ``before_retraining/`` and writes ``reproduction.json`` (:func:`tools.study.runner.compare_evaluations`).
The tables read the new results; this section shows both, one row per model and target site (the cells of Tables
2 and 3), so that a change between working sessions is visible beside the effect it is compared with.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .plan import Run
from .runner import REPRODUCTION_FILE, SEEN_EVAL_DIR, run_dir

__all__ = ["read_reproductions", "retraining_markdown"]


def read_reproductions(plan: Sequence[Run], out_dir: Path) -> Dict[str, dict]:
    """``{run key: reproduction.json}`` for the runs of ``plan`` that were retrained (the file exists).

    Raises:
        ValueError: a ``reproduction.json`` that is not the comparison :func:`compare_evaluations` writes (the
            message names the file).
    """
    found = {}
    for run in plan:
        path = run_dir(run, out_dir) / REPRODUCTION_FILE
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
            for name in ("eval", SEEN_EVAL_DIR):
                float(record[name]["recorded_mean"]), float(record[name]["new_mean"])
            bool(record["identical"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a retrained-run comparison ({type(error).__name__}: {error}).") from None
        found[run.key] = record
    return found


def retraining_markdown(plan: Sequence[Run], out_dir: Path) -> List[str]:
    """Markdown lines of a table with one row per (model, target site) that has retrained runs: the unseen and seen
    Dice recorded before retraining and after it (means over the retrained seeds, their count in a column), the
    largest per-case ``|after - before|`` on the unseen site, and how many runs repeated bit for bit. Empty when no
    run of ``plan`` was retrained."""
    records = read_reproductions(plan, out_dir)
    groups: Dict[Tuple[str, str], List[dict]] = {}
    for run in plan:
        if run.key in records:
            groups.setdefault((run.label, run.site), []).append(records[run.key])
    if not groups:
        return []

    def mean(rows: List[dict], name: str, which: str) -> float:
        return statistics.fmean(float(row[name][which]) for row in rows)

    lines = ["| model | target site | seeds | unseen before | unseen after | seen before | seen after | "
             "largest per-case change (unseen) | identical |", "|---" * 9 + "|"]
    for (label, site), rows in groups.items():
        largest = max(float(row["eval"]["max_abs_difference"]) for row in rows)
        identical = sum(bool(row["identical"]) for row in rows)
        lines.append(
            f"| {label} | {site} | {len(rows)} | {mean(rows, 'eval', 'recorded_mean'):.3f} | "
            f"{mean(rows, 'eval', 'new_mean'):.3f} | {mean(rows, SEEN_EVAL_DIR, 'recorded_mean'):.3f} | "
            f"{mean(rows, SEEN_EVAL_DIR, 'new_mean'):.3f} | {largest:.3f} | {identical} of {len(rows)} |")
    return lines
