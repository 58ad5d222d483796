"""The study's simulated data (issue 8): synthesized whenever the files are not actually there.

The first test is the bug a new user met: a marker committed without the volumes it describes made the
study skip synthesis on a fresh clone. It clones this repository (its committed HEAD) and runs the study's
data preparation there, as ``python -m tools.study run`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.study import dataset
from tools.study.dataset import MARKER, prepare_data, synthetic_data_problem

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = {"cases_per_site": 1, "size": 32, "seed": 0}


def test_a_fresh_clone_synthesizes_the_sites(tmp_path):
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    script = textwrap.dedent("""
        from pathlib import Path
        import tools.study.dataset
        assert Path(tools.study.dataset.__file__).resolve().is_relative_to(Path.cwd().resolve()), tools.study.dataset.__file__
        tools.study.dataset.prepare_data("synthetic", Path("results/cpu_default"))  # what `tools.study run` calls
    """)
    env = dict(os.environ, PYTHONPATH=str(clone))

    def prepare():
        result = subprocess.run([sys.executable, "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    first = prepare()
    assert "synthesizing the six simulated sites" in first
    data = clone / "results" / "cpu_default" / "data"
    sites = sorted(p.name for p in data.iterdir() if p.is_dir())
    assert sites == ["BIDMC", "HK", "I2CVB", "ISBI", "ISBI_1.5", "UCL"]
    cases = dataset.SYNTHETIC["cases_per_site"]
    for site in sites:
        assert len(list((data / site).glob("Case*.nii.gz"))) == 2 * cases, site  # images and masks
    assert synthetic_data_problem(data) is None
    assert "synthesizing" not in prepare()  # intact now: reused


@pytest.fixture
def small_synthetic(monkeypatch):
    monkeypatch.setattr(dataset, "SYNTHETIC", dict(SMALL))
    return SMALL


def _prepare(out: Path, capsys) -> str:
    folder, description = prepare_data("synthetic", out)
    assert folder == (out / "data").resolve() and "simulator's six sites" in description
    return capsys.readouterr().out


def test_reused_only_while_every_file_is_intact(tmp_path, capsys, small_synthetic):
    out = tmp_path / "study"
    assert "synthesizing" in _prepare(out, capsys)
    data = out / "data"
    record = json.loads((data / MARKER).read_text())
    assert record["arguments"] == SMALL and len(record["files"]) == 6 * 2
    assert synthetic_data_problem(data) is None
    assert "synthesizing" not in _prepare(out, capsys)

    image = sorted(data.glob("BIDMC/Case*.nii.gz"))[0]
    image.unlink()
    assert "missing" in synthetic_data_problem(data)
    assert "1 of 12 recorded files are missing" in _prepare(out, capsys)
    assert image.is_file() and synthetic_data_problem(data) is None

    image.write_bytes(image.read_bytes()[:-10])
    assert "differ from what was written" in _prepare(out, capsys)
    (data / "HK" / "Case99.nii.gz").write_bytes(b"x")
    assert "not written by the simulator" in _prepare(out, capsys)
    assert not (data / "HK" / "Case99.nii.gz").exists()  # the old folder was replaced whole


def test_a_marker_without_its_data_synthesizes(tmp_path, capsys, small_synthetic):
    data = tmp_path / "study" / "data"
    data.mkdir(parents=True)
    (data / MARKER).write_text(json.dumps(SMALL) + "\n")  # the marker the repository once committed
    assert "synthesizing" in _prepare(tmp_path / "study", capsys)
    assert synthetic_data_problem(data) is None


def test_other_data_drops_stale_runs(tmp_path, capsys, small_synthetic, monkeypatch):
    out = tmp_path / "study"
    _prepare(out, capsys)
    stale = out / "runs" / "BIDMC" / "seed0" / "model"
    stale.mkdir(parents=True)
    monkeypatch.setattr(dataset, "simulator_fingerprint", lambda: "another simulator")
    monkeypatch.setattr(dataset, "SYNTHETIC", dict(SMALL, seed=1))  # a simulator that writes other volumes
    assert "other synthesis arguments" in synthetic_data_problem(out / "data")
    printed = _prepare(out, capsys)
    assert "synthesizing" in printed and "removing" in printed
    assert not stale.exists() and synthetic_data_problem(out / "data") is None
    record = json.loads((out / "runs" / dataset.RUNS_RECORD).read_text())["files"]
    assert record == json.loads((out / "data" / MARKER).read_text())["files"]  # the new runs' data


def test_runs_of_the_same_files_survive_a_new_synthesis(tmp_path, capsys, small_synthetic, monkeypatch):
    """A fresh clone that synthesizes again keeps the runs it committed: the simulator writes the same bytes."""
    out = tmp_path / "study"
    _prepare(out, capsys)
    finished = out / "runs" / "BIDMC" / "seed0" / "model" / "eval"
    finished.mkdir(parents=True)
    (finished / "metrics.csv").write_text("mean_dice\t0.5\n")
    shutil.rmtree(out / "data")  # what a fresh clone has: the runs' results, no data
    printed = _prepare(out, capsys)
    assert "synthesizing" in printed and "keeping" in printed and "removing" not in printed
    assert (finished / "metrics.csv").read_text() == "mean_dice\t0.5\n"

    monkeypatch.setattr(dataset, "simulator_fingerprint", lambda: "an edited simulator writing the same bytes")
    printed = _prepare(out, capsys)
    assert "simulator's code changed" in printed and "keeping" in printed and finished.is_dir()

    record = out / "runs" / dataset.RUNS_RECORD
    files = json.loads(record.read_text())
    files["files"][next(iter(files["files"]))] = "0" * 64  # the runs were trained on another version of one file
    record.write_text(json.dumps(files))
    assert "removing" in _prepare(out, capsys) and not finished.exists()


def test_runs_without_a_record_are_kept_on_intact_data_only(tmp_path, capsys, small_synthetic):
    out = tmp_path / "study"
    _prepare(out, capsys)
    legacy = out / "runs" / "BIDMC" / "seed0" / "model"
    legacy.mkdir(parents=True)
    (out / "runs" / dataset.RUNS_RECORD).unlink()  # runs written before the record existed
    assert "removing" not in _prepare(out, capsys) and legacy.is_dir()
    assert (out / "runs" / dataset.RUNS_RECORD).is_file()  # recorded now
    (out / "runs" / dataset.RUNS_RECORD).unlink()
    shutil.rmtree(out / "data")
    assert "removing" in _prepare(out, capsys) and not legacy.exists()


def test_simulator_fingerprint_covers_the_simulator_sources():
    fingerprint = dataset.simulator_fingerprint()
    assert len(fingerprint) == 64 and fingerprint == dataset.simulator_fingerprint()
    sources = Path(dataset.__file__).resolve().parents[1] / "data"
    assert (sources / "synth.py").is_file() and (sources / "synthesis").is_dir()


def test_fingerprint_follows_the_simulator_code_but_not_the_calibration_tables(tmp_path, monkeypatch):
    """A copy of tools/data: editing a simulator module changes the fingerprint, editing calibration.py does not."""
    import shutil

    real_root = Path(dataset.__file__).resolve().parents[1] / "data"
    fake_tools = tmp_path / "tools"
    shutil.copytree(real_root, fake_tools / "data", ignore=shutil.ignore_patterns("__pycache__"))
    (fake_tools / "study").mkdir()
    monkeypatch.setattr(dataset, "__file__", str(fake_tools / "study" / "dataset.py"))
    before = dataset.simulator_fingerprint()
    assert before == dataset.simulator_fingerprint()
    calibration = fake_tools / "data" / "synthesis" / "calibration.py"
    calibration.write_text(calibration.read_text() + "\n# a new row of the docs\n")
    assert dataset.simulator_fingerprint() == before
    anatomy = fake_tools / "data" / "synthesis" / "anatomy.py"
    anatomy.write_text(anatomy.read_text() + "\n# any edit\n")
    assert dataset.simulator_fingerprint() != before


def test_a_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        prepare_data(str(tmp_path / "nowhere"), tmp_path / "study")
