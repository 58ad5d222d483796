"""The five MONAI bundles under ``bundles/`` (issue 4): layout, metadata, shared config sections, and every
user-facing command on a tiny synthetic set.

Every run writes into copies of the bundles under pytest's tmp folders (``--bundle_root``), never into the
checkout. The user-facing commands of one teacher (DeepLabV3+: training) and one student (ENet: distillation,
evaluation, inference, ``ckpt_export``, ``verify_net_in_out``, a missing teacher) run as subprocesses of
``python -m monai.bundle`` exactly as the README gives them; the other bundles run the same config files
in-process through ``monai.bundle.ConfigWorkflow`` with the same run ids, which is what ``monai.bundle run``
does, without paying for a new interpreter each time.

Torch runs single-threaded here: on the shared 2-core machine two OpenMP threads per process under load made
the small convolutions 10-100x slower.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from monai.bundle import ConfigParser, ConfigWorkflow

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"

TEACHERS = ("prostate_mri_unetpp_teacher", "prostate_mri_deeplabv3plus_teacher")
STUDENTS = ("prostate_mri_enet_student", "prostate_mri_espnet_student", "prostate_mri_erfnet_student")
BUNDLES = TEACHERS + STUDENTS
NETWORK_CLASSES = {
    "prostate_mri_unetpp_teacher": "custom_nets.NestedUNet",
    "prostate_mri_deeplabv3plus_teacher": "custom_nets.DeepLabV3Plus",
    "prostate_mri_enet_student": "custom_nets.ENet",
    "prostate_mri_espnet_student": "custom_nets.ESPNet",
    "prostate_mri_erfnet_student": "custom_nets.ERFNet",
}
DISTILL_TEACHER = "prostate_mri_deeplabv3plus_teacher"  # distill.yaml's default teacher_name
CLI_TEACHER = "prostate_mri_deeplabv3plus_teacher"  # trained through the command line
CLI_STUDENT = "prostate_mri_enet_student"  # distilled, evaluated, served, exported through the command line
FAST_STUDENT = "prostate_mri_espnet_student"  # the cheapest network, for the resume and teacher tests

TEACHER_WIDTH = 0.125  # teachers train here at 1/8 width; students keep their default width (they are small)
TARGET_SITE = "BIDMC"  # train.yaml's default target_site
# the CPU sizes of one epoch in seconds: 32x32 slices, 2 slices per volume, 2 volumes per step
TINY = {
    "image_size": 32,
    "max_epochs": 1,
    "val_interval": 1,
    "num_samples": 2,
    "volumes_per_batch": 2,
    "num_workers": 0,
    "cache_rate": 1.0,
    "progress": False,
    "lr_step_size": 10,
}
SHARED_MARKER = "# ---- shared by the five bundles"
HEADER_KEYS = {"imports", "bundle_name", "network_width", "network_def"}
LOSS_TAGS = {"loss", "loss_seg", "loss_logits", "loss_kernel", "loss_affinity"}


# ----------------------------------------------------------------------------------------------- helpers


def configs(bundle: str) -> Path:
    """``bundles/<bundle>/configs`` of the checkout (the config files every run reads)."""
    return BUNDLES_DIR / bundle / "configs"


def width_of(bundle: str) -> Optional[float]:
    """The network width the tests train ``bundle`` at (None: the bundle's default)."""
    return TEACHER_WIDTH if bundle in TEACHERS else None


def run_overrides(bundle: str, dataset_dir: Path, bundle_root: Path, **extra) -> dict:
    """Overrides of one tiny run of ``bundle`` from ``bundle_root`` on ``dataset_dir``."""
    overrides = dict(TINY, dataset_dir=str(dataset_dir), bundle_root=str(bundle_root))
    if width_of(bundle) is not None:
        overrides["network_width"] = width_of(bundle)
    if bundle in STUDENTS:
        overrides["teacher_width"] = TEACHER_WIDTH  # only read by distill.yaml
    overrides.update(extra)
    return overrides


def cli_args(overrides: dict) -> List[str]:
    """``--key value`` pairs as ``python -m monai.bundle`` (fire) reads them."""
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]  # str(False) == "False", which fire parses as a bool
    return args


def config_list(*files: Path) -> str:
    """The ``--config_file "['a.yaml','b.yaml']"`` form of several config files."""
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def monai_bundle(args: Sequence[str], cwd: Path, expect_success: bool = True) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` in ``cwd``, single-threaded torch; fails the test with the output tail."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if expect_success and result.returncode != 0:
        pytest.fail(
            f"python -m monai.bundle {' '.join(args)} failed with exit code {result.returncode}:\n"
            f"{(result.stdout + result.stderr)[-6000:]}"
        )
    return result


def workflow(
    config_files: Sequence[Path], run_id: str, workflow_type: Optional[str] = None, **overrides
) -> ConfigWorkflow:
    """An initialised in-process ``ConfigWorkflow`` of ``config_files`` (the first one's bundle metadata)."""
    files = [str(f) for f in config_files]
    wf = ConfigWorkflow(
        config_file=files,
        meta_file=str(Path(files[0]).parent / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        run_id=run_id,
        **overrides,
    )
    wf.initialize()
    return wf


def run_workflow(config_files: Sequence[Path], run_id: str, **overrides) -> ConfigWorkflow:
    """``monai.bundle run <run_id>`` in-process: initialize, run, finalize."""
    wf = workflow(config_files, run_id, **overrides)
    wf.run()
    wf.finalize()
    return wf


def copy_bundle(bundle: str, tree: Path, source: Optional[Path] = None) -> Path:
    """Copy ``bundle`` (configs, docs, LICENSE, without run outputs) to ``tree/<bundle>``; its new bundle_root."""
    source = source or BUNDLES_DIR / bundle
    ignore = None if source != BUNDLES_DIR / bundle else shutil.ignore_patterns("models", "logs", "eval", "runs")
    destination = tree / bundle
    shutil.copytree(source, destination, ignore=ignore)
    return destination


def network_from_config(bundle: str, width: Optional[float] = None) -> torch.nn.Module:
    """``network_def`` of the bundle's inference.yaml, at ``width`` when given."""
    parser = ConfigParser()
    parser.read_config(str(configs(bundle) / "inference.yaml"))
    if width is not None:
        parser["network_width"] = width
    return parser.get_parsed_content("network_def", instantiate=True)


def load_state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(str(path), map_location="cpu", weights_only=True)


def checkpoint_path(bundle_root: Path, epoch: int) -> Path:
    """The resumable checkpoint of ``epoch`` under ``<bundle_root>/models`` (``<prefix>_checkpoint_epoch=N.pt``
    of the CheckpointSaver, whatever its ``file_prefix``); fails unless there is exactly one."""
    found = sorted((bundle_root / "models").rglob(f"*_checkpoint_epoch={epoch}.pt"))
    assert len(found) == 1, f"expected one checkpoint of epoch {epoch} under {bundle_root / 'models'}, found {found}"
    return found[0]


def clone_state(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def states_equal(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def exception_in_chain(error: BaseException, kind: type) -> Optional[BaseException]:
    """The first exception of type ``kind`` in ``error``'s ``__cause__`` / ``__context__`` chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def expected_iterations(dataset_dir: Path) -> int:
    """Steps of one epoch: the training volumes of the LOSO split, ``volumes_per_batch`` per step."""
    from tools.bundles import loso_datalist

    return math.ceil(len(loso_datalist(str(dataset_dir), TARGET_SITE)["training"]) / TINY["volumes_per_batch"])


def read_metrics_csv(path: Path) -> Dict[str, float]:
    with open(path) as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if row}


def read_raw_csv(path: Path) -> Dict[str, float]:
    """``{case file: value}`` of a MetricsSaver ``*_raw.csv`` (columns filename, class0, mean)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {row["filename"]: float(row["mean"]) for row in rows}


def scalar_tags(log_dir: Path) -> set:
    """Every scalar tag in the TensorBoard event files of ``log_dir``."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    tags = set()
    for path in log_dir.glob("events.out.tfevents.*"):
        accumulator = event_accumulator.EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def single_threaded_torch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    from monai.utils import set_determinism

    set_determinism(seed=None)  # undo the bundles' seeding for the tests that follow


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> Path:
    """The six simulated sites, 2 cases each, 48x48 in-plane (``python -m tools.data synth`` in-process)."""
    from tools.data.synth import synthesize

    out = tmp_path_factory.mktemp("synthetic_sites")
    synthesize(out, cases_per_site=2, size=48, seed=0)
    return out


@pytest.fixture(scope="module")
def inference_input(tmp_path_factory, dataset_dir) -> Path:
    """A target-site volume cropped to a non-square 48x40 in-plane grid, LPS-oriented, with the crop's affine:
    a mask written in another orientation, transposed, or resampled would not match it in shape or affine."""
    image = nib.load(str(dataset_dir / TARGET_SITE / "Case00.nii.gz"))
    assert nib.aff2axcodes(image.affine) != ("R", "A", "S"), "the test wants a volume that is not RAS"
    shift = np.eye(4)
    shift[1, 3] = 4  # the crop starts at voxel y = 4
    data = np.asarray(image.dataobj)[:, 4:44, :]
    out = tmp_path_factory.mktemp("inference_input") / "cropped.nii.gz"
    nib.save(nib.Nifti1Image(data, image.affine @ shift), str(out))
    return out


class BundleRuns:
    """Runs each bundle's one-epoch training (or distillation) once per module, on demand, in one folder tree.

    ``get(bundle)`` returns the bundle_root of the finished run; a failed run fails every test that asks for it.
    """

    def __init__(self, tree: Path, run) -> None:
        self.tree = tree
        self._run = run
        self._done: Dict[str, object] = {}

    def get(self, bundle: str) -> Path:
        if bundle not in self._done:
            try:
                self._done[bundle] = self._run(bundle, self.tree)
            except BaseException as error:  # noqa: B902 - remembered, re-raised for every test that needs the run
                self._done[bundle] = error
        result = self._done[bundle]
        if isinstance(result, BaseException):
            pytest.fail(f"the one-epoch run of {bundle} failed: {type(result).__name__}: {result}")
        return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset_dir) -> BundleRuns:
    """One epoch of ``run training`` (train.yaml) per bundle; the DeepLabV3+ teacher through the command line,
    from the checkout's root with the README's relative config path."""

    def train(bundle: str, tree: Path) -> Path:
        root = copy_bundle(bundle, tree)
        overrides = run_overrides(bundle, dataset_dir, root)
        overrides.pop("teacher_width", None)
        if bundle == CLI_TEACHER:
            config = f"bundles/{bundle}/configs/train.yaml"
            result = monai_bundle(["run", "training", "--config_file", config, *cli_args(overrides)], cwd=REPO_ROOT)
            (root / "cli_output.txt").write_text(result.stdout + result.stderr)
        else:
            run_workflow([configs(bundle) / "train.yaml"], "training", **overrides)
        return root

    return BundleRuns(tmp_path_factory.mktemp("trained"), train)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, dataset_dir, trained) -> BundleRuns:
    """One epoch of distillation (train.yaml + distill.yaml) per student from the DeepLabV3+ teacher trained
    above, found as the student's sibling folder (distill.yaml's default); ENet through the command line."""
    tree = tmp_path_factory.mktemp("distilled")

    def distill(student: str, tree: Path) -> Path:
        if not (tree / DISTILL_TEACHER).exists():
            copy_bundle(DISTILL_TEACHER, tree, source=trained.get(DISTILL_TEACHER))
        root = copy_bundle(student, tree)
        overrides = run_overrides(student, dataset_dir, root)
        files = [configs(student) / "train.yaml", configs(student) / "distill.yaml"]
        if student == CLI_STUDENT:
            result = monai_bundle(
                ["run", "training", "--config_file", config_list(*files), *cli_args(overrides)], cwd=tree
            )
            (root / "cli_output.txt").write_text(result.stdout + result.stderr)
        else:
            run_workflow(files, "training", **overrides)
        return root

    return BundleRuns(tree, distill)


# ----------------------------------------------------------------------------------------------- static checks


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_layout(bundle):
    """The files the issue and the bundle spec ask for; run outputs are ignored by git."""
    root = BUNDLES_DIR / bundle
    required = ["LICENSE", "docs/README.md"] + [
        f"configs/{name}"
        for name in (
            "metadata.json",
            "train.yaml",
            "evaluate.yaml",
            "inference.yaml",
            "inference_onnx.yaml",
            "multi_gpu_train.yaml",
            "logging.conf",
            "profile_cpu.yaml",
        )
    ]
    if bundle in STUDENTS:
        required.append("configs/distill.yaml")
    missing = [name for name in required if not (root / name).is_file()]
    assert not missing, f"{root} lacks {missing}"
    readme = (root / "docs" / "README.md").read_text()
    for command in ("run training", "run evaluating", "inference.yaml", "ckpt_export", "onnx_export", "inference_onnx.yaml"):
        assert command in readme, f"{root}/docs/README.md does not give the command with {command!r}"
    if bundle in STUDENTS:
        assert "distill.yaml" in readme, f"{root}/docs/README.md does not give the distillation command"
    if shutil.which("git") and (REPO_ROOT / ".git").exists():
        for output in (
            "models/model.pt",
            "models/checkpoint_checkpoint_epoch=1.pt",
            "eval/metrics.csv",
            "logs/events.out.tfevents.1",
        ):
            path = f"bundles/{bundle}/{output}"
            ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=str(REPO_ROOT)).returncode == 0
            assert ignored, f"{path} is not ignored by git"


VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([.+-]?[0-9A-Za-z.]+)?$")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_has_the_required_fields(bundle):
    """metadata.json per the MONAI bundle spec (DESIGN.md section 5), checked field by field (no schema download)."""
    path = configs(bundle) / "metadata.json"
    meta = json.loads(path.read_text())

    for key in ("version", "monai_version", "pytorch_version", "numpy_version"):
        assert isinstance(meta.get(key), str) and VERSION.match(meta[key]), f"{path}: {key} = {meta.get(key)!r}"
    assert (
        isinstance(meta.get("changelog"), dict) and meta["version"] in meta["changelog"]
    ), f"{path}: changelog lacks {meta['version']}"
    assert all(isinstance(v, str) and v for v in meta["changelog"].values()), f"{path}: empty changelog entry"
    packages = meta.get("required_packages_version")
    assert isinstance(packages, dict) and packages, f"{path}: required_packages_version must be a non-empty dict"
    assert all(isinstance(v, str) and VERSION.match(v) for v in packages.values()), f"{path}: {packages}"
    for key in ("task", "description", "authors", "copyright", "data_source", "intended_use"):
        assert isinstance(meta.get(key), str) and meta[key].strip(), f"{path}: {key} missing or empty"
    assert (
        "research" in meta["intended_use"].lower() and "not for diagnosis" in meta["intended_use"].lower()
    ), f"{path}: intended_use must say research, not for diagnosis: {meta['intended_use']!r}"
    references = meta.get("references")
    assert isinstance(references, list) and all(isinstance(r, str) for r in references), f"{path}: references"
    assert any(
        "Adaptive Affinity-Based Generalization" in r for r in references
    ), f"{path}: the paper is not referenced"

    parser = ConfigParser()
    parser.read_config(str(configs(bundle) / "inference.yaml"))
    network_def = parser.get("network_def")
    fmt = meta.get("network_data_format", {})
    for direction, name, channels in (
        ("inputs", "image", network_def["in_channels"]),
        ("outputs", "pred", network_def["out_channels"]),
    ):
        spec = fmt.get(direction, {}).get(name)
        assert isinstance(spec, dict), f"{path}: network_data_format.{direction}.{name} missing"
        where = f"{path}: network_data_format.{direction}.{name}"
        for key, kind in (
            ("type", str),
            ("format", str),
            ("modality", str),
            ("num_channels", int),
            ("spatial_shape", list),
            ("dtype", str),
            ("value_range", list),
            ("is_patch_data", bool),
            ("channel_def", dict),
        ):
            assert isinstance(spec.get(key), kind), f"{where}.{key} = {spec.get(key)!r}, expected {kind.__name__}"
        assert (
            spec["num_channels"] == channels
        ), f"{where}.num_channels {spec['num_channels']} != network_def {channels}"
        assert sorted(spec["channel_def"]) == [
            str(c) for c in range(channels)
        ], f"{where}.channel_def {spec['channel_def']}"
        # a 2D network: MONAI Label takes the dimension from len(spatial_shape) (DESIGN.md section 5)
        assert len(spec["spatial_shape"]) == 2, f"{where}.spatial_shape {spec['spatial_shape']} is not 2D"
        assert len(spec["value_range"]) in (0, 2), f"{where}.value_range {spec['value_range']}"
        assert hasattr(torch, spec["dtype"]), f"{where}.dtype {spec['dtype']!r} is not a torch dtype"
    assert fmt["inputs"]["image"]["modality"] == "MR"


def _split_at_marker(path: Path):
    text = path.read_text()
    assert text.count(SHARED_MARKER) == 1, f"{path}: expected one line starting {SHARED_MARKER!r}"
    head, shared = text.split(SHARED_MARKER)
    return head, SHARED_MARKER + shared


def test_bundles_match_their_templates():
    """The five bundles' configs are written from tools/bundles/templates (``python -m tools.bundles sync``)."""
    result = subprocess.run([sys.executable, "-m", "tools.bundles", "sync", "--check"], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["train.yaml", "inference.yaml"])
def test_headers_build_the_bundles_network(name):
    """Above the marker line: bundle_name (the folder's name), network_width, network_def (the bundle's class,
    at network_width) and the imports; train.yaml and inference.yaml build the same network."""
    for bundle in BUNDLES:
        path = configs(bundle) / name
        head, shared = _split_at_marker(path)
        header = yaml.safe_load(head)
        assert set(header) == HEADER_KEYS, f"{path}: header defines {sorted(header)}, expected {sorted(HEADER_KEYS)}"
        assert header["bundle_name"] == bundle, f"{path}: bundle_name {header['bundle_name']!r} is not the folder name"
        assert header["network_def"]["_target_"] == NETWORK_CLASSES[bundle], f"{path}: network_def {header['network_def']}"
        assert header["network_def"]["width"] == "@network_width", f"{path}: network_def ignores network_width"
        assert not set(yaml.safe_load(shared) or {}) & HEADER_KEYS, f"{path}: the shared part redefines a header key"
        other = configs(bundle) / ("inference.yaml" if name == "train.yaml" else "train.yaml")
        assert header == yaml.safe_load(_split_at_marker(other)[0]), f"{path} and {other} build different networks"


def test_cpu_profile_teachers_are_built_as_they_trained(tmp_path):
    """A student of the CPU profile builds its teacher with the teacher bundle's own profile_cpu.yaml
    (``teacher_profile``): the network load_teacher gives is the one the teacher's training config builds (same
    width, same ASPP rates), and a missing profile file is refused with its path."""
    from tools.bundles import load_teacher

    for student in STUDENTS:
        profile = yaml.safe_load((configs(student) / "profile_cpu.yaml").read_text())
        assert profile["teacher_profile"] == "profile_cpu.yaml" and "teacher_width" not in profile, student
    for teacher in TEACHERS:
        trained = ConfigParser()
        trained.read_config([str(configs(teacher) / "train.yaml"), str(configs(teacher) / "profile_cpu.yaml")])
        network = trained.get_parsed_content("network_def", instantiate=True)
        root = tmp_path / teacher
        (root / "models").mkdir(parents=True)
        shutil.copytree(configs(teacher), root / "configs")
        torch.save(network.state_dict(), root / "models" / "model.pt")
        built = load_teacher(str(root), profile="profile_cpu.yaml")  # loads the checkpoint: same width, or it raises
        assert trained["network_width"] == 0.25, teacher
        with pytest.raises(ValueError):  # without the profile: the paper's width, which the checkpoint does not fit
            load_teacher(str(root))
        dilations = [m.dilation[0] for m in built.modules() if isinstance(m, torch.nn.Conv2d)]
        assert dilations == [m.dilation[0] for m in network.modules() if isinstance(m, torch.nn.Conv2d)], teacher
        if teacher == "prostate_mri_deeplabv3plus_teacher":
            assert [b.conv.dilation[0] for b in network.aspp.branch_atrous] == [3, 6, 9]
        with pytest.raises(FileNotFoundError, match="teacher profile not found: .*configs/profile_gpu.yaml"):
            load_teacher(str(root), profile="profile_gpu.yaml")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_overlays_only_override_ids_that_exist(bundle):
    """An override that names no id of the configs below it (a typo) silently does nothing: each key of
    profile_cpu.yaml is an id of train.yaml (+ distill.yaml for a student), and each nested ``a#b#c`` key of
    evaluate / distill / multi_gpu_train / profile_cpu overrides inside an id ``a#b`` that train.yaml defines."""
    train = ConfigParser()
    train.read_config(str(configs(bundle) / "train.yaml"))
    merged = ConfigParser()
    merged.read_config(
        [str(configs(bundle) / n) for n in (["train.yaml", "distill.yaml"] if bundle in STUDENTS else ["train.yaml"])]
    )
    overlays = ["profile_cpu.yaml", "evaluate.yaml", "multi_gpu_train.yaml"] + (
        ["distill.yaml"] if bundle in STUDENTS else []
    )
    for name in overlays:
        path = configs(bundle) / name
        for key in yaml.safe_load(path.read_text()) or {}:
            if "#" in key:
                parent = key.rsplit("#", 1)[0]
                assert parent in train, f"{path}: {key!r} overrides inside {parent!r}, which train.yaml does not define"
            elif name == "profile_cpu.yaml":
                assert key in merged, f"{path}: {key!r} is not an id of the configs it is merged over"


def test_distill_default_teacher_is_a_teacher_bundle():
    for student in STUDENTS:
        distill = yaml.safe_load((configs(student) / "distill.yaml").read_text())
        assert (
            distill["teacher_name"] in TEACHERS
        ), f"{configs(student) / 'distill.yaml'}: teacher_name {distill['teacher_name']!r}"


# ----------------------------------------------------------------------------------------------- workflow properties


@pytest.mark.parametrize("bundle", BUNDLES)
def test_check_properties_train(bundle, dataset_dir, tmp_path):
    wf = workflow(
        [configs(bundle) / "train.yaml"],
        "training",
        workflow_type="train",
        **run_overrides(bundle, dataset_dir, copy_bundle(bundle, tmp_path)),
    )
    assert wf.check_properties() == []


@pytest.mark.parametrize("bundle", BUNDLES)
def test_check_properties_inference(bundle, inference_input, tmp_path):
    wf = workflow(
        [configs(bundle) / "inference.yaml"],
        "run",
        workflow_type="inference",
        bundle_root=str(copy_bundle(bundle, tmp_path)),
        input=str(inference_input),
        output_dir=str(tmp_path / "out"),
    )
    assert wf.check_properties() == []


@pytest.mark.parametrize("student", STUDENTS)
def test_check_properties_distillation(student, dataset_dir, trained, tmp_path):
    copy_bundle(DISTILL_TEACHER, tmp_path, source=trained.get(DISTILL_TEACHER))
    root = copy_bundle(student, tmp_path)
    wf = workflow(
        [configs(student) / "train.yaml", configs(student) / "distill.yaml"],
        "training",
        workflow_type="train",
        **run_overrides(student, dataset_dir, root),
    )
    assert wf.check_properties() == []


# ----------------------------------------------------------------------------------------------- training


def _check_one_epoch(bundle: str, root: Path, dataset_dir: Path, distillation: bool) -> Dict[str, torch.Tensor]:
    """Checkpoint of epoch 1 with the whole state, and models/model.pt = the network alone, loading strictly
    into the bundle's inference.yaml network_def. Returns the checkpoint."""
    steps = expected_iterations(dataset_dir)
    ckpt = load_state(checkpoint_path(root, 1))
    expected = {"model", "optimizer", "lr_scheduler", "trainer"} | ({"distillation_loss"} if distillation else set())
    assert set(ckpt) == expected
    assert dict(ckpt["trainer"]) == {"epoch_length": steps, "iteration": steps, "max_epochs": 1}
    assert ckpt["lr_scheduler"]["last_epoch"] == steps, "the CyclicLR must step once per iteration"
    model = load_state(root / "models" / "model.pt")
    network = network_from_config(bundle, width_of(bundle))
    assert set(model) == set(network.state_dict()), "models/model.pt must hold the network alone"
    network.load_state_dict(model, strict=True)
    assert states_equal(model, ckpt["model"]), "after one epoch, model.pt (best) is the epoch-1 network"
    assert list((root / "logs").glob("events.out.tfevents.*")), "no TensorBoard log"
    return ckpt


@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_one_epoch(bundle, trained, dataset_dir):
    root = trained.get(bundle)
    _check_one_epoch(bundle, root, dataset_dir, distillation=False)
    assert "loss" in scalar_tags(root / "logs") and "val_mean_dice" in scalar_tags(root / "logs")


@pytest.mark.parametrize("student", STUDENTS)
def test_distillation_one_epoch(student, distilled, dataset_dir):
    """The student trains with every term of eq. 8 logged; model.pt holds the student alone."""
    root = distilled.get(student)
    ckpt = _check_one_epoch(student, root, dataset_dir, distillation=True)
    assert ckpt["distillation_loss"], "the KM adapters / AA weights are not in the resumable checkpoint"
    assert not any(k.startswith(("student.", "loss.")) for k in load_state(root / "models" / "model.pt"))
    assert LOSS_TAGS <= scalar_tags(
        root / "logs"
    ), f"TensorBoard lacks loss terms: {LOSS_TAGS - scalar_tags(root / 'logs')}"
    if student == CLI_STUDENT:
        output = (root / "cli_output.txt").read_text()
        for term in sorted(LOSS_TAGS - {"loss"}):
            assert f"{term}:" in output, f"StatsHandler did not print {term}"


def test_teacher_stays_frozen_during_distillation(dataset_dir, trained, tmp_path):
    """One distillation epoch: the teacher (frozen by load_teacher: BatchNorm folded into its convolutions) stays in
    eval mode without gradients and its weights are bit-identical afterwards; the student, the KM adapters and the
    AA weights do train."""
    teacher_root = copy_bundle(DISTILL_TEACHER, tmp_path, source=trained.get(DISTILL_TEACHER))
    root = copy_bundle(FAST_STUDENT, tmp_path)
    wf = workflow(
        [configs(FAST_STUDENT) / "train.yaml", configs(FAST_STUDENT) / "distill.yaml"],
        "training",
        **run_overrides(FAST_STUDENT, dataset_dir, root),
    )
    teacher = wf.parser.get_parsed_content("teacher")
    student = wf.parser.get_parsed_content("network")
    loss = wf.parser.get_parsed_content("distillation_loss")
    trainer = wf.parser.get_parsed_content("train#trainer")
    teacher_before, student_before, loss_before = clone_state(teacher), clone_state(student), clone_state(loss)
    from custom_nets import FrozenTeacher
    from tools.bundles import load_teacher

    assert isinstance(teacher, FrozenTeacher)
    assert any("running_mean" in k for k in load_state(teacher_root / "models" / "model.pt")), "no BatchNorm to fold"
    assert not any("running_mean" in k for k in teacher_before), "the teacher's BatchNorm is not folded"
    reference = load_teacher(str(teacher_root), width=TEACHER_WIDTH)  # the checkpoint, frozen the same way
    assert states_equal(teacher_before, clone_state(reference)), "the teacher is not the checkpoint's, folded"
    assert loss_before, "the distillation loss has no trainable state (KM adapters, AA weights)"

    from ignite.engine import Events

    teacher_modes = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: teacher_modes.append(teacher.training))
    wf.run()
    wf.finalize()

    changed = [k for k, v in clone_state(teacher).items() if not torch.equal(v, teacher_before[k])]
    assert not changed, f"the teacher changed during distillation: {changed[:5]}"
    assert teacher_modes and not any(teacher_modes), f"teacher in train mode during iterations: {teacher_modes}"
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student_after = clone_state(student)
    assert any(
        not torch.equal(student_after[k], student_before[k]) for k in student_before if "running_mean" in k
    ), "the student's BatchNorm statistics did not move: did it train at all?"
    loss_after = clone_state(loss)
    assert any(
        not torch.equal(loss_after[k], loss_before[k]) for k in loss_before
    ), "the KM adapters / AA weights did not train"
    optimizer = wf.parser.get_parsed_content("optimizer")
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in loss.parameters()} <= optimized and {id(p) for p in student.parameters()} <= optimized
    assert not {id(p) for p in teacher.parameters()} & optimized, "the optimizer holds teacher parameters"


@pytest.mark.parametrize("mode", ["training", "distillation"])
def test_interrupted_run_resumes_at_the_next_epoch(mode, dataset_dir, trained, tmp_path):
    """A run stopped after epoch 1 (max_epochs 1), restarted with max_epochs 2, runs epoch 2 only, from the
    epoch-1 weights (and KM adapters / AA weights when distilling), optimizer and scheduler state, saves the
    checkpoint of epoch 2, and the config's resume_checkpoint then points at it."""
    from ignite.engine import Events

    files = [configs(FAST_STUDENT) / "train.yaml"]
    if mode == "distillation":
        files.append(configs(FAST_STUDENT) / "distill.yaml")
        copy_bundle(DISTILL_TEACHER, tmp_path, source=trained.get(DISTILL_TEACHER))
    root = copy_bundle(FAST_STUDENT, tmp_path)
    run_workflow(files, "training", **run_overrides(FAST_STUDENT, dataset_dir, root))
    first = load_state(checkpoint_path(root, 1))
    steps = expected_iterations(dataset_dir)

    wf = workflow(files, "training", **run_overrides(FAST_STUDENT, dataset_dir, root, max_epochs=2))
    trainer = wf.parser.get_parsed_content("train#trainer")
    network = wf.parser.get_parsed_content("network")
    loss = wf.parser.get_parsed_content("distillation_loss") if mode == "distillation" else None
    started = []

    def record(engine):
        started.append((engine.state.epoch, clone_state(network), clone_state(loss) if loss is not None else None))

    trainer.add_event_handler(Events.EPOCH_STARTED, record)
    wf.run()
    wf.finalize()

    assert [epoch for epoch, _, _ in started] == [2], f"epochs run after the restart: {[e for e, _, _ in started]}"
    assert states_equal(started[0][1], first["model"]), "epoch 2 did not start from the weights of epoch 1"
    if loss is not None:
        assert states_equal(started[0][2], first["distillation_loss"]), "the KM adapters / AA weights were not restored"
    second_file = checkpoint_path(root, 2)
    second = load_state(second_file)
    assert dict(second["trainer"]) == {"epoch_length": steps, "iteration": 2 * steps, "max_epochs": 2}
    adam_steps = {int(state["step"]) for state in second["optimizer"]["state"].values()}
    assert adam_steps == {2 * steps}, f"Adam's step counts {adam_steps}: the optimizer state was not restored"
    assert second["lr_scheduler"]["last_epoch"] == 2 * steps
    assert not states_equal(second["model"], first["model"]), "epoch 2 did not change the model"
    again = workflow(files, "training", **run_overrides(FAST_STUDENT, dataset_dir, root, max_epochs=3))
    assert again.parser.get_parsed_content("resume_checkpoint") == str(second_file)


def test_distillation_after_plain_training_in_the_same_bundle(dataset_dir, trained, tmp_path):
    """The README's order, train the student alone then distil it, in one bundle folder: the distillation run
    must start its own epoch 1 rather than resume (or fail on) the plain run's checkpoint, whose optimizer has
    other parameter groups and which has no KM adapters or AA weights."""
    from ignite.engine import Events

    copy_bundle(DISTILL_TEACHER, tmp_path, source=trained.get(DISTILL_TEACHER))
    root = copy_bundle(FAST_STUDENT, tmp_path)
    run_workflow([configs(FAST_STUDENT) / "train.yaml"], "training", **run_overrides(FAST_STUDENT, dataset_dir, root))
    wf = workflow(
        [configs(FAST_STUDENT) / "train.yaml", configs(FAST_STUDENT) / "distill.yaml"],
        "training",
        **run_overrides(FAST_STUDENT, dataset_dir, root),
    )
    started = []
    wf.parser.get_parsed_content("train#trainer").add_event_handler(
        Events.EPOCH_STARTED, lambda e: started.append(e.state.epoch)
    )
    try:
        wf.run()
    except Exception as error:  # the plain run's checkpoint was loaded into the distillation's optimizer
        cause = exception_in_chain(error, ValueError) or error
        pytest.fail(f"distillation after plain training in {root} failed: {type(cause).__name__}: {cause}")
    assert started == [1], f"the distillation ran epochs {started}"
    checkpoints = [load_state(path) for path in (root / "models").rglob("*_checkpoint_epoch=*.pt")]
    assert any("distillation_loss" in ckpt for ckpt in checkpoints), "no resumable checkpoint of the distillation"


# ----------------------------------------------------------------------------------------------- teacher errors


def test_missing_teacher_checkpoint_fails_before_training(dataset_dir, tmp_path):
    """The documented distillation command with a teacher bundle that was never trained: a FileNotFoundError that
    names the missing file, raised before any training step or checkpoint."""
    copy_bundle(DISTILL_TEACHER, tmp_path)  # configs only, no models/model.pt
    root = copy_bundle(CLI_STUDENT, tmp_path)
    files = [configs(CLI_STUDENT) / "train.yaml", configs(CLI_STUDENT) / "distill.yaml"]
    result = monai_bundle(
        [
            "run",
            "training",
            "--config_file",
            config_list(*files),
            *cli_args(run_overrides(CLI_STUDENT, dataset_dir, root)),
        ],
        cwd=tmp_path,
        expect_success=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    missing = tmp_path / DISTILL_TEACHER / "models" / "model.pt"
    assert f"FileNotFoundError: teacher checkpoint not found: {missing}" in output, output[-3000:]
    assert "Iter: 1/" not in output and "Epoch[1]" not in output, "training started before the teacher was checked"
    assert not list(root.glob("models/**/*.pt"))


def test_missing_teacher_bundle_fails_before_training(dataset_dir, tmp_path):
    root = copy_bundle(FAST_STUDENT, tmp_path)  # no sibling teacher bundle at all
    wf = workflow(
        [configs(FAST_STUDENT) / "train.yaml", configs(FAST_STUDENT) / "distill.yaml"],
        "training",
        **run_overrides(FAST_STUDENT, dataset_dir, root),
    )
    with pytest.raises(Exception) as raised:
        wf.run()
    error = exception_in_chain(raised.value, FileNotFoundError)
    assert error is not None, f"expected a FileNotFoundError, got {raised.value!r}"
    assert str(tmp_path / DISTILL_TEACHER / "configs" / "inference.yaml") in str(error)
    assert not list(root.glob("models/**/*.pt"))


@pytest.mark.parametrize("case", ["other_width", "other_architecture", "not_a_checkpoint"])
def test_incompatible_teacher_checkpoint_fails_before_training(case, dataset_dir, trained, tmp_path):
    """A teacher checkpoint that does not fit the teacher network: a ValueError that names the file."""
    teacher_root = copy_bundle(DISTILL_TEACHER, tmp_path, source=trained.get(DISTILL_TEACHER))
    root = copy_bundle(FAST_STUDENT, tmp_path)
    overrides = run_overrides(FAST_STUDENT, dataset_dir, root)
    checkpoint = teacher_root / "models" / "model.pt"
    if case == "other_width":
        overrides["teacher_width"] = 2 * TEACHER_WIDTH
    elif case == "other_architecture":
        checkpoint = trained.get("prostate_mri_unetpp_teacher") / "models" / "model.pt"
        overrides["teacher_ckpt"] = str(checkpoint)
    else:
        checkpoint = tmp_path / "truncated.pt"
        checkpoint.write_bytes((teacher_root / "models" / "model.pt").read_bytes()[:1000])
        overrides["teacher_ckpt"] = str(checkpoint)
    wf = workflow(
        [configs(FAST_STUDENT) / "train.yaml", configs(FAST_STUDENT) / "distill.yaml"], "training", **overrides
    )
    with pytest.raises(Exception) as raised:
        wf.run()
    error = exception_in_chain(raised.value, ValueError)
    assert error is not None, f"expected a ValueError, got {raised.value!r}"
    assert str(checkpoint) in str(error), f"the error does not name {checkpoint}: {error}"
    assert not list(root.glob("models/**/*.pt"))


# ----------------------------------------------------------------------------------------------- evaluation


EVALUATIONS = [(b, "trained") for b in BUNDLES] + [(s, "distilled") for s in STUDENTS]


@pytest.mark.parametrize("bundle, source", EVALUATIONS, ids=[f"{b}-{s}" for b, s in EVALUATIONS])
def test_evaluation(bundle, source, request, dataset_dir, tmp_path):
    """``run evaluating`` (train.yaml + evaluate.yaml): metrics.csv, and Dice, HD95 and ASD per target-site case."""
    from tools.bundles import loso_datalist

    root = request.getfixturevalue(source).get(bundle)
    out = tmp_path / "eval"
    overrides = run_overrides(bundle, dataset_dir, root, output_dir=str(out))
    files = [configs(bundle) / "train.yaml", configs(bundle) / "evaluate.yaml"]
    if (bundle, source) == (CLI_STUDENT, "distilled"):
        monai_bundle(["run", "evaluating", "--config_file", config_list(*files), *cli_args(overrides)], cwd=tmp_path)
    else:
        run_workflow(files, "evaluating", **overrides)

    cases = sorted(case["image"] for case in loso_datalist(str(dataset_dir), TARGET_SITE)["test"])
    assert cases and all(f"{os.sep}{TARGET_SITE}{os.sep}" in c for c in cases)
    summary = read_metrics_csv(out / "metrics.csv")
    assert set(summary) == {"test_dice", "test_hd95", "test_asd"}
    for metric in ("dice", "hd95", "asd"):
        raw = read_raw_csv(out / f"test_{metric}_raw.csv")
        assert sorted(raw) == cases, f"test_{metric}_raw.csv lists {sorted(raw)}, not the {TARGET_SITE} cases"
        values = np.array(list(raw.values()))
        if metric == "dice":
            assert np.all((values >= 0) & (values <= 1))
        else:
            assert np.all(values >= 0)
        if np.all(np.isfinite(values)):
            assert summary[f"test_{metric}"] == pytest.approx(values.mean(), rel=1e-5)


def test_no_site_held_out_trains_on_six_sites_and_evaluates_only_validation(dataset_dir):
    """``--target_site none``: train.yaml's datalist holds every site; evaluate.yaml refuses the empty ``test`` list
    in one line that says what to do, and evaluates ``validation``."""
    parser = ConfigParser()
    parser.read_config([str(configs(CLI_STUDENT) / "train.yaml"), str(configs(CLI_STUDENT) / "evaluate.yaml")])
    parser.update({"dataset_dir": str(dataset_dir), "target_site": "none"})
    datalist = parser.get_parsed_content("datalist")
    assert {case["site"] for case in datalist["training"]} == {"RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK"}
    with pytest.raises(RuntimeError) as refused:  # MONAI's config expression error, raised from ours
        parser.get_parsed_content("validate#dataset#data")
    assert isinstance(refused.value.__cause__, ValueError)
    assert str(refused.value.__cause__) == ("evaluate_key 'test': the datalist has no cases to evaluate (--target_site "
                                            "none holds no site out: evaluate with --evaluate_key validation).")
    parser["evaluate_key"] = "validation"
    parser.parse()
    assert parser.get_parsed_content("validate#dataset#data") == datalist["validation"]


def test_evaluation_agrees_with_inference_masks(distilled, dataset_dir, tmp_path):
    """evaluate.yaml's Dice of each case is the Dice of inference.yaml's mask against the case's label file:
    the two configs run one chain, and the mask is in the label's geometry."""
    from tools.bundles import loso_datalist

    root = distilled.get(CLI_STUDENT)
    test_cases = loso_datalist(str(dataset_dir), TARGET_SITE)["test"]
    folder = tmp_path / "images"
    folder.mkdir()
    for case in test_cases:
        shutil.copy(case["image"], folder / Path(case["image"]).name)
    out = tmp_path / "eval"
    run_workflow(
        [configs(CLI_STUDENT) / "train.yaml", configs(CLI_STUDENT) / "evaluate.yaml"],
        "evaluating",
        **run_overrides(CLI_STUDENT, dataset_dir, root, output_dir=str(out)),
    )
    run_workflow(
        [configs(CLI_STUDENT) / "inference.yaml"],
        "run",
        bundle_root=str(root),
        input=str(folder),
        image_size=TINY["image_size"],
        output_dir=str(tmp_path / "masks"),
    )
    raw = read_raw_csv(out / "test_dice_raw.csv")
    for case in test_cases:
        mask = tmp_path / "masks" / Path(case["image"]).name.replace(".nii.gz", "_seg.nii.gz")
        assert mask.is_file(), f"the folder input gave no mask for {case['image']}: {os.listdir(tmp_path / 'masks')}"
        label = np.asarray(nib.load(case["label"]).dataobj)
        label = np.where(label > 0, 1, 0)  # zone labels merged, as the evaluation does
        assert dice(np.asarray(nib.load(str(mask)).dataobj), label) == pytest.approx(raw[case["image"]], abs=1e-5)


# ----------------------------------------------------------------------------------------------- inference


INFERENCES = [(b, "trained") for b in BUNDLES] + [(s, "distilled") for s in STUDENTS]


def _check_mask(mask_file: Path, input_file: Path) -> np.ndarray:
    assert mask_file.is_file(), f"no mask at {mask_file}: {os.listdir(mask_file.parent)}"
    mask, image = nib.load(str(mask_file)), nib.load(str(input_file))
    assert mask.shape == image.shape, f"mask {mask.shape} vs input {image.shape}"
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4, err_msg="the mask is not in the input's geometry")
    data = np.asarray(mask.dataobj)
    assert mask.get_data_dtype() == np.uint8 and set(np.unique(data)) <= {0, 1}
    return data


@pytest.mark.parametrize("bundle, source", INFERENCES, ids=[f"{b}-{s}" for b, s in INFERENCES])
def test_inference(bundle, source, request, inference_input, tmp_path):
    """``run`` of inference.yaml on a non-square LPS volume: a uint8 {0, 1} mask with the input's shape and affine.
    For a distilled student this is also the strict load of its models/model.pt into inference.yaml."""
    root = request.getfixturevalue(source).get(bundle)
    out = tmp_path / "masks"
    overrides = {
        "bundle_root": str(root),
        "input": str(inference_input),
        "output_dir": str(out),
        "image_size": TINY["image_size"],
    }
    if width_of(bundle) is not None:
        overrides["network_width"] = width_of(bundle)
    if (bundle, source) == (CLI_STUDENT, "distilled"):
        monai_bundle(
            ["run", "--config_file", str(configs(bundle) / "inference.yaml"), *cli_args(overrides)], cwd=tmp_path
        )
    else:
        run_workflow([configs(bundle) / "inference.yaml"], "run", **overrides)
    _check_mask(out / "cropped_seg.nii.gz", inference_input)


def test_inference_reads_metaimage(distilled, dataset_dir, tmp_path):
    """An ITK MetaImage input: the NIfTI mask has the volume's shape and its geometry in RAS (nibabel's affine
    of the same volume saved as NIfTI)."""
    itk = pytest.importorskip("itk")
    source = dataset_dir / "HK" / "Case38.nii.gz"  # int16 voxels, LPS
    volume = tmp_path / "in" / "Case38.mha"
    volume.parent.mkdir()
    itk.imwrite(itk.imread(str(source)), str(volume))
    out = tmp_path / "masks"
    run_workflow(
        [configs(CLI_STUDENT) / "inference.yaml"],
        "run",
        bundle_root=str(distilled.get(CLI_STUDENT)),
        input=str(volume.parent),
        output_dir=str(out),
        image_size=TINY["image_size"],
    )
    _check_mask(out / "Case38_seg.nii.gz", source)


def test_inference_on_the_real_case(real_case_dir, distilled, tmp_path):
    """The issue's acceptance case: ../shared/data/real_case/Case00.nii.gz (tiny-trained weights; geometry only)."""
    source = real_case_dir / "Case00.nii.gz"
    out = tmp_path / "masks"
    run_workflow(
        [configs(CLI_STUDENT) / "inference.yaml"],
        "run",
        bundle_root=str(distilled.get(CLI_STUDENT)),
        input=str(source),
        output_dir=str(out),
        image_size=TINY["image_size"],
    )
    _check_mask(out / "Case00_seg.nii.gz", source)


# ---------------------------------------------------------------------------------------------- export and verification


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_matches_the_eager_network(bundle, trained, distilled, tmp_path):
    """``ckpt_export network_def`` -> model.ts; ``torch.jit.load`` predicts what network_def with model.pt does."""
    from monai.bundle import ckpt_export

    root = distilled.get(bundle) if bundle == CLI_STUDENT else trained.get(bundle)
    ts_file = tmp_path / "model.ts"
    args = {
        "filepath": str(ts_file),
        "ckpt_file": str(root / "models" / "model.pt"),
        "meta_file": str(configs(bundle) / "metadata.json"),
        "config_file": str(configs(bundle) / "inference.yaml"),
    }
    if width_of(bundle) is not None:
        args["network_width"] = width_of(bundle)
    if bundle == CLI_STUDENT:
        monai_bundle(["ckpt_export", "network_def", *cli_args(args)], cwd=tmp_path)
    else:
        ckpt_export(net_id="network_def", **args)

    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(ts_file), map_location="cpu", _extra_files=extra)
    assert (
        json.loads(extra["metadata.json"])["version"]
        == json.loads((configs(bundle) / "metadata.json").read_text())["version"]
    )
    eager = network_from_config(bundle, width_of(bundle))
    eager.load_state_dict(load_state(root / "models" / "model.pt"), strict=True)
    eager.eval()
    scripted.eval()
    image = torch.randn(2, 1, TINY["image_size"], TINY["image_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = eager(image), scripted(image)
    assert actual.shape == expected.shape == (2, 2, TINY["image_size"], TINY["image_size"])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(actual.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle, tmp_path):
    """``verify_net_in_out network_def`` at the metadata's 384x384 (teachers at the test width); and the network
    maps (1, C_in, *spatial_shape) to (1, C_out, *outputs.pred.spatial_shape), which MONAI does not check."""
    from monai.bundle import verify_net_in_out

    args = {
        "meta_file": str(configs(bundle) / "metadata.json"),
        "config_file": str(configs(bundle) / "inference.yaml"),
        "device": "cpu",
    }
    if width_of(bundle) is not None:
        args["network_width"] = width_of(bundle)
    if bundle == CLI_STUDENT:
        result = monai_bundle(["verify_net_in_out", "network_def", *cli_args(args)], cwd=tmp_path)
        assert "data shape of network is verified with no error" in result.stdout + result.stderr
    else:
        verify_net_in_out(net_id="network_def", **args)

    fmt = json.loads((configs(bundle) / "metadata.json").read_text())["network_data_format"]
    inputs, outputs = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    network = network_from_config(bundle, width_of(bundle)).eval()
    with torch.no_grad():
        pred = network(torch.rand(1, inputs["num_channels"], *inputs["spatial_shape"]))
    assert tuple(pred.shape) == (1, outputs["num_channels"], *outputs["spatial_shape"])
    assert pred.dtype == getattr(torch, outputs["dtype"])


# ---------------------------------------------------------------------------------- preprocessing options


PREPROCESSING_OPTIONS = [("spacing", "zscore"), ("spacing", "percentile"), ("resize", "nonzero")]


@pytest.mark.parametrize("in_plane_mode, intensity_norm", PREPROCESSING_OPTIONS)
def test_inference_with_each_preprocessing_option_on_the_real_case(real_case_dir, in_plane_mode, intensity_norm, tmp_path):
    """inference.yaml + profile_cpu.yaml (as the study runs it) with the options of docs/preprocessing.md: the
    mask has the real case's shape and affine. Untrained weights: this checks the geometry, not the accuracy."""
    root = copy_bundle(FAST_STUDENT, tmp_path)
    (root / "models").mkdir()
    torch.save(network_from_config(FAST_STUDENT).state_dict(), str(root / "models" / "model.pt"))
    out = tmp_path / "masks"
    wf = run_workflow(
        [configs(FAST_STUDENT) / "inference.yaml", configs(FAST_STUDENT) / "profile_cpu.yaml"],
        "run",
        bundle_root=str(root),
        input=str(real_case_dir / "Case00.nii.gz"),
        output_dir=str(out),
        in_plane_mode=in_plane_mode,
        intensity_norm=intensity_norm,
    )
    names = [type(t).__name__ for t in wf.parser.get_parsed_content("preprocessing").transforms]
    expected = {"spacing": ["InPlaneSpacingd", "ResizeWithPadOrCropd"], "resize": ["Resized"]}[in_plane_mode]
    assert [n for n in names if n in ("InPlaneSpacingd", "ResizeWithPadOrCropd", "Resized")] == expected
    assert ("ClipIntensityPercentilesd" in names) == (intensity_norm == "percentile")
    _check_mask(out / "Case00_seg.nii.gz", real_case_dir / "Case00.nii.gz")


def test_training_and_evaluation_at_a_fixed_spacing_with_percentile_zscore(dataset_dir, tmp_path):
    """One tiny epoch of train.yaml in the spacing mode (32 px at 6 mm: the 192 mm window) with the percentile
    z-score, then evaluate.yaml with the same keys: validation ran, and the per-case Dice of the unseen site is
    computed on masks back in the files' geometry (VolumeMetric checks the affines)."""
    root = copy_bundle(FAST_STUDENT, tmp_path)
    overrides = run_overrides(FAST_STUDENT, dataset_dir, root, in_plane_mode="spacing", pixel_spacing_mm=6.0,
                              intensity_norm="percentile")
    overrides.pop("teacher_width")
    wf = run_workflow([configs(FAST_STUDENT) / "train.yaml"], "training", **overrides)
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert tuple(batch["image"].shape[1:]) == (1, 32, 32)
    assert np.allclose(np.linalg.norm(batch["image"].affine[0, :2, :2].numpy(), axis=0), [6.0, 6.0])
    assert (root / "models" / "model.pt").is_file()
    out = tmp_path / "eval"
    run_workflow([configs(FAST_STUDENT) / "train.yaml", configs(FAST_STUDENT) / "evaluate.yaml"], "evaluating",
                 **overrides, output_dir=str(out))
    raw = read_raw_csv(out / "test_dice_raw.csv")
    assert raw and all(0.0 <= v <= 1.0 for v in raw.values())


@pytest.mark.parametrize(
    "key, value",
    [("in_plane_mode", "crop"), ("pixel_spacing_mm", -2.0), ("intensity_norm", "minmax"), ("intensity_percentiles", [99, 1])],
)
def test_a_bad_preprocessing_value_fails_naming_the_key(key, value):
    for name, target in (("train.yaml", "train#preprocessing"), ("train.yaml", "validate#preprocessing"),
                         ("inference.yaml", "preprocessing")):
        parser = ConfigParser()
        parser.read_config(str(configs(CLI_STUDENT) / name))
        parser[key] = value
        with pytest.raises(Exception) as raised:
            parser.get_parsed_content(target)
        cause = exception_in_chain(raised.value, ValueError)
        assert cause is not None and str(cause).startswith(f"{key} must be") and "\n" not in str(cause), (name, raised.value)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_appearance_randomization_is_a_training_key_off_by_default(bundle):
    parser = ConfigParser()
    parser.read_config(str(configs(bundle) / "train.yaml"))
    names = [type(t).__name__ for t in parser.get_parsed_content("train#preprocessing").transforms]
    assert "RandBiasFieldd" not in names and "RandHistogramShiftd" not in names
    parser["appearance_randomization"] = True
    names = [type(t).__name__ for t in parser.get_parsed_content("train#preprocessing").transforms]
    assert names.index("RandSliceSampled") < names.index("RandBiasFieldd") < names.index("RandSimulateLowResolutiond")
    assert names[-1] == "EnsureTyped"
    validation = [type(t).__name__ for t in parser.get_parsed_content("validate#preprocessing").transforms]
    assert "RandBiasFieldd" not in validation
