"""The cost of distillation: one training step of each objective against a plain student step.

``python -m tools.bench distill`` writes ``results/distill_cost.md`` and ``results/distill_cost.csv``. An objective
(:data:`OBJECTIVE_CONFIGS`: the bundles' default, ``paper_literal``, Table 3's ``emkd``) is the student bundles'
distill.yaml with its override merged after it; its terms and options are read from those configs.

Three steps are timed, interleaved, on one student initialisation and one batch (``image`` ``(B, 1, S, S)``
z-scored noise, ``label`` a centred disk), after ``warmup`` untimed rounds:

* **plain**: what ``SupervisedTrainer`` does with train.yaml: ``zero_grad`` -> ``student(image)`` ->
  ``DiceFocalLoss(softmax=True, to_onehot_y=True)`` -> ``backward`` -> ``Adam.step``;
* **distill**: one iteration of the bundle's own :class:`tools.engines.DistillationTrainer` on a
  :class:`~tools.engines.DistillationModel` (student + :class:`~custom_losses.DistillationLoss` with
  the objective's terms; Seg is the trainer's ``DiceFocalLoss``, train.yaml's ``loss``; no decollation, like the
  plain step) with the teacher as ``tools.bundles.load_teacher`` gives it (:func:`custom_nets.freeze_teacher`:
  eval mode, BatchNorm folded, channels-last, no autograd graph): the teacher's ``forward_features``, the student's
  ``forward_features``, the objective's terms, ``backward`` of the total, ``Adam.step`` over student and the loss's
  parameters (KM adapter and AA weights; EMKD's terms have none);
* **distill, unfolded teacher** (with ``before``): the same step with the teacher as it was before
  ``freeze_teacher``: the same weights in eval mode under ``no_grad``, BatchNorm unfolded, contiguous layout;
* **instrumented**: the same distillation step cut at the student's outputs so that each part is timed with
  ``perf_counter``: teacher forward; student forward; the forward of each loss module (forward hooks on the
  trainer's ``loss_function`` (Seg) and each term's module of the loss, :data:`TERM_MODULES`; "loss glue" is the
  rest of ``forward_terms``: checks and the weighted sum); the backward of each weighted term, run separately from
  *detached copies* of the student's logits and features (the terms' graphs are disjoint beyond those
  leaves, so the separate passes do the work of the joint one); the student's backward from the gradients
  gathered on the leaves; the optimizer step. The parts partition the step, so the shares sum to 1.

The ratio is ``median(distill) / median(plain)``; the instrumented step's total is reported beside the real
one as a check that the cut costs nothing. Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during
one step minus the memory allocated before it; on the CPU, the growth of the resident set during one step
(``VmHWM`` after the step, reset through ``/proc/self/clear_refs`` before it, minus ``VmRSS`` before it) in a
new Python process per step kind, so that memory freed by earlier steps and kept by the allocator cannot hide it.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from monai.losses import DiceFocalLoss
from torch import nn

from monai.bundle import ConfigParser

from custom_losses import DISTILLATION_TERMS, DistillationLoss
from custom_nets import NETWORKS, feature_channels, freeze_teacher
from tools.bundles import BUNDLES_DIR
from tools.engines import DistillationModel, DistillationTrainer
from tools.study.plan import OBJECTIVES

__all__ = [
    "PROFILES",
    "OBJECTIVE_CONFIGS",
    "PART_NAMES",
    "LOSS_PARTS",
    "TERMS",
    "objective_options",
    "StepSpec",
    "StepSetup",
    "DistillCost",
    "build_setup",
    "plain_step",
    "distill_step",
    "distill_step_before",
    "instrumented_distill_step",
    "measure_step_times",
    "peak_step_memory_mb",
    "measure_distillation_cost",
    "profile_spec",
    "write_distill_tables",
]

# the two sizes of the issue: the paper's (384x384, batch 16, full-width teacher) and the bundles' CPU profile
# (profile_cpu.yaml: 96x96 slices, 2 volumes x 8 slices, teacher at width 0.25)
PROFILES: Dict[str, Dict[str, float]] = {
    "paper": {"size": 384, "batch": 16, "student_width": 1.0, "teacher_width": 1.0},
    "cpu": {"size": 96, "batch": 16, "student_width": 1.0, "teacher_width": 0.25},
}

OBJECTIVE_CONFIGS: Dict[str, Tuple[str, ...]] = OBJECTIVES
"""Objective -> the configs merged after the student bundles' train.yaml and distill.yaml (the study's
:data:`tools.study.plan.OBJECTIVES`, the one map of objective names to configs)."""
OBJECTIVE_KEYS = (
    "kernel_pairs", "kernel_reduction", "affinity_balance", "affinity_stride", "kd_temperature", "emkd_exponent",
    "emkd_pairs",
)
"""The top-level config keys that distill.yaml passes to :class:`~custom_losses.DistillationLoss` (besides the
terms and the channel counts)."""
_OBJECTIVE_BUNDLE = "prostate_mri_enet_student"  # the three students' distill configs come from one template

# every term that a step can compute: Seg and the distillation terms
TERMS = ("seg", *DISTILLATION_TERMS)
TERM_LABELS = {
    "seg": "Seg", "logits": "LM", "kernel": "KM", "affinity": "AA", "kd_logits": "KD", "emkd_importance": "IMD",
    "emkd_region_affinity": "RAD",
}
TERM_MODULES = {
    "logits": "logits_loss", "kernel": "kernel_losses", "affinity": "affinity_loss", "kd_logits": "kd_logits_loss",
    "emkd_importance": "importance_loss", "emkd_region_affinity": "region_affinity_loss",
}
"""Distillation term -> the attribute of :class:`~custom_losses.DistillationLoss` that computes it (``None`` or an
empty ``ModuleDict`` when the term is off)."""
# the parts of the instrumented step, in order; they partition its wall time (an undeclared term's parts are ~0)
PART_NAMES = (
    "teacher_forward",
    "student_forward",
    *(f"{term}_forward" for term in TERMS),
    "loss_glue",
    *(f"{term}_backward" for term in TERMS),
    "student_backward",
    "optimizer_step",
    "zero_grad",
)
# the distillation losses, forward and backward
LOSS_FORWARD_PARTS = tuple(f"{term}_forward" for term in DISTILLATION_TERMS)
LOSS_PARTS = LOSS_FORWARD_PARTS + tuple(f"{term}_backward" for term in DISTILLATION_TERMS)
TARGET_LOSS_SHARE = 0.10
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StepSpec:
    """What is trained: sizes, networks and widths (picklable, for the memory measurement's child process)."""

    size: int = 384
    batch: int = 16
    student: str = "ENet"
    teacher: str = "DeepLabV3Plus"
    student_width: float = 1.0
    teacher_width: float = 1.0
    learning_rate: float = 0.01
    device: str = "cpu"
    seed: int = 0
    objective: str = "default"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVE_CONFIGS:
            raise ValueError(f"unknown objective {self.objective!r}; expected one of {sorted(OBJECTIVE_CONFIGS)}.")
        for name in (self.student, self.teacher):
            if name not in NETWORKS:
                raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}.")
        if self.size < 8 or self.batch < 1:
            raise ValueError(f"size must be >= 8 and batch >= 1, got size={self.size}, batch={self.batch}.")
        if self.student_width <= 0 or self.teacher_width <= 0:
            raise ValueError(f"widths must be > 0, got {self.student_width}, {self.teacher_width}.")


@dataclass
class StepSetup:
    """Everything the three steps use. ``plain_*`` and ``model`` start from the same student weights."""

    spec: StepSpec
    device: torch.device
    image: torch.Tensor
    label: torch.Tensor
    plain_network: Optional[nn.Module]
    plain_loss: Optional[nn.Module]
    plain_optimizer: Optional[torch.optim.Optimizer]
    teacher: Optional[nn.Module]
    model: Optional[DistillationModel]
    distill_optimizer: Optional[torch.optim.Optimizer]
    trainer: Optional[DistillationTrainer]
    teacher_before: Optional[nn.Module] = None
    trainer_before: Optional[DistillationTrainer] = None


def _batch(spec: StepSpec, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(spec.seed)
    image = torch.randn(spec.batch, 1, spec.size, spec.size, generator=generator)
    coords = torch.arange(spec.size, dtype=torch.float32) - (spec.size - 1) / 2
    disk = (coords[:, None] ** 2 + coords[None, :] ** 2 <= (spec.size / 4) ** 2).float()
    label = disk.expand(spec.batch, 1, spec.size, spec.size).contiguous()
    return image.to(device), label.to(device)


def objective_options(objective: str) -> Dict[str, object]:
    """The keyword arguments of :class:`~custom_losses.DistillationLoss` for ``objective`` (``terms`` and
    :data:`OBJECTIVE_KEYS`), read from the student bundles' train.yaml, distill.yaml and the objective's override."""
    if objective not in OBJECTIVE_CONFIGS:
        raise ValueError(f"unknown objective {objective!r}; expected one of {sorted(OBJECTIVE_CONFIGS)}.")
    configs = BUNDLES_DIR / _OBJECTIVE_BUNDLE / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / name) for name in ("train.yaml", "distill.yaml", *OBJECTIVE_CONFIGS[objective])])
    return {"terms": dict(parser["distill_terms"]), **{key: parser[key] for key in OBJECTIVE_KEYS}}


def build_setup(spec: StepSpec, plain: bool = True, distill: bool = True, before: bool = False) -> StepSetup:
    """Networks, losses, optimizers (Adam at ``spec.learning_rate``, as train.yaml) and one batch for ``spec``.

    The teacher is built with random weights and frozen as ``tools.bundles.load_teacher`` freezes it
    (:func:`custom_nets.freeze_teacher`); with ``before``, an unfolded copy of it (eval mode, gradients off, as
    ``DistillationTrainer`` keeps it) drives a second :class:`DistillationTrainer` on the same student and optimizer.
    The distillation loss is the bundles' for ``spec.objective`` (:func:`objective_options`).
    """
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    student_class, _ = NETWORKS[spec.student]
    student = student_class(in_channels=1, out_channels=2, width=spec.student_width).to(device)
    image, label = _batch(spec, device)

    plain_network = copy.deepcopy(student) if plain else None
    plain_loss = DiceFocalLoss(softmax=True, to_onehot_y=True) if plain else None
    plain_optimizer = torch.optim.Adam(plain_network.parameters(), lr=spec.learning_rate) if plain else None

    teacher = model = distill_optimizer = trainer = teacher_before = trainer_before = None
    if distill:
        teacher_class, _ = NETWORKS[spec.teacher]
        teacher = teacher_class(in_channels=1, out_channels=2, width=spec.teacher_width).to(device)
        teacher_before = copy.deepcopy(teacher).eval() if before else None
        loss = DistillationLoss(
            student_channels=feature_channels(student),
            teacher_channels=feature_channels(teacher),
            **objective_options(spec.objective),
        )
        model = DistillationModel(student, loss).to(device)
        distill_optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
        teacher = freeze_teacher(teacher)  # as tools.bundles.load_teacher

        def distillation_trainer(frozen: nn.Module) -> DistillationTrainer:
            return DistillationTrainer(  # puts the teacher in eval mode, requires_grad off
                device=device,
                max_epochs=1,
                train_data_loader=[],
                network=model,
                optimizer=distill_optimizer,
                loss_function=DiceFocalLoss(softmax=True, to_onehot_y=True),
                teacher=frozen,
                decollate=False,
            )

        trainer = distillation_trainer(teacher)
        trainer_before = distillation_trainer(teacher_before) if before else None
    if plain:
        plain_network.train()
    return StepSetup(
        spec, device, image, label, plain_network, plain_loss, plain_optimizer, teacher, model, distill_optimizer,
        trainer, teacher_before, trainer_before,
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step(setup: StepSetup) -> None:
    """One step of train.yaml's training: forward, Dice + Focal, backward, Adam."""
    setup.plain_network.train()
    setup.plain_optimizer.zero_grad(set_to_none=True)
    logits = setup.plain_network(setup.image)
    setup.plain_loss(logits, setup.label).backward()
    setup.plain_optimizer.step()


def distill_step(setup: StepSetup) -> None:
    """One step of distill.yaml's training: :class:`DistillationTrainer`'s own iteration."""
    setup.trainer._iteration(setup.trainer, {"image": setup.image, "label": setup.label})


def distill_step_before(setup: StepSetup) -> None:
    """:func:`distill_step` with the unfolded teacher (``build_setup(..., before=True)``)."""
    setup.trainer_before._iteration(setup.trainer_before, {"image": setup.image, "label": setup.label})


class _ForwardTimer:
    """Wall time of the forward calls of named modules, by forward pre-hooks and hooks (synchronised on CUDA)."""

    def __init__(self, modules: Dict[str, Sequence[nn.Module]], device: torch.device) -> None:
        self.device = device
        self.seconds = {name: 0.0 for name in modules}
        self._started: Dict[int, float] = {}
        self._handles = []
        for name, group in modules.items():
            for module in group:
                self._handles.append(module.register_forward_pre_hook(self._pre_hook()))
                self._handles.append(module.register_forward_hook(self._post_hook(name)))

    def _pre_hook(self) -> Callable:
        def hook(module, args):
            _synchronize(self.device)
            self._started[id(module)] = time.perf_counter()

        return hook

    def _post_hook(self, name: str) -> Callable:
        def hook(module, args, output):
            _synchronize(self.device)
            self.seconds[name] += time.perf_counter() - self._started.pop(id(module))

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _loss_modules(seg_loss: nn.Module, loss: DistillationLoss) -> Dict[str, List[nn.Module]]:
    modules: Dict[str, List[nn.Module]] = {"seg": [seg_loss]}
    for term, attribute in TERM_MODULES.items():
        module = getattr(loss, attribute)
        if isinstance(module, nn.ModuleDict):
            modules[term] = list(module.values())
        else:
            modules[term] = [module] if module is not None else []
    return modules


def instrumented_distill_step(setup: StepSetup) -> Dict[str, float]:
    """One distillation step, cut into the :data:`PART_NAMES` parts; returns seconds per part and ``total``.

    Same computation as :func:`distill_step` (module docstring), with the backward split at the student's outputs.
    """
    device = setup.device
    model, loss, teacher = setup.model, setup.model.loss, setup.teacher
    seconds: Dict[str, float] = {}
    _synchronize(device)
    start = last = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal last
        _synchronize(device)
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - last
        last = now

    teacher.eval()
    with torch.no_grad():
        teacher_logits, teacher_features = teacher.forward_features(setup.image)
    mark("teacher_forward")
    model.train()
    setup.distill_optimizer.zero_grad(set_to_none=True)
    mark("zero_grad")
    logits, features = model.student.forward_features(setup.image)
    mark("student_forward")

    logits_leaf = logits.detach().requires_grad_()
    feature_leaves = {key: value.detach().requires_grad_() for key, value in features.items()}
    seg_loss = setup.trainer.loss_function
    timer = _ForwardTimer(_loss_modules(seg_loss, loss), device)
    try:
        terms = loss.forward_terms(logits_leaf, feature_leaves, teacher_logits, teacher_features, setup.label)
        terms["seg"] = seg_loss(logits_leaf, setup.label).mean()
    finally:
        timer.remove()
    mark("loss_glue")
    for term in TERMS:
        seconds[f"{term}_forward"] = timer.seconds[term]
    seconds["loss_glue"] -= sum(timer.seconds.values())

    weights = {"seg": 1.0, **loss.weights}
    for term in TERMS:
        if term in weights and terms[term].requires_grad:
            (weights[term] * terms[term]).backward()
        mark(f"{term}_backward")
    outputs, gradients = [], []
    for output, leaf in [(logits, logits_leaf)] + [(features[k], feature_leaves[k]) for k in features]:
        if leaf.grad is not None:
            outputs.append(output)
            gradients.append(leaf.grad)
    torch.autograd.backward(outputs, gradients)
    mark("student_backward")
    setup.distill_optimizer.step()
    mark("optimizer_step")
    seconds = {name: seconds.get(name, 0.0) for name in PART_NAMES}
    seconds["total"] = last - start
    return seconds


def _timed(step: Callable[[StepSetup], object], setup: StepSetup) -> Tuple[float, object]:
    _synchronize(setup.device)
    start = time.perf_counter()
    result = step(setup)
    _synchronize(setup.device)
    return time.perf_counter() - start, result


def measure_step_times(
    setup: StepSetup, repeats: int = 10, warmup: int = 1, progress: Optional[Callable[[str], None]] = None
) -> Dict[str, list]:
    """``{"plain": [s, ...], "distill": [s, ...], "instrumented": [{part: s, ..., "total": s}, ...]}`` and, when the
    setup has the unfolded teacher, ``"distill_before": [s, ...]``.

    Each of ``warmup + repeats`` rounds runs the steps once, in an order rotated by one every round, so
    that a change of machine load reaches all alike; the ``warmup`` rounds are not kept.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    steps = [("plain", plain_step), ("distill", distill_step), ("instrumented", instrumented_distill_step)]
    if setup.trainer_before is not None:
        steps.insert(2, ("distill_before", distill_step_before))
    times: Dict[str, list] = {name: [] for name, _ in steps}
    for index in range(warmup + repeats):
        kept = index >= warmup
        label = f"repeat {index - warmup + 1}/{repeats}" if kept else f"warm-up {index + 1}/{warmup}"
        shift = index % len(steps)
        for name, step in steps[shift:] + steps[:shift]:
            elapsed, result = _timed(step, setup)
            if kept:
                times[name].append(result if name == "instrumented" else elapsed)
            if progress is not None:
                progress(f"{label}: {name} step {elapsed:.3f} s")
    return times


# ------------------------------------------------------------------------------------------------ memory


def _resident_kib(field_name: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name} line.")


def _cpu_step_memory(spec: StepSpec, kind: str, threads: Optional[int]) -> Dict[str, float]:
    """In this process: growth of the resident set during one ``kind`` step, and the process's peak (MiB).

    Meant for a fresh process (:func:`peak_step_memory_mb` runs it in one): ``VmHWM`` is reset to the current
    resident set through ``/proc/self/clear_refs`` just before the step.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    setup = build_setup(spec, plain=kind == "plain", distill=kind == "distill")
    step = plain_step if kind == "plain" else distill_step
    before = _resident_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident set
    step(setup)
    peak = _resident_kib("VmHWM")
    return {"delta_mib": max(0, peak - before) / 1024.0, "process_peak_mib": peak / 1024.0}


_CHILD = (
    "import json, sys; from tools.bench.distill import StepSpec, _cpu_step_memory; "
    "a = json.loads(sys.argv[1]); "
    "print(json.dumps(_cpu_step_memory(StepSpec(**a['spec']), a['kind'], a['threads'])))"
)


def peak_step_memory_mb(spec: StepSpec, kind: str, threads: Optional[int] = None) -> Dict[str, float]:
    """Peak memory of one ``kind`` (``"plain"`` or ``"distill"``) step: ``{"delta_mib", "process_peak_mib"}``.

    On CUDA (in this process): ``max_memory_allocated`` during the step minus ``memory_allocated`` before it,
    and the peak itself. On the CPU: :func:`_cpu_step_memory` in a new Python process. The step is the first
    one of its networks: it includes the creation of Adam's moment buffers.
    """
    if kind not in ("plain", "distill"):
        raise ValueError(f"kind must be 'plain' or 'distill', got {kind!r}.")
    if torch.device(spec.device).type == "cuda":
        setup = build_setup(spec, plain=kind == "plain", distill=kind == "distill")
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        (plain_step if kind == "plain" else distill_step)(setup)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"delta_mib": (peak - before) / 2**20, "process_peak_mib": peak / 2**20}
    if not os.path.exists("/proc/self/clear_refs"):
        raise RuntimeError("peak CPU memory needs Linux's /proc/self/clear_refs and /proc/self/status.")
    argument = json.dumps({"spec": asdict(spec), "kind": kind, "threads": threads})
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, argument], cwd=str(_REPO_ROOT), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"the memory measurement of a {kind} step failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ figures


@dataclass
class DistillCost:
    """The figures of one profile. Times in seconds (medians over the repeats); shares in [0, 1]."""

    profile: str
    spec: StepSpec
    threads: int
    repeats: int
    warmup: int
    plain_s: float
    distill_s: float
    ratio: float
    instrumented_s: float
    part_s: Dict[str, float]
    shares: Dict[str, float]
    loss_share: float
    loss_forward_share: float
    plain_memory: Dict[str, float] = field(default_factory=dict)
    distill_memory: Dict[str, float] = field(default_factory=dict)
    memory_method: str = ""
    terms: Tuple[str, ...] = ()
    """The objective's distillation terms (declared in its ``distill_terms``)."""
    distill_before_s: Optional[float] = None  # the step with the unfolded teacher (measured with ``before``)

    @property
    def ratio_before(self) -> Optional[float]:
        return None if self.distill_before_s is None else self.distill_before_s / self.plain_s

    @property
    def teacher_before_s(self) -> Optional[float]:
        """The unfolded teacher's forward, derived: its step minus the parts of the step that are not the teacher's."""
        if self.distill_before_s is None:
            return None
        return self.distill_before_s - (self.distill_s - self.part_s["teacher_forward"])

    @property
    def target_met(self) -> bool:
        return self.loss_share < TARGET_LOSS_SHARE


def _memory_method(device: str) -> str:
    if torch.device(device).type == "cuda":
        return "CUDA: torch.cuda.max_memory_allocated during one step minus memory_allocated before it"
    return "CPU: resident-set growth during one step (VmHWM reset before it, minus VmRSS), fresh process per step kind"


def measure_distillation_cost(
    spec: StepSpec,
    profile: str = "custom",
    repeats: int = 10,
    warmup: int = 1,
    memory: bool = True,
    threads: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
    before: bool = True,
) -> DistillCost:
    """Time the steps of ``spec`` (:func:`measure_step_times`; with ``before``, also the step with the unfolded
    teacher) and, with ``memory``, their peak memory."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    setup = build_setup(spec, before=before)
    times = measure_step_times(setup, repeats=repeats, warmup=warmup, progress=progress)
    terms = tuple(setup.model.loss.weights)
    del setup
    instrumented = times["instrumented"]
    part_s = {name: statistics.median(r[name] for r in instrumented) for name in PART_NAMES}
    shares = {name: statistics.median(r[name] / r["total"] for r in instrumented) for name in PART_NAMES}
    loss_share = statistics.median(sum(r[p] for p in LOSS_PARTS) / r["total"] for r in instrumented)
    loss_forward_share = statistics.median(sum(r[p] for p in LOSS_FORWARD_PARTS) / r["total"] for r in instrumented)
    plain_s, distill_s = statistics.median(times["plain"]), statistics.median(times["distill"])
    cost = DistillCost(
        profile=profile,
        spec=spec,
        threads=torch.get_num_threads(),
        repeats=repeats,
        warmup=warmup,
        plain_s=plain_s,
        distill_s=distill_s,
        ratio=distill_s / plain_s,
        instrumented_s=statistics.median(r["total"] for r in instrumented),
        part_s=part_s,
        shares=shares,
        loss_share=loss_share,
        loss_forward_share=loss_forward_share,
        terms=terms,
        distill_before_s=statistics.median(times["distill_before"]) if "distill_before" in times else None,
    )
    if memory:
        if progress is not None:
            progress("peak memory of one plain step and one distillation step (fresh processes on the CPU)")
        cost.plain_memory = peak_step_memory_mb(spec, "plain", threads=torch.get_num_threads())
        cost.distill_memory = peak_step_memory_mb(spec, "distill", threads=torch.get_num_threads())
        cost.memory_method = _memory_method(spec.device)
    return cost


def profile_spec(profile: str, **overrides) -> StepSpec:
    """The :class:`StepSpec` of a named profile of :data:`PROFILES`, with ``overrides`` (``None`` keeps the profile's)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}.")
    values = {k: (int(v) if k in ("size", "batch") else float(v)) for k, v in PROFILES[profile].items()}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return StepSpec(**values)


# ------------------------------------------------------------------------------------------------ tables

_PART_LABELS = {
    "teacher_forward": "teacher forward (frozen: BN folded, channels-last, no_grad)",
    "student_forward": "student forward_features",
    "seg_forward": "Seg (Dice+Focal) forward",
    "logits_forward": "LM forward",
    "kernel_forward": "KM forward (adapter + Gram)",
    "affinity_forward": "AA forward",
    "loss_glue": "loss glue (checks, weighted sum)",
    "seg_backward": "Seg backward (to the student's outputs)",
    "logits_backward": "LM backward (to the student's outputs)",
    "kernel_backward": "KM backward (adapter + Gram)",
    "affinity_backward": "AA backward (to the student's outputs)",
    "kd_logits_forward": "KD (T) forward",
    "emkd_importance_forward": "IMD forward (importance maps)",
    "emkd_region_affinity_forward": "RAD forward (region affinity)",
    "kd_logits_backward": "KD (T) backward (to the student's outputs)",
    "emkd_importance_backward": "IMD backward (to the student's outputs)",
    "emkd_region_affinity_backward": "RAD backward (to the student's outputs)",
    "student_backward": "student backward (through the network)",
    "optimizer_step": "Adam step",
    "zero_grad": "zero_grad",
}
assert set(_PART_LABELS) == set(PART_NAMES)


def _losses_label(terms: Sequence[str]) -> str:
    """``"LM+KM+AA"`` for the terms ``("logits", "kernel", "affinity")``."""
    return "+".join(TERM_LABELS[term] for term in terms) or "none"


def _column(cost: DistillCost, several_objectives: bool) -> str:
    return f"{cost.profile}, {cost.spec.objective}" if several_objectives else cost.profile


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def _memory_cell(memory: Dict[str, float]) -> str:
    if not memory:
        return "-"
    return f"{memory['delta_mib']:.0f} (process {memory['process_peak_mib']:.0f})"


def write_distill_tables(
    costs: Sequence[DistillCost],
    out_dir: str | Path = "results",
    command: str = "",
    load_average: Optional[Tuple[float, float, float]] = None,
    load_average_end: Optional[Tuple[float, float, float]] = None,
) -> Tuple[Path, Path]:
    """Write ``distill_cost.md`` (summary, where the time goes, context) and ``distill_cost.csv`` (one row per profile
    and objective)."""
    if not costs:
        raise ValueError("no figures to write.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / "distill_cost.md", out_dir / "distill_cost.csv"

    rows = []
    for c in costs:
        row = {"profile": c.profile, **asdict(c.spec), "threads": c.threads, "repeats": c.repeats, "warmup": c.warmup}
        row["terms"] = " ".join(c.terms)
        row.update(
            plain_s=c.plain_s, distill_s=c.distill_s, ratio=c.ratio, instrumented_s=c.instrumented_s,
            loss_share=c.loss_share, loss_forward_share=c.loss_forward_share, target_met=c.target_met,
            distill_before_s=c.distill_before_s if c.distill_before_s is not None else "",
            ratio_before=c.ratio_before if c.ratio_before is not None else "",
            teacher_forward_before_s=c.teacher_before_s if c.teacher_before_s is not None else "",
        )
        row.update({f"{name}_s": c.part_s[name] for name in PART_NAMES})
        row.update({f"{name}_share": c.shares[name] for name in PART_NAMES})
        for kind, memory in (("plain", c.plain_memory), ("distill", c.distill_memory)):
            row[f"{kind}_peak_delta_mib"] = memory.get("delta_mib", "")
            row[f"{kind}_process_peak_mib"] = memory.get("process_peak_mib", "")
        row["torch"] = torch.__version__
        row["machine"] = _machine()
        row["load_average_start"] = " ".join(f"{v:.2f}" for v in load_average) if load_average else ""
        rows.append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    device = costs[0].spec.device
    several = len({c.spec.objective for c in costs}) > 1
    lines = [
        "# The cost of distillation: one step of each objective against a plain student step",
        "",
        f"Machine: {_machine()}; device {device}; torch {torch.__version__}; "
        f"{costs[0].threads} thread(s).",
    ]
    if load_average:
        lines[-1] += f" Load average at start: {' / '.join(f'{v:.2f}' for v in load_average)} (1 / 5 / 15 min)"
        if load_average_end:
            lines[-1] += f", at the end: {' / '.join(f'{v:.2f}' for v in load_average_end)}"
        lines[-1] += "; the machine is shared, so absolute times carry that load; the ratios are measured in one run."
    lines += [
        "",
        "Times are medians over the repeats, after warm-up rounds; the steps are interleaved in every round.",
        "*plain*: zero_grad, student forward, DiceFocalLoss, backward, Adam step (train.yaml). *distill*: the bundle's",
        "`DistillationTrainer` step for the objective (forward of the frozen teacher of `load_teacher`, student",
        "forward_features, Seg + the objective's weighted terms, backward, Adam over the student and the loss's",
        "parameters). Objectives: `default` is distill.yaml (LM + KM + AA), `paper_literal` adds",
        "distill_paper_literal.yaml, `emkd` distill_emkd.yaml (KD + IMD + RAD, Table 3's baseline). The losses' share",
        "counts their forward and their own backward (down to the student's outputs); the student's backward pass is",
        "its own row, since the gradients of all terms go through it together.",
        "",
        "| profile | objective | input | student (width) | teacher (width) | plain step (s) | distill step (s) | "
        "ratio | instrumented (s) | losses | losses' share | target < 10% | forward only | peak MiB plain | peak MiB distill |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        s = c.spec
        lines.append(
            f"| {c.profile} | {s.objective} | {s.batch}x1x{s.size}x{s.size} | {s.student} ({s.student_width:g}) | "
            f"{s.teacher} ({s.teacher_width:g}) | {c.plain_s:.3f} | {c.distill_s:.3f} | {c.ratio:.1f}x | "
            f"{c.instrumented_s:.3f} | {_losses_label(c.terms)} | {100 * c.loss_share:.1f}% | "
            f"{'met' if c.target_met else 'missed'} | {100 * c.loss_forward_share:.1f}% | "
            f"{_memory_cell(c.plain_memory)} | {_memory_cell(c.distill_memory)} |"
        )
    measured_before = [c for c in costs if c.distill_before_s is not None]
    if measured_before:
        lines += [
            "",
            "## The frozen teacher: before and after",
            "",
            "*Before*: the teacher as it was (eval mode, no_grad, BatchNorm unfolded, contiguous layout); *after*: as",
            "`tools.bundles.load_teacher` gives it now (`custom_nets.freeze_teacher`: BatchNorm folded into the",
            "convolutions, channels-last; outputs equal within float rounding, tests/test_frozen.py). Both steps run",
            "interleaved in the same rounds as the plain one. Teacher forward *after*: the instrumented step's; *before*:",
            "derived as the before step minus the after step's other parts.",
            "",
            "| profile | objective | plain step (s) | distill step before (s) | distill step after (s) | ratio before | "
            "ratio after | step speed-up | teacher forward before (s) | teacher forward after (s) | teacher speed-up |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in measured_before:
            teacher_after = c.part_s["teacher_forward"]
            lines.append(
                f"| {c.profile} | {c.spec.objective} | {c.plain_s:.3f} | {c.distill_before_s:.3f} | {c.distill_s:.3f} | "
                f"{c.ratio_before:.2f}x | {c.ratio:.2f}x | {c.distill_before_s / c.distill_s:.2f}x | "
                f"{c.teacher_before_s:.3f} | {teacher_after:.3f} | {c.teacher_before_s / teacher_after:.2f}x |"
            )
    lines += [
        "",
        f"Repeats: {', '.join(f'{_column(c, several)} {c.repeats} (+{c.warmup} warm-up)' for c in costs)}.",
        "",
        "## Where the time of a distillation step goes",
        "",
        "Median seconds of each part of the instrumented step and its median share of the step (the parts of terms",
        "that no objective here declares are left out).",
        "",
        "| part | " + " | ".join(f"{_column(c, several)} (s) | {_column(c, several)} share" for c in costs) + " |",
        "|---|" + "---|---|" * len(costs),
    ]
    declared = {term for c in costs for term in ("seg", *c.terms)}
    for name in PART_NAMES:
        term = next((t for t in TERMS if name in (f"{t}_forward", f"{t}_backward")), None)
        if term is not None and term not in declared:
            continue
        cells = " | ".join(f"{c.part_s[name]:.4f} | {100 * c.shares[name]:.1f}%" for c in costs)
        lines.append(f"| {_PART_LABELS[name]} | {cells} |")
    lines.append(
        "| **the objective's distillation losses (forward + backward)** | "
        + " | ".join(f"{sum(c.part_s[p] for p in LOSS_PARTS):.4f} | **{100 * c.loss_share:.1f}%**" for c in costs)
        + " |"
    )
    lines.append("")
    for c in costs:
        term_share = {t: c.shares[f"{t}_forward"] + c.shares[f"{t}_backward"] for t in TERMS}
        each = ", ".join(f"{TERM_LABELS[t]} {100 * term_share[t]:.1f}%" for t in c.terms)
        lines.append(
            f"- {_column(c, several)}: {_losses_label(c.terms)} take {100 * c.loss_share:.1f}% of the step (target "
            f"< 10%: {'met' if c.target_met else 'missed'}){': ' + each if each else ''} (forward + backward); "
            f"teacher forward {100 * c.shares['teacher_forward']:.1f}%, student forward + backward "
            f"{100 * (c.shares['student_forward'] + c.shares['student_backward']):.1f}%, "
            f"Seg {100 * term_share['seg']:.1f}%. Instrumented step {c.instrumented_s:.3f} s vs the bundle's "
            f"{c.distill_s:.3f} s."
        )
    if any(c.plain_memory for c in costs):
        lines += [
            "",
            f"Peak memory (MiB): {costs[0].memory_method or _memory_method(device)}; in brackets, the peak of the",
            "whole process (interpreter, libraries, weights of both networks and the step).",
        ]
    if command:
        lines += ["", f"Produced by `{command}`."]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path
