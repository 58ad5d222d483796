"""How the study is read: the rules of docs/distillation.md section 10, fixed before the all-sites results, as code.

Each rule turns the study's rows into a :class:`Verdict` (the question, the rule, what was measured and the
answer). A verdict is only given when every cell the rule reads is done; otherwise the answer says how much is
missing and ``holds`` is ``None``. Nothing here chooses a setting: it only reads finished runs.

* **Distillation helps** (:func:`distillation_verdict`): per target site, ``d = mean_w - mean_wo`` (means over
  seeds of the unseen Dice); ``d`` counts as positive beyond the seed spread when ``d > max(spread_wo, spread_w)``
  with ``spread = max - min`` over the cell's seeds (``|seed 0 - seed 1|`` with two seeds). Holds when
  ``mean(d) > 0`` and the count is at least ``ceil(2 n / 3)`` of the ``n`` sites (4 of 6).
* **A teacher worth distilling from** (:func:`teacher_gap_verdict`): over every (site, seed) pair with both seen
  evaluations, ``g = seen_teacher - seen_wo`` (Dice on the source sites' validation cases). Holds when
  ``mean(g) >= 0.03``.
* **Table 3's ranking** (:func:`objective_verdict`): objectives ranked by the mean over sites of their cells'
  means; ``A`` is called better than ``B`` only when ``mean_A - mean_B`` exceeds the mean of the two rows' seed
  spreads (each row's spread: the mean over sites of its cells' spreads).
* **Domain shift** (:func:`domain_shift_verdict`): per site, the student alone's ``unseen - seen`` Dice, mean
  over seeds. Holds when the mean over sites is negative and at least ``ceil(2 n / 3)`` sites are negative.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .tables import Cell, Row, seen_unseen_gaps

__all__ = [
    "TEACHER_GAP_MIN",
    "Verdict",
    "seed_spread",
    "majority",
    "distillation_verdict",
    "teacher_gap_verdict",
    "objective_verdict",
    "domain_shift_verdict",
    "study_verdicts",
    "verdicts_markdown",
    "write_reading",
]

TEACHER_GAP_MIN = 0.03
"""Issue 9 item 4: each teacher beats the student alone by at least this much on seen validation Dice."""

FLOAT_TOLERANCE = 1e-9

RULES_SOURCE = "docs/distillation.md, section 10 (written before the all-sites results)"


@dataclass
class Verdict:
    """One reading rule applied: ``holds`` is ``True``/``False``, or ``None`` when a cell it reads is not done."""

    question: str
    rule: str
    measured: str
    answer: str
    holds: Optional[bool]


def seed_spread(cell: Cell) -> Optional[float]:
    """``max - min`` of the cell's Dice over seeds (``|seed 0 - seed 1|`` with two); ``None`` below two seeds."""
    values = cell.values
    return max(values) - min(values) if cell.status == "done" and len(values) > 1 else None


def majority(n: int) -> int:
    """The site count a rule needs out of ``n``: ``ceil(2 n / 3)`` (4 of 6)."""
    return math.ceil(2 * n / 3)


def _planned(*rows: Row) -> List[str]:
    """The target sites where any of ``rows`` has a run planned (a student limited by ``--student_sites`` is read
    over its own sites)."""
    return [site for site in rows[0].cells if any(row.cells[site].status != "empty" for row in rows)]


def _missing(cells: Dict[str, Sequence[Cell]]) -> List[str]:
    return [site for site, group in cells.items() if any(c.status != "done" for c in group)]


def _incomplete(question: str, rule: str, missing: Sequence[str], total: int) -> Verdict:
    answer = (f"not yet readable: {len(missing)} of {total} site(s) not done ({', '.join(missing)})" if total
              else "not readable: no target site")
    return Verdict(question, rule, "-", answer, None)


def _sites(n: int) -> str:
    return f"{n} site" + ("s" if n != 1 else "")


def distillation_verdict(wo: Row, w: Row) -> Verdict:
    """Does distilling help the student on the unseen site? ``wo``/``w``: Table 2's student rows."""
    question = f"Does distillation help? ({w.label} vs {wo.label}, unseen Dice)"
    sites = _planned(wo, w)
    rule = ("mean over sites of (w/ - w/o) > 0, and w/ - w/o > the larger seed spread of the two cells on at least "
            f"{majority(len(sites))} of {len(sites)} sites")
    missing = _missing({s: (wo.cells[s], w.cells[s]) for s in sites})
    if missing or not sites:
        return _incomplete(question, rule, missing, len(sites))
    deltas, beyond = {}, []
    for site in sites:
        deltas[site] = w.cells[site].mean - wo.cells[site].mean
        spreads = [x for x in (seed_spread(wo.cells[site]), seed_spread(w.cells[site])) if x is not None]
        margin = max(spreads) if spreads else 0.0
        if deltas[site] > margin + FLOAT_TOLERANCE:
            beyond.append(site)
    mean = statistics.fmean(deltas.values())
    need = majority(len(sites))
    holds = mean > 0 and len(beyond) >= need
    measured = (f"mean {mean:+.3f} over {_sites(len(sites))} ("
                + ", ".join(f"{s} {d:+.3f}" for s, d in deltas.items())
                + f"); positive beyond the seed spread on {len(beyond)} of {len(sites)}"
                + (f" ({', '.join(beyond)})" if beyond else ""))
    answer = "helps" if holds else "did not measurably help"
    return Verdict(question, rule, measured, answer, holds)


def _seen_pairs(cell: Cell) -> Dict[int, float]:
    return {r.run.seed: r.seen_dice for r in cell.results if r.status == "done" and r.seen_dice is not None}


def _seen_complete(*cells: Cell) -> bool:
    """Every cell done, every run of it evaluated on seen validation, all on the same seeds."""
    seeds = [set(_seen_pairs(c)) for c in cells]
    return all(c.status == "done" and s == {r.run.seed for r in c.results} for c, s in zip(cells, seeds)) \
        and all(s == seeds[0] for s in seeds)


def teacher_gap_verdict(teacher: Row, wo: Row, minimum: float = TEACHER_GAP_MIN) -> Verdict:
    """Is the teacher ahead of the student alone on the source sites' validation cases (seen Dice)?"""
    question = f"A teacher worth distilling from? ({teacher.label} vs {wo.label}, seen Dice)"
    rule = f"mean over (site, seed) pairs of (teacher seen - student w/o seen) >= {minimum:+.2f}"
    sites = _planned(wo)
    missing = [s for s in sites if not _seen_complete(teacher.cells[s], wo.cells[s])]
    if missing or not sites:
        return _incomplete(question, rule, missing, len(sites))
    gaps: List[Tuple[str, int, float]] = []
    for site in sites:
        t, s = _seen_pairs(teacher.cells[site]), _seen_pairs(wo.cells[site])
        gaps += [(site, seed, t[seed] - s[seed]) for seed in sorted(t)]
    mean = statistics.fmean(g for _, _, g in gaps)
    ahead = sum(1 for _, _, g in gaps if g > 0)
    holds = mean >= minimum - FLOAT_TOLERANCE  # 'at least': a mean equal to the threshold in decimals meets it
    measured = (f"mean {mean:+.3f} over {len(gaps)} site-seed pairs (range {min(g for *_, g in gaps):+.3f} to "
                f"{max(g for *_, g in gaps):+.3f}); teacher ahead on {ahead} of {len(gaps)}")
    answer = "met" if holds else "not met"
    return Verdict(question, rule, measured, answer, holds)


def _row_spread(row: Row) -> float:
    spreads = [seed_spread(c) for c in row.cells.values()]
    spreads = [s for s in spreads if s is not None]
    return statistics.fmean(spreads) if spreads else 0.0


def objective_verdict(rows3: Sequence[Row]) -> Optional[Verdict]:
    """Table 3: the objectives (rows keyed ``objective``) ranked by mean unseen Dice over the sites; each adjacent
    pair of the ranking compared against its seed spread. ``None`` with fewer than two objectives."""
    objectives = [row for row in rows3 if row.key[0] == "objective"]
    if len(objectives) < 2:
        return None
    question = "Table 3: how do the distillation objectives rank on unseen sites?"
    rule = ("ranked by the mean over sites of the unseen Dice; A is better than B only if mean A - mean B exceeds "
            "the mean seed spread of the two rows")
    sites = list(objectives[0].cells)
    missing = _missing({s: [row.cells[s] for row in objectives] for s in sites})
    if missing or not sites:
        return _incomplete(question, rule, missing, len(sites))
    means = {row.label: statistics.fmean(row.cells[s].mean for s in sites) for row in objectives}
    spreads = {row.label: _row_spread(row) for row in objectives}
    order = sorted(means, key=means.get, reverse=True)
    measured = "; ".join(f"{label} {means[label]:.3f} (seed spread {spreads[label]:.3f})" for label in order)
    comparisons = []
    for a, b in zip(order, order[1:]):
        margin = (spreads[a] + spreads[b]) / 2
        difference = means[a] - means[b]
        verdict = "better than" if difference > margin + FLOAT_TOLERANCE else "not distinguishable with these seeds from"
        comparisons.append(f"{a} {verdict} {b} ({difference:+.3f} vs spread {margin:.3f})")
    return Verdict(question, rule, measured, "; ".join(comparisons), True)


def domain_shift_verdict(wo: Row) -> Verdict:
    """Does the student alone lose Dice on the site it never saw (unseen - seen, mean over seeds)?"""
    question = f"Is there a domain shift? ({wo.label}, unseen - seen Dice)"
    sites = _planned(wo)
    rule = f"mean over sites of (unseen - seen) < 0, and negative on at least {majority(len(sites))} of {len(sites)} sites"
    missing = [s for s in sites if not _seen_complete(wo.cells[s])]
    if missing or not sites:
        return _incomplete(question, rule, missing, len(sites))
    gaps = {site: statistics.fmean(seen_unseen_gaps(wo.cells[site])[2]) for site in sites}
    mean = statistics.fmean(gaps.values())
    negative = [s for s, g in gaps.items() if g < 0]
    holds = mean < 0 and len(negative) >= majority(len(sites))
    measured = (f"mean {mean:+.3f} over {_sites(len(sites))} (" + ", ".join(f"{s} {g:+.3f}" for s, g in gaps.items())
                + f"); negative on {len(negative)} of {len(sites)}")
    answer = ("holds (the seen Dice leans optimistic: the same cases chose the checkpoint)" if holds
              else "does not hold")
    return Verdict(question, rule, measured, answer, holds)


def study_verdicts(rows2: Sequence[Row], tables3: Sequence[Tuple[str, str, Sequence[Row]]] = ()) -> List[Verdict]:
    """Every rule that the study's rows allow: per student-teacher pair of Table 2 the distillation and teacher
    rules, per student the domain shift, per Table 3 the ranking."""
    by_key = {row.key: row for row in rows2}
    verdicts = []
    for row in rows2:
        if row.key[0] == "w" and ("wo", row.key[1]) in by_key:
            verdicts.append(distillation_verdict(by_key[("wo", row.key[1])], row))
    for row in rows2:
        if row.key[0] == "w" and ("teacher", row.key[2]) in by_key and ("wo", row.key[1]) in by_key:
            verdicts.append(teacher_gap_verdict(by_key[("teacher", row.key[2])], by_key[("wo", row.key[1])]))
    for row in rows2:
        if row.key[0] == "wo":
            verdicts.append(domain_shift_verdict(row))
    for _, _, rows3 in tables3:
        verdict = objective_verdict(rows3)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts


def verdicts_markdown(verdicts: Sequence[Verdict]) -> str:
    lines = ["| question | rule | measured | answer |", "|---|---|---|---|"]
    lines += [f"| {v.question} | {v.rule} | {v.measured} | **{v.answer}** |" for v in verdicts]
    return "\n".join(lines) + "\n"


def write_reading(verdicts: Sequence[Verdict], md_path: Path) -> Path:
    """``md_path``: the verdicts as a table, with the rules' source; nothing is written for no verdict."""
    md_path = Path(md_path)
    text = ("# How the study reads\n\n"
            f"Rules from {RULES_SOURCE}, applied by `tools/study/reading.py` to this study's tables. Spread: max - "
            "min of a cell's seeds. A rule answers only when every cell it reads is done.\n\n"
            + verdicts_markdown(verdicts))
    md_path.write_text(text)
    return md_path

