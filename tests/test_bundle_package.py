"""``python -m tools.bundles package``: a bundle as one self-contained Model Zoo folder (issue 12).

The fast tests check the folder and run it from its own folder (no PYTHONPATH; the package's ``scripts/`` wins
over the installed project). The slow test builds a fresh virtual environment holding only the packages that the
package's ``metadata.json`` names (no checkout on the path, no project install) and runs inference on the real
case, one epoch of training, the zoo's ``verify_net_in_out`` and distillation from a packaged teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from tools.bundles.package import package_bundle

REPO_ROOT = Path(__file__).resolve().parents[1]
STUDENT, TEACHER = "prostate_mri_enet_student", "prostate_mri_deeplabv3plus_teacher"
TEACHER_WIDTH = 0.125


def random_weights(bundle: str, path: Path, width=None) -> Path:
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / bundle / "configs" / "inference.yaml"))
    if width is not None:
        parser["network_width"] = width
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def", instantiate=True).state_dict(), path)
    return path


def run(command, cwd: Path, python: str = sys.executable, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([python, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} in {cwd}:\n{(result.stdout + result.stderr)[-5000:]}"
    return result


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    weights = random_weights(STUDENT, out / "student.pt")
    return package_bundle(STUDENT, out / "zoo", weights=weights)


def test_the_package_has_the_model_zoo_layout(packaged):
    for name in ("configs/metadata.json", "configs/train.yaml", "configs/inference.yaml", "configs/distill.yaml",
                 "docs/README.md", "LICENSE", "large_files.yml", "models/model.pt", "scripts/__init__.py",
                 "scripts/custom_nets/enet.py", "scripts/custom_losses/adaptive_affinity.py",
                 "scripts/tools/bundles/__init__.py", "scripts/tools/data/transforms.py"):
        assert (packaged / name).is_file(), name
    assert not list(packaged.rglob("__pycache__"))
    metadata = json.loads((packaged / "configs" / "metadata.json").read_text())
    assert "prostate-rkd" not in metadata["required_packages_version"]
    assert {"nibabel", "pytorch-ignite", "fire", "pyyaml"} <= set(metadata["required_packages_version"])
    large = yaml.safe_load((packaged / "large_files.yml").read_text())["large_files"]
    digest = hashlib.sha256((packaged / "models" / "model.pt").read_bytes()).hexdigest()
    assert large == [{"path": "models/model.pt", "url": "", "hash_val": digest, "hash_type": "sha256"}]
    for name in ("train.yaml", "inference.yaml"):
        imports = yaml.safe_load((packaged / "configs" / name).read_text())["imports"]
        assert imports[0] == "$import scripts" and "$import custom_nets" in imports


def test_the_package_runs_its_vendored_code(packaged):
    """From the package's folder (as the zoo runs bundles), the configs resolve to the copies in ``scripts/``."""
    probe = ("from monai.bundle import ConfigParser; p = ConfigParser(); p.read_config('configs/inference.yaml'); "
             "net = p.get_parsed_content('network_def'); import custom_nets, tools.bundles; "
             "print(custom_nets.__file__); print(p.get_parsed_content('bundle_root'))")
    lines = run(["-c", probe], cwd=packaged).stdout.strip().splitlines()
    assert lines[-2] == str(packaged / "scripts" / "custom_nets" / "__init__.py")
    assert lines[-1] == str(packaged)


def test_package_errors_leave_nothing_behind(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundle 'prostate_mri_nonet' not found"):
        package_bundle("prostate_mri_nonet", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.pt: no such file"):
        package_bundle(STUDENT, tmp_path, weights=tmp_path / "missing.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_packaged_bundles_run_in_a_clean_environment(tmp_path, real_case_dir):
    """A fresh venv with only the metadata's packages: inference on the real case, one epoch of CPU training,
    verify_net_in_out, and a packaged student distilling from a packaged teacher given by path."""
    zoo = tmp_path / "zoo"
    student = package_bundle(STUDENT, zoo, weights=random_weights(STUDENT, tmp_path / "s.pt"))
    teacher = package_bundle(TEACHER, zoo, weights=random_weights(TEACHER, tmp_path / "t.pt", TEACHER_WIDTH))
    metadata = json.loads((student / "configs" / "metadata.json").read_text())
    requirements = [f"torch=={metadata['pytorch_version']}", f"monai=={metadata['monai_version']}",
                    f"numpy=={metadata['numpy_version']}"]
    requirements += [f"{name}=={version}" for name, version in metadata["required_packages_version"].items()]
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    run(["-m", "pip", "install", "-q", *requirements], cwd=tmp_path, python=python, timeout=1800)
    missing = run(["-c", "import importlib.util as u; print([m for m in ('custom_nets', 'tools', 'custom_losses') "
                         "if u.find_spec(m)])"], cwd=tmp_path, python=python).stdout.strip()
    assert missing == "[]", f"the clean environment sees project code: {missing}"

    run(["-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--image_size", "64",
         "--input", str(real_case_dir / "Case00.nii.gz"), "--output_dir", str(tmp_path / "masks")], student, python)
    mask = tmp_path / "masks" / "Case00_seg.nii.gz"
    assert mask.is_file() and (tmp_path / "masks" / "Case00_seg.json").is_file()

    run(["-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
         "--config_file", "configs/inference.yaml", "--device", "cpu"], student, python)

    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "tools.data", "synth", "--out", str(data), "--cases-per-site", "2",
                    "--size", "48", "--seed", "0"], check=True, cwd=REPO_ROOT, timeout=600)
    tiny = ["--dataset_dir", str(data), "--image_size", "32", "--max_epochs", "1", "--val_interval", "1",
            "--num_samples", "2", "--num_workers", "0", "--progress", "False", "--lr_step_size", "10"]
    configs = "['configs/train.yaml','configs/profile_cpu.yaml']"
    run(["-m", "monai.bundle", "run", "training", "--config_file", configs, "--network_width", str(TEACHER_WIDTH),
         *tiny], teacher, python)
    run(["-m", "monai.bundle", "run", "training", "--config_file", configs, *tiny], student, python)
    distill = "['configs/train.yaml','configs/distill.yaml','configs/profile_cpu.yaml']"
    run(["-m", "monai.bundle", "run", "training", "--config_file", distill, "--teacher_bundle", str(teacher),
         "--teacher_width", str(TEACHER_WIDTH), *tiny], student, python)
    assert list((student / "models").glob("distill_checkpoint_epoch=1.pt"))
    state = torch.load(student / "models" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
