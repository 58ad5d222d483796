"""Small helpers that bundle configs call by import path: where a bundle lives, and which checkpoint resumes it."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Optional

__all__ = ["BUNDLES_DIR", "DEFAULT_DATASET_DIR", "bundle_dir", "latest_checkpoint", "loso_datalist", "evaluation_cases",
           "inference_datalist", "InferenceDatalist",
           "exit_if_inputs_failed", "load_teacher"]

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"


def bundle_dir(name: str) -> str:
    """Absolute path of the bundle ``name``, so that configs run from any working directory.

    In this checkout: ``bundles/<name>``. In a package of ``python -m tools.bundles package`` (this module
    vendored as ``<bundle>/scripts/tools/bundles/__init__.py``): that bundle's own folder. A copy elsewhere
    (MONAI Label's model folder) passes ``--bundle_root``.
    """
    path = BUNDLES_DIR / name
    if (path / "configs").is_dir():
        return str(path)
    packaged = Path(__file__).resolve().parents[3]
    if (packaged / "configs").is_dir() and (packaged / "scripts" / "tools").is_dir():
        return str(packaged)
    raise FileNotFoundError(f"bundle {name!r} not found at {path}; pass --bundle_root <the bundle's folder>.")


def latest_checkpoint(ckpt_dir: str, prefix: str = "checkpoint") -> Optional[str]:
    """The newest ``<ckpt_dir>/<prefix>_checkpoint_epoch=N.pt`` written by the resumable CheckpointSaver
    (``file_prefix=<prefix>``), or ``None``."""
    best, best_epoch = None, -1
    for path in glob.glob(os.path.join(glob.escape(ckpt_dir), f"{prefix}_checkpoint_epoch=*.pt")):
        match = re.search(r"_epoch=(\d+)\.pt$", path)
        if match and int(match.group(1)) > best_epoch:
            best, best_epoch = path, int(match.group(1))
    return best


DEFAULT_DATASET_DIR = BUNDLES_DIR.parent / "data" / "synthetic"
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")


def loso_datalist(
    dataset_dir: str, target_site: str, val_fraction: float = 0.2, seed: int = 0, datalist_file: Optional[str] = None
) -> dict:
    """The leave-one-site-out datalist with absolute ``image`` and ``label`` paths.

    From ``datalist_file`` (written by ``python -m tools.data split``) when given, else built in memory from
    ``dataset_dir``: the dataset is indexed and verified (:func:`tools.data.datalist.build_index`, which raises on
    any integrity problem, naming each file) and split with ``target_site`` held out (``"none"``: no site held out).
    """
    from tools.data.datalist import DATALIST_KEYS, build_index, load_datalist, make_split

    if datalist_file:
        return {key: load_datalist(datalist_file, key=key) for key in DATALIST_KEYS}
    if not os.path.isdir(dataset_dir):
        hint = " (make the simulated sites with: python -m tools.data synth --out DIR)" if dataset_dir == str(DEFAULT_DATASET_DIR) else ""
        raise FileNotFoundError(f"dataset_dir not found: {dataset_dir}{hint}")
    split = make_split(build_index(dataset_dir), target_site, val_fraction=val_fraction, seed=seed)
    root = split["root"]
    for key in DATALIST_KEYS:
        split[key] = [dict(e, image=os.path.join(root, e["image"]), label=os.path.join(root, e["label"])) for e in split[key]]
    return split


def evaluation_cases(datalist: dict, key: str) -> list:
    """The entries of ``datalist[key]`` that evaluate.yaml runs (``evaluate_key``: ``test``, ``validation``...).

    Raises:
        ValueError: ``key`` is not a list of the datalist, or it is empty (``test`` is, with ``--target_site none``).
    """
    if key not in datalist or not isinstance(datalist[key], list):
        raise ValueError(f"evaluate_key {key!r} is not a list of the datalist (keys: {sorted(datalist)}).")
    if not datalist[key]:
        hint = " (--target_site none holds no site out: evaluate with --evaluate_key validation)" if key == "test" else ""
        raise ValueError(f"evaluate_key {key!r}: the datalist has no cases to evaluate{hint}.")
    return datalist[key]


class InferenceDatalist(list):
    """``[{"image": path}, ...]`` of the inputs fit for inference; ``failed`` holds one line per refused file and
    ``segmented`` counts the files a :class:`tools.data.inference.InferenceDataset` handed on."""

    def __init__(self, entries, failed=()):
        super().__init__(entries)
        self.failed = list(failed)
        self.segmented = 0


def inference_datalist(input_path: str, check: bool = True) -> InferenceDatalist:
    """The volumes to segment: one file, or every volume file (NIfTI, MetaImage, NRRD) in a folder.

    A missing input or a folder without volume files: the problem is printed to stderr and the process exits with
    status 1. With ``check``, each file is also read and checked here (:func:`tools.data.verify.check_inference_image`:
    readable, 3D, finite, not constant); refused files are listed in ``failed`` and the others segmented; when
    no file is fit, the process exits with status 1 before any model is built. Without ``check`` (the bundles'
    inference.yaml), :class:`tools.data.inference.InferenceDataset` makes the same checks on the volume it reads
    anyway, so that each file is read once. :func:`exit_if_inputs_failed` ends a run with refused files with status 1.
    """
    path = Path(input_path) if input_path else None
    if path is not None and path.is_file():
        files = [path]
    elif path is not None and path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
        if not files:
            _exit_with([f"{path}: no volume files ({', '.join(VOLUME_SUFFIXES)})"])
    else:
        _exit_with([f"{input_path}: input not found (give --input FILE_OR_FOLDER)"])
    failed = []
    if check:
        from tools.data.verify import check_inference_image

        kept = []
        for file in files:
            problems = check_inference_image(file)
            if problems:
                failed.extend(problems)
            else:
                kept.append(file)
        if not kept:
            _exit_with(failed)
        files = kept
    return InferenceDatalist([{"image": str(p.resolve())} for p in files], failed)


def _exit_with(lines) -> None:
    import sys

    for line in lines:
        print(line, file=sys.stderr)
    raise SystemExit(1)


def exit_if_inputs_failed(datalist: list) -> None:
    """After a run: list the refused files of an :class:`InferenceDatalist` and exit with status 1."""
    failed = getattr(datalist, "failed", [])
    if failed:
        if getattr(datalist, "segmented", 0) or len(failed) > 1:
            _exit_with([f"{len(failed)} input problem(s); the other files were segmented:", *failed])
        _exit_with(failed)


def load_teacher(teacher_bundle: str, checkpoint: Optional[str] = None, device: str = "cpu", width: Optional[float] = None,
                 profile: Optional[str] = None):
    """The frozen teacher for distillation, built from the teacher bundle's own ``network_def``.

    The network is the one in ``<teacher_bundle>/configs/inference.yaml``, with the teacher bundle's own ``profile``
    merged over it when given (a file name in its ``configs/``, e.g. ``profile_cpu.yaml``: the width and network
    arguments the teacher trained with at that profile), then ``network_width`` set to ``width`` when given; the
    weights ``checkpoint`` (default ``<teacher_bundle>/models/model.pt``).
    The teacher is in eval mode on ``device`` with gradients off, its BatchNorm folded into the convolutions and run
    channels-last (:func:`custom_nets.load_frozen_teacher`, :func:`custom_nets.freeze_teacher`): the outputs of the
    eval-mode network within float rounding, at a lower cost per distillation step.

    Raises:
        FileNotFoundError: no such bundle or profile, or no checkpoint (the message gives the command that trains it).
        ValueError: a checkpoint that does not fit the network (another architecture or width).
    """
    from monai.bundle import ConfigParser

    from custom_nets import load_frozen_teacher

    config_file = os.path.join(teacher_bundle, "configs", "inference.yaml")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"teacher bundle not found: {config_file} does not exist (teacher_bundle={teacher_bundle}).")
    checkpoint = checkpoint or os.path.join(teacher_bundle, "models", "model.pt")
    if not os.path.isfile(checkpoint):
        train = os.path.join(teacher_bundle, "configs", "train.yaml")
        raise FileNotFoundError(
            f"teacher checkpoint not found: {checkpoint}; train the teacher first: "
            f"python -m monai.bundle run training --config_file {train} (with the same profile and data)."
        )
    config_files = [config_file]
    if profile:
        profile_file = os.path.join(teacher_bundle, "configs", profile)
        if not os.path.isfile(profile_file):
            raise FileNotFoundError(f"teacher profile not found: {profile_file} does not exist (teacher_profile={profile}).")
        config_files.append(profile_file)
    parser = ConfigParser()
    parser.read_config(config_files)
    parser["bundle_root"] = teacher_bundle
    if width is not None:
        parser["network_width"] = float(width)
    network = parser.get_parsed_content("network_def", instantiate=True)
    return load_frozen_teacher(network, checkpoint, device)
