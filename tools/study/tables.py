"""The study's tables: Table 2 (per target site: teachers, students w/o and w/ each teacher), Table 3 (the
distillation objectives of a student-teacher pair side by side), Table 4 (the ablation), per-case metrics, with the
paper's reported numbers beside ours.

Numbers are read back from the run folders: ``eval/metrics.csv`` (``test_dice``: the mean over the target
site's cases of the 3D Dice per volume) and the per-case ``eval/test_{dice,hd95,asd}_raw.csv`` of MONAI's
MetricsSaver (columns ``filename, class0, mean``). A cell over several seeds is ``mean ± std`` of the runs'
Dice (std with ddof=1, i.e. the sample standard deviation); a cell with a failed run reads ``failed``.

The paper's sites S1..S6 are taken to be RUNMC, BMC, HCRUDB, UCL, BIDMC, HK in that order (the order of the
MS-Net/SAML benchmark the paper cites; the paper itself does not name the sites) - an assumption.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from tools.data.layout import SITES

from .plan import ABLATION_GRID, DEFAULT_OBJECTIVE, DISPLAY_NAMES, OBJECTIVE_NAMES, OBJECTIVES, Run
from .runner import SEEN_EVAL_DIR, Outcome, is_evaluated, is_seen_evaluated, read_raw_metric, run_dir

__all__ = [
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "PAPER_TABLE3_PAIR",
    "PAPER_TABLE3_ROWS",
    "TABLE3_NOT_RUN",
    "PAPER_TABLE4",
    "paper_site",
    "RunResult",
    "read_metrics",
    "case_name",
    "read_per_case",
    "collect",
    "Cell",
    "Row",
    "table2_rows",
    "table3_rows",
    "table4_rows",
    "markdown_table",
    "write_table",
    "table3_markdown",
    "write_table3",
    "ObjectiveRanking",
    "objective_ranking",
    "paper_table2_markdown",
    "paper_table3_markdown",
    "per_case_rows",
    "write_per_case",
    "Gain",
    "distillation_gains",
    "seen_unseen_gaps",
]

# ------------------------------------------------------------------------------------- the paper's numbers
# Dice on target sites S1..S6, as printed in the paper. Row keys: ("teacher", teacher), ("wo", student),
# ("w", student, teacher); Table 4 (ENet distilled from DeepLabV3+): ("ablation", label of ABLATION_GRID).

PAPER_TABLE2: Dict[Tuple[str, ...], Tuple[float, ...]] = {
    ("teacher", "deeplabv3plus"): (0.895, 0.886, 0.889, 0.874, 0.878, 0.885),
    ("teacher", "unetpp"): (0.901, 0.893, 0.883, 0.880, 0.869, 0.871),
    ("wo", "enet"): (0.714, 0.604, 0.539, 0.782, 0.701, 0.772),
    ("w", "enet", "deeplabv3plus"): (0.810, 0.642, 0.734, 0.881, 0.796, 0.876),
    ("w", "enet", "unetpp"): (0.808, 0.637, 0.684, 0.858, 0.894, 0.869),
    ("wo", "espnet"): (0.703, 0.482, 0.573, 0.738, 0.745, 0.715),
    ("w", "espnet", "deeplabv3plus"): (0.819, 0.563, 0.604, 0.826, 0.819, 0.832),
    ("w", "espnet", "unetpp"): (0.837, 0.594, 0.643, 0.842, 0.836, 0.808),
    ("wo", "erfnet"): (0.788, 0.720, 0.736, 0.760, 0.725, 0.694),
    ("w", "erfnet", "deeplabv3plus"): (0.823, 0.751, 0.799, 0.869, 0.801, 0.861),
    ("w", "erfnet", "unetpp"): (0.843, 0.746, 0.752, 0.892, 0.877, 0.852),
}
"""The paper's Table 2 (T1 = DeepLabV3+, T2 = UNet++)."""

PAPER_TABLE4_PAIR = ("enet", "deeplabv3plus")
PAPER_TABLE4: Dict[str, Tuple[float, ...]] = {
    "teacher": (0.895, 0.886, 0.889, 0.874, 0.878, 0.885),
    "none": (0.714, 0.604, 0.539, 0.782, 0.701, 0.772),
    "LM": (0.691, 0.571, 0.505, 0.741, 0.619, 0.721),
    "AAM": (0.700, 0.599, 0.648, 0.780, 0.691, 0.740),
    "KMM": (0.698, 0.583, 0.630, 0.767, 0.690, 0.738),
    "KMM+LM": (0.763, 0.679, 0.659, 0.807, 0.769, 0.775),
    "AAM+LM": (0.772, 0.691, 0.688, 0.810, 0.762, 0.798),
    "AAM+KMM": (0.781, 0.611, 0.709, 0.849, 0.781, 0.816),
    "all": (0.810, 0.642, 0.734, 0.881, 0.796, 0.876),
}
"""The paper's Table 4: ENet (student) distilled from DeepLabV3+ (teacher) with each module combination."""

PAPER_TABLE3: Dict[str, Tuple[float, ...]] = {
    "ENet w/ DeepLabV3+ (the paper's method)": (0.810, 0.642, 0.734, 0.881, 0.796, 0.876),
    "MSKD": (0.762, 0.643, 0.532, 0.809, 0.790, 0.658),
    "EMKD": (0.635, 0.524, 0.681, 0.696, 0.544, 0.711),
    "SAML": (0.896, 0.875, 0.843, 0.886, 0.873, 0.883),
    "DRDG": (0.709, 0.758, 0.665, 0.739, 0.857, 0.826),
}
"""The paper's Table 3 (its ENet distilled from DeepLabV3+, two distillation and two domain-generalisation methods)."""

PAPER_TABLE3_PAIR = ("enet", "deeplabv3plus")
"""The student and teacher of the paper's Table 3 (its row "Student: Enet" is Table 2's ENet w/ DeepLabV3+)."""

PAPER_TABLE3_ROWS: Dict[str, str] = {
    DEFAULT_OBJECTIVE: "ENet w/ DeepLabV3+ (the paper's method)",
    "paper_literal": "ENet w/ DeepLabV3+ (the paper's method)",
    "emkd": "EMKD",
}
"""Objective -> the row of :data:`PAPER_TABLE3` printed beside ours: the default and ``paper_literal`` are both this
project's runs of the paper's method (with and without the departures of docs/distillation.md)."""

TABLE3_NOT_RUN: Dict[str, Tuple[str, str, bool]] = {
    "MSKD": ("MSKD [26]", "not run: objective not identified (docs/distillation.md)", False),
    "SAML": ("SAML [25]", "not run: domain generalisation, not a distillation objective", True),
    "DRDG": ("DRDG [24]", "not run: domain generalisation, not a distillation objective", True),
}
"""Rows of the paper's Table 3 that the study does not run: key of :data:`PAPER_TABLE3` -> (label, note, shown only
for the paper's pair). MSKD is a distillation objective, so its row is in every Table 3."""

OBJECTIVE_NOTES: Dict[str, str] = {
    DEFAULT_OBJECTIVE: "this project's objective",
    "paper_literal": "the paper's eq. 8 as written",
    "emkd": "EMKD (Qin et al., TMI 2021)",
}
"""Objective -> what Table 3's note says of it, before its configs (:data:`tools.study.plan.OBJECTIVES`)."""
OBJECTIVE_LABELS: Dict[str, str] = {"emkd": "EMKD [27]"}
"""Objective -> its row label in Table 3 when it differs from :data:`tools.study.plan.OBJECTIVE_NAMES`."""


def paper_site(site: str) -> str:
    """``S1``..``S6``: the paper's name of a canonical site (assumed order RUNMC, BMC, HCRUDB, UCL, BIDMC, HK)."""
    return f"S{SITES.index(site) + 1}"


def _paper_value(values: Optional[Sequence[float]], site: str) -> Optional[float]:
    return None if values is None else values[SITES.index(site)]


# --------------------------------------------------------------------------------------- reading results


@dataclass
class RunResult:
    """The measured outcome of one run: ``status`` ``done``, ``failed`` or ``not run``; ``dice`` the mean Dice
    over the target site's cases; ``cases`` one dict per case (``case``, ``dice``, ``hd95``, ``asd``);
    ``seen_dice`` the mean Dice over the source sites' validation cases (``eval_seen/``), ``None`` when absent."""

    run: Run
    status: str
    dice: Optional[float] = None
    cases: List[dict] = field(default_factory=list)
    log: Optional[Path] = None
    seen_dice: Optional[float] = None


def read_metrics(path: Path) -> Dict[str, float]:
    """``{metric: value}`` of a MetricsSaver ``metrics.csv`` (rows ``name,value``, no header)."""
    values = {}
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}: expected rows 'metric,value', got {row!r}.")
            values[row[0]] = float(row[1])
    return values


def case_name(filename: str) -> str:
    """``Case07`` from ``/data/BIDMC/Case07.nii.gz`` (the file name without its volume extension)."""
    name = os.path.basename(filename)
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def read_per_case(eval_dir: Path) -> List[dict]:
    """One ``{"case", "file", "dice", "hd95", "asd"}`` per case from ``eval_dir/test_*_raw.csv``."""
    eval_dir = Path(eval_dir)
    tables = {metric: read_raw_metric(eval_dir / f"test_{metric}_raw.csv") for metric in ("dice", "hd95", "asd")}
    if not (tables["dice"].keys() == tables["hd95"].keys() == tables["asd"].keys()):
        raise ValueError(f"{eval_dir}: the per-case CSVs of dice, hd95 and asd list different cases.")
    return [
        {"case": case_name(f), "file": f, "dice": tables["dice"][f], "hd95": tables["hd95"][f], "asd": tables["asd"][f]}
        for f in tables["dice"]
    ]


def collect(plan: Sequence[Run], out_dir: Path, outcomes: Optional[Sequence[Outcome]] = None) -> Dict[str, RunResult]:
    """``{run key: RunResult}`` of every planned run, read from its folder; ``outcomes`` name the failures."""
    failed = {o.run.key: o for o in outcomes or () if o.status == "failed"}
    results = {}
    for run in plan:
        folder = run_dir(run, out_dir)
        if is_evaluated(folder):
            metrics = read_metrics(folder / "eval" / "metrics.csv")
            if "test_dice" not in metrics:
                raise ValueError(f"{folder / 'eval' / 'metrics.csv'} has no test_dice (found {sorted(metrics)}).")
            seen = None
            if is_seen_evaluated(folder):
                seen = read_metrics(folder / SEEN_EVAL_DIR / "metrics.csv").get("test_dice")
            results[run.key] = RunResult(run, "done", metrics["test_dice"], read_per_case(folder / "eval"), seen_dice=seen)
        elif run.key in failed:
            results[run.key] = RunResult(run, "failed", log=failed[run.key].log)
        else:
            results[run.key] = RunResult(run, "not run")
    return results


# ------------------------------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """The runs of one table cell (one per seed)."""

    results: List[RunResult] = field(default_factory=list)

    @property
    def values(self) -> List[float]:
        return [r.dice for r in self.results if r.status == "done"]

    @property
    def status(self) -> str:
        """``empty`` (no run planned), ``failed`` (any run failed), ``not run`` (any run missing) or ``done``."""
        if not self.results:
            return "empty"
        statuses = {r.status for r in self.results}
        return "failed" if "failed" in statuses else "not run" if "not run" in statuses else "done"

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.status == "done" else None

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation over seeds (ddof=1); ``None`` with fewer than two seeds."""
        return statistics.stdev(self.values) if self.status == "done" and len(self.values) > 1 else None

    def text(self, digits: int = 3, seeds: bool = False) -> str:
        """``mean ± std`` (``mean`` with one seed); with ``seeds``, the seed count: ``0.812 ± 0.021 (2 seeds)``."""
        if self.status == "done":
            text = f"{self.mean:.{digits}f}" + ("" if self.std is None else f" ± {self.std:.{digits}f}")
            n = len(self.values)
            return text + (f" ({n} seed{'s' if n > 1 else ''})" if seeds else "")
        return {"empty": "", "failed": "failed", "not run": "not run"}[self.status]


@dataclass
class Row:
    """One table row: its label, its cells per site and the paper's value per site (``None``: not reported);
    ``note`` says what the row is (Table 3: the objective's configs, or why it was not run)."""

    key: Tuple[str, ...]
    label: str
    cells: Dict[str, Cell]
    paper: Dict[str, Optional[float]]
    note: str = ""


def _cells(results: Mapping[str, RunResult], sites: Sequence[str], match) -> Dict[str, Cell]:
    cells = {site: Cell() for site in sites}
    for result in results.values():
        if result.run.site in cells and match(result.run):
            cells[result.run.site].results.append(result)
    for cell in cells.values():
        cell.results.sort(key=lambda r: r.run.seed)
    return cells


def _sites_of(results: Mapping[str, RunResult]) -> List[str]:
    present = {r.run.site for r in results.values()}
    return [s for s in SITES if s in present]


def table2_rows(results: Mapping[str, RunResult], teachers: Sequence[str], students: Sequence[str]) -> List[Row]:
    """Table 2: each teacher's Dice, then per student: w/o, and w/ each teacher (all modules, the default objective)."""
    sites = _sites_of(results)
    specs: List[Tuple[Tuple[str, ...], str, Callable[[Run], bool]]] = []
    for t in teachers:
        specs.append((("teacher", t), f"{DISPLAY_NAMES[t]} (teacher)", lambda r, t=t: r.variant == "teacher" and r.network == t))
    for s in students:
        specs.append((("wo", s), f"{DISPLAY_NAMES[s]} w/o", lambda r, s=s: r.variant == "wo" and r.network == s))
        for t in teachers:
            specs.append((("w", s, t), f"{DISPLAY_NAMES[s]} w/ {DISPLAY_NAMES[t]}",
                          lambda r, s=s, t=t: r.variant == "w" and r.network == s and r.teacher == t
                          and r.objective == DEFAULT_OBJECTIVE))
    return [
        Row(key, label, _cells(results, sites, match), {site: _paper_value(PAPER_TABLE2.get(key), site) for site in sites})
        for key, label, match in specs
    ]


def table3_rows(results: Mapping[str, RunResult], teacher: str, student: str) -> List[Row]:
    """Table 3: ``student`` distilled from ``teacher`` under each objective that ran (:data:`OBJECTIVES` order), after
    the student alone (``w/o``, the reference without distillation), then MSKD (not run), and for the paper's pair
    (:data:`PAPER_TABLE3_PAIR`) SAML and DRDG (not run); the paper's Table 3 numbers beside ours."""
    sites = _sites_of(results)
    paper_pair = (student, teacher) == PAPER_TABLE3_PAIR

    def paper(values):
        return {site: _paper_value(values if paper_pair else None, site) for site in sites}

    rows = [Row(("wo", student), f"{DISPLAY_NAMES[student]} w/o",
                _cells(results, sites, lambda r: r.variant == "wo" and r.network == student),
                paper(PAPER_TABLE2.get(("wo", student))), "reference: no distillation (Table 2)")]
    for objective in OBJECTIVES:
        def match(r, objective=objective):
            return r.variant == "w" and r.network == student and r.teacher == teacher and r.objective == objective

        cells = _cells(results, sites, match)
        if all(c.status == "empty" for c in cells.values()):
            continue
        configs = " + ".join(("distill.yaml", *OBJECTIVES[objective]))
        note = f"{OBJECTIVE_NOTES[objective]}: {configs}" if objective in OBJECTIVE_NOTES else configs
        label = OBJECTIVE_LABELS.get(objective, OBJECTIVE_NAMES[objective])
        rows.append(Row(("objective", student, teacher, objective), label, cells,
                        paper(PAPER_TABLE3.get(PAPER_TABLE3_ROWS.get(objective))), note))
    for key, (label, note, paper_pair_only) in TABLE3_NOT_RUN.items():
        if paper_pair or not paper_pair_only:
            rows.append(Row(("not_run", key), label, {site: Cell() for site in sites}, paper(PAPER_TABLE3[key]), note))
    return rows


def table4_rows(results: Mapping[str, RunResult], teacher: str, student: str) -> List[Row]:
    """Table 4: the teacher, then ``student`` distilled from ``teacher`` with each module combination that ran (the
    default objective's: the ablation is of it; runs of other objectives are Table 3's)."""
    sites = _sites_of(results)
    paper = PAPER_TABLE4 if (student, teacher) == PAPER_TABLE4_PAIR else {}
    rows = [Row(("teacher", teacher), f"Teacher: {DISPLAY_NAMES[teacher]}",
                _cells(results, sites, lambda r: r.variant == "teacher" and r.network == teacher),
                {site: _paper_value(paper.get("teacher"), site) for site in sites})]
    for label, modules in ABLATION_GRID:
        def match(r, modules=modules):
            return (r.network == student and r.modules == modules and r.objective == DEFAULT_OBJECTIVE
                    and (not modules or r.teacher == teacher))

        cells = _cells(results, sites, match)
        if all(c.status == "empty" for c in cells.values()):
            continue
        name = f"Student: {DISPLAY_NAMES[student]}" if label == "none" else "+" + " + ".join(modules)
        rows.append(Row(("ablation", label), name, cells, {site: _paper_value(paper.get(label), site) for site in sites}))
    return rows


# ---------------------------------------------------------------------------------------------- writing


def markdown_table(rows: Sequence[Row], with_paper: bool = True, digits: int = 3) -> str:
    """Rows as a markdown table: one column per target site (``BIDMC (S5)``), each followed by the paper's
    number for the same cell (``paper S5``) when ``with_paper``."""
    sites = list(rows[0].cells) if rows else []
    header = ["model"]
    for site in sites:
        header.append(f"{site} ({paper_site(site)})")
        if with_paper:
            header.append(f"paper {paper_site(site)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label]
        for site in sites:
            cells.append(row.cells[site].text(digits))
            if with_paper:
                paper = row.paper.get(site)
                cells.append("" if paper is None else f"{paper:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("row", "label", "site", "paper_site", "status", "n_seeds", "mean", "std", "values", "paper")


def _write_md_and_csv(md_path: Path, title: str, notes: Sequence[str], table: str, columns: Sequence[str],
                      lines: Sequence[dict]) -> Tuple[Path, Path]:
    """``md_path`` (``# title``, the notes, ``table``) and the CSV beside it (``columns``, one dict per line)."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(f"# {title}\n\n" + "".join(f"{n}\n" for n in notes) + ("\n" if notes else "") + table)
    csv_path = md_path.with_suffix(".csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(lines)
    return md_path, csv_path


def write_table(rows: Sequence[Row], md_path: Path, title: str, notes: Sequence[str] = ()) -> Tuple[Path, Path]:
    """``md_path`` (title, notes, markdown table) and the long-format CSV beside it (one line per cell)."""
    lines = [_csv_line(row, site, cell) for row in rows for site, cell in row.cells.items() if cell.status != "empty"]
    return _write_md_and_csv(md_path, title, notes, markdown_table(rows), CSV_COLUMNS, lines)


def _csv_line(row: Row, site: str, cell: Cell) -> dict:
    return {
        "row": "/".join(row.key),
        "label": row.label,
        "site": site,
        "paper_site": paper_site(site),
        "status": cell.status,
        "n_seeds": len(cell.values),
        "mean": "" if cell.mean is None else f"{cell.mean:.6f}",
        "std": "" if cell.std is None else f"{cell.std:.6f}",
        "values": " ".join(f"{v:.6f}" for v in cell.values),
        "paper": "" if row.paper.get(site) is None else row.paper[site],
    }


def table3_markdown(rows: Sequence[Row], digits: int = 3) -> str:
    """Table 3's rows as markdown: one column per target site (mean ± std over seeds with the seed count; ``not run``
    for a row that was not run), each followed by the paper's number, then the row's note."""
    sites = list(rows[0].cells) if rows else []
    header = ["objective"]
    for site in sites:
        header += [f"{site} ({paper_site(site)})", f"paper {paper_site(site)}"]
    header.append("configs / note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label]
        for site in sites:
            cell = row.cells[site]
            cells.append("not run" if cell.status == "empty" else cell.text(digits, seeds=True))
            paper = row.paper.get(site)
            cells.append("" if paper is None else f"{paper:.3f}")
        cells.append(row.note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TABLE3_CSV_COLUMNS = ("pair", *CSV_COLUMNS, "note")


def write_table3(
    tables: Sequence[Tuple[str, str, Sequence[Row]]], md_path: Path, notes: Sequence[str] = ()
) -> Tuple[Path, Path]:
    """``md_path`` (``table3.md``: the notes, then one section per ``(student, teacher, rows)``) and the long-format
    CSV beside it (one line per cell, the rows that were not run included with the paper's number)."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Table 3: distillation objectives on the unseen target site\n\n" + "".join(f"{n}\n" for n in notes)
    for student, teacher, rows in tables:
        text += f"\n## {DISPLAY_NAMES[student]} distilled from {DISPLAY_NAMES[teacher]}\n\n" + table3_markdown(rows)
    md_path.write_text(text)
    csv_path = md_path.with_suffix(".csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE3_CSV_COLUMNS)
        writer.writeheader()
        for student, teacher, rows in tables:
            for row in rows:
                for site, cell in row.cells.items():
                    line = _csv_line(row, site, cell)
                    if cell.status == "empty":
                        line["status"] = "not run"
                    writer.writerow({"pair": f"{student}/{teacher}", **line, "note": row.note})
    return md_path, csv_path


@dataclass
class ObjectiveRanking:
    """Table 3's objectives ranked by their mean Dice over ``sites``, the target sites where every objective is done.

    Attributes:
        sites: the sites of the means, in the paper's order.
        means: objective -> mean over ``sites`` of its cells' means (over seeds), best first.
        wins: objective -> the sites where its mean is the highest.
        labels: objective -> its row label.
        wo: the student alone's mean over the same sites (``None`` unless done on all of them).
    """

    sites: List[str]
    means: Dict[str, float]
    wins: Dict[str, List[str]]
    labels: Dict[str, str]
    wo: Optional[float] = None


def objective_ranking(rows: Sequence[Row]) -> Optional[ObjectiveRanking]:
    """The :class:`ObjectiveRanking` of :func:`table3_rows`' objectives; ``None`` with fewer than two objectives or no
    site where all of them are done."""
    objectives = {row.key[3]: row for row in rows if row.key[0] == "objective"}
    if len(objectives) < 2:
        return None
    first = next(iter(objectives.values()))
    sites = [s for s in first.cells if all(row.cells[s].status == "done" for row in objectives.values())]
    if not sites:
        return None
    means = {name: statistics.fmean(row.cells[s].mean for s in sites) for name, row in objectives.items()}
    order = sorted(means, key=means.get, reverse=True)
    best = {s: max(objectives, key=lambda o: objectives[o].cells[s].mean) for s in sites}
    wins = {name: [s for s in sites if best[s] == name] for name in order}
    wo = next((row for row in rows if row.key[0] == "wo"), None)
    wo_mean = None
    if wo is not None and all(wo.cells[s].status == "done" for s in sites):
        wo_mean = statistics.fmean(wo.cells[s].mean for s in sites)
    labels = {name: objectives[name].label for name in order}
    return ObjectiveRanking(sites, {name: means[name] for name in order}, wins, labels, wo_mean)


def _paper_markdown(rows: Mapping[str, Sequence[float]], sites: Sequence[str]) -> str:
    header = ["model"] + [f"{paper_site(s)} ({s})" for s in sites]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, values in rows.items():
        lines.append("| " + " | ".join([label] + [f"{_paper_value(values, s):.3f}" for s in sites]) + " |")
    return "\n".join(lines) + "\n"


def paper_table2_markdown(sites: Sequence[str] = SITES) -> str:
    """The paper's Table 2 (as reported, Dice) for ``sites``."""
    labels = {}
    for key, values in PAPER_TABLE2.items():
        if key[0] == "teacher":
            label = f"{DISPLAY_NAMES[key[1]]} (teacher)"
        elif key[0] == "wo":
            label = f"{DISPLAY_NAMES[key[1]]} w/o"
        else:
            label = f"{DISPLAY_NAMES[key[1]]} w/ {DISPLAY_NAMES[key[2]]}"
        labels[label] = values
    return _paper_markdown(labels, sites)


def paper_table3_markdown(sites: Sequence[str] = SITES) -> str:
    """The paper's Table 3 (other methods, as reported) for ``sites``."""
    return _paper_markdown(PAPER_TABLE3, sites)


PER_CASE_COLUMNS = ("run", "site", "seed", "network", "variant", "teacher", "modules", "objective", "case", "dice",
                    "hd95", "asd")


def per_case_rows(results: Mapping[str, RunResult]) -> List[dict]:
    """One row per (run, case) of every evaluated run: Dice, HD95 (mm), ASD (mm) on the target site. ``modules`` are
    Table 4's modules of a default-objective distillation run; ``objective`` is the distillation objective
    (:data:`OBJECTIVES`; empty for teachers and ``w/o`` runs)."""
    rows = []
    for key, result in results.items():
        run = result.run
        for case in result.cases:
            rows.append({
                "run": key, "site": run.site, "seed": run.seed, "network": run.network, "variant": run.variant,
                "teacher": run.teacher or "",
                "modules": "+".join(run.modules) if run.objective == DEFAULT_OBJECTIVE else "",
                "objective": run.objective if run.teacher else "", "case": case["case"],
                "dice": case["dice"], "hd95": case["hd95"], "asd": case["asd"],
            })
    return rows


def write_per_case(results: Mapping[str, RunResult], path: Path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PER_CASE_COLUMNS)
        writer.writeheader()
        for row in per_case_rows(results):
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()})
    return path


@dataclass
class Gain:
    """Student ``w/o`` -> ``w/`` one teacher, per target site: ``ours[site] = (w/o, w/)`` mean Dice of the sites where
    both are done, ``paper[site]`` the paper's pair for the same site (``None`` if not reported)."""

    student: str
    teacher: str
    ours: Dict[str, Tuple[float, float]]
    paper: Dict[str, Optional[Tuple[float, float]]]

    @property
    def deltas(self) -> Dict[str, float]:
        return {site: w - wo for site, (wo, w) in self.ours.items()}


def distillation_gains(rows: Sequence[Row]) -> List[Gain]:
    """One :class:`Gain` per Table 2 pair (student w/ teacher) whose ``w/o`` row exists."""
    by_key = {row.key: row for row in rows}
    gains = []
    for row in rows:
        base = by_key.get(("wo", row.key[1])) if row.key[0] == "w" else None
        if base is None:
            continue
        both = [s for s in row.cells if row.cells[s].status == "done" and base.cells[s].status == "done"]
        ours = {s: (base.cells[s].mean, row.cells[s].mean) for s in both}
        paper = {s: (base.paper[s], row.paper[s]) if None not in (base.paper.get(s), row.paper.get(s)) else None for s in both}
        gains.append(Gain(DISPLAY_NAMES[row.key[1]], DISPLAY_NAMES[row.key[2]], ours, paper))
    return gains


# ------------------------------------------------------------------------------------------ domain shift

DOMAIN_SHIFT_COLUMNS = ("row", "label", "site", "n_seeds", "seen_mean", "unseen_mean", "gap_mean", "gap_values")


def domain_shift_rows(rows2: Sequence[Row], tables3: Sequence[Tuple[str, str, Sequence[Row]]] = ()) -> List[Row]:
    """The rows of the domain-shift table: Table 2's, then each Table 3 objective that is not Table 2's ``w/`` row
    already (the default objective) and that ran (not MSKD, SAML or DRDG)."""
    extra = [row for _, _, rows3 in tables3 for row in rows3
             if row.key[0] == "objective" and row.key[-1] != DEFAULT_OBJECTIVE]
    return list(rows2) + extra


def seen_unseen_gaps(cell: Cell) -> Tuple[List[float], List[float], List[float]]:
    """``(seen, unseen, unseen - seen)`` per seed over the runs of ``cell`` that have both numbers."""
    pairs = [(r.seen_dice, r.dice) for r in cell.results if r.status == "done" and r.seen_dice is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs], [p[1] - p[0] for p in pairs]


def domain_shift_markdown(rows: Sequence[Row], digits: int = 3) -> str:
    """Per row and target site: ``seen / unseen (unseen - seen)``, means over seeds; the last column averages the
    gap over the sites. *Seen*: the source sites' validation cases of the same run; *unseen*: every case of the
    held-out site. ``n/a``: no run of the cell has both evaluations."""
    sites = list(rows[0].cells) if rows else []
    lines = ["| model | " + " | ".join(f"{s} ({paper_site(s)})" for s in sites) + " | mean gap |",
             "|" + "---|" * (len(sites) + 2)]
    for row in rows:
        cells, gaps = [row.label], []
        for site in sites:
            seen, unseen, gap = seen_unseen_gaps(row.cells[site])
            if not gap:
                cells.append("n/a")
                continue
            gaps.append(statistics.fmean(gap))
            cells.append(f"{statistics.fmean(seen):.{digits}f} / {statistics.fmean(unseen):.{digits}f} "
                         f"({statistics.fmean(gap):+.{digits}f})")
        cells.append(f"{statistics.fmean(gaps):+.{digits}f}" if gaps else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_domain_shift(rows: Sequence[Row], md_path: Path, notes: Sequence[str] = ()) -> Tuple[Path, Path]:
    """``md_path`` (title, notes, :func:`domain_shift_markdown`) and its long-format CSV (one line per cell)."""
    lines = []
    for row in rows:
        for site, cell in row.cells.items():
            seen, unseen, gap = seen_unseen_gaps(cell)
            if gap:
                lines.append({
                    "row": "/".join(row.key), "label": row.label, "site": site, "n_seeds": len(gap),
                    "seen_mean": f"{statistics.fmean(seen):.6f}", "unseen_mean": f"{statistics.fmean(unseen):.6f}",
                    "gap_mean": f"{statistics.fmean(gap):.6f}", "gap_values": " ".join(f"{g:.6f}" for g in gap),
                })
    title = "Domain shift: Dice on the source sites' validation cases (seen) and on the held-out site (unseen)"
    return _write_md_and_csv(md_path, title, notes, domain_shift_markdown(rows), DOMAIN_SHIFT_COLUMNS, lines)
