"""Serve a bundle with MONAI Label's ``monaibundle`` sample app.

MONAI Label 0.8.5 lives in its own virtual environment (``.venv-monailabel``, built from
``requirements-monailabel.txt``) because it needs torchvision, hence torch 2.14.1, while the
main environment pins the CPU wheel torch 2.13.0. Everything here is standard library only, so
the main environment (tests, CI) drives a server that runs on the other environment's Python.

The pipeline::

    prepare_app(bundle, app_dir)        # <venv>/monailabel/sample-apps/monaibundle -> app_dir,
                                        # bundle -> app_dir/model/<name>
    server = start_server(app_dir, studies, models=name)   # waits for GET /info/
    mask = infer(server.url, name, image_id="case0")     # NIfTI bytes, original geometry
    stop_server(server)

What the monaibundle app requires of a bundle (read off ``monailabel/tasks/infer/bundle.py``,
see :func:`check_bundle`):

- ``configs/inference.json`` or ``configs/inference.yaml`` (first found; ``.yml`` is not read),
  with ``network_def``, ``preprocessing`` (or ``pre_transforms``), ``postprocessing`` (or
  ``post_transforms``), ``inferer`` (``SimpleInferer`` if absent); ``bundle_root`` is
  overwritten with the bundle's folder and ``device`` with the request's device string.
- ``models/model.pt`` (a state dict, or a dict with the state dict under ``"model"``; loaded
  non-strictly) with ``network_def``, else ``models/model.ts`` (TorchScript).
- ``configs/metadata.json`` with ``network_data_format``: the first input and first output
  entries give the image and prediction keys for the final ``Restored`` step, but the
  inference itself always reads ``data["image"]`` and writes ``data["pred"]``, so those must
  be the keys; ``len(inputs.image.spatial_shape)`` is the model's advertised dimension (3 when
  absent); ``outputs.pred.channel_def`` gives the label names (``background`` dropped).
- ``SaveImaged`` is removed from the postprocessing, ``LoadImaged`` is wrapped so it also
  accepts tensors, and ``Restored(keys=pred, ref_image=image)`` is appended (resize to the
  original spatial shape with nearest interpolation if the shapes differ, then the original
  affine); the result is written with ITK in the input's file format.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO_ROOT / ".venv-monailabel"
SAMPLE_APP = "monaibundle"
INFERENCE_CONFIGS = ("inference.json", "inference.yaml")
WEIGHT_FILES = ("model.pt", "model.ts")

#: ``--conf`` pairs that keep the monaibundle app offline and small: no SAM2 (it downloads
#: its checkpoint from a hub), bundles taken from ``<app>/model/<name>`` (any zoo source other
#: than ``monaihosting`` looks there first and downloads only a missing name), no trainers.
OFFLINE_CONF: dict[str, str] = {"sam2": "false", "zoo_source": "github", "skip_trainers": "true"}

#: Environment for the server process: no datastore file watcher (a thread that watches the
#: studies folder). :func:`start_server` also keeps sessions under ``<app>/sessions``.
SERVER_ENV: dict[str, str] = {"MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}

# Talk to the server directly, whatever http_proxy / https_proxy say.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def venv_python(venv: str | os.PathLike = DEFAULT_VENV) -> Path:
    """``<venv>/bin/python``; ``FileNotFoundError`` naming the path when it is missing."""
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(
            f"no MONAI Label environment at {venv} ({python} missing); create it with "
            "`python3 -m venv .venv-monailabel && .venv-monailabel/bin/pip install -r "
            "requirements-monailabel.txt && .venv-monailabel/bin/pip install --no-deps -e .`"
        )
    return python


def sample_app_dir(venv: str | os.PathLike = DEFAULT_VENV, app: str = SAMPLE_APP) -> Path:
    """The sample app shipped by the monailabel wheel: ``<venv>/monailabel/sample-apps/<app>``."""
    path = Path(venv) / "monailabel" / "sample-apps" / app
    if not (path / "main.py").is_file():
        raise FileNotFoundError(f"MONAI Label sample app {app!r} not found: {path / 'main.py'} is missing")
    return path


def check_bundle(bundle: str | os.PathLike) -> dict[str, Any]:
    """Check that ``bundle`` has what MONAI Label's ``BundleInferTask`` reads; return a summary.

    Returns ``{"config": <inference config path>, "weights": <model.pt or model.ts path>,
    "dimension": len(inputs.image.spatial_shape), "labels": {name: index}}``.
    Raises ``FileNotFoundError`` / ``ValueError`` naming the offending file or key.
    """
    root = Path(bundle)
    configs = [root / "configs" / c for c in INFERENCE_CONFIGS if (root / "configs" / c).is_file()]
    if not configs:
        raise FileNotFoundError(f"{root}: neither configs/inference.json nor configs/inference.yaml exists")
    weights = [root / "models" / w for w in WEIGHT_FILES if (root / "models" / w).is_file()]
    if not weights:
        raise FileNotFoundError(f"{root}: neither models/model.pt nor models/model.ts exists")
    metadata_path = root / "configs" / "metadata.json"
    if not metadata_path.is_file():
        raise FileNotFoundError(f"{metadata_path} is missing")
    metadata = json.loads(metadata_path.read_text())
    fmt = metadata.get("network_data_format")
    if not isinstance(fmt, dict) or not fmt.get("inputs") or not fmt.get("outputs"):
        raise ValueError(f"{metadata_path}: network_data_format needs non-empty 'inputs' and 'outputs'")
    (in_key, image), (out_key, pred) = next(iter(fmt["inputs"].items())), next(iter(fmt["outputs"].items()))
    if (in_key, out_key) != ("image", "pred"):
        raise ValueError(
            f"{metadata_path}: the first network_data_format input/output must be 'image'/'pred' "
            f"(MONAI Label's inference reads data['image'] and writes data['pred']), got {in_key!r}/{out_key!r}"
        )
    spatial_shape = image.get("spatial_shape")
    labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
    return {
        "config": configs[0],
        "weights": weights[0],
        "dimension": len(spatial_shape) if spatial_shape else 3,
        "labels": labels,
    }


SAMPLE_INFER_IMPORT = "from monailabel.tasks.infer.bundle import BundleInferTask"
STRICT_INFER_IMPORT = "from tools.monailabel_tasks import StrictBundleInferTask as BundleInferTask"


def use_strict_inference(main_py: str | os.PathLike) -> None:
    """Make the monaibundle app's ``main.py`` build :class:`tools.monailabel_tasks.StrictBundleInferTask` where
    it builds MONAI Label's ``BundleInferTask`` (one import line; idempotent). A wrong checkpoint then fails the
    request naming the file, instead of a warning and random weights."""
    path = Path(main_py)
    text = path.read_text()
    if STRICT_INFER_IMPORT in text:
        return
    if text.count(SAMPLE_INFER_IMPORT) != 1:
        raise ValueError(f"{path}: expected one line {SAMPLE_INFER_IMPORT!r} (another MONAI Label version?)")
    path.write_text(text.replace(SAMPLE_INFER_IMPORT, STRICT_INFER_IMPORT))


def prepare_app(
    bundle: str | os.PathLike,
    app_dir: str | os.PathLike,
    name: str | None = None,
    venv: str | os.PathLike = DEFAULT_VENV,
) -> Path:
    """Copy the monaibundle sample app to ``app_dir`` and the bundle to ``app_dir/model/<name>``.

    ``name`` defaults to the bundle folder's name. The sample app is copied only when
    ``app_dir/main.py`` does not exist yet; an existing ``model/<name>`` is replaced. The app's inference
    loads weights strictly (:func:`use_strict_inference`). Returns the bundle's new folder.
    """
    bundle, app_dir = Path(bundle).resolve(), Path(app_dir)
    check_bundle(bundle)
    name = name or bundle.name
    if not (app_dir / "main.py").exists():
        shutil.copytree(sample_app_dir(venv), app_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    use_strict_inference(app_dir / "main.py")
    target = app_dir / "model" / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(bundle, target, ignore=shutil.ignore_patterns("__pycache__", "eval", "logs", "runs"))
    return target


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(
    app_dir: str | os.PathLike,
    studies: str | os.PathLike,
    models: str | Sequence[str],
    port: int,
    host: str = "127.0.0.1",
    conf: Mapping[str, str] | None = None,
    venv: str | os.PathLike = DEFAULT_VENV,
    resolve: bool = True,
) -> list[str]:
    """The ``monailabel start_server`` command line, run as ``<venv>/bin/python -m monailabel.main``.

    (The ``monailabel`` script itself runs whatever ``python`` is first on ``PATH``.)
    ``conf`` is merged over :data:`OFFLINE_CONF`; ``resolve`` makes the folders absolute.
    """
    models = models if isinstance(models, str) else ",".join(models)
    app_dir, studies = (Path(app_dir).resolve(), Path(studies).resolve()) if resolve else (app_dir, studies)
    cmd = [str(venv_python(venv)), "-m", "monailabel.main", "start_server"]
    cmd += ["--app", str(app_dir), "--studies", str(studies)]
    for key, value in {"models": models, **OFFLINE_CONF, **(conf or {})}.items():
        cmd += ["--conf", key, str(value)]
    return cmd + ["--host", host, "--port", str(port)]


@dataclass
class MonaiLabelServer:
    """A ``monailabel start_server`` child process, its base URL and the file its output goes to."""

    process: subprocess.Popen
    url: str
    log_path: Path
    command: list[str] = field(default_factory=list)

    def log_tail(self, chars: int = 6000) -> str:
        """The last ``chars`` characters of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"<cannot read {self.log_path}: {e}>"


def start_server(
    app_dir: str | os.PathLike,
    studies: str | os.PathLike,
    models: str | Sequence[str],
    port: int | None = None,
    host: str = "127.0.0.1",
    conf: Mapping[str, str] | None = None,
    venv: str | os.PathLike = DEFAULT_VENV,
    log_path: str | os.PathLike | None = None,
    timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
) -> MonaiLabelServer:
    """Start the server in its own process group and wait until ``GET /info/`` answers.

    ``port=None`` picks a free port (and tries another, up to 3 times, if it was taken meanwhile).
    The server's stdout and stderr go to ``log_path`` (default ``<app_dir>/logs/server.log``);
    its working directory is ``app_dir`` (MONAI Label reads a ``.env`` file from the working
    directory). On a timeout, or if the process exits first, the server is stopped and
    ``RuntimeError`` is raised with the command and the tail of the log.
    """
    app_dir = Path(app_dir)
    log_path = Path(log_path) if log_path else app_dir / "logs" / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3 if port is None else 1):
        try:
            chosen = port or free_port(host)
            return _start_once(app_dir, studies, models, chosen, host, conf, venv, log_path, timeout, env)
        except RuntimeError as e:
            # another process took the port that free_port() found free: try a new one
            if port is not None or "address already in use" not in str(e).lower() or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_once(app_dir, studies, models, port, host, conf, venv, log_path, timeout, env) -> MonaiLabelServer:
    cmd = server_command(app_dir, studies, models, port, host=host, conf=conf, venv=venv)
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    child_env["PATH"] = os.pathsep.join([str(Path(venv).resolve() / "bin"), child_env.get("PATH", "")])
    child_env.update(SERVER_ENV)
    child_env["MONAI_LABEL_SESSION_PATH"] = str((app_dir / "sessions").resolve())
    child_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd, cwd=app_dir, env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = MonaiLabelServer(process=process, url=f"http://{host}:{port}", log_path=log_path, command=cmd)
    try:
        wait_until_ready(server, timeout=timeout)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_until_ready(server: MonaiLabelServer, timeout: float = 180.0, poll: float = 1.0) -> dict:
    """Poll ``GET <url>/info/`` until it answers 200; return the app info (JSON).

    ``RuntimeError`` (with the log tail) if the process exits or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"MONAI Label server exited with code {server.process.returncode} before it was ready\n"
                f"command: {' '.join(server.command)}\n--- {server.log_path} (tail) ---\n{server.log_tail()}"
            )
        try:
            with _OPENER.open(f"{server.url}/info/", timeout=poll * 5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as e:
            last_error = e
        time.sleep(poll)
    raise RuntimeError(
        f"MONAI Label server at {server.url} not ready after {timeout:.0f} s (last error: {last_error})\n"
        f"command: {' '.join(server.command)}\n--- {server.log_path} (tail) ---\n{server.log_tail()}"
    )


def stop_server(server: MonaiLabelServer, timeout: float = 15.0) -> int | None:
    """Stop the server's process group: SIGTERM, then SIGKILL after ``timeout`` s. Returns the exit code."""
    process = server.process
    if process.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)  # the group that start_new_session made for this child
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
    return process.poll()


def _multipart(fields: Mapping[str, str], files: Mapping[str, Path]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its content type."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _request(url: str, method: str, fields: Mapping[str, str], files: Mapping[str, Path], timeout: float) -> bytes:
    body, content_type = _multipart(fields, files)
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"{method} {url} failed with HTTP {e.code}: {detail}") from e


def infer(
    url: str,
    model: str,
    image_id: str | None = None,
    image_file: str | os.PathLike | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float = 300.0,
) -> bytes:
    """``POST <url>/infer/<model>?image=<id>&output=image``; return the mask file's bytes.

    Either ``image_id`` (an image of the studies folder: its file name without extension) or
    ``image_file`` (uploaded with the request; the mask comes back in that file's format).
    ``params`` is sent as the ``params`` form field (JSON), e.g. ``{"device": "cpu"}``.
    """
    if (image_id is None) == (image_file is None):
        raise ValueError("give exactly one of image_id and image_file")
    query = {"output": "image"}
    if image_id is not None:
        query["image"] = image_id
    endpoint = f"{url}/infer/{urllib.parse.quote(model)}?{urllib.parse.urlencode(query)}"
    files = {"file": Path(image_file)} if image_file is not None else {}
    return _request(endpoint, "POST", {"params": json.dumps(dict(params or {}))}, files, timeout)


def upload_image(url: str, image_file: str | os.PathLike, image_id: str | None = None, timeout: float = 120.0) -> dict:
    """``PUT <url>/datastore/image?image=<id>``: add a volume to the server's studies; return its JSON answer."""
    query = f"?{urllib.parse.urlencode({'image': image_id})}" if image_id else ""
    answer = _request(f"{url}/datastore/image{query}", "PUT", {"params": "{}"}, {"file": Path(image_file)}, timeout)
    return json.loads(answer)


# ---------------------------------------------------------------------------------------------- CLI


def cli_prepare(bundle: str, app_dir: str, name: str | None = None, venv: str = str(DEFAULT_VENV)) -> str:
    """Copy the monaibundle sample app to APP_DIR and BUNDLE to APP_DIR/model/NAME; print the next command."""
    target = prepare_app(bundle, app_dir, name=name, venv=venv)
    app_dir = str(Path(app_dir).resolve())
    command = server_command(app_dir, "STUDIES_DIR", target.name, 8000, venv=venv, resolve=False)
    return (
        f"bundle placed at {target}\nserve with:\n"
        f"  python -m tools.monailabel_app serve --app-dir {app_dir} --studies STUDIES_DIR --models {target.name}\n"
        f"or:\n  {' '.join(command)}"
    )


def cli_serve(
    app_dir: str,
    studies: str,
    models: str,
    port: int = 8000,
    host: str = "127.0.0.1",
    venv: str = str(DEFAULT_VENV),
    timeout: float = 300.0,
) -> None:
    """Start the server, wait until it is ready, keep it up until Ctrl-C or SIGTERM."""

    def _interrupt(signum, frame):  # SIGTERM (e.g. from `timeout`) must also stop the server's group
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    server = start_server(app_dir, studies, models, port=port, host=host, venv=venv, timeout=timeout)
    print(f"MONAI Label serving {models} at {server.url} (log: {server.log_path}); Ctrl-C stops it", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(server)


def cli_infer(
    url: str, model: str, output: str, image: str | None = None, file: str | None = None, timeout: float = 300.0
) -> str:
    """POST an inference request to a running server and write the returned mask to OUTPUT."""
    Path(output).write_bytes(infer(url, model, image_id=image, image_file=file, timeout=timeout))
    return output


def main() -> None:
    import fire

    from tools.cli import one_line_errors

    fire.Fire({name: one_line_errors(command) for name, command in
               {"prepare": cli_prepare, "serve": cli_serve, "infer": cli_infer, "check": check_bundle}.items()},
              name="tools.monailabel_app")


if __name__ == "__main__":
    main()
