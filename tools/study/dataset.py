"""The study's data: a folder of the six-site collection, or the simulator's sites synthesized on demand.

The simulated collection is a build output (never committed). Whether it is there is decided from the files
themselves: ``<out>/data/synthesis.json`` records the synthesis arguments, a fingerprint of the simulator's
source code and the SHA-256 of every file written; the data is reused only when all three still match what
is on disk and what this checkout would write. Anything else (a fresh clone, a deleted or edited volume, a
changed simulator) synthesizes the collection again, into a temporary folder that replaces the old one only
once it is complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, Optional, Tuple

from tools.data.io import sha256_file

__all__ = ["SYNTHETIC", "MARKER", "prepare_data", "simulator_fingerprint", "synthetic_data_problem"]

SYNTHETIC: Dict[str, int] = {"cases_per_site": 6, "size": 96, "seed": 0}
"""``tools.data.synth.synthesize`` arguments of ``--data synthetic`` (the simulator's default collection)."""

MARKER = "synthesis.json"
"""Written last, beside the site folders, once every volume of the collection is on disk."""

SIMULATOR_SOURCES = ("synth.py", "synthesis")
"""Paths under ``tools/data`` whose ``*.py`` files define what the simulator writes."""

NOT_SIMULATOR = ("synthesis/calibration.py",)
"""Files under :data:`SIMULATOR_SOURCES` that write nothing (the calibration tables of docs/realism.md): editing
them must not re-synthesize the data, which would remove every run of a study in progress."""



def simulator_fingerprint() -> str:
    """SHA-256 over the simulator's source files (relative path and bytes of each, in sorted order), without
    :data:`NOT_SIMULATOR`."""
    root = Path(__file__).resolve().parents[1] / "data"
    files = []
    for name in SIMULATOR_SOURCES:
        path = root / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    files = [path for path in files if path.relative_to(root).as_posix() not in NOT_SIMULATOR]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _data_files(folder: Path) -> Dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` except the marker."""
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MARKER
    }


def synthetic_data_problem(folder: Path) -> Optional[str]:
    """Why ``folder`` does not hold the collection this checkout's simulator writes with :data:`SYNTHETIC`,
    or ``None`` when it does (the marker's arguments, simulator fingerprint and every file's checksum match)."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return f"{marker} is missing"
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError) as error:
        return f"{marker} is unreadable ({error})"
    if not isinstance(record, dict) or record.get("arguments") != SYNTHETIC:
        return f"{marker} records other synthesis arguments than {SYNTHETIC}"
    if record.get("simulator") != simulator_fingerprint():
        return "the simulator's code changed since the data was written"
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return f"{marker} lists no files"
    on_disk = _data_files(Path(folder))
    missing = sorted(set(files) - set(on_disk))
    if missing:
        return f"{len(missing)} of {len(files)} recorded files are missing (first: {missing[0]})"
    changed = sorted(name for name, digest in files.items() if on_disk[name] != digest)
    if changed:
        return f"{len(changed)} file(s) differ from what was written (first: {changed[0]})"
    extra = sorted(set(on_disk) - set(files))
    if extra:
        return f"{len(extra)} file(s) were not written by the simulator (first: {extra[0]})"
    return None


def _synthesize(folder: Path) -> None:
    from tools.data.synth import synthesize

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    synthesize(partial, **SYNTHETIC)
    record = {"arguments": SYNTHETIC, "simulator": simulator_fingerprint(), "files": _data_files(partial)}
    (partial / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def prepare_data(data: str, out_dir: Path) -> Tuple[Path, str]:
    """``(dataset folder, description)`` for ``--data``.

    ``"synthetic"``: the simulator's collection (:data:`SYNTHETIC`) in ``<out_dir>/data``, synthesized unless
    :func:`synthetic_data_problem` finds it intact. When it is (re)synthesized, run folders under
    ``<out_dir>/runs`` were trained on other data and are removed, so that no stale result is reused.
    Anything else is a folder of the collection (real or simulated), which must exist.
    """
    if str(data).lower() != "synthetic":
        folder = Path(data).expanduser().resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"--data {data!r}: no such folder (give the six-site collection's root or 'synthetic').")
        return folder, f"`{folder}`"
    folder = (Path(out_dir) / "data").resolve()
    problem = synthetic_data_problem(folder)
    if problem is not None:
        print(f"synthesizing the six simulated sites into {folder} ({SYNTHETIC}): {problem} ...", flush=True)
        _synthesize(folder)
        runs = Path(out_dir) / "runs"
        if runs.is_dir():
            print(f"removing {runs}: its runs were trained on data that no longer exists", flush=True)
            shutil.rmtree(runs)
    args = ", ".join(f"{k}={v}" for k, v in SYNTHETIC.items())
    return folder, f"the simulator's six sites, `tools.data.synth.synthesize(out_dir, {args})` in `{folder.name}/`"
