"""custom_nets/onnx_graph.py: the graph rewrites give onnxruntime the same numbers with faster operators."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from custom_nets.onnx_graph import fold_index_pools, replace_prelu, rewrite_graph  # noqa: E402


def run(model, x: np.ndarray) -> list:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def prelu_model(slopes: list) -> "onnx.ModelProto":
    """x -> PRelu(slope_0) -> PRelu(slope_1) -> ... over a (1, 3, 5, 4) input."""
    nodes, initializers, current = [], [], "x"
    for index, slope in enumerate(slopes):
        name = f"s{index}"
        initializers.append(numpy_helper.from_array(np.asarray(slope, np.float32), name))
        nodes.append(helper.make_node("PRelu", [current, name], [f"y{index}"], name=f"prelu{index}"))
        current = f"y{index}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 4])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, 3, 5, 4])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_replace_prelu_forms_compute_prelu_exactly():
    shared = [0.25]
    in_unit = np.array([0.1, 0.5, 1.0], np.float32).reshape(3, 1, 1)
    general = np.array([-0.3, 1.7, 0.2], np.float32).reshape(3, 1, 1)
    model = prelu_model([shared, in_unit, general])
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 4)).astype(np.float32)
    x[0, 0, 0, :2] = 0.0
    expected = run(model, x)[0]
    counts = replace_prelu(model)
    assert counts == {"LeakyRelu": 1, "MulMax": 1, "ReluMinMulAdd": 1, "kept": 0}
    assert not any(node.op_type == "PRelu" for node in model.graph.node)
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, x)[0], expected)


def test_fold_index_pools_gives_the_same_indices():
    """torch's max_pool2d_with_indices pattern: a 2x2 pool with indices, minus the sliced indices of a 1x1 pool."""
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6])
    nodes = [
        helper.make_node("MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["x"], ["unused", "flat"], kernel_shape=[1, 1], strides=[1, 1]),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["offsets"]),
        helper.make_node("Sub", ["indices", "offsets"], ["local"]),
    ]
    constants = [numpy_helper.from_array(np.array(v, np.int64), n)
                 for n, v in (("starts", [0, 0]), ("ends", [1, 1]), ("axes", [2, 3]))]
    outputs = [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, 2, 2, 3]),
               helper.make_tensor_value_info("local", TensorProto.INT64, [1, 2, 2, 3])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x_info], outputs, constants),
                              opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 6)).astype(np.float32)
    expected = run(model, x)
    assert fold_index_pools(model) == 1
    assert [node.op_type for node in model.graph.node].count("MaxPool") == 1
    for got, want in zip(run(model, x), expected):
        np.testing.assert_array_equal(got, want)
    assert rewrite_graph(model)["index_pools"] == 0  # nothing left to fold
