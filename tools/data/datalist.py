"""The dataset index and the leave-one-site-out (LOSO) datalists.

Index (``build_index``, written by ``python -m tools.data index``)::

    {"format": "prostate-rkd-index/1",
     "root": "/abs/path/to/root",            # the root as given, made absolute
     "site_dir": "Processed_data_nii",        # folder holding the site folders, relative to root ("." if root)
     "sites": {"RUNMC": {"folder": "Processed_data_nii/ISBI", "num_cases": 30}, ...},
     "cases": [{"site": "RUNMC", "case": "Case00",
                "image": "Processed_data_nii/ISBI/Case00.nii.gz",
                "label": "Processed_data_nii/ISBI/Case00_segmentation.nii.gz",
                "shape": [384, 384, 24], "spacing": [0.625, 0.625, 3.6], "orientation": "LPS",
                "label_values": [0, 1]}, ...]}

It is only written for a dataset that passes :func:`tools.data.verify.verify_dataset`.

Datalist for target site T (``make_split``), MONAI decathlon style so that
``monai.data.load_decathlon_datalist(file, data_list_key="training", base_dir=root)`` works::

    {"name": ..., "description": ...,
     "target_site": "BMC", "source_sites": ["RUNMC", "HCRUDB", "UCL", "BIDMC", "HK"],
     "seed": 0, "val_fraction": 0.2, "root": "/abs/path/to/root",
     "training": [{"image": ..., "label": ..., "site": "RUNMC", "case": "Case00"}, ...],
     "validation": [...],          # from the source sites only
     "test": [...]}                # every case of T

Validation split, per source site with n cases: ``n_val = clamp(round_half_up(val_fraction * n),
1, n - 1)`` for n >= 2, 0 for n = 1; the validation cases are the first ``n_val`` of a permutation
drawn by ``numpy.random.default_rng([seed, s])`` with ``s`` the site's position in S1..S6. The
permutation depends on the seed and the site only, not on the target: a source site's
validation cases are the same in all five datalists that train on it. Lists are in S1..S6 order,
then case-number order (shuffling is the data loader's job).

Caution with MONAI's loader: ``load_decathlon_datalist`` also joins ``base_dir`` to any *other*
string value that happens to name an existing path, so with site folders named like the
canonical names directly in the root (``root/UCL``), an entry's ``"site": "UCL"`` comes back as
``"<root>/UCL"``. :func:`load_datalist` joins only ``image`` and ``label``.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .io import DatasetError, PathLike, read_json
from .layout import SITES, canonical_site, case_sort_key, site_display_name
from .verify import AFFINE_ATOL, scan_dataset

__all__ = [
    "INDEX_FORMAT",
    "DATALIST_KEYS",
    "build_index",
    "load_index",
    "num_validation",
    "NO_TARGET",
    "held_out_site",
    "make_split",
    "make_all_splits",
    "datalist_filename",
    "load_datalist",
]

NO_TARGET = "none"
"""``target_site`` value that holds no site out (:func:`make_split`)."""

INDEX_FORMAT = "prostate-rkd-index/1"
DATALIST_KEYS = ("training", "validation", "test")
_CASE_KEYS = ("site", "case", "image", "label")


def _posix_relative(path: PathLike, root: PathLike) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def build_index(root: PathLike, sites: Optional[Sequence[str]] = None, affine_atol: float = AFFINE_ATOL) -> Dict:
    """Discover, check and describe every case under ``root`` (format in the module docstring).

    Args:
        root: dataset root (site folders in it or one level below, see :mod:`tools.data.layout`).
        sites: the sites to index (any accepted names); default all six, each required.
        affine_atol: tolerance in mm for image/mask affine agreement.

    Raises:
        DatasetError: with every problem :func:`tools.data.verify.verify_dataset` finds.
    """
    layout, records, problems = scan_dataset(root, sites, affine_atol)
    if problems:
        raise DatasetError(problems)
    return {
        "format": INDEX_FORMAT,
        "root": os.path.abspath(root),
        "site_dir": _posix_relative(layout.site_dir, layout.root),
        "sites": {
            site: {"folder": _posix_relative(folder.path, layout.root), "num_cases": len(folder.cases)}
            for site, folder in layout.sites.items()
        },
        "cases": records,
    }


def load_index(path: PathLike) -> Dict:
    """Read an index written by ``python -m tools.data index`` and check its structure.

    Raises:
        DatasetError: one line naming ``path`` and the offending key or entry.
    """
    index = read_json(path, what="index file")
    if index.get("format") != INDEX_FORMAT:
        raise DatasetError(
            f"{path}: not a dataset index (key 'format' is {index.get('format')!r}, expected {INDEX_FORMAT!r})"
        )
    _check_index(index, str(path))
    return index


def _check_index(index: Dict, name: str) -> None:
    if not isinstance(index.get("root"), str):
        raise DatasetError(f"{name}: key 'root' must be a string")
    cases = index.get("cases")
    if not isinstance(cases, list) or not cases:
        raise DatasetError(f"{name}: key 'cases' must be a non-empty list")
    seen = set()
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or any(not isinstance(case.get(k), str) for k in _CASE_KEYS):
            raise DatasetError(f"{name}: cases[{i}] must be an object with string keys {', '.join(_CASE_KEYS)}")
        if case["site"] not in SITES:
            expected = ", ".join(SITES)
            raise DatasetError(f"{name}: cases[{i}] has unknown site {case['site']!r} (expected one of {expected})")
        key = (case["site"], case["case"])
        if key in seen:
            raise DatasetError(f"{name}: cases[{i}] repeats {case['site']} {case['case']}")
        seen.add(key)


def num_validation(num_cases: int, val_fraction: float) -> int:
    """Validation cases of a site of n cases: ``clamp(round_half_up(val_fraction * n), 1, n - 1)``, 0 if n < 2."""
    if num_cases < 2:
        return 0
    return min(max(int(math.floor(val_fraction * num_cases + 0.5)), 1), num_cases - 1)


def _check_split_args(val_fraction: float, seed: int) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, Real) or not 0 < val_fraction < 1:
        raise DatasetError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise DatasetError(f"seed must be an integer >= 0, got {seed!r}")


def _entry(case: Dict) -> Dict[str, str]:
    return {"image": case["image"], "label": case["label"], "site": case["site"], "case": case["case"]}


def held_out_site(target: Optional[str]) -> Optional[str]:
    """The canonical name of the site to hold out, or ``None`` for :data:`NO_TARGET` (``None`` or ``"none"``, any
    case): no site held out."""
    if target is None or (isinstance(target, str) and target.strip().lower() == NO_TARGET):
        return None
    return canonical_site(target)


def make_split(index: Dict, target: Optional[str], val_fraction: float = 0.2, seed: int = 0) -> Dict:
    """The LOSO datalist holding out ``target`` (any accepted site name); format in the module docstring.

    ``target`` ``None`` or ``"none"`` holds no site out: every site of the index trains and validates (the same
    validation cases as in the LOSO datalists) and ``test`` is empty: a model meant for scans from outside the
    collection, e.g. ``../shared/data/real_case``.

    Raises:
        DatasetError: unknown target, target or source sites absent from the index, or bad
            ``val_fraction`` / ``seed``.
    """
    _check_split_args(val_fraction, seed)
    _check_index(index, "index")
    target = held_out_site(target)
    by_site: Dict[str, List[Dict]] = {}
    for case in index["cases"]:
        by_site.setdefault(case["site"], []).append(case)
    if target is not None and target not in by_site:
        present = ", ".join(s for s in SITES if s in by_site)
        raise DatasetError(
            f"target site {site_display_name(target)} has no cases in the index (sites present: {present})"
        )
    sources = [s for s in SITES if s in by_site and s != target]
    if not sources:
        raise DatasetError(f"the index holds only the target site {target}: no source sites to train on")

    training: List[Dict] = []
    validation: List[Dict] = []
    for site in sources:
        cases = sorted(by_site[site], key=lambda c: case_sort_key(c["case"]))
        order = np.random.default_rng([int(seed), SITES.index(site)]).permutation(len(cases))
        val_ids = set(int(i) for i in order[: num_validation(len(cases), val_fraction)])
        for i, case in enumerate(cases):
            (validation if i in val_ids else training).append(_entry(case))
    if target is None:
        test: List[Dict] = []
        name, description = "prostate, no site held out", f"Train and validate on {', '.join(sources)}; no test site."
    else:
        test = [_entry(c) for c in sorted(by_site[target], key=lambda c: case_sort_key(c["case"]))]
        name = f"prostate LOSO, target {target}"
        description = f"Leave-one-site-out: train and validate on {', '.join(sources)}; test on every case of {target}."
    return {
        "name": name,
        "description": description,
        "target_site": target,
        "source_sites": sources,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "root": index["root"],
        "training": training,
        "validation": validation,
        "test": test,
    }


def make_all_splits(index: Dict, val_fraction: float = 0.2, seed: int = 0) -> Dict[str, Dict]:
    """``{site: make_split(index, site, ...)}`` for every site in the index, in S1..S6 order."""
    present = {case.get("site") for case in index.get("cases", []) if isinstance(case, dict)}
    return {site: make_split(index, site, val_fraction, seed) for site in SITES if site in present}


def datalist_filename(site: str) -> str:
    """``datalist_<SITE>.json`` with the canonical site name."""
    return f"datalist_{canonical_site(site)}.json"


def load_datalist(path: PathLike, key: str = "training", base_dir: Optional[PathLike] = None) -> List[Dict]:
    """The entries under ``key`` with ``image`` and ``label`` joined to ``base_dir`` (default: the datalist's ``root``).

    Unlike ``monai.data.load_decathlon_datalist`` no other value is touched.
    """
    datalist = read_json(path, what="datalist")
    if key not in datalist or not isinstance(datalist[key], list):
        raise DatasetError(f"{path}: no list under key {key!r} (keys: {', '.join(datalist)})")
    base = datalist.get("root") if base_dir is None else os.fspath(base_dir)
    if not isinstance(base, str):
        raise DatasetError(f"{path}: no base_dir given and no string 'root' key in the datalist")
    entries = []
    for i, item in enumerate(datalist[key]):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("image", "label")):
            raise DatasetError(f"{path}: {key}[{i}] must be an object with string 'image' and 'label'")
        entry = dict(item)
        for k in ("image", "label"):
            entry[k] = os.path.normpath(os.path.join(base, item[k]))
        entries.append(entry)
    return entries
