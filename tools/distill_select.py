"""Measure distillation candidates for the selection rule of docs/distillation.md (section 3).

For each run folder (a student trained through the bundle with ``--bundle_root RUN``):

* ``val_dice``: the best ``val_mean_dice`` of the run (source sites' validation), read from its log;
* ``flip_rate``: :func:`custom_losses.flip_rate` of the argmax of ``RUN/models/model.pt`` on every axial slice of
  the source validation volumes at the network's grid, before any post-processing;
* ``unseen_dice``: mean ``test_dice`` of ``RUN/eval/metrics.csv`` when the evaluate workflow was run (report only).

    python -m tools.distill_select --runs "{'C1_s0': '/tmp/runs/C1_s0', ...}" --dataset_dir DIR --out table.csv
"""

from __future__ import annotations

import csv
import os
import re
from typing import Dict, Optional

import torch

from custom_losses import flip_rate

STUDENT = "prostate_mri_enet_student"
_BEST = re.compile(r"Key metric: val_mean_dice best value: ([0-9.eE+-]+)")


def best_val_dice(log_file: str) -> Optional[float]:
    """The last ``best value`` of ``val_mean_dice`` a training log reports, or None."""
    if not os.path.isfile(log_file):
        return None
    values = _BEST.findall(open(log_file).read())
    return float(values[-1]) if values else None


def unseen_dice(run_dir: str) -> Optional[float]:
    """Mean ``test_dice`` in ``run_dir/eval/metrics.csv`` (written by evaluate.yaml's MetricsSaver), or None."""
    path = os.path.join(run_dir, "eval", "metrics.csv")
    if not os.path.isfile(path):
        return None
    for line in open(path):
        parts = line.strip().split("\t") if "\t" in line else line.strip().split(",")
        if parts and parts[0] == "test_dice":
            return float(parts[1])
    return None


def validation_flip_rate(run_dir: str, dataset_dir: str, target_site: str, student: str = STUDENT,
                         profile_file: Optional[str] = "profile_cpu.yaml") -> float:
    """Flip rate of ``run_dir/models/model.pt`` on the source validation slices (argmax at the network grid).

    ``student``: the bundle whose ``train.yaml`` (+ ``profile_file``, ``None`` for the bundle's defaults) builds the
    network and the validation preprocessing; any of the five bundles works."""
    from monai.bundle import ConfigParser

    from tools.bundles import bundle_dir

    configs = os.path.join(bundle_dir(student), "configs")
    parser = ConfigParser()
    files = [os.path.join(configs, "train.yaml")] + ([os.path.join(configs, profile_file)] if profile_file else [])
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"config file(s) of bundle {student!r} not found: {', '.join(missing)}.")
    parser.read_config(files)
    parser["bundle_root"] = run_dir
    parser["dataset_dir"] = dataset_dir
    parser["target_site"] = target_site
    parser["device"] = "$torch.device('cpu')"
    network = parser.get_parsed_content("network_def", instantiate=True)
    state = torch.load(os.path.join(run_dir, "models", "model.pt"), map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
    network.eval()
    preprocessing = parser.get_parsed_content("validate#preprocessing", instantiate=True)
    datalist = parser.get_parsed_content("datalist")
    labels = []
    with torch.no_grad():
        for item in datalist["validation"]:
            image = preprocessing(dict(item))["image"]  # (1, H, W, Z)
            slices = torch.as_tensor(image).permute(3, 0, 1, 2).float()  # (Z, 1, H, W)
            labels.append(network(slices).argmax(dim=1))
    return float(flip_rate(torch.cat(labels)))


def measure(runs: Dict[str, str], dataset_dir: str, target_site: str = "BIDMC", out: Optional[str] = None) -> list:
    rows = []
    for name, run_dir in runs.items():
        log = os.path.join(os.path.dirname(run_dir), os.path.basename(run_dir) + ".log")
        row = {
            "run": name,
            "val_dice": best_val_dice(log),
            "flip_rate": validation_flip_rate(run_dir, dataset_dir, target_site),
            "unseen_dice": unseen_dice(run_dir),
        }
        print(row, flush=True)
        rows.append(row)
    if out:
        with open(out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    import fire

    fire.Fire(measure)
