"""MONAI Label tasks of the served bundles: inference that refuses a checkpoint that does not fit the network.

MONAI Label's ``BundleInferTask`` loads ``models/model.pt`` with ``load_strict=False``: a checkpoint of another
network or width only logs a warning and the server then segments with whatever weights matched (random ones
for the rest). :class:`StrictBundleInferTask` checks the checkpoint against the bundle's ``network_def`` with
:func:`custom_nets.load_weights` before MONAI Label loads it, strictly, so a wrong file fails the request with
a message that names the file and the first mismatched keys or shapes. :func:`tools.monailabel_app.prepare_app`
makes the served app use it. This module is imported inside MONAI Label's environment (``.venv-monailabel``).
"""

from __future__ import annotations

import copy
import os

from monailabel.tasks.infer.bundle import BundleInferTask

from custom_nets import load_weights

__all__ = ["StrictBundleInferTask"]


class StrictBundleInferTask(BundleInferTask):
    """``BundleInferTask`` with ``load_strict=True`` and a checkpoint check that names the file.

    The check runs when the task is built (so a server with a wrong checkpoint does not start, and its log
    says why) and again before a request whenever the file changed (MONAI Label reloads a changed file);
    MONAI Label answers a failed request with HTTP 500 and logs the message.

    Raises:
        ValueError: ``<path>: <what does not match>`` when the checkpoint does not fit ``network_def``.
        FileNotFoundError: at a request, when the bundle has no checkpoint where MONAI Label looks for it.
    """

    def __init__(self, *args, **kwargs):
        kwargs["load_strict"] = True
        super().__init__(*args, **kwargs)
        self._checked: set = set()
        path = self.get_path()
        if path and self.network is not None:
            self._check(path)

    def _check(self, path: str) -> None:
        key = (path, os.stat(path).st_mtime)
        if key not in self._checked:
            load_weights(copy.deepcopy(self.network).cpu(), path, role=f"bundle {os.path.basename(self.bundle_path)}")
            self._checked.add(key)

    def _get_network(self, device, data):
        path = self.get_path()
        if self.network is not None:
            if not path:
                raise FileNotFoundError(f"no checkpoint for bundle {self.bundle_path}: looked for {self.path}")
            self._check(path)
        return super()._get_network(device, data)
