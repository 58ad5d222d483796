"""The Makefile's MONAI Label environment: created only where the disk has room for it, updated where it exists.

``.venv-monailabel`` needs about 8 GiB (torch 2.14.1 is a CUDA build). These tests run ``make setup-monailabel``
against a temporary ``MONAILABEL_VENV``: nothing is installed (a threshold larger than any disk, and a fake venv
whose ``pip`` only records its arguments).
"""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

#: More GiB than any disk has: the free-space check always refuses to create a new environment.
HUGE_GIB = 10**9


def make_setup_monailabel(venv: Path, min_free_gib: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-C", str(REPO_ROOT), "setup-monailabel", f"MONAILABEL_VENV={venv}", f"MONAILABEL_MIN_FREE_GIB={min_free_gib}"],
        capture_output=True, text=True, timeout=60,
    )


def fake_venv(venv: Path, scripts: dict) -> Path:
    """``venv/bin/<tool>`` as a shell script running ``scripts[tool]``, for each tool; returns ``venv``."""
    (venv / "bin").mkdir(parents=True)
    for tool, body in scripts.items():
        script = venv / "bin" / tool
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return venv


def test_no_new_environment_on_a_full_disk(tmp_path):
    venv = tmp_path / "venv-monailabel"
    result = make_setup_monailabel(venv, HUGE_GIB)
    assert result.returncode == 0, result.stderr
    assert f"not creating {venv}" in result.stdout and "tests/test_monailabel.py will be skipped" in result.stdout
    assert not venv.exists()  # no venv, no stamp: the next `make test` tries again


def test_an_existing_environment_is_updated_whatever_the_free_space(tmp_path):
    calls = tmp_path / "pip_calls.txt"
    venv = fake_venv(tmp_path / "venv-monailabel", {tool: f'echo "{tool} $*" >> {calls}' for tool in ("python", "pip")})
    result = make_setup_monailabel(venv, HUGE_GIB)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert lines == [
        "pip install --no-cache-dir -r requirements-monailabel.txt",
        "pip install --no-cache-dir --no-deps -e .",
    ]
    assert (venv / "installed.stamp").exists()
    # up to date now: a second call installs nothing
    assert make_setup_monailabel(venv, HUGE_GIB).returncode == 0
    assert len(calls.read_text().splitlines()) == 2


def test_a_failed_install_fails_make_and_writes_no_stamp(tmp_path):
    venv = fake_venv(tmp_path / "venv-monailabel", {"python": "exit 0", "pip": "exit 3"})
    result = make_setup_monailabel(venv, 0)
    assert result.returncode != 0
    assert not (venv / "installed.stamp").exists()
