"""Benchmarks that print figures and write tables under ``results/``.

* ``python -m tools.bench models [--size 384] [--width 1.0] [--repeats 10] [--threads N] [--out-dir results]
  [--emkd-dir DIR] [--speed/--nospeed] [--speed-threads 1,2] [--speed-repeats 10] [--int8/--noint8]
  [--inference/--noinference] [--inference-repeats 5] [--inference-networks ...] [--inference-weights ...]``:
  Table 1 (parameters, GMACs, latency per slice); then, unless ``--nospeed``, the students per slice through the
  shipped ONNX path against PyTorch eager and, with ``--emkd-dir`` (a checkout of EagleMIT/EMKD), EMKD's code
  (tools/bench/speed.py; ``speed.csv``); then, unless ``--noinference``, the ``inference`` benchmark below. Both
  summaries are appended to ``models.md``.
* ``python -m tools.bench inference [--networks ENet:onnx,ENet,DeepLabV3Plus] [--size 384] [--slices 30]
  [--repeats 5] [--threads N] [--teacher-width W] [--weights ENet=model.pt] [--out-dir results]
  [--nomodels-section]``: one simulated volume through each network's bundle inference.yaml (``:onnx``:
  inference_onnx.yaml merged over it; ``@cpu``: profile_cpu.yaml too), file to mask, with the stage breakdown;
  writes ``inference.md``/``.csv`` and the summary section of ``models.md``.
* ``python -m tools.bench distill [--profile paper,cpu] [--objectives default,paper_literal,emkd] [--size S]
  [--batch B] [--student ENet] [--teacher DeepLabV3Plus] [--student-width W] [--teacher-width W] [--repeats N]
  [--threads T] [--device cpu] [--before/--nobefore]``: the cost of a distillation step of each objective (the
  bundles' default, ``paper_literal``, Table 3's ``emkd``) against a plain student step, and (``--before``, first
  objective) the step with the teacher as it was before ``custom_nets.freeze_teacher``; writes
  ``distill_cost.md``/``.csv``.
* ``python -m tools.bench quantization --bundle B --weights model.pt [--dataset-dir DIR] [--target-site BIDMC]
  [--profile profile_cpu] [--calibration-slices 64] [--work-dir results/quantization] [--out-dir results]``: the
  unseen-site Dice of a trained student in PyTorch, ONNX float32 and ONNX int8 (tools/bench/quantization.py); repeat
  ``--bundle``/``--weights`` as comma-separated lists for several models; writes ``quantization.md``/``.csv``.
* ``python -m tools.bench preprocessing [--work-dir results/preprocessing] [--data synthetic] [--site BIDMC]
  [--threads 1] [--out-dir results]``: the ENet student without distillation trained through its bundle at the CPU
  profile for each ``in_plane_mode`` x ``intensity_norm``; source-site validation, unseen-site and real-case Dice;
  writes ``preprocessing.md``/``.csv`` (docs/preprocessing.md).
"""

import os
import sys


from tools.cli import fire_commands, one_line_errors


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
    networks: str = "ENet:onnx,ENet,DeepLabV3Plus",
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
    weights: str | None = None,
) -> None:
    from custom_nets import NETWORKS

    from .inference import measure_inference, parse_network, update_models_md, write_inference_table

    load_average = os.getloadavg()
    specs = _names(networks)
    widths = {}
    for name in dict.fromkeys(parse_network(spec)[0] for spec in specs):
        width = teacher_width if NETWORKS.get(name, (None, None))[1] == "teacher" else student_width
        if width is not None:
            widths[name] = float(width)
    trained = dict(item.split("=", 1) for item in _names(weights))
    figures = measure_inference(
        specs, size=size, slices=slices, repeats=repeats, warmup=warmup, widths=widths, threads=threads,
        device=device, stages=stages, progress=_print, weights=trained,
    )
    md_path, csv_path = write_inference_table(figures, out_dir, command=command or _command(), load_average=load_average)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    if models_section:
        models_md = update_models_md(os.path.join(out_dir, "models.md"), figures)
        print(f"wrote the inference section of {models_md}")


def inference(
    networks: str = "ENet:onnx,ENet,DeepLabV3Plus",
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
    weights: str | None = None,
) -> None:
    """A ``size x size x slices`` volume through each network's bundle, file to mask (see tools/bench/inference.py).

    ``networks``: names, each with ``:onnx`` for the ONNX Runtime path. ``weights``: ``Name=model.pt`` items
    (comma-separated) to run trained weights instead of random ones. Writes ``inference.md``/``.csv`` in ``out_dir``
    and, with ``models_section``, the summary section of ``out_dir/models.md``."""
    _run_inference(
        networks, size, slices, repeats, warmup, threads, teacher_width, student_width, device, stages, out_dir,
        models_section, weights=weights,
    )


def models(size: int = 384, width: float = 1.0, repeats: int = 10, threads: int | None = None, out_dir: str = "results",
           networks: str | None = None, emkd_dir: str | None = None, speed: bool = True, speed_threads: str = "1,2",
           speed_repeats: int = 10, int8: bool = True, inference: bool = True, inference_repeats: int = 5,
           inference_networks: str = "ENet:onnx,ENet,ENet:onnx@cpu,DeepLabV3Plus", inference_weights: str | None = None
           ) -> None:
    """Parameters, GMACs and CPU latency per slice of the five networks; writes ``models.md`` and ``models.csv``.

    With ``speed`` (default), then times the students per slice through the shipped ONNX path, PyTorch eager and,
    with ``emkd_dir``, EMKD's code (tools/bench/speed.py). With ``inference`` (default), then runs :func:`inference`
    for ``inference_networks`` at ``size`` (``--noinference`` to skip it; ``inference_weights``: its ``weights``).
    """
    from custom_nets import NETWORKS

    from .models import benchmark_models, write_models_table

    names = _names(networks) or None
    figures = benchmark_models(names, size=size, width=width, repeats=repeats, threads=threads)
    md_path, csv_path = write_models_table(figures, out_dir, command=_command())
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    if speed:
        from .speed import emkd_revision, measure_student_speed, write_speed_section

        load_average = os.getloadavg()
        students = [n for n in (names or NETWORKS) if NETWORKS[n][1] == "student"]
        speeds = measure_student_speed(
            students, size=size, threads=[int(t) for t in _names(speed_threads)], repeats=speed_repeats,
            emkd_dir=emkd_dir, int8=int8, progress=_print,
        )
        write_speed_section(speeds, md_path, os.path.join(out_dir, "speed.csv"), load_average=load_average,
                            emkd=emkd_revision(emkd_dir), load_average_end=os.getloadavg())
        print(md_path.read_text())
    if inference:
        _run_inference(networks=inference_networks, size=size, repeats=inference_repeats, threads=threads, out_dir=out_dir,
                       command=_command(), weights=inference_weights)


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
    before: bool = True,
    out_dir: str = "results",
) -> None:
    """The cost of a distillation step at each profile (``paper``: 384x384, batch 16, teacher width 1.0; ``cpu``:
    96x96, batch 16, teacher width 0.25) for each objective (``tools.bench.distill.OBJECTIVE_CONFIGS``), one after the
    other; ``--size`` etc. override every profile's value. ``repeats`` defaults to 3 at the paper's size and 10 at
    the CPU profile. With ``before`` (default), the step with the teacher unfolded (as
    before ``custom_nets.freeze_teacher``) is timed in the same rounds, for the first objective only (the teacher's
    cost does not depend on the objective)."""
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
            first = before and objective == _names(objectives)[0]
            cost = measure_distillation_cost(
                spec, profile=name, repeats=n, warmup=warmup, memory=memory, threads=threads,
                progress=lambda message, tag=tag: _print(f"{tag} {message}"), before=first,
            )
            _print(f"{tag} ratio {cost.ratio:.2f}x" + (f" (unfolded teacher {cost.ratio_before:.2f}x)" if first else "")
                   + f", its losses {100 * cost.loss_share:.1f}% of the step")
            costs.append(cost)
    md_path, csv_path = write_distill_tables(
        costs, out_dir, command=_command(), load_average=load_average, load_average_end=os.getloadavg()
    )
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")


def quantization(
    bundle: str,
    weights: str,
    dataset_dir: str = "results/cpu_default/data",
    target_site: str = "BIDMC",
    profile: str = "profile_cpu",
    calibration_slices: int = 64,
    threads: int | None = 1,
    work_dir: str = "results/quantization",
    out_dir: str = "results",
    labels: str | None = None,
    notes: str | None = None,
) -> None:
    """Unseen-site Dice of trained students: PyTorch, ONNX float32, ONNX int8 (tools/bench/quantization.py).

    ``bundle``, ``weights`` (and ``labels``, the models' names in the table): one each, or comma-separated lists of
    equal length (one model per item). ``notes``: lines for the table's notes, separated by ``|``."""
    import torch

    from .quantization import measure_quantization, write_quantization_table

    if threads is not None:
        torch.set_num_threads(int(threads))
    bundles, files = _names(bundle), _names(weights)
    names = _names(labels) or [None] * len(files)
    if not len(bundles) == len(files) == len(names):
        raise ValueError(f"--bundle, --weights and --labels must list as many items, got {len(bundles)}, {len(files)} "
                         f"and {len(names)}.")
    results = []
    for index, (name, path, label) in enumerate(zip(bundles, files, names)):
        results.append(measure_quantization(
            name, path, dataset_dir, target_site, os.path.join(work_dir, f"{index}_{name}"), profile=profile,
            calibration_count=calibration_slices, label=label, progress=_print,
        ))
    lines = [line.strip() for line in (notes or "").split("|") if line.strip()]
    md_path = write_quantization_table(results, out_dir, command=_command(), notes=lines)
    print(md_path.read_text())


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
    fire_commands({name: one_line_errors(command) for name, command in
               {"models": models, "inference": inference, "distill": distill, "quantization": quantization,
                "preprocessing": preprocessing}.items()},
                  name="tools.bench")
