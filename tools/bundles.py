"""Small helpers that bundle configs call by import path: where a bundle lives, and which checkpoint resumes it."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Optional

__all__ = ["BUNDLES_DIR", "bundle_dir", "latest_checkpoint"]

BUNDLES_DIR = Path(__file__).resolve().parents[1] / "bundles"


def bundle_dir(name: str) -> str:
    """Absolute path of ``bundles/<name>`` in this checkout, so that configs run from any working directory.

    A copy of a bundle elsewhere (MONAI Label's model folder, the Model Zoo) passes ``--bundle_root`` instead.
    """
    path = BUNDLES_DIR / name
    if not (path / "configs").is_dir():
        raise FileNotFoundError(f"bundle {name!r} not found at {path}; pass --bundle_root <the bundle's folder>.")
    return str(path)


def latest_checkpoint(ckpt_dir: str, prefix: str = "checkpoint") -> Optional[str]:
    """The newest ``<ckpt_dir>/<prefix>_epoch=N.pt`` written by the resumable CheckpointSaver, or ``None``."""
    best, best_epoch = None, -1
    for path in glob.glob(os.path.join(glob.escape(ckpt_dir), f"{prefix}_epoch=*.pt")):
        match = re.search(r"_epoch=(\d+)\.pt$", path)
        if match and int(match.group(1)) > best_epoch:
            best, best_epoch = path, int(match.group(1))
    return best
