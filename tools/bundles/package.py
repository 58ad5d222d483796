"""A bundle as the MONAI Model Zoo shares it: one self-contained folder that runs without this repository.

``python -m tools.bundles package <bundle> --out DIR [--weights model.pt] [--onnx model.onnx]`` writes
``DIR/<bundle>/``:

* ``configs/``, ``docs/README.md``, ``LICENSE``: the bundle's own files, with ``$import scripts`` first in the
  ``imports`` of every config that has them, and ``metadata.json`` naming only pip-installable packages;
* ``scripts/``: the code the configs import (``custom_nets``, ``custom_losses`` and the bundles' runtime part of
  ``tools``: ``tools.bundles``, ``tools.engines``, ``tools.data``, ``tools.cli``), vendored at build time from this
  repository, which stays their single source. ``scripts/__init__.py`` puts ``scripts/`` on ``sys.path``, so the
  configs' ``custom_nets.ENet`` or ``tools.data.transforms...`` resolve to the vendored copies;
* ``models/model.pt`` (and ``models/model.onnx``) when weights are given, listed with their SHA-256 in
  ``large_files.yml``.

As in the Model Zoo, commands run from the bundle's folder (``cd DIR/<bundle>``), which puts ``scripts`` on the
path; MONAI Label adds the bundle folder itself.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional

from tools.data.io import sha256_file

from . import BUNDLES_DIR

__all__ = ["VENDORED", "RUNTIME_PACKAGES", "package_bundle"]

REPO_ROOT = BUNDLES_DIR.parent
VENDORED = (
    "custom_nets",
    "custom_losses",
    "tools/__init__.py",
    "tools/cli.py",
    "tools/bundles/__init__.py",
    "tools/engines.py",
    "tools/data",
)
"""What ``scripts/`` holds, relative to the repository root (folders are copied whole, without caches)."""

RUNTIME_PACKAGES = ("nibabel", "itk", "scipy", "scikit-image", "pytorch-ignite", "tensorboard", "pyyaml", "fire", "tqdm")
"""Packages the vendored code and MONAI's bundle runner import, beside torch, monai and numpy (scikit-image: MONAI's
largest-component transform), pinned in ``metadata.json`` at the versions installed where the package is built."""
OPTIONAL_PACKAGES = ("onnxruntime",)
"""Only ``configs/inference_onnx.yaml`` needs these."""

SCRIPTS_INIT = '''"""Code vendored from the prostate-rkd repository by `python -m tools.bundles package` (do not edit here).

Importing this package puts this folder on ``sys.path``, so that the configs' ``custom_nets``,
``custom_losses`` and ``tools`` imports resolve to the copies beside this file.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
'''



def _version(distribution: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _add_scripts_import(text: str, path: Path) -> str:
    """``  - $import scripts`` as the first entry of the config's ``imports:`` list."""
    match = re.search(r"^imports:\n(\s+)- ", text, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"{path}: 'imports:' is not a block list; cannot add '$import scripts'")
    return text[: match.end(1)] + "- $import scripts\n" + match.group(1) + text[match.end(1):]


def _metadata(path: Path) -> dict:
    metadata = json.loads(path.read_text())
    required = {name: _version(name) for name in RUNTIME_PACKAGES}
    missing = [name for name, v in required.items() if v is None]
    if missing:
        raise ValueError(f"cannot pin {missing} for {path}: not installed where the package is built")
    metadata["required_packages_version"] = required
    optional = {name: _version(name) for name in OPTIONAL_PACKAGES if _version(name)}
    if optional:
        metadata["optional_packages_version"] = optional
    return metadata


def package_bundle(
    bundle: str,
    out_dir: str | Path,
    weights: Optional[str | Path] = None,
    onnx: Optional[str | Path] = None,
    bundles_dir: Path = BUNDLES_DIR,
) -> Path:
    """Write ``<out_dir>/<bundle>/`` (see the module docstring); returns it. Built in a temporary folder beside
    it and moved into place only when complete, so a failure leaves no partial package.

    Raises:
        FileNotFoundError: no such bundle, or a ``weights``/``onnx`` file that does not exist.
        ValueError: a config whose imports cannot take ``$import scripts``.
    """
    source = Path(bundles_dir) / bundle
    if not (source / "configs").is_dir():
        raise FileNotFoundError(f"bundle {bundle!r} not found: {source / 'configs'} does not exist")
    models: Dict[str, Path] = {}
    for name, path in (("model.pt", weights), ("model.onnx", onnx)):
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: no such file (--{'weights' if name == 'model.pt' else 'onnx'})")
            models[name] = Path(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / bundle
    build = Path(tempfile.mkdtemp(prefix=f".{bundle}.", dir=out_dir))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "models", "logs", "eval", "runs")
        shutil.copytree(source, build, dirs_exist_ok=True, ignore=ignore)
        for config in sorted((build / "configs").glob("*.yaml")):
            text = config.read_text()
            if re.search(r"^imports:", text, flags=re.MULTILINE):
                config.write_text(_add_scripts_import(text, config))
        metadata = build / "configs" / "metadata.json"
        metadata.write_text(json.dumps(_metadata(metadata), indent=4) + "\n")
        scripts = build / "scripts"
        scripts.mkdir()
        (scripts / "__init__.py").write_text(SCRIPTS_INIT)
        for item in VENDORED:
            origin, destination = REPO_ROOT / item, scripts / item
            if origin.is_dir():
                shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination)
        large_files = ["large_files:"]
        if models:
            (build / "models").mkdir()
        for name, path in models.items():
            shutil.copy2(path, build / "models" / name)
            large_files += [f'  - path: "models/{name}"', '    url: ""', f'    hash_val: "{sha256_file(path)}"',
                            '    hash_type: "sha256"']
        (build / "large_files.yml").write_text("\n".join(large_files if models else ["large_files: []"]) + "\n")
        if target.exists():
            shutil.rmtree(target)
        build.rename(target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return target
