"""Every ``python -m tools.<cli>`` ends bad input with a short message and exit status 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools.cli import error_lines, one_line_errors
from tools.data.io import DatasetError


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
