"""Table 1 of the paper for our five networks: parameters, GMACs and CPU latency per slice.

``python -m tools.bench models`` writes ``results/models.md`` and ``results/models.csv``.
"""

from __future__ import annotations

import csv
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from custom_nets import NETWORKS

from .flops import count_macs

__all__ = ["ModelFigures", "PAPER_TABLE1", "measure_latency", "measure_model", "benchmark_models", "write_models_table"]

# The paper's Table 1 (params in millions, "Flops" in G as printed; the paper does not say MACs or FLOPs).
PAPER_TABLE1 = {
    "ESPNet": (0.183, 1.27),
    "ENet": (0.353, 2.2),
    "ERFNet": (2.06, 16.56),
    "NestedUNet": (36.6, 621.38),
    "DeepLabV3Plus": (56.8, 273.94),
}


@dataclass
class ModelFigures:
    network: str
    role: str
    params_m: float
    gmacs: float
    gflops: float
    latency_ms: float
    latency_iqr_ms: float
    threads: int
    size: int
    width: float


def measure_latency(network: torch.nn.Module, example: torch.Tensor, repeats: int = 10, warmup: int = 2) -> list[float]:
    """Wall times in milliseconds of ``repeats`` eval-mode forward passes after ``warmup`` untimed ones."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    network.eval()
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            start = time.perf_counter()
            network(example)
            elapsed = (time.perf_counter() - start) * 1000.0
            if index >= warmup:
                times.append(elapsed)
    return times


def measure_model(name: str, size: int = 384, width: float = 1.0, repeats: int = 10) -> ModelFigures:
    """Parameters, MACs and median latency of one batch-1 ``size`` x ``size`` slice of network ``name``."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}.")
    network_class, role = NETWORKS[name]
    torch.manual_seed(0)
    network = network_class(in_channels=1, out_channels=2, width=width).eval()
    example = torch.randn(1, 1, size, size)
    macs = count_macs(network, example)
    times = measure_latency(network, example, repeats=repeats)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return ModelFigures(
        network=name,
        role=role,
        params_m=sum(p.numel() for p in network.parameters()) / 1e6,
        gmacs=macs / 1e9,
        gflops=2 * macs / 1e9,
        latency_ms=statistics.median(times),
        latency_iqr_ms=quartiles[2] - quartiles[0],
        threads=torch.get_num_threads(),
        size=size,
        width=width,
    )


def benchmark_models(
    networks: Sequence[str] | None = None, size: int = 384, width: float = 1.0, repeats: int = 10, threads: int | None = None
) -> list[ModelFigures]:
    if threads is not None:
        torch.set_num_threads(int(threads))
    names = list(networks) if networks else list(NETWORKS)
    figures = []
    for name in names:
        figures.append(measure_model(name, size=size, width=width, repeats=repeats))
        f = figures[-1]
        print(f"{name:14s} {f.params_m:8.3f} M params {f.gmacs:8.2f} GMACs  {f.latency_ms:9.1f} ms/slice", flush=True)
    return figures


def _speed_ratios(figures: list[ModelFigures]) -> list[str]:
    teachers = [f for f in figures if f.role == "teacher"]
    students = [f for f in figures if f.role == "student"]
    lines = []
    if teachers and students:
        lines += ["", "Speed ratio (teacher latency / student latency, same run):", ""]
        lines.append("| student | " + " | ".join(f"vs {t.network}" for t in teachers) + " |")
        lines.append("|---|" + "---|" * len(teachers))
        for s in students:
            lines.append(f"| {s.network} | " + " | ".join(f"{t.latency_ms / s.latency_ms:.1f}x" for t in teachers) + " |")
    return lines


def write_models_table(figures: list[ModelFigures], out_dir: str | Path = "results", command: str = "") -> tuple[Path, Path]:
    """Write ``models.md`` (table + ratios + the paper's Table 1 for context) and ``models.csv`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "models.csv", out_dir / "models.md"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(figures[0])))
        writer.writeheader()
        for f in figures:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(f).items()})
    first = figures[0]
    lines = [
        "# Networks: parameters, compute and CPU latency",
        "",
        f"Input 1x1x{first.size}x{first.size}, 2 classes, width {first.width}. GMACs = multiply-accumulates of conv,",
        "transposed-conv and linear layers counted by forward hooks; GFLOPs = 2 x GMACs. Latency: median (and",
        f"interquartile range) of the timed eval-mode forward passes on the CPU with {first.threads} thread(s),",
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
        "| network | role | params (M) | GMACs | GFLOPs | latency (ms/slice) | IQR (ms) | paper params (M) | paper Flops (G) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        paper = PAPER_TABLE1.get(f.network, ("-", "-"))
        lines.append(
            f"| {f.network} | {f.role} | {f.params_m:.3f} | {f.gmacs:.2f} | {f.gflops:.2f} | {f.latency_ms:.1f} | "
            f"{f.latency_iqr_ms:.1f} | {paper[0]} | {paper[1]} |"
        )
    lines += _speed_ratios(figures)
    if command:
        lines += ["", f"Produced by `{command}`."]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path
