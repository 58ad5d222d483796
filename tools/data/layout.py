"""Site names, file naming and case discovery for the multi-site prostate collection.

Sites. The six sites go by two naming schemes; the canonical names used everywhere in this project
(index, datalists, file names such as ``datalist_BMC.json``) are the newer ones, in the paper's
order S1..S6:

====  ===========  ==================  ==============
 #    canonical    old folder name     also accepted
====  ===========  ==================  ==============
 S1   RUNMC        ISBI
 S2   BMC          ISBI_1.5
 S3   HCRUDB       I2CVB               (newer zip)
 S4   UCL          UCL
 S5   BIDMC        BIDMC
 S6   HK           HK
====  ===========  ==================  ==============

:func:`canonical_site` maps any of these names, in any letter case, or ``S1``..``S6``, to the
canonical name. Site folders are matched the same way (``isbi``, ``Hk`` are fine).

Root. ``root`` either holds the site folders itself, or holds exactly one folder that does
(one level of nesting, e.g. ``root/Processed_data_nii/<site>``, as the zips unpack). The site
folders are looked for in ``root`` first; only if none is there, in each sub-folder of ``root``.
Two sub-folders holding site folders is an error (pass the right one as root).

Files. In a site folder, ``CaseNN<ext>`` is an image and ``CaseNN_segmentation<ext>`` its mask,
with ``<ext>`` one of ``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``. The ``_segmentation`` suffix
and the ``Case`` prefix are matched in any letter case (BMC writes ``_Segmentation``); the case id
is normalised to ``Case`` + the digits as written (``Case07``). Gaps in case numbers are normal.
Hidden files, MetaImage data files (``.raw``, ``.zraw``), files that are not volumes and
sub-folders are ignored; a volume file with any other name is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .io import DatasetError, PathLike, VOLUME_EXTENSIONS, volume_extension

__all__ = [
    "SITES",
    "OLD_SITE_NAMES",
    "canonical_site",
    "site_display_name",
    "parse_volume_name",
    "case_sort_key",
    "CaseFiles",
    "SiteFolder",
    "DatasetLayout",
    "find_site_dir",
    "discover",
]

SITES: Tuple[str, ...] = ("RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK")
"""Canonical site names in the paper's order S1..S6."""

OLD_SITE_NAMES: Dict[str, str] = {
    "RUNMC": "ISBI",
    "BMC": "ISBI_1.5",
    "HCRUDB": "I2CVB",
    "UCL": "UCL",
    "BIDMC": "BIDMC",
    "HK": "HK",
}
"""Canonical name -> folder name in the older (MS-Net) release."""

_ALIASES: Dict[str, str] = {}
for _number, _site in enumerate(SITES, start=1):
    for _alias in (_site, OLD_SITE_NAMES[_site], f"S{_number}"):
        _ALIASES[_alias.lower()] = _site
_FOLDER_ALIASES = {k: v for k, v in _ALIASES.items() if not re.fullmatch(r"s\d", k)}

_VOLUME_NAME = re.compile(
    r"^case(?P<digits>\d+)(?P<mask>_segmentation)?(?P<ext>" + "|".join(re.escape(e) for e in VOLUME_EXTENSIONS) + r")$",
    re.IGNORECASE,
)
_IGNORED_SUFFIXES = (".raw", ".zraw")
_IGNORED_DIRS = {"__macosx"}


def canonical_site(name: str) -> str:
    """The canonical site name for ``name``: either naming scheme, any letter case, or ``S1``..``S6``.

    Raises:
        DatasetError: for an unknown name; the message lists the accepted names.
    """
    site = _ALIASES.get(str(name).strip().lower())
    if site is None:
        accepted = ", ".join(f"{s}/{OLD_SITE_NAMES[s]}" if OLD_SITE_NAMES[s] != s else s for s in SITES)
        raise DatasetError(f"unknown site {name!r}: expected one of {accepted} (or S1..S6)")
    return site


def site_display_name(site: str) -> str:
    """``"RUNMC (ISBI)"`` for a site with two names, else the name."""
    old = OLD_SITE_NAMES[site]
    return site if old == site else f"{site} ({old})"


def parse_volume_name(filename: str) -> Optional[Tuple[str, bool]]:
    """``("Case07", is_mask)`` for ``Case07.nii.gz`` / ``case07_Segmentation.mha`` etc., else None."""
    match = _VOLUME_NAME.match(filename)
    if match is None:
        return None
    return "Case" + match.group("digits"), match.group("mask") is not None


def case_sort_key(case: str) -> Tuple[int, str]:
    """Sort key putting ``Case2`` before ``Case10`` (ids without digits first)."""
    digits = re.sub(r"\D", "", case)
    return (int(digits) if digits else -1), case


@dataclass(frozen=True)
class CaseFiles:
    """One case: its site (canonical), case id and the image and mask files."""

    site: str
    case: str
    image: Path
    label: Path


@dataclass
class SiteFolder:
    """A site folder and its complete cases (image + mask), sorted by case number."""

    site: str
    path: Path
    cases: List[CaseFiles] = field(default_factory=list)


@dataclass
class DatasetLayout:
    """What :func:`discover` found: ``root`` as given, ``site_dir`` holding the site folders, sites in S1..S6 order."""

    root: Path
    site_dir: Path
    sites: Dict[str, SiteFolder]

    @property
    def cases(self) -> List[CaseFiles]:
        return [case for folder in self.sites.values() for case in folder.cases]


def _is_visible_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and path.name.lower() not in _IGNORED_DIRS


def _site_folders(directory: Path) -> List[Path]:
    return sorted(p for p in directory.iterdir() if _is_visible_dir(p) and p.name.lower() in _FOLDER_ALIASES)


def find_site_dir(root: PathLike) -> Path:
    """The folder holding the site folders: ``root`` itself, or its one sub-folder that holds them.

    Raises:
        DatasetError: root missing, not a folder, empty, without site folders, or with several
            sub-folders holding site folders.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a folder")
    if not any(root.iterdir()):
        raise DatasetError(f"{root}: dataset root is empty")
    if _site_folders(root):
        return root
    nested = [p for p in sorted(root.iterdir()) if _is_visible_dir(p) and _site_folders(p)]
    if len(nested) > 1:
        names = ", ".join(p.name for p in nested)
        raise DatasetError(f"{root}: several folders hold site folders ({names}); pass one of them as the root")
    if not nested:
        expected = ", ".join(dict.fromkeys(list(SITES) + list(OLD_SITE_NAMES.values())))
        raise DatasetError(f"{root}: no site folders found here or one level below (expected folders named {expected})")
    return nested[0]


def _scan_site_folder(site: str, folder: Path, problems: List[str]) -> SiteFolder:
    images: Dict[str, Path] = {}
    labels: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or path.is_dir() or name.lower().endswith(_IGNORED_SUFFIXES):
            continue
        if volume_extension(name) is None:
            continue
        parsed = parse_volume_name(name)
        if parsed is None:
            problems.append(
                f"{path}: unexpected volume file name (expected CaseNN<ext> or CaseNN_segmentation<ext>)"
            )
            continue
        case, is_mask = parsed
        found = labels if is_mask else images
        if case in found:
            kind = "mask" if is_mask else "image"
            problems.append(f"{path}: second {kind} file for {case} (also {found[case].name})")
            continue
        found[case] = path
    for case in sorted(set(images) - set(labels), key=case_sort_key):
        problems.append(f"{images[case]}: image has no mask (expected {case}_segmentation<ext> beside it)")
    for case in sorted(set(labels) - set(images), key=case_sort_key):
        problems.append(f"{labels[case]}: mask has no image (expected {case}<ext> beside it)")
    paired = sorted(set(images) & set(labels), key=case_sort_key)
    if not paired:
        problems.append(f"{folder}: site {site_display_name(site)} has no cases (no CaseNN image with its mask)")
    cases = [CaseFiles(site=site, case=c, image=images[c], label=labels[c]) for c in paired]
    return SiteFolder(site=site, path=folder, cases=cases)


def discover(root: PathLike, sites: Optional[Sequence[str]] = None) -> Tuple[Optional[DatasetLayout], List[str]]:
    """Find the site folders under ``root`` and pair images with masks.

    Args:
        root: the dataset root (see the module docstring for the accepted layouts).
        sites: the sites to look for (any accepted names); default all six. Each must have a
            folder with at least one complete case.

    Returns:
        ``(layout, problems)``: problems are one-line messages naming a file or folder (missing
        site, two folders for one site, unpaired image or mask, duplicate case, odd file name,
        site without cases). ``layout`` is None when the root itself is unusable.
    """
    expected = list(SITES) if sites is None else [canonical_site(s) for s in sites]
    try:
        site_dir = find_site_dir(root)
    except DatasetError as err:
        return None, list(err.problems)
    problems: List[str] = []
    by_site: Dict[str, List[Path]] = {}
    for folder in _site_folders(site_dir):
        by_site.setdefault(_FOLDER_ALIASES[folder.name.lower()], []).append(folder)
    found: Dict[str, SiteFolder] = {}
    for site in SITES:
        if site not in expected:
            continue
        folders = by_site.get(site, [])
        if not folders:
            problems.append(f"{site_dir}: no folder for site {site_display_name(site)}")
            continue
        if len(folders) > 1:
            names = ", ".join(f.name for f in folders)
            problems.append(f"{site_dir}: several folders for site {site_display_name(site)} ({names})")
            continue
        found[site] = _scan_site_folder(site, folders[0], problems)
    return DatasetLayout(root=Path(root), site_dir=site_dir, sites=found), problems
