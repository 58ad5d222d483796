"""``configs/multi_gpu_train.yaml`` under torchrun (issue 4, "Beyond one machine"): two CPU processes with gloo.

One student bundle (ENet) runs ``python -m torch.distributed.run --standalone --nproc_per_node=2 -m monai.bundle
run training`` on a tiny synthetic set, for one epoch of plain training (then a resumed second epoch) and one
epoch of distillation, from copies of the bundles in pytest's tmp folder (``--bundle_root``). The checks: both
ranks ran and split the volumes, only rank 0 logged and wrote files, ``models/model.pt`` is the bare student, the
resumable checkpoint resumes on every rank, and the all-gathered key metric is the Dice of the saved model on
the whole validation set.

The distillation teacher is the DeepLabV3+ bundle's own ``network_def`` at width 1/8 with its initial weights
saved as ``models/model.pt``: distill.yaml loads it exactly as it loads a trained one, and training it first
would cost a minute here without testing anything of multi-GPU training.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import torch

from monai.bundle import ConfigParser

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"
STUDENT = "prostate_mri_enet_student"
TEACHER = "prostate_mri_deeplabv3plus_teacher"  # distill.yaml's default teacher_name
TEACHER_WIDTH = 0.125
WORLD_SIZE = 2
TARGET_SITE = "BIDMC"  # train.yaml's default
TINY = {
    "image_size": 32,
    "max_epochs": 1,
    "val_interval": 1,
    "num_samples": 2,
    "volumes_per_batch": 1,
    "num_workers": 0,
    "progress": False,
}
TIMEOUT_S = 300  # a rank that waits in a collective forever fails the test instead of hanging it
KEY_METRIC = re.compile(r"Key metric: val_mean_dice best value: (\S+) at epoch: (\d+)")
ITERATION_LOG = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+) -- (.*)")


def copy_bundles(destination: Path) -> Path:
    """The student and teacher bundles' configs copied to ``destination`` (siblings, as distill.yaml expects)."""
    for bundle in (STUDENT, TEACHER):
        shutil.copytree(BUNDLES_DIR / bundle / "configs", destination / bundle / "configs")
    return destination


def torchrun(config_files: Sequence[Path], overrides: Dict[str, object], cwd: Path) -> str:
    """``torchrun --standalone --nproc_per_node=2 -m monai.bundle run training`` with ``overrides``; returns the
    output of both ranks, or fails the test with its tail. On timeout the whole process group is killed."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}"]
    args += ["-m", "monai.bundle", "run", "training", "--config_file", "[" + ",".join(f"'{f}'" for f in config_files) + "]"]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]  # str(False) == "False", which fire parses as a bool
    # no GPU: the gloo fallback is what this test checks, also on a machine that has GPUs
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(
        args, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s (a deadlock?):\n{output[-6000:]}")
    if process.returncode != 0:
        pytest.fail(f"torchrun exited with {process.returncode}:\n{output[-6000:]}")
    return output


def bundle_parser(bundle_root: Path, config_files: Sequence[str], overrides: Dict[str, object]) -> ConfigParser:
    """The bundle's configs (single process) with ``overrides``."""
    parser = ConfigParser()
    parser.read_config([str(bundle_root / "configs" / name) for name in config_files])
    parser.update(overrides)
    return parser


def resumable_checkpoint(models: Path, epoch: int) -> Path:
    """The one resumable checkpoint of ``epoch`` in ``models``: ``<prefix>_checkpoint_epoch=<epoch>.pt``."""
    checkpoints = sorted(models.glob(f"*_checkpoint_epoch={epoch}.pt"))
    assert len(checkpoints) == 1, sorted(p.name for p in models.iterdir())
    return checkpoints[0]


def event_file_pids(log_dir: Path) -> set:
    """Process ids of the TensorBoard event files in ``log_dir`` (``events.out.tfevents.<time>.<host>.<pid>.<n>``)."""
    return {path.name.split(".")[-2] for path in log_dir.glob("events.out.tfevents.*")}


def iteration_logs(output: str) -> List[re.Match]:
    """The trainer's StatsHandler lines ``Epoch: e/E, Iter: i/N -- loss: ...``."""
    return list(ITERATION_LOG.finditer(output))


def assert_ranks_and_shares(output: str, n_train: int, epoch: int = 1) -> None:
    """Both ranks joined one gloo group; each ran ceil(n_train / 2) iterations (its share), logged once (rank 0)."""
    for rank in range(WORLD_SIZE):
        assert f"rank {rank} of world size {WORLD_SIZE}: backend gloo, device cpu" in output, output[-3000:]
    steps = [m for m in iteration_logs(output) if int(m.group(1)) == epoch]
    share = math.ceil(n_train / WORLD_SIZE)
    assert share < n_train
    assert [int(m.group(3)) for m in steps] == [share] * share, f"iteration logs of epoch {epoch}: {[m.group(0) for m in steps]}"
    assert [int(m.group(2)) for m in steps] == list(range(1, share + 1))


def assert_bare_student(state_dict: Dict[str, torch.Tensor], bundle_root: Path, overrides: Dict[str, object]) -> None:
    """``state_dict`` is the student's own (no ``module.`` of DDP, no ``student.`` of DistillationModel)."""
    network = bundle_parser(bundle_root, ["train.yaml"], overrides).get_parsed_content("network_def")
    assert not any(key.startswith(("module.", "student.", "loss.")) for key in state_dict), sorted(state_dict)[:5]
    network.load_state_dict(state_dict, strict=True)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multi_gpu_data") / "sites"
    subprocess.run(
        [sys.executable, "-m", "tools.data", "synth", "--out", str(out), "--cases-per-site", "2", "--size", "48", "--seed", "0"],
        cwd=str(REPO_ROOT),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def split_sizes(dataset_dir) -> Dict[str, int]:
    from tools.bundles import loso_datalist

    datalist = loso_datalist(str(dataset_dir), TARGET_SITE)
    sizes = {key: len(datalist[key]) for key in ("training", "validation")}
    assert sizes["validation"] >= WORLD_SIZE, sizes  # each rank validates at least one case
    return sizes


def test_training_under_torchrun(tmp_path, dataset_dir, split_sizes):
    root = copy_bundles(tmp_path / "bundles") / STUDENT
    configs = [root / "configs" / "train.yaml", root / "configs" / "multi_gpu_train.yaml"]
    overrides = dict(TINY, dataset_dir=dataset_dir, bundle_root=root)

    output = torchrun(configs, overrides, cwd=tmp_path)
    assert_ranks_and_shares(output, split_sizes["training"])

    # rank 0 alone logs (one process wrote the trainer's and the evaluator's event files) and saves
    assert len(event_file_pids(root / "logs")) == 1, sorted(p.name for p in (root / "logs").iterdir())
    assert len(KEY_METRIC.findall(output)) == 1, output[-3000:]
    model_file = root / "models" / "model.pt"
    checkpoint_file = resumable_checkpoint(root / "models", epoch=1)
    assert sorted(p.name for p in (root / "models").iterdir()) == sorted([model_file.name, checkpoint_file.name])
    state_dict = torch.load(model_file, map_location="cpu", weights_only=True)
    assert_bare_student(state_dict, root, overrides)
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    assert set(checkpoint) == {"model", "optimizer", "lr_scheduler", "trainer"}
    share = math.ceil(split_sizes["training"] / WORLD_SIZE)
    assert (checkpoint["trainer"]["iteration"], checkpoint["trainer"]["epoch_length"]) == (share, share)  # epoch 1
    assert_bare_student(checkpoint["model"], root, overrides)

    # the key metric, all-gathered over the ranks' validation shares, is the Dice of model.pt on every
    # validation case, computed here in one process
    logged_dice, epoch = KEY_METRIC.search(output).groups()
    parser = bundle_parser(root, ["train.yaml"], overrides)
    parser["validate#handlers"] = []  # evaluate only: no logger, no saver
    parser.get_parsed_content("network").load_state_dict(state_dict)
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    assert evaluator.state.iteration == split_sizes["validation"]
    assert float(logged_dice) == pytest.approx(evaluator.state.metrics["val_mean_dice"], abs=1e-6)
    assert int(epoch) == 1

    # the resumable checkpoint resumes on both ranks: epoch 2 runs, and rank 0 saves its checkpoint
    output = torchrun(configs, dict(overrides, max_epochs=2), cwd=tmp_path)
    assert output.count(f"SupervisedTrainer - INFO - Restored all variables from {checkpoint_file}") == WORLD_SIZE
    assert_ranks_and_shares(output, split_sizes["training"], epoch=2)
    assert all(int(match.group(1)) == 2 for match in iteration_logs(output))
    checkpoint_file = resumable_checkpoint(root / "models", epoch=2)
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    assert checkpoint["trainer"]["iteration"] == 2 * share


def test_distillation_under_torchrun(tmp_path, dataset_dir, split_sizes):
    bundles = copy_bundles(tmp_path / "bundles")
    root, teacher_root = bundles / STUDENT, bundles / TEACHER
    teacher = bundle_parser(teacher_root, ["inference.yaml"], {"network_width": TEACHER_WIDTH})
    (teacher_root / "models").mkdir()
    torch.save(teacher.get_parsed_content("network_def").state_dict(), teacher_root / "models" / "model.pt")
    configs = [root / "configs" / name for name in ("train.yaml", "distill.yaml", "multi_gpu_train.yaml")]
    overrides = dict(TINY, dataset_dir=dataset_dir, bundle_root=root, teacher_width=TEACHER_WIDTH)

    output = torchrun(configs, overrides, cwd=tmp_path)
    assert_ranks_and_shares(output, split_sizes["training"])
    for match in iteration_logs(output):  # rank 0 logs every term of eq. 8
        assert {"loss:", "loss_seg:", "loss_logits:", "loss_kernel:", "loss_affinity:"} <= set(match.group(4).split())

    assert len(event_file_pids(root / "logs")) == 1
    models = root / "models"
    checkpoint_file = resumable_checkpoint(models, epoch=1)
    assert sorted(p.name for p in models.iterdir()) == sorted(["model.pt", checkpoint_file.name])
    assert_bare_student(torch.load(models / "model.pt", map_location="cpu", weights_only=True), root, overrides)
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    assert set(checkpoint) == {"model", "optimizer", "lr_scheduler", "trainer", "distillation_loss"}
    assert_bare_student(checkpoint["model"], root, overrides)
    # the optimizer trained the student and the KM adapters / AA weights together, through the DDP wrapper
    student = bundle_parser(root, ["train.yaml"], overrides).get_parsed_content("network_def")
    assert len(checkpoint["optimizer"]["state"]) > len(list(student.parameters()))
    assert checkpoint["distillation_loss"]  # the adapters' and AA weights' state resumes with the student
    assert not (teacher_root / "logs").exists()  # the teacher is only read
