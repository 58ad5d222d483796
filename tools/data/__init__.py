"""The multi-site prostate MRI data: reading, integrity check, index and leave-one-site-out datalists.

Python API (the CLI ``python -m tools.data`` wraps the same functions):

* :func:`canonical_site` -- any site name (old ``ISBI, ISBI_1.5, I2CVB``, newer ``RUNMC, BMC, HCRUDB``,
  ``UCL, BIDMC, HK``, any case, or ``S1``..``S6``) to the canonical newer name; :data:`SITES` in S1..S6 order.
* :func:`read_volume` -- ``.nii``/``.nii.gz``/``.mha``/``.mhd`` to a :class:`Volume` (x, y, z array, RAS affine,
  ``spacing``, ``orientation``).
* :func:`verify_dataset` -- every integrity problem of a dataset root, one line each.
* :func:`build_index` / :func:`load_index` -- the checked description of every case.
* :func:`make_split` / :func:`make_all_splits` -- LOSO datalists (MONAI decathlon format);
  :func:`load_datalist` reads one back with absolute image/label paths.
* :class:`DatasetError` -- raised by all of the above, ``.problems`` the one-line messages.

Layout rules are in :mod:`tools.data.layout`, geometry conventions in :mod:`tools.data.io`, the
checks in :mod:`tools.data.verify`, the index and datalist formats in :mod:`tools.data.datalist`.
The simulator (:mod:`tools.data.synth`), transforms and evaluation are separate modules imported
on their own.
"""

from .datalist import (
    INDEX_FORMAT,
    build_index,
    datalist_filename,
    load_datalist,
    load_index,
    make_all_splits,
    make_split,
    num_validation,
)
from .io import DatasetError, Volume, read_json, read_volume, write_json
from .layout import OLD_SITE_NAMES, SITES, canonical_site, discover, site_display_name
from .verify import AFFINE_ATOL, LABEL_VALUES, scan_dataset, verify_dataset

__all__ = [
    "AFFINE_ATOL",
    "INDEX_FORMAT",
    "LABEL_VALUES",
    "OLD_SITE_NAMES",
    "SITES",
    "DatasetError",
    "Volume",
    "build_index",
    "canonical_site",
    "datalist_filename",
    "discover",
    "load_datalist",
    "load_index",
    "make_all_splits",
    "make_split",
    "num_validation",
    "read_json",
    "read_volume",
    "scan_dataset",
    "site_display_name",
    "verify_dataset",
    "write_json",
]
