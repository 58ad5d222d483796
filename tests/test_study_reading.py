"""The study's reading rules (``tools.study.reading``, docs/distillation.md section 10) on hand-made cells: exact
verdicts at and around each threshold, and no verdict while a cell is missing."""

from __future__ import annotations

import pytest

from tools.study.plan import ALL_MODULES, Run
from tools.study.reading import (
    distillation_verdict,
    domain_shift_verdict,
    majority,
    objective_verdict,
    seed_spread,
    study_verdicts,
    teacher_gap_verdict,
    write_reading,
)
from tools.study.tables import Cell, Row, RunResult

SITES = ("RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK")


def _run(site, seed, kind, objective="default"):
    if kind == "teacher":
        return Run(site, seed, "deeplabv3plus")
    if kind == "wo":
        return Run(site, seed, "enet")
    return Run(site, seed, "enet", "deeplabv3plus", ALL_MODULES, objective)


def row(kind, per_site, seen=None, objective="default", label=None):
    """A row whose cell on each site holds one done run per seed: ``per_site[site] = (dice seed 0, dice seed 1)``;
    ``seen[site]`` the same for the seen Dice (``None``: no seen evaluation). A site mapped to ``None`` is not run."""
    cells = {}
    for site, values in per_site.items():
        if values is None:
            cells[site] = Cell([RunResult(_run(site, 0, kind, objective), "not run")])
            continue
        seen_values = (seen or {}).get(site) or (None,) * len(values)
        cells[site] = Cell([RunResult(_run(site, k, kind, objective), "done", dice=d, seen_dice=s)
                            for k, (d, s) in enumerate(zip(values, seen_values))])
    key = {"teacher": ("teacher", "deeplabv3plus"), "wo": ("wo", "enet"),
           "w": ("w", "enet", "deeplabv3plus")}.get(kind, ("objective", "enet", "deeplabv3plus", objective))
    return Row(key, label or "/".join(key), cells, {s: None for s in per_site})


def same(values):
    return {site: values for site in SITES}


def test_seed_spread_and_majority():
    assert seed_spread(row("wo", {"HK": (0.5, 0.7)}).cells["HK"]) == pytest.approx(0.2)
    assert seed_spread(row("wo", {"HK": (0.5,)}).cells["HK"]) is None
    assert seed_spread(row("wo", {"HK": None}).cells["HK"]) is None
    assert [majority(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 2, 3, 4, 4]


def test_distillation_helps_only_beyond_the_seed_spread_on_four_of_six():
    wo = row("wo", same((0.50, 0.52)))  # spread 0.02
    # +0.03 on four sites (beyond 0.02), -0.01 on two: mean +0.0167, 4 of 6 -> helps
    w_values = {s: ((0.54, 0.54) if i < 4 else (0.50, 0.50)) for i, s in enumerate(SITES)}
    verdict = distillation_verdict(wo, row("w", w_values))
    assert verdict.holds is True and verdict.answer == "helps"
    assert "mean +0.017 over 6 sites" in verdict.measured
    assert "on 4 of 6 (RUNMC, BMC, HCRUDB, UCL)" in verdict.measured
    # the same gains with a student whose seeds differ by 0.05: no site beyond the spread
    noisy = row("w", {s: (v[0] - 0.025, v[1] + 0.025) for s, v in w_values.items()})
    verdict = distillation_verdict(wo, noisy)
    assert verdict.holds is False and verdict.answer == "did not measurably help"
    assert "on 0 of 6" in verdict.measured
    # three sites beyond the spread is not enough, whatever the mean
    w3 = {s: ((0.70, 0.70) if i < 3 else (0.51, 0.51)) for i, s in enumerate(SITES)}
    assert distillation_verdict(wo, row("w", w3)).holds is False
    # a negative mean with four sites beyond the spread is not enough either
    wneg = {s: ((0.545, 0.545) if i < 4 else (0.10, 0.10)) for i, s in enumerate(SITES)}
    assert distillation_verdict(wo, row("w", wneg)).holds is False


def test_a_missing_cell_gives_no_verdict():
    wo = row("wo", same((0.5, 0.5)))
    w = row("w", {**same((0.9, 0.9)), "HK": None})
    verdict = distillation_verdict(wo, w)
    assert verdict.holds is None and verdict.answer == "not yet readable: 1 of 6 site(s) not done (HK)"


def test_teacher_gap_is_the_mean_over_site_seed_pairs_of_seen_dice():
    unseen = same((0.5, 0.5))
    wo = row("wo", unseen, seen=same((0.70, 0.80)))
    ahead = {s: (0.74, 0.82) for s in SITES}  # +0.04, +0.02: mean +0.03, exactly the threshold
    verdict = teacher_gap_verdict(row("teacher", unseen, seen=ahead), wo)
    assert verdict.holds is True and verdict.answer == "met"
    assert "mean +0.030 over 12 site-seed pairs (range +0.020 to +0.040); teacher ahead on 12 of 12" in verdict.measured
    short = {s: (0.74, 0.81) for s in SITES}  # mean +0.025
    assert teacher_gap_verdict(row("teacher", unseen, seen=short), wo).holds is False
    # the unseen Dice plays no part: a much better unseen teacher with the same seen Dice changes nothing
    assert teacher_gap_verdict(row("teacher", same((0.9, 0.9)), seen=short), wo).holds is False
    # a run without its seen evaluation leaves the rule unanswered
    partial = {**ahead, "BMC": None}
    assert teacher_gap_verdict(row("teacher", unseen, seen=partial), wo).holds is None


def test_domain_shift_needs_a_negative_mean_and_four_negative_sites():
    seen = same((0.80, 0.80))
    lost = {s: ((0.70, 0.72) if i < 4 else (0.85, 0.85)) for i, s in enumerate(SITES)}  # -0.09 x4, +0.05 x2
    verdict = domain_shift_verdict(row("wo", lost, seen=seen))
    assert verdict.holds is True and verdict.measured.endswith("negative on 4 of 6")
    assert "mean -0.043 over 6 sites" in verdict.measured
    three = {s: ((0.70, 0.70) if i < 3 else (0.81, 0.81)) for i, s in enumerate(SITES)}
    verdict = domain_shift_verdict(row("wo", three, seen=seen))
    assert verdict.holds is False and verdict.answer == "does not hold"
    assert domain_shift_verdict(row("wo", lost)).holds is None  # no seen evaluation at all


def test_objectives_are_ranked_and_compared_against_their_seed_spread():
    rows3 = [
        row("wo", same((0.5, 0.5)), label="ENet w/o"),
        row("objective", same((0.60, 0.62)), objective="default", label="default"),  # mean 0.61, spread 0.02
        row("objective", same((0.58, 0.60)), objective="emkd", label="EMKD"),  # mean 0.59, spread 0.02
        row("objective", same((0.20, 0.40)), objective="paper_literal", label="paper_literal"),  # 0.30, spread 0.2
    ]
    verdict = objective_verdict(rows3)
    assert verdict.measured == ("default 0.610 (seed spread 0.020); EMKD 0.590 (seed spread 0.020); paper_literal "
                                "0.300 (seed spread 0.200)")
    # 0.02 is not more than the 0.02 spread; 0.29 is more than (0.02 + 0.2) / 2
    assert verdict.answer == ("default not distinguishable with these seeds from EMKD (+0.020 vs spread 0.020); "
                              "EMKD better than paper_literal (+0.290 vs spread 0.110)")
    assert objective_verdict(rows3[:2]) is None  # one objective: nothing to rank
    missing = rows3[:3] + [row("objective", {**same((0.2, 0.4)), "UCL": None}, objective="paper_literal")]
    assert objective_verdict(missing).holds is None


def test_study_verdicts_cover_each_rule_and_are_written(tmp_path):
    seen = same((0.8, 0.8))
    rows2 = [row("teacher", same((0.6, 0.6)), seen=same((0.9, 0.9)), label="DeepLabV3+ (teacher)"),
             row("wo", same((0.6, 0.6)), seen=seen, label="ENet w/o"),
             row("w", same((0.7, 0.7)), seen=seen, label="ENet w/ DeepLabV3+")]
    rows3 = [rows2[1], row("objective", same((0.7, 0.7)), objective="default", label="default"),
             row("objective", same((0.3, 0.3)), objective="paper_literal", label="paper_literal")]
    verdicts = study_verdicts(rows2, [("enet", "deeplabv3plus", rows3)])
    assert [v.question.split("?")[0] for v in verdicts] == [
        "Does distillation help", "A teacher worth distilling from", "Is there a domain shift",
        "Table 3: how do the distillation objectives rank on unseen sites"]
    assert [v.holds for v in verdicts] == [True, True, True, True]
    text = write_reading(verdicts, tmp_path / "reading.md").read_text()
    assert text.startswith("# How the study reads\n\nRules from docs/distillation.md, section 10")
    assert "| **helps** |" in text and "| **met** |" in text


def test_a_student_planned_on_some_sites_is_read_over_those_sites():
    """``--student_sites BIDMC,HK``: the other sites' cells are empty (no run planned), not missing."""
    def limited(kind, values, seen=None):
        r = row(kind, {s: values for s in ("BIDMC", "HK")}, seen={s: seen for s in ("BIDMC", "HK")} if seen else None)
        r.cells.update({s: Cell() for s in SITES if s not in ("BIDMC", "HK")})
        return r

    wo, w = limited("wo", (0.50, 0.52), (0.60, 0.62)), limited("w", (0.60, 0.62))
    verdict = distillation_verdict(wo, w)
    assert verdict.holds and "over 2 sites (BIDMC +0.100, HK +0.100)" in verdict.measured
    assert "on at least 2 of 2 sites" in verdict.rule
    teacher = row("teacher", same((0.8, 0.8)), seen=same((0.70, 0.70)))
    gap = teacher_gap_verdict(teacher, wo)
    assert gap.holds and gap.measured.startswith("mean +0.090 over 4 site-seed pairs")
    shift = domain_shift_verdict(wo)
    assert shift.holds and "over 2 sites" in shift.measured
