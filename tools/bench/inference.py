"""One 3D volume through a bundle's own ``inference.yaml``, from reading the file to writing the mask.

``python -m tools.bench inference`` (and ``python -m tools.bench models``, unless ``--no-inference``) writes
``results/inference.md`` and ``results/inference.csv`` and puts a summary section with a link into
``results/models.md`` (without re-measuring the models table).

The input is a simulated case (:func:`synthetic_volume`: the simulator's I2CVB site, ``size x size`` in-plane,
``slices`` slices around the gland, stored LPS as five of the six sites are, so orientation and its inverse do
real work). Each network runs through its bundle's ``configs/inference.yaml`` in-process with
``monai.bundle.ConfigWorkflow`` -- exactly what ``python -m monai.bundle run --config_file .../inference.yaml``
does after start-up -- with ``bundle_root`` a temporary folder whose ``models/model.pt`` holds randomly
initialised weights of the bundle's ``network_def`` (the network's speed does not depend on its weights).

Timed spans of one run (:class:`InferenceRun`), all after interpreter start-up and module imports:

* ``bundle_s``: ``ConfigWorkflow(...)`` (reading and parsing the YAML), ``initialize()``, ``run()`` (which
  instantiates the network, data loader, inferer and evaluator, loads ``model.pt`` and runs the evaluator) and
  ``finalize()``: everything ``monai.bundle run`` does for one volume;
* ``file_to_mask_s``: the evaluator's one iteration, from ignite's ``GET_BATCH_STARTED`` (before the file is
  read) to ``ITERATION_COMPLETED`` (after ``SaveImaged`` wrote the mask); the issue's "reading the file to
  writing the mask". It splits into ``data_s`` (to ``GET_BATCH_COMPLETED``: read, orientation, resize,
  normalisation, collation), ``inference_s`` (``ITERATION_STARTED`` to MONAI's ``FORWARD_COMPLETED``: the
  ``SliceInferer`` over all slices) and ``postprocessing_s`` (to ``ITERATION_COMPLETED``: decollation, softmax,
  ``Invertd``, argmax, largest component, ``SaveImaged``).

:func:`profile_stages` replays the same chain, built from the same config, one transform at a time, for the
time of every transform.
"""

from __future__ import annotations

import csv
import os
import platform
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
import torch
import yaml

__all__ = [
    "TARGET_SECONDS",
    "MODELS_SECTION",
    "InferenceRun",
    "InferenceFigures",
    "synthetic_volume",
    "bundle_for_network",
    "write_random_weights",
    "run_bundle_inference",
    "profile_stages",
    "measure_inference",
    "write_inference_table",
    "update_models_md",
]

TARGET_SECONDS = 1.0  # the target for the ENet student, file to mask, on 2 CPU cores
MODELS_SECTION = "## Inference of one volume, file to mask"
_BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"


# ------------------------------------------------------------------------------------------------ input


def synthetic_volume(
    path: str | os.PathLike, size: int = 384, slices: int = 30, site: str = "HCRUDB", seed: int = 0, case_number: int = 0
) -> Path:
    """Write a simulated T2 volume of shape ``(size, size, slices)`` to ``path`` (NIfTI) and return the path.

    The simulator's case ``case_number`` of ``site`` (:func:`tools.data.synth.synthesize_case`, default the I2CVB
    site, whose 1.25 mm slices give 50-70 slices) is cut to the ``slices`` slices centred on the gland and stored
    with both in-plane axes reversed (LPS; the affine is adjusted, so the world geometry is unchanged).

    Raises:
        ValueError: when the simulated case has fewer than ``slices`` slices.
    """
    from tools.data.synth import synthesize_case

    case = synthesize_case(site, case_number, seed=seed, size=size)
    depth = case.image.shape[2]
    if slices < 1 or slices > depth:
        raise ValueError(f"slices must be in [1, {depth}] for the simulated {site} case {case_number}, got {slices}.")
    gland = np.flatnonzero(case.label.any(axis=(0, 1)))
    centre = int(round(gland.mean())) if gland.size else depth // 2
    start = min(max(centre - slices // 2, 0), depth - slices)
    image = case.image[::-1, ::-1, start : start + slices]
    # voxel (i, j, k) of the stored array is voxel (nx - 1 - i, ny - 1 - j, start + k) of the simulated one
    index_map = np.array(
        [[-1, 0, 0, size - 1], [0, -1, 0, size - 1], [0, 0, 1, start], [0, 0, 0, 1]], dtype=np.float64
    )
    affine = case.affine @ index_map
    nifti = nib.Nifti1Image(np.ascontiguousarray(image), affine)
    nifti.header.set_xyzt_units("mm")
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nifti, str(path))
    return path


# ------------------------------------------------------------------------------------------------ one run


def bundle_for_network(network: str, bundles_dir: str | os.PathLike = _BUNDLES_DIR) -> str:
    """The bundle whose ``inference.yaml`` builds ``custom_nets.<network>`` as ``network_def``."""
    found = []
    for config in sorted(Path(bundles_dir).glob("*/configs/inference.yaml")):
        target = (yaml.safe_load(config.read_text()).get("network_def") or {}).get("_target_")
        if target == f"custom_nets.{network}":
            found.append(config.parents[1].name)
    if len(found) != 1:
        raise ValueError(f"expected one bundle under {bundles_dir} whose network_def is custom_nets.{network}, found {found}.")
    return found[0]


def _config_files(bundle: str) -> Tuple[Path, Path]:
    configs = _BUNDLES_DIR / bundle / "configs"
    config, meta = configs / "inference.yaml", configs / "metadata.json"
    for path in (config, meta):
        if not path.is_file():
            raise FileNotFoundError(f"bundle {bundle!r} has no {path}.")
    return config, meta


def _inference_configs(bundle: str, onnx: bool, profile: Optional[str] = None) -> List[str]:
    """inference.yaml, then ``profile_<profile>.yaml`` (e.g. the CPU profile), then, for the ONNX Runtime path,
    inference_onnx.yaml, each merged over the ones before."""
    config, _ = _config_files(bundle)
    files = [config]
    if profile:
        files.append(config.with_name(f"profile_{profile}.yaml"))
    if onnx:
        files.append(config.with_name("inference_onnx.yaml"))
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"bundle {bundle!r} has no {path}.")
    return [str(f) for f in files]


def parse_network(spec: str) -> Tuple[str, bool, Optional[str]]:
    """``"ENet"`` -> ``("ENet", False, None)`` (PyTorch, inference.yaml); ``"ENet:onnx"`` -> ``("ENet", True, None)``
    (ONNX Runtime: inference_onnx.yaml merged over inference.yaml); a suffix ``@cpu`` merges the bundle's
    ``profile_cpu.yaml`` too (its preprocessing and image size): ``"ENet:onnx@cpu"`` -> ``("ENet", True, "cpu")``."""
    rest, _, profile = spec.partition("@")
    name, _, runtime = rest.partition(":")
    if runtime not in ("", "torch", "onnx"):
        raise ValueError(f"network {spec!r}: the runtime after ':' must be 'torch' or 'onnx'.")
    return name, runtime == "onnx", profile or None


def export_onnx(bundle: str, root: str | os.PathLike, image_size: int, width: Optional[float] = None,
                profile: Optional[str] = None) -> Path:
    """``<root>/models/model.onnx`` from ``<root>/models/model.pt`` by the bundle README's command
    (``monai.bundle.onnx_export`` of ``network_def`` of inference.yaml, and ``profile_<profile>.yaml`` when given,
    input ``(1, 1, image_size, image_size)``)."""
    from monai.bundle import onnx_export

    _, meta = _config_files(bundle)
    root = Path(root)
    target = root / "models" / "model.onnx"
    overrides = {"network_width": float(width)} if width is not None else {}
    onnx_export(net_id="network_def", filepath=str(target), ckpt_file=str(root / "models" / "model.pt"),
                config_file=_inference_configs(bundle, False, profile), meta_file=str(meta), bundle_root=str(root),
                input_shape=[1, 1, int(image_size), int(image_size)], **overrides)
    if not target.is_file():
        raise RuntimeError(f"monai.bundle.onnx_export wrote no {target}.")
    return target


def _overrides(root: Path, volume: Path, output_dir: Path, image_size: Optional[int], width: Optional[float],
               device: Optional[str], onnx_threads: Optional[int] = None) -> dict:
    overrides = {"bundle_root": str(root), "input": str(volume), "output_dir": str(output_dir)}
    if image_size is not None:
        overrides["image_size"] = int(image_size)
    if width is not None:
        overrides["network_width"] = float(width)
    if device is not None:
        overrides["device"] = f"$torch.device('{device}')"
    if onnx_threads is not None:
        overrides["onnx_threads"] = int(onnx_threads)
    return overrides


def _config_value(bundle: str, key: str, profile: Optional[str] = None):
    """``key`` of the bundle's inference.yaml (with ``profile_<profile>.yaml`` merged over it)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(_inference_configs(bundle, False, profile))
    return parser.get_parsed_content(key)


def _config_width(bundle: str, profile: Optional[str] = None) -> float:
    return float(_config_value(bundle, "network_width", profile))


def write_random_weights(bundle: str, root: str | os.PathLike, width: Optional[float] = None, seed: int = 0,
                         profile: Optional[str] = None) -> Path:
    """``<root>/models/model.pt``: the state_dict of the bundle's ``network_def`` (at ``width``; default the width of
    inference.yaml, or of ``profile_<profile>.yaml``), randomly initialised."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(_inference_configs(bundle, False, profile))
    if width is not None:
        parser["network_width"] = float(width)
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def", instantiate=True)
    path = Path(root) / "models" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), str(path))
    return path


@dataclass
class InferenceRun:
    """The spans of one run (module docstring), in seconds, and the mask written."""

    bundle_s: float
    file_to_mask_s: float
    data_s: float
    inference_s: float
    postprocessing_s: float
    mask: Path


def _mask_path(output_dir: Path, volume: Path) -> Path:
    name = re.sub(r"\.(nii\.gz|nii|mha|mhd|nrrd)$", "", volume.name)
    return output_dir / f"{name}_seg.nii.gz"


def run_bundle_inference(
    bundle: str,
    volume: str | os.PathLike,
    root: str | os.PathLike,
    output_dir: str | os.PathLike,
    image_size: int = 384,
    width: Optional[float] = None,
    device: Optional[str] = None,
    onnx: bool = False,
    onnx_threads: Optional[int] = None,
    profile: Optional[str] = None,
) -> InferenceRun:
    """Run ``bundle``'s inference.yaml (with ``onnx``, inference_onnx.yaml merged over it) on ``volume`` in-process,
    with ``bundle_root=root`` (which must hold ``models/model.pt``, e.g. from :func:`write_random_weights`, and with
    ``onnx`` ``models/model.onnx``, from :func:`export_onnx`), and time it (:class:`InferenceRun`). With ``profile``,
    ``profile_<profile>.yaml`` is merged too and ``image_size`` (then ``None``) is the profile's."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow
    from monai.engines.utils import IterationEvents

    config, meta = _config_files(bundle)
    volume, output_dir = Path(volume), Path(output_dir)
    marks: Dict[str, float] = {}

    def marker(name: str) -> Callable:
        def handler(engine) -> None:
            # the first firing: over an iterable dataset, ignite starts one more GET_BATCH that finds it exhausted
            marks.setdefault(name, time.perf_counter())

        return handler

    start = time.perf_counter()
    workflow = ConfigWorkflow(
        config_file=_inference_configs(bundle, onnx, profile),
        meta_file=str(meta),
        logging_file=False,
        workflow_type="inference",
        **_overrides(Path(root), volume, output_dir, image_size, width, device, onnx_threads if onnx else None),
    )
    workflow.initialize()
    evaluator = workflow.parser.get_parsed_content("evaluator")  # the instance that "run" resolves and runs
    evaluator.add_event_handler(Events.GET_BATCH_STARTED, marker("get_batch_started"))
    evaluator.add_event_handler(Events.GET_BATCH_COMPLETED, marker("get_batch_completed"))
    evaluator.add_event_handler(Events.ITERATION_STARTED, marker("iteration_started"))
    evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED, marker("forward_completed"))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, marker("iteration_completed"))
    workflow.run()
    workflow.finalize()
    bundle_s = time.perf_counter() - start
    if len(marks) != 5:
        raise RuntimeError(f"{config}: the evaluator's events fired {sorted(marks)}; was it run on exactly one volume?")
    mask = _mask_path(output_dir, volume)
    if not mask.is_file():
        raise RuntimeError(f"{config}: no mask at {mask} after the run (files: {sorted(os.listdir(output_dir))}).")
    return InferenceRun(
        bundle_s=bundle_s,
        file_to_mask_s=marks["iteration_completed"] - marks["get_batch_started"],
        data_s=marks["get_batch_completed"] - marks["get_batch_started"],
        inference_s=marks["forward_completed"] - marks["iteration_started"],
        postprocessing_s=marks["iteration_completed"] - marks["forward_completed"],
        mask=mask,
    )


def profile_stages(
    bundle: str,
    volume: str | os.PathLike,
    root: str | os.PathLike,
    output_dir: str | os.PathLike,
    image_size: int = 384,
    width: Optional[float] = None,
    device: Optional[str] = None,
    onnx: bool = False,
    onnx_threads: Optional[int] = None,
    profile: Optional[str] = None,
) -> Dict[str, float]:
    """Seconds of every stage of the chain, replayed one transform at a time from the objects of ``bundle``'s
    inference.yaml (with ``onnx``, inference_onnx.yaml merged over it): each preprocessing transform (``LoadImaged``
    is the reading), the in-memory check of the volume read (:func:`tools.data.inference.volume_problem`),
    collation, the network over all slices (``SliceInferer``), decollation, each postprocessing transform
    (``SaveImaged`` is the writing).

    Keys are ``pre:<Transform>``, ``check``, ``collate``, ``inference``, ``decollate``, ``post:<Transform>``, in order.
    """
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch, list_data_collate
    from monai.networks.utils import eval_mode
    from monai.transforms import apply_transform

    from tools.data.inference import volume_problem

    parser = ConfigParser()
    parser.read_config(_inference_configs(bundle, onnx, profile))
    overrides = _overrides(Path(root), Path(volume), Path(output_dir), image_size, width, device, onnx_threads if onnx else None)
    for key, value in overrides.items():
        parser[key] = value
    preprocessing = parser.get_parsed_content("preprocessing")
    postprocessing = parser.get_parsed_content("postprocessing")
    inferer = parser.get_parsed_content("inferer")
    network = parser.get_parsed_content("network")
    run_device = parser.get_parsed_content("device")
    if not onnx:
        network.load_state_dict(torch.load(Path(root) / "models" / "model.pt", map_location=run_device, weights_only=True))

    seconds: Dict[str, float] = {}

    def timed(name: str, function: Callable, *args):
        start = time.perf_counter()
        result = function(*args)
        if run_device.type == "cuda":
            torch.cuda.synchronize(run_device)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return result

    data = {"image": str(Path(volume).resolve())}
    for index, transform in enumerate(preprocessing.transforms):
        data = timed(f"pre:{type(transform).__name__}", apply_transform, transform, data)
        if index == 0:
            problem = timed("check", volume_problem, data["image"])
            if problem:
                raise ValueError(f"{volume}: {problem}")
    batch = timed("collate", list_data_collate, [data])

    def infer(image):
        with eval_mode(network):
            return inferer(image.to(run_device), network)

    pred = timed("inference", infer, batch["image"])
    item = timed("decollate", lambda: decollate_batch({**batch, "pred": pred}, detach=True)[0])
    for transform in postprocessing.transforms:
        item = timed(f"post:{type(transform).__name__}", apply_transform, transform, item)
    return seconds


# ------------------------------------------------------------------------------------------------ figures


@dataclass
class InferenceFigures:
    """Medians over the timed runs of one network (seconds); ``stages`` from :func:`profile_stages`."""

    network: str
    bundle: str
    role: str
    width: float
    image_size: int
    volume_shape: Tuple[int, ...]
    threads: int
    repeats: int
    file_to_mask_s: float
    file_to_mask_iqr_s: float
    bundle_s: float
    data_s: float
    inference_s: float
    postprocessing_s: float
    first_run_bundle_s: float
    stages: Dict[str, float] = field(default_factory=dict)
    runtime: str = "torch"  # "torch": inference.yaml; "onnx": inference_onnx.yaml merged over it
    weights: str = "random"
    profile: str = ""  # "" (inference.yaml's own values) or e.g. "cpu" (profile_cpu.yaml merged)

    @property
    def label(self) -> str:
        runtime = "ONNX Runtime" if self.runtime == "onnx" else "PyTorch"
        profile = f", {self.profile.upper()} profile" if self.profile else ""
        weights = ", trained" if self.weights == "trained" else ""
        return f"{self.network} (width {self.width:g}, {runtime}, {self.image_size}x{self.image_size}{profile}{weights})"


def _quartile_range(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[2] - quartiles[0]


def measure_inference(
    networks: Sequence[str] = ("ENet:onnx", "ENet", "DeepLabV3Plus"),
    size: int = 384,
    slices: int = 30,
    repeats: int = 5,
    warmup: int = 1,
    widths: Optional[Dict[str, float]] = None,
    threads: Optional[int] = None,
    device: Optional[str] = None,
    stages: bool = True,
    work_dir: Optional[str | os.PathLike] = None,
    progress: Optional[Callable[[str], None]] = None,
    weights: Optional[Dict[str, str]] = None,
) -> List[InferenceFigures]:
    """Time every network's bundle on one simulated ``size x size x slices`` volume.

    ``networks``: names of :data:`custom_nets.NETWORKS`, each with ``:onnx`` for the ONNX Runtime path
    (inference_onnx.yaml merged over inference.yaml, the model exported by :func:`export_onnx`, ``threads``
    onnxruntime threads) or without for PyTorch. Weights: randomly initialised, or the state_dict file
    ``weights[name]`` (the network's time does not depend on its weights; the post-processing's does, a little,
    through the size of the predicted foreground).
    Per round, each network runs once (interleaved, so that a change of machine load reaches all alike);
    ``warmup`` rounds come first and are not counted (the first one is reported as ``first_run_bundle_s``).
    With ``stages``, one more run per network is replayed stage by stage (:func:`profile_stages`).
    Everything is written under ``work_dir`` (a temporary folder, removed after, when ``None``).
    """
    from custom_nets import NETWORKS

    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    if threads is not None:
        torch.set_num_threads(int(threads))
    widths, weights = dict(widths or {}), dict(weights or {})
    specs = {spec: parse_network(spec) for spec in networks}
    names = list(dict.fromkeys(name for name, _, _ in specs.values()))
    unknown = [n for n in names + list(widths) + list(weights) if n not in NETWORKS]
    if unknown:
        raise ValueError(f"unknown networks {unknown}; expected names of {sorted(NETWORKS)}.")
    say = progress or (lambda message: None)
    temporary = tempfile.TemporaryDirectory(prefix="bench_inference_") if work_dir is None else None
    work = Path(temporary.name if temporary is not None else work_dir)
    try:
        volume = synthetic_volume(work / "input" / "volume.nii.gz", size=size, slices=slices)
        shape = tuple(int(s) for s in nib.load(str(volume)).shape)
        bundles = {name: bundle_for_network(name) for name in names}
        # one bundle root (weights, ONNX model) per network and profile: a profile may change the width and image size
        roots: Dict[Tuple[str, Optional[str]], Path] = {}
        image_sizes: Dict[Tuple[str, Optional[str]], int] = {}
        for name, onnx, profile in specs.values():
            key = (name, profile)
            if key not in roots:
                roots[key] = work / (bundles[name] + (f"_{profile}" if profile else ""))
                image_sizes[key] = int(_config_value(bundles[name], "image_size", profile)) if profile else size
                if name in weights:
                    target = roots[key] / "models" / "model.pt"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(Path(weights[name]).read_bytes())
                else:
                    write_random_weights(bundles[name], roots[key], widths.get(name), profile=profile)
            if onnx and not (roots[key] / "models" / "model.onnx").is_file():
                n = image_sizes[key]
                say(f"{name:14s} exporting models/model.onnx (monai.bundle.onnx_export, 1x1x{n}x{n})")
                export_onnx(bundles[name], roots[key], n, widths.get(name), profile)
        onnx_threads = torch.get_num_threads()

        def arguments(spec: str, out: str) -> dict:
            name, onnx, profile = specs[spec]
            root = roots[(name, profile)]
            return dict(bundle=bundles[name], volume=volume, root=root, output_dir=root / f"{out}_{int(onnx)}",
                        image_size=None if profile else size, width=widths.get(name), device=device, onnx=onnx,
                        onnx_threads=onnx_threads, profile=profile)

        runs: Dict[str, List[InferenceRun]] = {spec: [] for spec in specs}
        first: Dict[str, float] = {}
        for index in range(warmup + repeats):
            for spec in specs:
                run = run_bundle_inference(**arguments(spec, "eval"))
                if index == 0:
                    first[spec] = run.bundle_s
                if index >= warmup:
                    runs[spec].append(run)
                kind = f"run {index - warmup + 1}/{repeats}" if index >= warmup else f"warm-up {index + 1}/{warmup}"
                say(f"{spec:14s} {kind}: file to mask {run.file_to_mask_s:.2f} s (data {run.data_s:.2f}, "
                    f"network {run.inference_s:.2f}, post {run.postprocessing_s:.2f}), bundle run {run.bundle_s:.2f} s")
        figures = []
        for spec, (name, onnx, profile) in specs.items():
            stage_seconds = {}
            if stages:
                stage_seconds = profile_stages(**arguments(spec, "stages"))
                say(f"{spec:14s} stages: " + ", ".join(f"{k} {v:.3f}" for k, v in stage_seconds.items()))
            kept = runs[spec]
            figures.append(
                InferenceFigures(
                    network=name,
                    bundle=bundles[name],
                    role=NETWORKS[name][1],
                    width=float(widths[name]) if name in widths else _config_width(bundles[name], profile),
                    image_size=image_sizes[(name, profile)],
                    volume_shape=shape,
                    threads=torch.get_num_threads(),
                    repeats=repeats,
                    file_to_mask_s=statistics.median(r.file_to_mask_s for r in kept),
                    file_to_mask_iqr_s=_quartile_range([r.file_to_mask_s for r in kept]),
                    bundle_s=statistics.median(r.bundle_s for r in kept),
                    data_s=statistics.median(r.data_s for r in kept),
                    inference_s=statistics.median(r.inference_s for r in kept),
                    postprocessing_s=statistics.median(r.postprocessing_s for r in kept),
                    first_run_bundle_s=first.get(spec, float("nan")),
                    stages=stage_seconds,
                    runtime="onnx" if onnx else "torch",
                    weights="trained" if name in weights else "random",
                    profile=profile or "",
                )
            )
        return figures
    finally:
        if temporary is not None:
            temporary.cleanup()


# ------------------------------------------------------------------------------------------------ tables


def _students_and_teachers(figures: Sequence[InferenceFigures]):
    return [f for f in figures if f.role == "student"], [f for f in figures if f.role == "teacher"]


def _summary_lines(figures: Sequence[InferenceFigures]) -> List[str]:
    students, teachers = _students_and_teachers(figures)
    first = figures[0]
    shape = "x".join(str(s) for s in first.volume_shape)
    lines = [
        f"| network | role | file to mask (s) | IQR (s) | read + preprocess (s) | network (s) | postprocess + write (s) "
        f"| bundle run (s) | first run (s) |" + "".join(f" vs {t.label} |" for t in teachers),
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(teachers),
    ]
    for f in figures:
        ratios = "".join(" - |" if t is f else f" {t.file_to_mask_s / f.file_to_mask_s:.1f}x |" for t in teachers)
        lines.append(
            f"| {f.label} | {f.role} | {f.file_to_mask_s:.2f} | {f.file_to_mask_iqr_s:.2f} | "
            f"{f.data_s:.2f} | {f.inference_s:.2f} | {f.postprocessing_s:.2f} | {f.bundle_s:.2f} | "
            f"{f.first_run_bundle_s:.2f} |{ratios}"
        )
    weights = sorted({f.weights for f in figures})
    lines += ["", f"Volume {shape} (simulated, LPS); the network's input size after the label's width; {first.threads} "
              f"thread(s) (torch, and onnxruntime for ONNX Runtime); median of {first.repeats} runs; {' and '.join(weights)} "
              f"weights (*trained*: the given state_dict; the network's time does not depend on its weights, the "
              f"largest-component step's does, on the size of the predicted foreground). CPU profile: the bundle's `profile_cpu.yaml` merged (the preprocessing and 96x96 input of the "
              f"models `make study` trains)."]
    for s in students:
        verdict = "met" if s.file_to_mask_s < TARGET_SECONDS else "missed"
        lines.append(
            f"Target: {s.label} file to mask under {TARGET_SECONDS:g} s: **{verdict}** ({s.file_to_mask_s:.2f} s; "
            f"{s.bundle_s:.2f} s with config parsing, network construction and checkpoint loading)."
        )
    return lines


def write_inference_table(
    figures: Sequence[InferenceFigures],
    out_dir: str | os.PathLike = "results",
    command: str = "",
    load_average: Optional[Tuple[float, float, float]] = None,
) -> Tuple[Path, Path]:
    """Write ``inference.md`` (summary, ratios to each teacher, stage profile) and ``inference.csv``."""
    if not figures:
        raise ValueError("no figures to write.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / "inference.md", out_dir / "inference.csv"
    stage_names = list(dict.fromkeys(name for f in figures for name in f.stages))
    with open(csv_path, "w", newline="") as handle:
        fieldnames = [k for k in asdict(figures[0]) if k != "stages"] + [f"stage {n} (s)" for n in stage_names]
        fieldnames += ["torch", "load_average_start"]
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        for f in figures:
            row = {k: v for k, v in asdict(f).items() if k != "stages"}
            row["volume_shape"] = "x".join(str(s) for s in f.volume_shape)
            row.update({f"stage {n} (s)": f.stages.get(n, "") for n in stage_names})
            row["torch"] = torch.__version__
            row["load_average_start"] = " ".join(f"{v:.2f}" for v in load_average) if load_average else ""
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"
    lines = [
        "# Inference of one volume through the bundles, file to mask",
        "",
        f"Machine: {machine}; torch {torch.__version__}; {figures[0].threads} thread(s)."
        + (f" Load average at start: {' / '.join(f'{v:.2f}' for v in load_average)} (1 / 5 / 15 min; shared machine)."
           if load_average else ""),
        "",
        "Each network runs its bundle's `configs/inference.yaml` (*PyTorch*), or `configs/inference_onnx.yaml` merged",
        "over it (*ONNX Runtime*: `models/model.onnx` exported by `monai.bundle.onnx_export`, run by",
        "`custom_nets.OnnxRuntimeNetwork`), in-process through `monai.bundle.ConfigWorkflow` (as `python -m monai.bundle",
        "run` does after start-up). *File to mask*: the evaluator's iteration, from before the file is read to after",
        "the mask is written (read once, checked in memory, orient, resize, normalise; SliceInferer over every slice;",
        "softmax, Invertd, argmax, largest component, SaveImaged, quality report). *Bundle run*: also parsing the",
        "config, building the network (or the onnxruntime session), loading `model.pt`. Interpreter start-up and imports",
        "are excluded. *First run*: the untimed warm-up run. Ratio columns: teacher time / this network's time.",
        "",
    ]
    lines += _summary_lines(figures)
    if stage_names:
        lines += [
            "",
            "## Where the time goes (one run replayed stage by stage from the same config objects)",
            "",
            "| stage | " + " | ".join(f"{f.label} (s)" for f in figures) + " |",
            "|---|" + "---|" * len(figures),
        ]
        for name in stage_names:
            lines.append(f"| {name} | " + " | ".join(f"{f.stages.get(name, float('nan')):.3f}" for f in figures) + " |")
        lines.append("| **sum** | " + " | ".join(f"**{sum(f.stages.values()):.3f}**" for f in figures) + " |")
    if command:
        lines += ["", f"Produced by `{command}`."]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def update_models_md(md_path: str | os.PathLike, figures: Sequence[InferenceFigures], details: str = "inference.md") -> Path:
    """Replace (or append) the :data:`MODELS_SECTION` section at the end of ``models.md`` with the summary of
    ``figures`` and a link to ``details``; the rest of the file, the models table, is kept as it is."""
    md_path = Path(md_path)
    text = md_path.read_text() if md_path.is_file() else ""
    if MODELS_SECTION in text:
        text = text[: text.index(MODELS_SECTION)]
    text = text.rstrip("\n") + "\n\n" if text.strip() else ""
    lines = [MODELS_SECTION, ""] + _summary_lines(figures) + ["", f"Stage profile and method: [{details}]({details})."]
    md_path.write_text(text + "\n".join(lines) + "\n")
    return md_path
