"""``python -m tools.data <command>``: index, verify, split, split_all, synth, montage, realism, realism_rule (a fire
CLI).

Examples::

    python -m tools.data verify --root /data/prostate
    python -m tools.data index --root /data/prostate --out /data/prostate_index.json
    python -m tools.data split --index /data/prostate_index.json --target BMC --out datalist_BMC.json
    python -m tools.data split_all --index /data/prostate_index.json --out-dir datalists/
    python -m tools.data synth --out /tmp/synth --cases-per-site 6 --size 96 --seed 0 --naming old
    python -m tools.data realism --root /tmp/synth --real ../shared/data/real_case/Case00.nii.gz
    python -m tools.data realism_rule --real ../shared/data/real_case/Case00.nii.gz --baseline /tmp/round8 \
        --candidate /tmp/round9_v1 --target gland_iqr

A dataset problem ends the command with every problem on its own line on stderr (``<path>: <what>``),
exit code 1 and no output file; outputs are written to a temporary file and then renamed into place.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Union


from tools.cli import fire_commands, one_line_errors

from .datalist import build_index, datalist_filename, load_index, make_all_splits, make_split
from .io import DatasetError, write_json
from .verify import AFFINE_ATOL, scan_dataset, summary_line


_command = one_line_errors
"""Dataset errors become lines on stderr (each naming a file) and exit code 1 instead of a traceback."""


def _path(value, name: str) -> str:
    if value is None or value is True or value == "":
        raise DatasetError(f"--{name} needs a path")
    return os.fspath(str(value))


def _sites(value: Union[None, str, Sequence[str]]) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        return [s for s in value.split(",") if s.strip()]
    return [str(s) for s in value]


@_command
def index(root=None, out=None, sites=None, affine_atol: float = AFFINE_ATOL) -> None:
    """Check the dataset under ROOT and write its index (sites, cases, geometry, label values) to OUT.

    Args:
        root: dataset root (site folders in it or one level below).
        out: the index JSON to write; nothing is written if any check fails.
        sites: comma-separated sites to index (default: all six, each required).
        affine_atol: tolerance in mm for image/mask affine agreement.
    """
    root, out = _path(root, "root"), _path(out, "out")
    idx = build_index(root, _sites(sites), float(affine_atol))
    write_json(idx, out)
    print(f"wrote {out}: {summary_line(idx['cases'])}")


@_command
def verify(root=None, sites=None, affine_atol: float = AFFINE_ATOL) -> None:
    """Check the dataset under ROOT: every problem on its own line on stderr and exit code 1, else a summary.

    Args:
        root: dataset root (site folders in it or one level below).
        sites: comma-separated sites that must be present (default: all six).
        affine_atol: tolerance in mm for image/mask affine agreement.
    """
    root = _path(root, "root")
    _, records, problems = scan_dataset(root, _sites(sites), float(affine_atol))
    if problems:
        raise DatasetError(problems)
    print(f"OK {root}: {summary_line(records)}")


@_command
def split(index=None, target=None, out=None, val_fraction: float = 0.2, seed: int = 0) -> None:
    """Write the leave-one-site-out datalist for TARGET (either naming scheme) from the index INDEX to OUT.

    Args:
        index: index JSON written by ``index``.
        target: held-out site (RUNMC/ISBI, BMC/ISBI_1.5, HCRUDB/I2CVB, UCL, BIDMC, HK or S1..S6).
        out: datalist JSON to write.
        val_fraction: fraction of each source site's cases used for validation.
        seed: seed of the validation split.
    """
    index_path, out = _path(index, "index"), _path(out, "out")
    if target is None:
        raise DatasetError("--target needs a site name")
    datalist = make_split(load_index(index_path), str(target), val_fraction, seed)
    write_json(datalist, out)
    print(
        f"wrote {out}: target {datalist['target_site']}, {len(datalist['training'])} training, "
        f"{len(datalist['validation'])} validation, {len(datalist['test'])} test cases"
    )


@_command
def split_all(index=None, out_dir=None, val_fraction: float = 0.2, seed: int = 0) -> None:
    """Write ``datalist_<SITE>.json`` into OUT_DIR for every site of the index INDEX.

    Args:
        index: index JSON written by ``index``.
        out_dir: folder for the datalists (created if needed).
        val_fraction: fraction of each source site's cases used for validation.
        seed: seed of the validation split.
    """
    index_path, out_dir = _path(index, "index"), _path(out_dir, "out-dir")
    splits = make_all_splits(load_index(index_path), val_fraction, seed)  # all computed before any file is written
    for site, datalist in splits.items():
        write_json(datalist, os.path.join(out_dir, datalist_filename(site)))
    print(f"wrote {len(splits)} datalists to {out_dir}: {', '.join(datalist_filename(s) for s in splits)}")


@_command
def synth(out=None, cases_per_site: int = 6, size: int = 96, seed: int = 0, naming: str = "old") -> None:
    """Write a simulated six-site dataset to OUT with ``tools.data.synth.synthesize``.

    Args:
        out: output root (six site folders are written under it).
        cases_per_site: cases per site.
        size: in-plane size of the volumes.
        seed: random seed.
        naming: site folder names, "old" (ISBI, ISBI_1.5, I2CVB, ...) or "new" (RUNMC, BMC, HCRUDB, ...).
    """
    out = _path(out, "out")
    if naming not in ("old", "new"):
        raise DatasetError(f"--naming must be 'old' or 'new', got {naming!r}")
    try:
        from .synth import synthesize
    except ImportError as err:
        raise DatasetError(f"tools.data.synth is not available ({err})") from None
    synthesize(out, cases_per_site, size, seed, naming)
    print(f"wrote a simulated dataset to {out}")


@_command
def montage(root=None, out=None, slices_per_site: int = 4) -> None:
    """PNG montage of a six-site dataset, one row per site with the mask contours (``write_montage``).

    Args:
        root: the dataset (e.g. what ``synth`` wrote).
        out: the PNG to write, e.g. docs/synthetic_sites.png.
        slices_per_site: axial slices shown per site.
    """
    from .synth import write_montage

    root, out = _path(root, "root"), _path(out, "out")
    print(f"wrote {write_montage(root, out, slices_per_site=slices_per_site)}")


@_command
def realism(root=None, real=None, out_md: str = "docs/realism.md", out_png: str = "docs/realism.png",
            baseline=None, label=None, baseline_label=None) -> None:
    """Compare the simulated sites under ROOT with the real case REAL on image statistics (``tools.data.realism``).

    Args:
        root: a simulated collection (what ``synth`` wrote; either naming).
        real: the real image ``CaseNN.nii.gz``; its mask ``CaseNN_segmentation.nii.gz`` must lie beside it.
        out_md: the markdown report to write (tables, definitions, calibration sources).
        out_png: the figure to write (real vs nearest simulated case, histograms, spectra, bias profiles).
        baseline: optional second collection (e.g. from an earlier simulator) tabulated beside ROOT.
        label: title of ROOT's table (default: the path).
        baseline_label: title of BASELINE's table (default: the path).
    """
    from .realism import realism_report

    root = _path(root, "root")
    real, mask = _real_and_mask(real)
    result = realism_report(real, mask, root, _path(out_md, "out-md"), _path(out_png, "out-png"),
                            baseline_root=None if baseline is None else _path(baseline, "baseline"),
                            label=None if label is None else str(label),
                            baseline_label=None if baseline_label is None else str(baseline_label))
    print(f"wrote {result['markdown']} and {result['png']}; nearest simulated case: {result['nearest']}")


def _real_and_mask(real) -> tuple:
    real = _path(real, "real")
    name = os.path.basename(real)
    if not name.endswith(".nii.gz"):
        raise DatasetError(f"{real}: --real must be a .nii.gz image, got {name!r}")
    mask = os.path.join(os.path.dirname(real), name[: -len(".nii.gz")] + "_segmentation.nii.gz")
    if not os.path.exists(mask):
        raise DatasetError(f"{real}: no mask {mask} beside the real image")
    return real, mask


@_command
def realism_rule(real=None, baseline=None, candidate=None, target=None, guards=None, tolerance: float = 0.1) -> None:
    """Apply a simulator round's rule (docs/realism.md, rounds 6-9) to two simulated collections and print the verdict.

    A candidate passes when the TARGET rows' distance to the real case, summed over the sites (median of each
    site's cases), falls below BASELINE's and no GUARDS row at any site moves more than TOLERANCE further from the
    real case (``tools.data.realism.compare_rounds``). Nothing is written.

    Args:
        real: the real image ``CaseNN.nii.gz``; its mask ``CaseNN_segmentation.nii.gz`` must lie beside it.
        baseline: the collection before the change (what ``synth`` wrote).
        candidate: the collection after it (the same command, the changed simulator).
        target: comma-separated report rows the change is meant to bring closer (keys of ``tools.data.realism.ROWS``).
        guards: comma-separated rows that must not move further (default: the other std-unit rows).
        tolerance: how much further a guarded cell may move, in the row's units.
    """
    from .realism import (ROWS, STD_UNIT_ROWS, compare_rounds, comparison_markdown, load_lps, measure_case,
                          measure_collection, site_medians)

    targets = _sites(target)
    if not targets:
        raise DatasetError("--target needs at least one report row (e.g. gland_iqr)")
    known = [key for key, _, _ in ROWS]
    unknown = [row for row in [*targets, *(_sites(guards) or [])] if row not in known]
    if unknown:
        raise DatasetError(f"unknown report row(s) {', '.join(unknown)}; the rows are {', '.join(known)}")
    real, mask = _real_and_mask(real)
    volume, label, spacing = load_lps(real, mask)
    real_stats = measure_case(volume, label, spacing, name="real")
    base = site_medians(measure_collection(_path(baseline, "baseline"), real_stats))
    cand = site_medians(measure_collection(_path(candidate, "candidate"), real_stats))
    result = compare_rounds(real_stats.stats, base, cand, targets, _sites(guards), float(tolerance), STD_UNIT_ROWS)
    for row in targets:
        cells = ", ".join(f"{s} {base[s][row]:.2f} -> {cand[s][row]:.2f}" for s in base)
        print(f"{row}: real {real_stats.stats.get(row, 0.0):.2f}; {cells}")
    print("| candidate | target rows, summed distance | guarded cells further than the tolerance | "
          "all std-unit rows, summed distance | rule |")
    print("|---|---|---|---|---|")
    print(comparison_markdown(result, os.path.basename(os.path.normpath(str(candidate)))))


COMMANDS = {"index": index, "verify": verify, "split": split, "split_all": split_all, "synth": synth, "montage": montage,
            "realism": realism, "realism_rule": realism_rule}


def main() -> None:
    fire_commands(COMMANDS, name="tools.data")


if __name__ == "__main__":
    main()
