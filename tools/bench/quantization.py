"""Does int8 keep the accuracy? Unseen-site Dice of a trained student: PyTorch, ONNX float32 and ONNX int8.

``python -m tools.bench quantization --bundle prostate_mri_enet_student --weights RUN/models/model.pt
--dataset-dir DATA --target-site BIDMC`` writes ``results/quantization.md`` and ``results/quantization.csv``.

The trained weights are exported with MONAI's bundle command (``monai.bundle.onnx_export`` of ``network_def`` at the
profile's image size), quantised with :func:`custom_nets.quantization.quantize_onnx` on ``calibration_slices``
slices of the *source* sites' training volumes through the bundle's preprocessing (spread evenly over volumes and
slices), and each of the three models is evaluated on every case of the held-out site through the bundle's own
``evaluate.yaml`` (merged over ``train.yaml`` and the profile): PyTorch as the bundle evaluates, the two ONNX models
by putting :class:`custom_nets.OnnxRuntimeNetwork` in place of ``network`` (the ``CheckpointLoader`` off). The
rule of the issue: int8 is kept only where the unseen-site mean Dice drops by at most ``tolerance`` (0.01).
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["DICE_TOLERANCE", "QuantizationResult", "calibration_slices", "evaluate_dice", "measure_quantization",
           "write_quantization_table"]

DICE_TOLERANCE = 0.01
_BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"


@dataclass
class QuantizationResult:
    model: str
    bundle: str
    target_site: str
    image_size: int
    cases: int
    calibration_slices: int
    dice_torch: float
    dice_onnx_fp32: float
    dice_onnx_int8: float
    tolerance: float

    @property
    def drop(self) -> float:
        return self.dice_onnx_fp32 - self.dice_onnx_int8

    @property
    def keep_int8(self) -> bool:
        return self.drop <= self.tolerance


def _config_files(bundle: str, profile: Optional[str]) -> List[str]:
    configs = _BUNDLES_DIR / bundle / "configs"
    files = [configs / "train.yaml"] + ([configs / f"{profile}.yaml"] if profile else []) + [configs / "evaluate.yaml"]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"bundle {bundle!r} has no {path}.")
    return [str(p) for p in files]


def calibration_slices(config_files: Sequence[str], overrides: Dict[str, object], count: int = 64) -> List[np.ndarray]:
    """``count`` preprocessed slices ``(1, 1, H, W)`` of the training volumes of the bundle's split (the source
    sites), spread evenly over the volumes and, within each, over its slices."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(config_files))
    for key, value in overrides.items():
        parser[key] = value
    train = parser.get_parsed_content("datalist")["training"]
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    if not train:
        raise ValueError("the split has no training volume to calibrate on.")
    per_volume = max(1, int(np.ceil(count / len(train))))
    slices: List[np.ndarray] = []
    for index in np.linspace(0, len(train) - 1, num=min(len(train), count)).round().astype(int):
        image = preprocessing({"image": train[index]["image"], "label": train[index]["label"]})["image"]
        depth = image.shape[-1]
        for k in np.linspace(0, depth - 1, num=min(depth, per_volume)).round().astype(int):
            slices.append(image[..., int(k)].as_tensor().numpy()[None].astype(np.float32))
    return slices[:count]


def evaluate_dice(
    config_files: Sequence[str], overrides: Dict[str, object], output_dir: Path, onnx_file: Optional[str] = None
) -> tuple:
    """``(mean Dice, cases)`` of the bundle's ``evaluating`` on the held-out site, with ``onnx_file`` in place of
    the PyTorch network when given."""
    from monai.bundle import ConfigWorkflow

    values = dict(overrides, output_dir=str(output_dir))
    if onnx_file is not None:
        values["network"] = f"$custom_nets.OnnxRuntimeNetwork({str(onnx_file)!r}, intra_op_threads=1)"
        values["validate#handlers#0#_disabled_"] = True  # the CheckpointLoader: the weights are in the ONNX file
    workflow = ConfigWorkflow(config_file=list(config_files), logging_file=False, workflow_type="train",
                              run_id="evaluating", **values)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    rows = list(csv.reader(open(output_dir / "test_dice_raw.csv")))
    dice = [float(row[1]) for row in rows[1:] if len(row) > 1 and row[1] not in ("", "nan")]
    return float(np.mean(dice)), len(dice)


def measure_quantization(
    bundle: str,
    weights: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    target_site: str,
    work_dir: str | os.PathLike,
    profile: Optional[str] = "profile_cpu",
    calibration_count: int = 64,
    tolerance: float = DICE_TOLERANCE,
    label: Optional[str] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> QuantizationResult:
    """Export, quantise and evaluate (module docstring); everything is written under ``work_dir``."""
    from monai.bundle import ConfigParser, onnx_export

    from custom_nets.quantization import quantize_onnx

    say = progress or (lambda message: None)
    work = Path(work_dir)
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    files = _config_files(bundle, profile)
    if not Path(weights).is_file():
        raise FileNotFoundError(f"trained weights not found: {weights}")
    model_pt = models / "model.pt"
    if Path(weights).resolve() != model_pt.resolve():
        model_pt.write_bytes(Path(weights).read_bytes())
    overrides = {"bundle_root": str(work), "dataset_dir": str(dataset_dir), "target_site": target_site,
                 "progress": False, "num_workers": 0}
    parser = ConfigParser()
    parser.read_config(files)
    image_size = int(parser.get_parsed_content("image_size"))
    fp32, int8 = models / "model.onnx", models / "model_int8.onnx"
    say(f"exporting {model_pt} at 1x1x{image_size}x{image_size} (monai.bundle.onnx_export)")
    onnx_export(net_id="network_def", filepath=str(fp32), ckpt_file=str(model_pt), config_file=files[:-1],
                bundle_root=str(work), input_shape=[1, 1, image_size, image_size])
    slices = calibration_slices(files, overrides, calibration_count)
    say(f"quantising with {len(slices)} calibration slices of the source sites")
    quantize_onnx(fp32, int8, slices)
    dice = {}
    for name, onnx_file in (("torch", None), ("onnx_fp32", fp32), ("onnx_int8", int8)):
        dice[name], cases = evaluate_dice(files, overrides, work / f"eval_{name}", None if onnx_file is None else str(onnx_file))
        say(f"{name}: mean Dice {dice[name]:.4f} over {cases} cases of {target_site}")
    return QuantizationResult(label or Path(weights).stem, bundle, target_site, image_size, cases, len(slices), dice["torch"], dice["onnx_fp32"],
                              dice["onnx_int8"], tolerance)


def write_quantization_table(results: Sequence[QuantizationResult], out_dir: str | os.PathLike = "results",
                             command: str = "", notes: Sequence[str] = ()) -> Path:
    """Write ``quantization.md`` and ``quantization.csv`` under ``out_dir``; returns the markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "quantization.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(results[0])) + ["drop", "keep_int8"])
        writer.writeheader()
        for r in results:
            writer.writerow({**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(r).items()},
                             "drop": round(r.drop, 4), "keep_int8": r.keep_int8})
    lines = [
        "# int8 quantisation: unseen-site Dice of float32 and int8",
        "",
        "Static int8 (onnxruntime QDQ, int8 weights per channel, uint8 activations, MinMax calibration on slices of",
        "the source sites' training volumes through the bundle's preprocessing) against the same model in float32,",
        "each evaluated on every case of the held-out site through the bundle's `evaluate.yaml` (tools/bench/",
        f"quantization.py). Rule: keep int8 only where the mean Dice drops by at most {results[0].tolerance:g}.",
        "",
        "| model | bundle | held-out site | cases | image size | calibration slices | Dice PyTorch | Dice ONNX fp32 | "
        "Dice ONNX int8 | drop (fp32 - int8) | int8 by the rule |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.bundle} | {r.target_site} | {r.cases} | {r.image_size} | {r.calibration_slices} | {r.dice_torch:.4f} | "
            f"{r.dice_onnx_fp32:.4f} | {r.dice_onnx_int8:.4f} | {r.drop:+.4f} | "
            f"{'within the rule' if r.keep_int8 else 'fails the rule'} |"
        )
    lines += [""] + [f"- {note}" for note in notes]
    if command:
        lines += ["", f"Produced by `{command}`."]
    md = out / "quantization.md"
    md.write_text("\n".join(line for line in lines) + "\n")
    return md
