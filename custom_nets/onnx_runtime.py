"""A network exported to ONNX, run by onnxruntime on the CPU, behind the interface of a ``torch.nn.Module``.

The bundles export their network with MONAI's command (``python -m monai.bundle onnx_export network_def
--filepath models/model.onnx ...``); ``configs/inference_onnx.yaml`` puts :class:`OnnxRuntimeNetwork` where
``inference.yaml`` has the PyTorch network, so that the same pre- and post-processing (and the same
``SliceInferer``) run around an onnxruntime session.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxRuntimeNetwork"]


def _rewritten(path: str):
    """The serialized model of ``path`` rewritten by :func:`custom_nets.onnx_graph.rewrite_graph`, or ``path`` itself
    when nothing changed; and the counts of the rewrites."""
    import onnx

    from .onnx_graph import rewrite_graph

    model = onnx.load(path)  # with its external data, if any (the dynamo exporter writes <name>.onnx.data)
    counts = rewrite_graph(model)
    if not any(v for k, v in counts.items() if k != "kept"):
        return path, counts
    return model.SerializeToString(), counts


class OnnxRuntimeNetwork(nn.Module):
    """``forward(x) -> logits`` through an onnxruntime ``InferenceSession`` of the ONNX file ``path``.

    The model's first input receives ``x`` as float32 (``(N, C, H, W)``); its first output is returned as a
    float32 tensor on ``x``'s device. MONAI's ``onnx_export`` (torch's dynamo exporter) writes models with a
    fixed batch size, usually 1: a batch of ``N`` is then run as ``N / b`` calls of the model's batch ``b``
    and concatenated, which gives the same numbers as one call.

    The session runs one operator at a time (sequential execution, one inter-op thread) on ``intra_op_threads``
    threads. Its threads do not spin waiting for work unless ``spinning``: spinning threads keep their cores busy
    between calls and slow down everything else in the process (the pre- and post-processing) and on a shared
    machine.

    Args:
        path: the ``.onnx`` file (float32, or int8 from :func:`custom_nets.quantization.quantize_onnx`).
        intra_op_threads: onnxruntime's intra-op threads (0: onnxruntime's default, one per core).
        graph_optimization: ``"all"`` (default), ``"extended"``, ``"basic"`` or ``"disabled"``; from ``"basic"``
            on, onnxruntime folds constants and fuses ``Conv`` + ``BatchNormalization`` + activation.
        rewrite: rewrite the graph before the session is made (:func:`custom_nets.onnx_graph.rewrite_graph`:
            ``PRelu`` replaced by equivalent faster operators, index-only pools folded to constants; the file is not
            changed).
        spinning: let idle onnxruntime threads spin (onnxruntime's default); off by default.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: onnxruntime is not installed.
        ValueError: ``path`` is not a readable ONNX model, or an input's channels/size differ from the model's
            (the message names the file and both shapes).
    """

    GRAPH_LEVELS = ("disabled", "basic", "extended", "all")

    def __init__(
        self,
        path: Union[str, os.PathLike],
        intra_op_threads: int = 0,
        graph_optimization: str = "all",
        rewrite: bool = True,
        spinning: bool = False,
    ):
        super().__init__()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"ONNX model not found: {self.path} (export it with `python -m monai.bundle "
                                    f"onnx_export network_def --filepath {self.path} ...`).")
        if graph_optimization not in self.GRAPH_LEVELS:
            raise ValueError(f"graph_optimization must be one of {self.GRAPH_LEVELS}, got {graph_optimization!r}.")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("OnnxRuntimeNetwork needs onnxruntime: pip install onnxruntime") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        self.rewrites = {}
        try:
            model = self.path
            if rewrite:
                model, self.rewrites = _rewritten(self.path)
            self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:  # not an ONNX file, truncated, unsupported opset
            raise ValueError(f"{self.path}: not a loadable ONNX model ({type(error).__name__}: {error}).") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape: Sequence[Optional[int]] = [d if isinstance(d, int) else None for d in model_input.shape]

    def _check(self, x: torch.Tensor) -> None:
        expected = self.input_shape
        if x.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], x.shape[1:])):
            raise ValueError(f"{self.path}: the model takes input of shape {list(expected)} (None: any), got "
                             f"{list(x.shape)}; export it at this image size or infer at the exported one.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        array = x.detach().to("cpu", torch.float32).numpy()
        batch = self.input_shape[0]
        if batch is None or batch == array.shape[0]:
            outputs = [self.session.run(None, {self.input_name: array})[0]]
        elif array.shape[0] % batch == 0:
            outputs = [self.session.run(None, {self.input_name: array[i: i + batch]})[0]
                       for i in range(0, array.shape[0], batch)]
        else:
            raise ValueError(f"{self.path}: the model's batch size is {batch}; a batch of {array.shape[0]} is not "
                             f"a multiple of it.")
        return torch.from_numpy(np.concatenate(outputs, axis=0)).to(x.device)
