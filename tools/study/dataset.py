"""The study's data: a folder of the six-site collection, or the simulator's sites synthesized on demand.

The simulated collection is a build output (never committed). Whether it is there is decided from the files
themselves: ``<out>/data/synthesis.json`` records the synthesis arguments, a fingerprint of the simulator's
source code and the SHA-256 of every file written; the data is reused only when all three still match what
is on disk and what this checkout would write. Anything else (a fresh clone, a deleted or edited volume, a
changed simulator) synthesizes the collection again, into a temporary folder that replaces the old one only
once it is complete.

The runs of a study folder record the data they were trained on: ``<out>/runs/data.json`` holds the SHA-256 of
every file of the collection. The simulator is deterministic (the same code and arguments write the same bytes), so
a fresh clone that synthesizes the collection again keeps runs whose record matches the new files: that is how a
study longer than one session resumes from the run results it committed (their evaluation CSVs, not their
weights). Runs with no record, or with a record of other files, are removed when the data is (re)synthesized.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, Optional, Tuple

from tools.data.io import sha256_file

__all__ = ["SYNTHETIC", "MARKER", "RUNS_RECORD", "prepare_data", "simulator_fingerprint", "synthetic_data_problem"]

SYNTHETIC: Dict[str, int] = {"cases_per_site": 6, "size": 96, "seed": 0}
"""``tools.data.synth.synthesize`` arguments of ``--data synthetic`` (the simulator's default collection)."""

MARKER = "synthesis.json"
"""Written last, beside the site folders, once every volume of the collection is on disk."""

RUNS_RECORD = "data.json"
"""``<out>/runs/data.json``: ``{"files": {relative path: sha256}}`` of the collection the runs were trained on."""

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


def _keep_runs_of_this_data(runs: Path, data: Path, synthesized: bool) -> None:
    """Remove ``runs`` unless they were trained on the files now in ``data``, then record those files.

    Kept: runs whose :data:`RUNS_RECORD` lists exactly the collection's files and checksums, and runs without a record
    beside data that was not just synthesized (written before the record existed, on the intact data). Removed:
    runs with a record of other files, and runs without one when the data was (re)synthesized.
    """
    files = json.loads((data / MARKER).read_text())["files"]
    record_path = runs / RUNS_RECORD
    if runs.is_dir():
        try:
            recorded = json.loads(record_path.read_text()).get("files") if record_path.is_file() else None
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded == files:
            if synthesized:
                print(f"keeping {runs}: they were trained on these same files ({record_path.name} matches)", flush=True)
        elif recorded is not None or synthesized:
            print(f"removing {runs}: its runs were trained on data that no longer exists", flush=True)
            shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")


def prepare_data(data: str, out_dir: Path) -> Tuple[Path, str]:
    """``(dataset folder, description)`` for ``--data``.

    ``"synthetic"``: the simulator's collection (:data:`SYNTHETIC`) in ``<out_dir>/data``, synthesized unless
    :func:`synthetic_data_problem` finds it intact. Run folders under ``<out_dir>/runs`` trained on other data are
    removed, so that no stale result is reused (:func:`_keep_runs_of_this_data`).
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
    _keep_runs_of_this_data(Path(out_dir) / "runs", folder, synthesized=problem is not None)
    args = ", ".join(f"{k}={v}" for k, v in SYNTHETIC.items())
    return folder, f"the simulator's six sites, `tools.data.synth.synthesize(out_dir, {args})` in `{folder.name}/`"
