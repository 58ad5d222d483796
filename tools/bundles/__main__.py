"""``python -m tools.bundles sync|package``: the bundles' configs from their templates, and Model Zoo packages.

Examples::

    python -m tools.bundles sync           # after editing tools/bundles/templates/: rewrite every bundle's configs
    python -m tools.bundles sync --check   # list the files that differ from their templates; exit 1 if any
    python -m tools.bundles package prostate_mri_enet_student --out dist --weights runs/enet/models/model.pt
"""

from __future__ import annotations

import sys


from tools.cli import fire_commands, one_line_errors

from .package import package_bundle
from .sync import sync_bundles


def sync(check: bool = False) -> None:
    """Render ``tools/bundles/templates`` into ``bundles/<name>/``; with ``check``, compare only."""
    report = sync_bundles(check=check)
    for line in report:
        print(line)
    if check and report:
        print("the bundles differ from their templates: edit tools/bundles/templates/, then run "
              "python -m tools.bundles sync", file=sys.stderr)
        raise SystemExit(1)
    print("bundles match their templates" if check else f"{sum(1 for r in report if r.endswith('written'))} file(s) written")


def package(bundle: str, out: str, weights: str = None, onnx: str = None) -> None:
    """Write OUT/BUNDLE as a self-contained Model Zoo folder (code vendored under scripts/, pip-only metadata);
    WEIGHTS becomes models/model.pt and ONNX models/model.onnx."""
    if not out or out is True:
        raise ValueError("--out needs a folder")
    target = package_bundle(bundle, out, weights=weights, onnx=onnx)
    print(f"wrote {target}; run it from there, e.g.: cd {target} && python -m monai.bundle run "
          f"--config_file configs/inference.yaml --input IMAGE")


def main() -> None:
    fire_commands({"sync": one_line_errors(sync), "package": one_line_errors(package)}, name="tools.bundles")


if __name__ == "__main__":
    main()
