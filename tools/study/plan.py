"""The run grid of the study: which bundle runs, with which teacher, modules and objective, on which site and seed.

A :class:`Run` is one training of one bundle followed by its evaluation on the held-out target site. The grid
(:func:`make_plan`) holds, for every target site and seed:

* each teacher, trained once (Table 2's teacher rows; reused by every student it teaches);
* each student without distillation (``w/o``: ``train.yaml`` alone);
* each student distilled from each teacher with the three modules on (``w/``: ``train.yaml`` + ``distill.yaml``);
* for ``modules="ablation"``, the first student with the first teacher under each module combination of the
  paper's Table 4 (none, LM, AAM, KMM, KMM+LM, AAM+LM, AAM+KMM, all). "none" is the ``w/o`` run and "all" the
  ``w/`` run, so the ablation adds six runs;
* for each other objective of ``objectives`` (Table 3: :data:`OBJECTIVES`), each student distilled from each teacher
  under that objective (``train.yaml`` + ``distill.yaml`` + the objective's config), beside Table 2's ``w/`` run,
  which is the ``default`` objective's. The teacher and ``w/o`` runs are shared by every objective.

A module combination is a choice of distill.yaml's terms (:attr:`Run.terms`, :data:`MODULE_TERMS`): the runner
passes ``--distill_terms`` with only those terms, at distill.yaml's weights (:func:`tools.study.runner.distill_terms`).
An objective is a config merged after distill.yaml that sets its own terms (:data:`OBJECTIVES`); its runs have all
modules on and their folder names end in ``__<objective>``.

Runs come out in dependency order: a distillation run always follows the teacher run it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from tools.data.layout import SITES, canonical_site

__all__ = [
    "TEACHERS",
    "STUDENTS",
    "DISPLAY_NAMES",
    "MODULES",
    "MODULE_TERMS",
    "ABLATION_GRID",
    "ALL_MODULES",
    "DEFAULT_OBJECTIVE",
    "OBJECTIVES",
    "OBJECTIVE_NAMES",
    "Run",
    "resolve_sites",
    "resolve_seeds",
    "resolve_networks",
    "resolve_modules",
    "resolve_objectives",
    "make_plan",
]

TEACHERS: Dict[str, str] = {
    "deeplabv3plus": "prostate_mri_deeplabv3plus_teacher",
    "unetpp": "prostate_mri_unetpp_teacher",
}
"""Short name -> teacher bundle folder, in the paper's order (Table 2: T1 DeepLabV3+, T2 UNet++)."""

STUDENTS: Dict[str, str] = {
    "enet": "prostate_mri_enet_student",
    "espnet": "prostate_mri_espnet_student",
    "erfnet": "prostate_mri_erfnet_student",
}
"""Short name -> student bundle folder, in the paper's order (Table 2)."""

DISPLAY_NAMES: Dict[str, str] = {
    "deeplabv3plus": "DeepLabV3+",
    "unetpp": "UNet++",
    "enet": "ENet",
    "espnet": "ESPNet",
    "erfnet": "ERFNet",
}

_ALIASES: Dict[str, str] = {
    "deeplabv3+": "deeplabv3plus",
    "deeplab": "deeplabv3plus",
    "unet++": "unetpp",
    "nestedunet": "unetpp",
}

MODULES: Tuple[str, ...] = ("LM", "AAM", "KMM")
"""The paper's three distillation modules."""

MODULE_TERMS: Dict[str, str] = {
    "LM": "logits",
    "AAM": "affinity",
    "KMM": "kernel",
}
"""Module -> its term in ``distill.yaml``'s ``distill_terms`` (and :data:`custom_losses.DISTILLATION_TERMS`)."""

ABLATION_GRID: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("none", ()),
    ("LM", ("LM",)),
    ("AAM", ("AAM",)),
    ("KMM", ("KMM",)),
    ("KMM+LM", ("KMM", "LM")),
    ("AAM+LM", ("AAM", "LM")),
    ("AAM+KMM", ("AAM", "KMM")),
    ("all", ("AAM", "KMM", "LM")),
)
"""The rows of the paper's Table 4: label -> modules on ("none" = no distillation at all, the ``w/o`` run)."""

ALL_MODULES: Tuple[str, ...] = ("AAM", "KMM", "LM")
"""The full objective (the ``w/`` runs), in the canonical order of module tuples."""


DEFAULT_OBJECTIVE = "default"
OBJECTIVES: Dict[str, Tuple[str, ...]] = {
    DEFAULT_OBJECTIVE: (),
    "paper_literal": ("distill_paper_literal.yaml",),
    "emkd": ("distill_emkd.yaml",),
}
"""Distillation objective -> the student bundles' configs merged after ``train.yaml`` and ``distill.yaml``: the
project's ``default`` (distill.yaml alone), ``paper_literal`` (eq. 8 exactly as written) and Table 3's baseline
``emkd`` (docs/distillation.md). The one map of objective names to configs (``tools.bench distill`` reads it too)."""

OBJECTIVE_NAMES: Dict[str, str] = {DEFAULT_OBJECTIVE: "default", "paper_literal": "paper_literal", "emkd": "EMKD"}
"""Objective -> its name in tables and labels."""


def _combo_key(modules: Iterable[str]) -> Tuple[str, ...]:
    """Modules in the canonical order AAM, KMM, LM (so that ``LM+KMM`` and ``KMM+LM`` are one combination)."""
    return tuple(m for m in ALL_MODULES if m in set(modules))


@dataclass(frozen=True)
class Run:
    """One training + evaluation of one bundle.

    Attributes:
        site: the held-out target site (canonical name, :data:`tools.data.layout.SITES`).
        seed: the training seed (``--seed``; the data split keeps ``split_seed``).
        network: short name of the network (a key of :data:`TEACHERS` or :data:`STUDENTS`).
        teacher: short name of the teacher a student is distilled from; ``None`` for teachers and ``w/o`` runs.
        modules: the distillation modules on (canonical order AAM, KMM, LM); ``()`` without distillation.
        objective: the distillation objective, a key of :data:`OBJECTIVES`; another than ``default`` only for a
            distillation run with all three modules (its config sets its own terms; the ablation is the default's).
    """

    site: str
    seed: int
    network: str
    teacher: Optional[str] = None
    modules: Tuple[str, ...] = ()
    objective: str = DEFAULT_OBJECTIVE

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; expected one of {list(OBJECTIVES)}.")
        if self.objective != DEFAULT_OBJECTIVE and (not self.teacher or tuple(self.modules) != ALL_MODULES):
            raise ValueError(
                f"objective {self.objective!r} needs a distillation run with all modules {ALL_MODULES}, got "
                f"teacher={self.teacher!r}, modules={self.modules!r} (the ablation is of the default objective)."
            )
        if self.network not in TEACHERS and self.network not in STUDENTS:
            raise ValueError(f"unknown network {self.network!r}; expected one of {sorted({**TEACHERS, **STUDENTS})}.")
        if self.is_teacher and (self.teacher or self.modules):
            raise ValueError(f"teacher run {self.network!r} cannot have a teacher or distillation modules.")
        if bool(self.teacher) != bool(self.modules):
            raise ValueError(
                f"a distillation run needs both a teacher and at least one module, got teacher={self.teacher!r}, "
                f"modules={self.modules!r} (a student without distillation has neither)."
            )
        if self.teacher is not None and self.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {self.teacher!r}; expected one of {sorted(TEACHERS)}.")
        if tuple(self.modules) != _combo_key(self.modules) or len(set(self.modules)) != len(self.modules):
            raise ValueError(f"modules must be a subset of {ALL_MODULES} in that order, got {self.modules!r}.")

    @property
    def is_teacher(self) -> bool:
        return self.network in TEACHERS

    @property
    def bundle(self) -> str:
        """The bundle folder whose configs this run uses."""
        return TEACHERS[self.network] if self.is_teacher else STUDENTS[self.network]

    @property
    def variant(self) -> str:
        """``teacher``, ``wo`` (student alone), ``w`` (all modules, any objective) or ``ablation`` (a subset)."""
        if self.is_teacher:
            return "teacher"
        if not self.modules:
            return "wo"
        return "w" if self.modules == ALL_MODULES else "ablation"

    @property
    def combo(self) -> str:
        """The Table 4 label of the modules: ``none``, ``all`` or e.g. ``KMM+LM``."""
        for label, modules in ABLATION_GRID:
            if modules == self.modules:
                return label
        raise AssertionError(self.modules)  # every subset is in the grid

    @property
    def name(self) -> str:
        """The run folder's name: ``<bundle>``, ``<bundle>__wo``, ``<bundle>__w_<teacher>`` (the default objective),
        ``<bundle>__w_<teacher>__<objective>`` (another objective, e.g. ``..._deeplabv3plus__emkd``) or
        ``<bundle>__ablation_<teacher>_<modules>`` (e.g. ``..._kmm_lm``)."""
        if self.variant in ("teacher", "wo"):
            return self.bundle if self.is_teacher else f"{self.bundle}__wo"
        if self.variant == "w":
            suffix = "" if self.objective == DEFAULT_OBJECTIVE else f"__{self.objective}"
            return f"{self.bundle}__w_{self.teacher}{suffix}"
        return f"{self.bundle}__ablation_{self.teacher}_{'_'.join(m.lower() for m in self.modules)}"

    @property
    def key(self) -> str:
        """``<SITE>/seed<K>/<name>``: unique in a study, and the run folder below ``<out>/runs``."""
        return f"{self.site}/seed{self.seed}/{self.name}"

    @property
    def depends_on(self) -> Optional[str]:
        """The key of the teacher run whose weights this run reads, or ``None``."""
        if not self.teacher:
            return None
        return Run(self.site, self.seed, self.teacher).key

    @property
    def terms(self) -> Tuple[str, ...]:
        """The ``distill_terms`` of a default-objective distillation run, e.g. ``("affinity", "logits")`` for AAM+LM;
        ``()`` otherwise (another objective's terms are those its config sets, read by
        :func:`tools.study.runner.distill_terms`)."""
        if self.objective != DEFAULT_OBJECTIVE:
            return ()
        return tuple(MODULE_TERMS[module] for module in self.modules)

    @property
    def label(self) -> str:
        """A human-readable name, e.g. ``ENet w/ DeepLabV3+ (KMM+LM)`` or ``ENet w/ DeepLabV3+ (EMKD)``."""
        name = DISPLAY_NAMES[self.network]
        if self.variant == "teacher":
            return f"{name} (teacher)"
        if self.variant == "wo":
            return f"{name} w/o"
        text = f"{name} w/ {DISPLAY_NAMES[self.teacher]}"
        if self.variant == "w":
            return text if self.objective == DEFAULT_OBJECTIVE else f"{text} ({OBJECTIVE_NAMES[self.objective]})"
        return f"{text} ({self.combo})"


# ----------------------------------------------------------------------------------------- argument parsing


def _as_list(value, what: str) -> List[str]:
    """A CLI value (``"a,b"``, ``("a", "b")``, ``3``) as a list of non-empty stripped strings."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = []
        for v in value:
            items += _as_list(v, what)
        return items
    items = [v.strip() for v in str(value).split(",")]
    if any(not v for v in items):
        raise ValueError(f"empty name in {what}: {value!r}.")
    return items


def _dedup(items: Iterable) -> list:
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def resolve_sites(sites: Union[str, Sequence[str], None] = "BIDMC") -> List[str]:
    """Canonical target sites from names in either naming (``BIDMC``, ``ISBI``, ``S5``) or ``"all"``."""
    names = _as_list(sites, "sites")
    if not names:
        raise ValueError("no target site given (use e.g. --sites BIDMC or --sites all).")
    if any(n.lower() == "all" for n in names):
        return list(SITES)
    return _dedup(canonical_site(n) for n in names)


def resolve_seeds(seeds: Union[int, str, Sequence, None] = 0) -> List[int]:
    """Seeds from ``0``, ``"0,1,2"`` or ``(0, 1, 2)``."""
    names = _as_list(seeds, "seeds")
    if not names:
        raise ValueError("no seed given (use e.g. --seeds 0 or --seeds 0,1,2).")
    try:
        return _dedup(int(n) for n in names)
    except ValueError:
        raise ValueError(f"seeds must be integers, got {seeds!r}.") from None


def resolve_networks(names: Union[str, Sequence[str], None], role: str) -> List[str]:
    """Short network names (:data:`TEACHERS` or :data:`STUDENTS` keys) from short, display or bundle names, or ``all``."""
    table = TEACHERS if role == "teacher" else STUDENTS
    items = _as_list(names, f"{role}s")
    if not items:
        raise ValueError(f"no {role} given; expected some of {list(table)} or 'all'.")
    if any(n.lower() == "all" for n in items):
        return list(table)
    out = []
    for item in items:
        key = item.lower()
        key = _ALIASES.get(key, key)
        for short, bundle in table.items():
            if key in (short, bundle):
                out.append(short)
                break
        else:
            raise ValueError(f"unknown {role} {item!r}; expected one of {list(table)} (or the bundle folder names).")
    return _dedup(out)


def resolve_modules(modules: Union[str, Sequence[str], None] = "full") -> List[Tuple[str, ...]]:
    """The module combinations of the ablation runs, besides Table 2's ``w/o`` and ``w/`` runs.

    ``"full"``: none (Table 2 only). ``"ablation"``: every combination of Table 4. Otherwise a list of Table 4
    labels or ``+``-joined modules (``"LM,KMM+LM"``), in any letter case and order.
    """
    items = _as_list(modules, "modules")
    if not items or [i.lower() for i in items] == ["full"]:
        return []
    if [i.lower() for i in items] == ["ablation"]:
        return [m for _, m in ABLATION_GRID]
    combos = []
    for item in items:
        if item.lower() in ("none", "all", "full"):
            combos.append(() if item.lower() == "none" else ALL_MODULES)
            continue
        parts = [p.strip().upper() for p in item.split("+")]
        unknown = [p for p in parts if p not in MODULES]
        if unknown:
            raise ValueError(
                f"unknown module {unknown[0]!r} in --modules {modules!r}; expected 'full', 'ablation' or "
                f"combinations of {MODULES} joined by '+' (e.g. KMM+LM)."
            )
        combos.append(_combo_key(parts))
    return _dedup(combos)


def resolve_objectives(objectives: Union[str, Sequence[str], None] = DEFAULT_OBJECTIVE) -> List[str]:
    """The distillation objectives of the ``w/`` runs (:data:`OBJECTIVES`), ``default`` first and always in (Table 2's
    ``w/`` runs are the default's), from ``"default,paper_literal,emkd"`` (any letter case) or ``"all"``.

    Raises:
        ValueError: an unknown objective, naming the known ones.
    """
    items = [i.lower() for i in _as_list(objectives, "objectives")]
    if "all" in items:
        return list(OBJECTIVES)
    unknown = [i for i in items if i not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective {unknown[0]!r} in --objectives; expected some of {list(OBJECTIVES)} "
                         "or 'all'.")
    return _dedup([DEFAULT_OBJECTIVE] + items)


# ----------------------------------------------------------------------------------------------- the plan


def make_plan(
    sites: Sequence[str] = ("BIDMC",),
    seeds: Sequence[int] = (0,),
    teachers: Sequence[str] = ("deeplabv3plus",),
    students: Sequence[str] = ("enet",),
    ablation: Sequence[Tuple[str, ...]] = (),
    objectives: Sequence[str] = (DEFAULT_OBJECTIVE,),
    ablation_sites: Optional[Sequence[str]] = None,
    student_sites: Optional[Sequence[str]] = None,
) -> List[Run]:
    """Every run of the study in dependency order (teachers of a site and seed before their students).

    Args:
        sites: canonical target sites.
        seeds: training seeds.
        teachers: short teacher names; every student is distilled from each.
        students: short student names.
        ablation: extra module combinations (:func:`resolve_modules`) for the first student with the first teacher.
        objectives: the objectives of the first student's ``w/`` runs from the first teacher
            (:func:`resolve_objectives`; Table 3 compares them for one pair, as Table 4 does the modules, and as the
            paper's Table 3 does for ENet); each one besides ``default`` adds one run, right after the default ``w/``
            run. The other pairs get the default only.
        ablation_sites: the target sites of the ablation runs (canonical names, among ``sites``); ``None``: all.
        student_sites: the target sites of the students after the first (their ``w/o`` and ``w/`` runs; canonical
            names, among ``sites``); ``None``: all. The first student runs on every site.

    Runs that two roles would share (the ablation's "none" = ``w/o``, "all" = ``w/``) appear once.
    """
    if not teachers and any(m for m in ablation):
        raise ValueError("the ablation needs a teacher.")
    ablation_sites = list(sites) if ablation_sites is None else list(ablation_sites)
    outside = [site for site in ablation_sites if site not in sites]
    if outside:
        raise ValueError(f"ablation site {outside[0]!r} is not a target site of the study ({list(sites)}).")
    student_sites = list(sites) if student_sites is None else list(student_sites)
    outside = [site for site in student_sites if site not in sites]
    if outside:
        raise ValueError(f"student site {outside[0]!r} is not a target site of the study ({list(sites)}).")
    plan: List[Run] = []
    for site in sites:
        for seed in seeds:
            site_runs = [Run(site, int(seed), t) for t in teachers]
            for student in students:
                if student != students[0] and site not in student_sites:
                    continue
                site_runs.append(Run(site, int(seed), student))
                for t in teachers:
                    site_runs.append(Run(site, int(seed), student, t, ALL_MODULES))
                    if t == teachers[0] and student == students[0]:
                        site_runs += [Run(site, int(seed), student, t, ALL_MODULES, objective)
                                      for objective in objectives if objective != DEFAULT_OBJECTIVE]
            if students and site in ablation_sites:
                for modules in ablation:
                    teacher = teachers[0] if modules else None
                    site_runs.append(Run(site, int(seed), students[0], teacher, tuple(modules)))
            plan += site_runs
    return _dedup(plan)
