"""Per-slice latency of the students through the path the bundles ship, against PyTorch eager and EMKD's code.

``python -m tools.bench models`` adds this section to ``results/models.md`` (and writes ``results/speed.csv``).

For each student, one ``size x size`` slice, batch 1, is timed through every *variant*, all interleaved in one
run (per round, each variant once, so that a change of load on the shared machine reaches all alike):

* ``EMKD eager``: the same network in the public EMKD code (EagleMIT/EMKD, ``networks/<Net>.py``, loaded from a
  checkout given by ``emkd_dir``), eval mode under ``torch.inference_mode``;
* ``PyTorch eager``: ``custom_nets.<Net>``, likewise;
* ``ORT ...``: the bundle's ONNX model, exported by MONAI's bundle command (``monai.bundle.onnx_export`` of
  ``network_def`` from the bundle's ``inference.yaml``), run by :class:`custom_nets.OnnxRuntimeNetwork` (what
  ``inference_onnx.yaml`` runs) with: onnxruntime's graph optimisations off (``disabled``), at ``basic`` (constant
  folding, Conv + BatchNorm + activation fusion), at ``all`` (plus layout optimisation), and at ``all`` with the
  rewrites of :mod:`custom_nets.onnx_graph` (``PRelu`` as faster equivalent operators, index-only pools folded;
  ``rewrite``, the bundle's default);
* ``ORT int8``: the same model quantised (:func:`custom_nets.quantization.quantize_onnx`, calibrated on slices of
  a simulated volume through the bundle's preprocessing), with the rewrites.

Every variant runs at each thread count of ``threads`` (torch's threads for eager, onnxruntime's intra-op threads,
not spinning, for ORT). Ratios compare medians of the same run at the same thread count.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = [
    "EMKD_NETWORKS",
    "SPEED_SECTION",
    "SpeedFigures",
    "load_emkd_network",
    "export_bundle_onnx",
    "measure_student_speed",
    "write_speed_section",
]

SPEED_SECTION = "## Students per slice: the shipped ONNX path against PyTorch eager and EMKD's code"
TARGET_SPEEDUP = 2.0  # the goal: every student at least 2x faster per slice than EMKD's code
# our name -> (EMKD file under networks/, class, constructor keyword for the number of classes)
EMKD_NETWORKS = {
    "ESPNet": ("ESPNet.py", "ESPNet", "classes"),
    "ENet": ("ENet.py", "ENet", "nclass"),
    "ERFNet": ("ERFNet.py", "ERFNet", "num_classes"),
}
ORT_VARIANTS = {  # variant -> OnnxRuntimeNetwork options (int8: also the quantised file)
    "ORT disabled": {"graph_optimization": "disabled", "rewrite": False},
    "ORT basic": {"graph_optimization": "basic", "rewrite": False},
    "ORT all": {"graph_optimization": "all", "rewrite": False},
    "ORT all + graph rewrite": {"graph_optimization": "all", "rewrite": True},
    "ORT int8": {"graph_optimization": "all", "rewrite": True},
}
SHIPPED = "ORT all + graph rewrite"


@dataclass
class SpeedFigures:
    network: str
    variant: str
    threads: int
    latency_ms: float
    iqr_ms: float
    size: int
    repeats: int


def load_emkd_network(name: str, emkd_dir: str | os.PathLike, classes: int = 2) -> torch.nn.Module:
    """EMKD's ``name`` network (eval mode) from ``<emkd_dir>/networks/<file>``, imported by path (torch only).

    Raises:
        FileNotFoundError: the checkout has no such file (``git clone https://github.com/EagleMIT/EMKD``).
    """
    if name not in EMKD_NETWORKS:
        raise ValueError(f"no EMKD counterpart for {name!r}; expected one of {sorted(EMKD_NETWORKS)}.")
    file, class_name, keyword = EMKD_NETWORKS[name]
    path = Path(emkd_dir) / "networks" / file
    if not path.is_file():
        raise FileNotFoundError(f"EMKD network not found: {path} (emkd_dir must be a checkout of EagleMIT/EMKD).")
    spec = importlib.util.spec_from_file_location(f"emkd_{name.lower()}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name)(**{keyword: classes}).eval()


def export_bundle_onnx(network: str, size: int, work_dir: str | os.PathLike, seed: int = 0) -> Tuple[Path, Path]:
    """``(model.pt, model.onnx)`` of the bundle of ``network`` (random weights, ``seed``) under ``work_dir``, exported
    as the bundle README says: ``monai.bundle.onnx_export`` of ``network_def`` at input shape ``(1, 1, size, size)``."""
    from monai.bundle import onnx_export

    from .inference import _config_files, bundle_for_network, write_random_weights

    bundle = bundle_for_network(network)
    root = Path(work_dir) / bundle
    weights = write_random_weights(bundle, root, seed=seed)
    config, meta = _config_files(bundle)
    target = root / "models" / "model.onnx"
    onnx_export(net_id="network_def", filepath=str(target), ckpt_file=str(weights), config_file=str(config),
                meta_file=str(meta), bundle_root=str(root), input_shape=[1, 1, size, size])
    if not target.is_file():
        raise RuntimeError(f"monai.bundle.onnx_export wrote no {target}.")
    return weights, target


def _calibration_slices(size: int, work_dir: Path, count: int = 8) -> List:
    """``count`` slices of a simulated volume through the ENet bundle's inference preprocessing at ``size``."""
    from monai.bundle import ConfigParser

    from .inference import _config_files, synthetic_volume

    volume = synthetic_volume(work_dir / "calibration.nii.gz", size=size, slices=count)
    parser = ConfigParser()
    parser.read_config(str(_config_files("prostate_mri_enet_student")[0]))
    parser["image_size"] = size
    image = parser.get_parsed_content("preprocessing")({"image": str(volume)})["image"]
    return [image[..., k].as_tensor().numpy()[None] for k in range(image.shape[-1])]


def _eager(network: torch.nn.Module, x: torch.Tensor, threads: int) -> Callable[[], None]:
    def run() -> None:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            network(x)

    return run


def measure_student_speed(
    students: Sequence[str] = ("ESPNet", "ENet", "ERFNet"),
    size: int = 384,
    threads: Sequence[int] = (1, 2),
    repeats: int = 10,
    warmup: int = 2,
    emkd_dir: Optional[str | os.PathLike] = None,
    int8: bool = True,
    work_dir: Optional[str | os.PathLike] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> List[SpeedFigures]:
    """Median per-slice latency of every variant (module docstring) of each student; EMKD only with ``emkd_dir``."""
    from custom_nets import NETWORKS, OnnxRuntimeNetwork
    from custom_nets.quantization import quantize_onnx

    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    say = progress or (lambda message: None)
    saved_threads = torch.get_num_threads()
    temporary = tempfile.TemporaryDirectory(prefix="bench_speed_") if work_dir is None else None
    work = Path(temporary.name if temporary is not None else work_dir)
    figures: List[SpeedFigures] = []
    try:
        calibration = _calibration_slices(size, work) if int8 else []
        x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))
        for name in students:
            say(f"{name}: exporting with monai.bundle.onnx_export at 1x1x{size}x{size}")
            weights, onnx_path = export_bundle_onnx(name, size, work)
            ours = NETWORKS[name][0](in_channels=1, out_channels=2)
            ours.load_state_dict(torch.load(weights, weights_only=True))
            ours.eval()
            runs: Dict[Tuple[str, int], Callable[[], None]] = {}
            for count in threads:
                if emkd_dir is not None:
                    runs[("EMKD eager", count)] = _eager(load_emkd_network(name, emkd_dir), x, count)
                runs[("PyTorch eager", count)] = _eager(ours, x, count)
                for variant, options in ORT_VARIANTS.items():
                    if variant == "ORT int8":
                        if not int8:
                            continue
                        int8_path = onnx_path.with_name("model_int8.onnx")
                        if not int8_path.is_file():
                            say(f"{name}: int8 quantisation, {len(calibration)} calibration slices")
                            quantize_onnx(onnx_path, int8_path, calibration)
                        session = OnnxRuntimeNetwork(int8_path, intra_op_threads=count, **options)
                    else:
                        session = OnnxRuntimeNetwork(onnx_path, intra_op_threads=count, **options)
                    runs[(variant, count)] = (lambda s: lambda: s(x))(session)
            times: Dict[Tuple[str, int], List[float]] = {key: [] for key in runs}
            for index in range(warmup + repeats):
                for key, run in runs.items():
                    start = time.perf_counter()
                    run()
                    if index >= warmup:
                        times[key].append((time.perf_counter() - start) * 1000.0)
            for (variant, count), values in times.items():
                quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
                figures.append(SpeedFigures(name, variant, count, statistics.median(values), quartiles[2] - quartiles[0],
                                            size, repeats))
            say(f"{name}: " + ", ".join(f"{f.variant} t{f.threads} {f.latency_ms:.1f} ms" for f in figures
                                        if f.network == name))
        return figures
    finally:
        torch.set_num_threads(saved_threads)
        if temporary is not None:
            temporary.cleanup()


def emkd_revision(emkd_dir: Optional[str | os.PathLike]) -> str:
    """``EagleMIT/EMKD@<commit>`` of a git checkout, or the folder's path when it is not one."""
    import subprocess

    if emkd_dir is None:
        return ""
    result = subprocess.run(["git", "-C", str(emkd_dir), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return f"EagleMIT/EMKD@{result.stdout.strip()}" if result.returncode == 0 else str(emkd_dir)


def _lookup(figures: Sequence[SpeedFigures]) -> Dict[Tuple[str, str, int], float]:
    return {(f.network, f.variant, f.threads): f.latency_ms for f in figures}


def speed_lines(figures: Sequence[SpeedFigures], load_average: Optional[Sequence[float]] = None, emkd: str = "",
                load_average_end: Optional[Sequence[float]] = None) -> List[str]:
    """The markdown of the section: latency per variant and thread count, ratios to EMKD and to PyTorch eager."""
    if not figures:
        return []
    latency = _lookup(figures)
    networks = list(dict.fromkeys(f.network for f in figures))
    variants = list(dict.fromkeys(f.variant for f in figures))
    threads = sorted({f.threads for f in figures})
    has_emkd = "EMKD eager" in variants
    first = figures[0]
    lines = [
        SPEED_SECTION,
        "",
        f"One {first.size}x{first.size} slice, batch 1, median of {first.repeats} timed runs per variant, all variants",
        "of a network interleaved in one run (tools/bench/speed.py). *ORT*: the bundle's `models/model.onnx` from",
        "`python -m monai.bundle onnx_export` through `custom_nets.OnnxRuntimeNetwork` (what `inference_onnx.yaml`",
        f"runs); **{SHIPPED}** is the bundle's default. *tN*: N threads (torch's for eager, onnxruntime's intra-op",
        "threads, not spinning, for ORT)."
        + (f" *EMKD eager*: `networks/<Net>.py` of {emkd}." if emkd else "")
        + (f" Load average at start: {' / '.join(f'{v:.2f}' for v in load_average)}"
           + (f", at the end: {' / '.join(f'{v:.2f}' for v in load_average_end)}" if load_average_end else "")
           + " (1 / 5 / 15 min; the machine is shared: absolute times carry that load, ratios are of the same run)."
           if load_average else ""),
        "",
        "| network | variant | " + " | ".join(f"t{t} (ms)" for t in threads)
        + "".join(f" | vs EMKD t{t}" for t in threads if has_emkd) + "".join(f" | vs eager t{t}" for t in threads) + " |",
        "|---|---|" + "---|" * (len(threads) * (2 + int(has_emkd))),
    ]
    for network in networks:
        for variant in variants:
            if (network, variant, threads[0]) not in latency:
                continue
            cells = [f"{latency[(network, variant, t)]:.1f}" for t in threads]
            if has_emkd:
                cells += [f"{latency[(network, 'EMKD eager', t)] / latency[(network, variant, t)]:.2f}x" for t in threads]
            cells += [f"{latency[(network, 'PyTorch eager', t)] / latency[(network, variant, t)]:.2f}x" for t in threads]
            name = f"**{variant}**" if variant == SHIPPED else variant
            lines.append(f"| {network} | {name} | " + " | ".join(cells) + " |")
    if has_emkd:
        lines.append("")
        for network in networks:
            best = {t: latency[(network, "EMKD eager", t)] / latency[(network, SHIPPED, t)] for t in threads}
            verdicts = ", ".join(f"{best[t]:.2f}x at t{t}" for t in threads)
            met = all(v >= TARGET_SPEEDUP for v in best.values())
            lines.append(f"- {network}: the shipped path against EMKD's code (EMKD time / ours): {verdicts}; target "
                         f">= {TARGET_SPEEDUP:g}x at every thread count: **{'met' if met else 'missed'}**.")
    return lines


def write_speed_section(
    figures: Sequence[SpeedFigures],
    models_md: str | os.PathLike,
    csv_path: str | os.PathLike,
    load_average: Optional[Sequence[float]] = None,
    emkd: str = "",
    load_average_end: Optional[Sequence[float]] = None,
) -> Path:
    """Put the section into ``models_md`` (in place of an older one, or before the inference section of
    :func:`tools.bench.inference.update_models_md`, or at the end) and write ``csv_path``."""
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(figures[0])) + ["torch", "load_average_start"])
        writer.writeheader()
        for f in figures:
            row = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(f).items()}
            row.update(torch=torch.__version__,
                       load_average_start=" ".join(f"{v:.2f}" for v in load_average) if load_average else "")
            writer.writerow(row)
    from .inference import MODELS_SECTION

    path = Path(models_md)
    text = path.read_text() if path.is_file() else ""
    tail = ""
    if SPEED_SECTION in text:
        head, rest = text.split(SPEED_SECTION, 1)
        following = rest.find("\n## ")
        tail = rest[following + 1:] if following >= 0 else ""
        text = head
    elif MODELS_SECTION in text:  # before the inference section, which `tools.bench inference` rewrites to the end
        text, tail = text[: text.index(MODELS_SECTION)], text[text.index(MODELS_SECTION):]
    text = text.rstrip("\n") + "\n\n" if text.strip() else ""
    lines = speed_lines(figures, load_average, emkd, load_average_end)
    path.write_text(text + "\n".join(lines) + "\n" + ("\n" + tail if tail else ""))
    return path
