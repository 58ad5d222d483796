"""TAPS, the real-data peer: one NIfTI volume in, its whole-gland mask out, in the input's geometry.

TAPS (``lavlab-taps`` 1.1.2 on PyPI, MIT; DESIGN.md section 7) is a 3D MONAI ``SegResNetDS`` trained on real
prostate MRI. Its wheel ships the weights as ``taps/resources/model_v1.onnx`` and runs them with
``onnxruntime``; nothing is downloaded at run time. Its own pipeline (``taps.inference.segment``, read from
the installed source): ``LoadImaged -> Orientationd(RAS) -> Spacingd(0.8, 0.8, 3.0 mm) ->
NormalizeIntensityd(nonzero) -> CropForegroundd(margin 5)``, sliding windows of 128 x 128 x 32 (overlap 0.5,
gaussian), logits blurred (sigma 2.5 voxels), ``Invertd`` back to the file's grid, ``sigmoid > 0.55``, then
quality checks that log warnings (volume 15-80 mL, extent, border contact, holes, several components) and
keep the largest 3D component.

Install (its metadata asks for ``onnxruntime-gpu``, a CUDA build, hence ``--no-deps``)::

    pip install --no-deps lavlab-taps==1.1.2 onnxruntime

Command line (what the study runs, in a subprocess of its own: ``taps`` configures the root logger on import)::

    python -m tools.peers.taps IMAGE OUTPUT [--device cpu]
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["DISTRIBUTION", "VERSION", "INSTALL_HINT", "NAME", "available", "version", "segment", "command", "main"]

DISTRIBUTION = "lavlab-taps"
VERSION = "1.1.2"
NAME = f"TAPS ({DISTRIBUTION} {VERSION}, MIT; SegResNetDS trained on real prostate MRI, ONNX)"
INSTALL_HINT = f"TAPS not installed: pip install --no-deps {DISTRIBUTION}=={VERSION} onnxruntime"


def version() -> Optional[str]:
    """The installed ``lavlab-taps`` version, or None."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def available() -> bool:
    """Whether ``lavlab-taps`` and ``onnxruntime`` are importable (checked without importing them)."""
    return version() is not None and all(importlib.util.find_spec(m) is not None for m in ("taps", "onnxruntime"))


def segment(image: str | Path, output: str | Path, device: str = "cpu") -> Path:
    """Segment ``image`` (NIfTI) with TAPS's bundled model and write the binary mask to ``output`` (NIfTI, uint8,
    the input's shape and affine); returns ``output``.

    TAPS's quality checks only log here (``exact=True`` keeps the requested file name even when they warn).

    Raises:
        ImportError: when TAPS is not installed (the message gives the install command).
        ValueError: for an ``output`` that is not ``.nii`` / ``.nii.gz``.
        FileNotFoundError: for a missing ``image``.
    """
    image, output = Path(image), Path(output)
    if not output.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"output must be a .nii or .nii.gz file, got {output}.")
    if not image.is_file():
        raise FileNotFoundError(f"image not found: {image}")
    if not available():
        raise ImportError(INSTALL_HINT)
    from taps.inference import segment as taps_segment

    return Path(taps_segment(image, output, checkpoint=None, device=device, exact=True))


def command(image: str | Path, output: str | Path, device: str = "cpu", python: str = sys.executable) -> List[str]:
    """The command line that runs :func:`segment` in a process of its own."""
    return [python, "-m", "tools.peers.taps", str(image), str(output), "--device", device]


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.peers.taps", description="Segment a prostate MRI with TAPS.")
    parser.add_argument("image")
    parser.add_argument("output")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        path = segment(args.image, args.output, args.device)
    except ImportError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"TAPS mask: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
