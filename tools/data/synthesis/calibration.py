"""Where the simulator's calibrated numbers come from: one row per parameter, rendered into docs/realism.md.

Each entry is ``(parameter, value, source)``. A source is one of

* **anatomy**: published anatomy (textbook descriptions, typical adult male dimensions);
* **acquisition**: the site table of DESIGN.md section 2 or published MR physics / device facts;
* **real-case statistic**: an image statistic of ``../shared/data/real_case/Case00`` measured by
  :mod:`tools.data.realism` (never a segmentation score of any model);
* **simulator choice**: not calibrated; a plausible value that keeps the sites distinct.

The real case's Dice was never used to choose between variants.
"""

from __future__ import annotations

from typing import Tuple

__all__ = ["CALIBRATION", "calibration_markdown"]

CALIBRATION: Tuple[Tuple[str, str, str], ...] = (
    ("body width x depth (`sample_pelvis`)", "about 340-405 x 220-285 mm (5-95th percentiles)",
     "anatomy: an adult pelvis is about 300-400 mm wide and 200-250 mm deep, so every prostate field of "
     "view (120-300 mm) cuts the body laterally; measured by `body_cut_lr` in the report"),
    ("femoral heads, acetabula, pubis, obturator internus, sacrum", "heads 21-26 mm radius at 85-117 mm from "
     "the midline; bony ring outside a 10-15 mm obturator internus", "anatomy (unchanged from the first simulator)"),
    ("ischioanal fossae (`fossa_*`)", "fat wedges 30-50 mm wide, 50-76 mm deep, centred 38-55 mm lateral and "
     "0-15 mm behind the rectum, roof rising laterally", "anatomy: fat-filled spaces posterolateral to the "
     "rectum, below the levator ani, between obturator internus and gluteus maximus; they fill the "
     "posterolateral field of view of a real scan (real-case statistic: median intensity 60-80 mm from the "
     "gland 0.38 of the gland median, 0.11-0.20 before, 0.25-0.31 after, BIDMC)"),
    ("levator ani along the gland (`levator_gap`, lateral sling)", "1-3 mm from the gland's anterolateral and "
     "lateral surface, 4-7 mm thick, below 0.7 of the gland's half height", "anatomy: the levator ani lies "
     "against the prostate's side, separated by the lateral pelvic fascia and neurovascular bundle; "
     "real-case statistic: gland-to-shell contrast -0.12 (was -0.83 for simulated BIDMC)"),
    ("periprostatic veins", "about 16% of the 7 mm shell (was about 31%)", "real-case statistic: the shell "
     "anterior to the real gland is darker than the gland (sector means -0.03 vs +0.30 std); simulator choice "
     "of the amount"),
    ("peripheral zone / central gland T2 levels", "0.6-0.9 / 0.38-0.52 (fat 0.6-1.0 by site, muscle 0.2-0.3)",
     "acquisition: with TE about 100 ms and published 3T T2 (fat about 133 ms and skeletal muscle about 32 ms, "
     "Gold et al., AJR 2004; healthy peripheral zone longer than transition zone, about 100-150 vs 80-100 ms in "
     "prostate T2-mapping studies), exp(-TE/T2) puts the central gland at about 0.6 of fat and the peripheral "
     "zone near fat; real-case statistic: gland mean 0.88 std above the volume mean"),
    ("muscle level", "0.2-0.3 (was 0.16-0.24)", "real-case statistic: lower quartile of intensities 60-80 mm "
     "from the gland is 0.23 of the gland median (muscle); pure T2 decay would make muscle darker, so the "
     "image statistic wins"),
    ("texture amplitudes (1 mm field)", "fat 10%, peripheral zone 18%, central gland 0.08 (were 5%, 10%, 0.04)",
     "real-case statistic: texture-spectrum slope -2.78 over 0.03-0.15 cycles/mm (simulated BIDMC was -3.31)"),
    ("endorectal coil loop position (`COIL_ANTERIOR_FRACTION`)", "0.6 of the balloon's half depth in front of "
     "its centre (was 0.3)", "acquisition: the receive loop of an inflatable endorectal coil faces the "
     "prostate; real-case statistic: coil-bias gradient 2.05 std"),
    ("BIDMC coil gain / fall-off", "20-45 / 9-13 mm (were 15-30 / 13-17 mm)", "real-case statistics of the "
     "normalised histogram (q99 4.18, skewness 5.57) and the coil-bias gradient (2.05), a sweep of five "
     "settings on six simulated BIDMC cases (the real case is most likely PROMISE12 BIDMC Case00)"),
    ("BMC / HK coil gain / fall-off", "15-35 / 10-14 mm and 12-30 / 11-17 mm", "simulator choice: BIDMC's "
     "change applied to the other coil sites so that their order (BMC and HK flatter than BIDMC) is kept; no "
     "real case of these sites"),
    ("fields of view, slice thickness, field strength, coil presence, orientation, voxel type",
     "per site, `tools/data/synthesis/sites.py`", "acquisition: DESIGN.md section 2 (MS-Net site table); fields "
     "of view are the simulator's choice around the native spacing"),
)


def calibration_markdown() -> str:
    """:data:`CALIBRATION` as a markdown table."""
    lines = ["| parameter | value | source |", "|---|---|---|"]
    lines += [f"| {p} | {v} | {s} |" for p, v, s in CALIBRATION]
    return "\n".join(lines) + "\n"
