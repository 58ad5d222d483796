"""Static int8 quantisation of an exported network with onnxruntime, calibrated on preprocessed slices.

:func:`quantize_onnx` runs onnxruntime's ``quantize_static`` (QDQ format, int8 weights per output channel, uint8
activations, MinMax calibration) on the float32 model that ``python -m monai.bundle onnx_export`` wrote, after its
graph is rewritten (:func:`custom_nets.onnx_graph.rewrite_graph`) and its shapes inferred (MinMax
calibration by default; percentile and entropy are options). The
calibration slices must be what the network sees: training slices through the bundle's preprocessing.

Whether int8 is worth it depends on the network and the CPU (``python -m tools.bench models`` measures it) and
costs accuracy that must be measured on the unseen site (``python -m tools.bench quantization``); the bundles run
float32 unless ``inference_onnx.yaml``'s ``onnx_file`` points at a quantised file.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Optional, Sequence, Union

import numpy as np

__all__ = ["quantize_onnx"]


class _SliceReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over ``(1, C, H, W)`` float32 arrays."""

    def __init__(self, input_name: str, slices: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.slices = list(slices)
        self.index = 0

    def get_next(self):
        if self.index >= len(self.slices):
            return None
        self.index += 1
        return {self.input_name: np.ascontiguousarray(self.slices[self.index - 1], dtype=np.float32)}

    def rewind(self) -> None:
        self.index = 0


def quantize_onnx(
    model_path: Union[str, os.PathLike],
    output_path: Union[str, os.PathLike],
    calibration: Iterable[np.ndarray],
    per_channel: bool = True,
    op_types: Optional[Sequence[str]] = None,
    calibration_method: str = "minmax",
) -> str:
    """Write the int8 (QDQ) version of the float32 ONNX model ``model_path`` to ``output_path``; returns it.

    Args:
        model_path: a float32 model with one input of fixed shape ``(1, C, H, W)``.
        output_path: the quantised model (a single file).
        calibration: preprocessed slices, each ``(1, C, H, W)`` (or ``(C, H, W)``), at the model's input shape;
            the activations' ranges are their min / max over these.
        per_channel: one weight scale per output channel (else one per tensor).
        op_types: operator types to quantise (default: all that onnxruntime quantises).
        calibration_method: how the activations' ranges come from the slices: ``"minmax"``, ``"percentile"``
            (99.999th percentile of the absolute values) or ``"entropy"``.

    Raises:
        ValueError: no calibration slice, or a slice whose shape is not the model's input shape (naming both).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_graph import rewrite_graph

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if calibration_method not in methods:
        raise ValueError(f"calibration_method must be one of {sorted(methods)}, got {calibration_method!r}.")
    model = onnx.load(os.fspath(model_path))
    model_input = model.graph.input[0]
    shape = [d.dim_value for d in model_input.type.tensor_type.shape.dim]
    slices = []
    for array in calibration:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim == len(shape) - 1:
            array = array[None]
        if list(array.shape) != shape:
            raise ValueError(f"{model_path}: calibration slice of shape {list(array.shape)}, the model takes {shape}.")
        slices.append(array)
    if not slices:
        raise ValueError(f"{model_path}: no calibration slice given.")
    rewrite_graph(model)
    with tempfile.TemporaryDirectory(prefix="quantize_") as work:
        plain, prepared = os.path.join(work, "plain.onnx"), os.path.join(work, "prepared.onnx")
        onnx.save(model, plain)
        quant_pre_process(plain, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            os.fspath(output_path),
            _SliceReader(model_input.name, slices),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[calibration_method],
        )
    return os.fspath(output_path)
