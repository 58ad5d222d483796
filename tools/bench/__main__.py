"""Benchmarks that print figures and write tables under ``results/``.

* ``python -m tools.bench models [--size 384] [--width 1.0] [--repeats 10] [--threads N] [--out-dir results]
  [--inference/--noinference] [--inference-repeats 5]``: Table 1 (parameters, GMACs, latency per slice), then,
  unless ``--noinference``, the ``inference`` benchmark below (its summary is appended to ``models.md``).
* ``python -m tools.bench inference [--networks ENet,DeepLabV3Plus] [--size 384] [--slices 30] [--repeats 5]
  [--threads N] [--teacher-width W] [--out-dir results] [--nomodels-section]``: one simulated volume through
  each network's bundle inference.yaml, file to mask; writes ``inference.md``/``.csv`` and the summary section
  of ``models.md``.
* ``python -m tools.bench distill [--profile paper,cpu] [--objectives default,paper_literal,emkd] [--size S]
  [--batch B] [--student ENet] [--teacher DeepLabV3Plus] [--student-width W] [--teacher-width W] [--repeats N]
  [--threads T] [--device cpu]``: the cost of a distillation step of each objective (the bundles' default,
  ``paper_literal``, Table 3's ``emkd``) against a plain student step; writes ``distill_cost.md``/``.csv``.
* ``python -m tools.bench preprocessing [--work-dir results/preprocessing] [--data synthetic] [--site BIDMC]
  [--threads 1] [--out-dir results]``: the ENet student without distillation trained through its bundle at the CPU
  profile for each ``in_plane_mode`` x ``intensity_norm``; source-site validation, unseen-site and real-case Dice;
  writes ``preprocessing.md``/``.csv`` (docs/preprocessing.md).
"""

import os
import sys

import fire

from tools.cli import one_line_errors


def _names(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    return [str(n) for n in value]


def _command() -> str:
    return "python -m tools.bench " + " ".join(sys.argv[1:])


def _print(message: str) -> None:
    print(message, flush=True)


def _run_inference(
    networks: str = "ENet,DeepLabV3Plus",
    size: int = 384,
    slices: int = 30,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    teacher_width: float | None = None,
    student_width: float | None = None,
    device: str | None = None,
    stages: bool = True,
    out_dir: str = "results",
    models_section: bool = True,
    command: str | None = None,
) -> None:
    from custom_nets import NETWORKS

    from .inference import measure_inference, update_models_md, write_inference_table

    load_average = os.getloadavg()
    names = _names(networks)
    widths = {}
    for name in names:
        width = teacher_width if NETWORKS.get(name, (None, None))[1] == "teacher" else student_width
        if width is not None:
            widths[name] = float(width)
    figures = measure_inference(
        names, size=size, slices=slices, repeats=repeats, warmup=warmup, widths=widths, threads=threads,
        device=device, stages=stages, progress=_print,
    )
    md_path, csv_path = write_inference_table(figures, out_dir, command=command or _command(), load_average=load_average)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    if models_section:
        models_md = update_models_md(os.path.join(out_dir, "models.md"), figures)
        print(f"wrote the inference section of {models_md}")


def inference(
    networks: str = "ENet,DeepLabV3Plus",
    size: int = 384,
    slices: int = 30,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    teacher_width: float | None = None,
    student_width: float | None = None,
    device: str | None = None,
    stages: bool = True,
    out_dir: str = "results",
    models_section: bool = True,
) -> None:
    """A ``size x size x slices`` volume through each network's bundle, file to mask (see tools/bench/inference.py).

    Writes ``inference.md``/``.csv`` in ``out_dir`` and, with ``models_section``, the summary section of
    ``out_dir/models.md``."""
    _run_inference(
        networks, size, slices, repeats, warmup, threads, teacher_width, student_width, device, stages, out_dir,
        models_section,
    )


def models(size: int = 384, width: float = 1.0, repeats: int = 10, threads: int | None = None, out_dir: str = "results",
           networks: str | None = None, inference: bool = True, inference_repeats: int = 5) -> None:
    """Parameters, GMACs and CPU latency per slice of the five networks; writes ``models.md`` and ``models.csv``.

    With ``inference`` (default), then runs :func:`inference` for ENet and DeepLabV3+ at ``size`` (``--noinference``
    to skip it).
    """
    from .models import benchmark_models, write_models_table

    names = _names(networks) or None
    figures = benchmark_models(names, size=size, width=width, repeats=repeats, threads=threads)
    md_path, csv_path = write_models_table(figures, out_dir, command=_command())
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    if inference:
        _run_inference(size=size, repeats=inference_repeats, threads=threads, out_dir=out_dir, command=_command())


def distill(
    profile: str = "paper,cpu",
    objectives: str = "default,paper_literal,emkd",
    size: int | None = None,
    batch: int | None = None,
    student: str = "ENet",
    teacher: str = "DeepLabV3Plus",
    student_width: float | None = None,
    teacher_width: float | None = None,
    repeats: int | None = None,
    warmup: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    memory: bool = True,
    out_dir: str = "results",
) -> None:
    """The cost of a distillation step at each profile (``paper``: 384x384, batch 16, teacher width 1.0; ``cpu``:
    96x96, batch 16, teacher width 0.25) for each objective (``tools.bench.distill.OBJECTIVE_CONFIGS``), one after the
    other; ``--size`` etc. override every profile's value. ``repeats`` defaults to 3 at the paper's size and 10 at
    the CPU profile."""
    import torch

    from .distill import measure_distillation_cost, profile_spec, write_distill_tables

    load_average = os.getloadavg()
    if threads is not None:
        torch.set_num_threads(int(threads))
    costs = []
    for name in _names(profile):
        for objective in _names(objectives):
            spec = profile_spec(
                name, size=size, batch=batch, student=student, teacher=teacher, student_width=student_width,
                teacher_width=teacher_width, device=device, objective=objective,
            )
            n = repeats if repeats is not None else (3 if name == "paper" else 10)
            tag = f"[{name}, {objective}]"
            _print(f"{tag} {spec.batch}x1x{spec.size}x{spec.size}, {spec.student} ({spec.student_width:g}) <- "
                   f"{spec.teacher} ({spec.teacher_width:g}), {n} repeats + {warmup} warm-up, "
                   f"{torch.get_num_threads()} thread(s)")
            cost = measure_distillation_cost(
                spec, profile=name, repeats=n, warmup=warmup, memory=memory, threads=threads,
                progress=lambda message, tag=tag: _print(f"{tag} {message}"),
            )
            _print(f"{tag} ratio {cost.ratio:.2f}x, its losses {100 * cost.loss_share:.1f}% of the step")
            costs.append(cost)
    md_path, csv_path = write_distill_tables(
        costs, out_dir, command=_command(), load_average=load_average, load_average_end=os.getloadavg()
    )
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")


def preprocessing(
    work_dir: str = "results/preprocessing",
    data: str = "synthetic",
    site: str = "BIDMC",
    seed: int = 0,
    bundle: str = "prostate_mri_enet_student",
    threads: int | None = 1,
    out_dir: str = "results",
    pairs: str | None = None,
    background_fractions: str | float | None = None,
) -> None:
    """Each preprocessing option through ``bundle`` at the CPU profile (tools/bench/preprocessing.py); resumable.

    ``data``: the six-site collection, or ``synthetic`` (the study's simulated sites, made once in ``work_dir/data``).
    ``pairs``: only these options, e.g. ``resize-zscore,spacing-percentile`` (default: all six).
    ``background_fractions``: e.g. ``0.1,0.5``, crossed with the pairs (default: the configs' value, not overridden).
    """
    from pathlib import Path

    from tools.study.dataset import prepare_data

    from .preprocessing import choose, measure, write_table

    def split(value):
        if value is None:
            return None
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        return [str(item).strip() for item in items if str(item).strip()]

    chosen_pairs = [tuple(p.split("-", 1)) for p in split(pairs)] if pairs is not None else None
    fractions = [float(f) for f in split(background_fractions)] if background_fractions is not None else None
    dataset_dir, _ = prepare_data(data, Path(work_dir))
    results = measure(Path(work_dir), dataset_dir, bundle=bundle, site=site, seed=seed, threads=threads, progress=_print,
                      pairs=chosen_pairs, background_fractions=fractions)
    md_path = write_table(results, out_dir, command=_command())
    print(md_path.read_text())
    print(f"wrote {md_path}; chosen: {choose(results)[0].name}")


if __name__ == "__main__":
    fire.Fire({name: one_line_errors(command) for name, command in
               {"models": models, "inference": inference, "distill": distill, "preprocessing": preprocessing}.items()},
              name="tools.bench")
