"""Every ``python -m tools.<cli>`` ends bad input with a short message and exit status 1, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.cli import error_lines, one_line_errors
from tools.data.io import DatasetError

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_error_lines():
    assert error_lines(ValueError("bad --sites")) == ["error: bad --sites"]
    assert error_lines(FileNotFoundError(2, "No such file or directory", "/x/y.nii.gz")) == [
        "/x/y.nii.gz: No such file or directory"]
    assert error_lines(DatasetError(["a.nii.gz: NaN", "b.nii.gz: empty mask"])) == ["a.nii.gz: NaN", "b.nii.gz: empty mask"]
    assert error_lines(ValueError("first\nsecond")) == ["error: first", "  second"]
    assert error_lines(KeyError("prostate")) == ["error: 'prostate'"]


def test_one_line_errors_exits_1_for_bad_input_and_keeps_bugs(capsys):
    @one_line_errors
    def bad_input():
        raise ValueError("--size must be positive, got -1")

    @one_line_errors
    def bug():
        raise ZeroDivisionError("a bug")

    with pytest.raises(SystemExit) as exit_info:
        bad_input()
    assert exit_info.value.code == 1 and capsys.readouterr().err == "error: --size must be positive, got -1\n"
    with pytest.raises(ZeroDivisionError):
        bug()
    assert one_line_errors(lambda: 3)() == 3


@pytest.mark.parametrize(
    "args, expected",
    [
        (["tools.study", "run", "--sites", "NOWHERE"], "unknown site 'NOWHERE'"),
        (["tools.study", "plan", "--students", "resnet"], "resnet"),
        (["tools.study", "run", "--data", "/nonexistent/prostate"], "/nonexistent/prostate"),
        (["tools.bench", "distill", "--profile", "nope"], "unknown profile 'nope'"),
        (["tools.data", "verify", "--root", "/nonexistent"], "/nonexistent"),
    ],
)
def test_every_cli_refuses_bad_input_in_a_few_lines(args, expected, tmp_path):
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def test_unknown_options_are_found_before_the_command_runs():
    from tools.cli import unknown_options

    def command(sites="BIDMC", report_only=False, ablation_sites=None):
        raise AssertionError("never called")

    assert unknown_options(command, ["--sites", "all", "--report_only", "True", "--ablation-sites=BIDMC"]) == []
    assert unknown_options(command, ["--noreport_only", "--help", "positional"]) == []
    assert unknown_options(command, ["--ablation_site", "BIDMC", "--report-onl=1"]) == ["--ablation_site", "--report-onl"]
    assert unknown_options(command, ["--", "--verbose"]) == []  # fire's own flags
    assert unknown_options(lambda **kwargs: None, ["--anything"]) == []


def test_a_misspelt_option_stops_a_command_before_it_starts(tmp_path):
    """Fire would run ``tools.study run`` in full and complain about the option only afterwards."""
    out = tmp_path / "study"
    result = subprocess.run([sys.executable, "-m", "tools.study", "run", "--out", str(out), "--ablation_site", "BIDMC"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: tools.study run: unknown option(s) --ablation_site (it takes --profile")
    assert not out.exists()  # nothing synthesized, nothing trained


def test_a_study_folder_in_use_is_refused_in_one_line(tmp_path):
    from tools.study.__main__ import hold_study_folder

    held = hold_study_folder(tmp_path / "study")
    result = subprocess.run([sys.executable, "-m", "tools.study", "run", "--out", str(tmp_path / "study")],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == (f"error: {tmp_path / 'study'} is in use by another `tools.study run` "
                                      f"(pid {os.getpid()}): wait for it to end, or pass another --out.")
    assert not (tmp_path / "study" / "data").exists()
    held.close()  # released: the folder can be taken again
    hold_study_folder(tmp_path / "study").close()
