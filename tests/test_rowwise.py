"""Per-row int8 products: close to the float product, each row independent of the others."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sentiment_api.rowwise import rowwise_int8


def dense_model(weight: np.ndarray, opset: int, layers: int = 2):
    """x [batch, tokens, K] through ``layers`` MatMuls with the same weight (a square matrix); one
    extra MatMul reads x too, so two products share one input."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h0"], name="layer0")]
    for index in range(1, layers):
        nodes.append(helper.make_node("MatMul", [f"h{index - 1}", "w"], [f"h{index}"], name=f"layer{index}"))
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["side"], name="side"))
    nodes.append(helper.make_node("Add", [f"h{layers - 1}", "side"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [17, 18])
def test_rows_are_quantised_alone_and_the_product_stays_close(opset) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, (64, 64)).astype(np.float32)
    x = rng.normal(0, 1, (3, 5, 64)).astype(np.float32)
    x[0, 0] *= 100  # one row of outliers: a per-tensor scale would flatten every other row
    x[2, 3:] = 0  # zero rows (padding) must give zeros, not NaN
    reference = run(dense_model(weight, opset), x)
    model = dense_model(weight, opset)
    assert rowwise_int8(model, ["layer0", "layer1", "side"]) == 3
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulInteger") == 3 and "MatMul" not in ops
    assert ops.count("ReduceMax") == 2  # layer0 and side read x: one quantisation serves both
    assert "w" not in {initializer.name for initializer in model.graph.initializer}  # fp32 weight gone
    quantised = run(model, x)
    assert np.isfinite(quantised).all()
    relative = np.abs(quantised - reference).max(axis=-1) / np.abs(reference).max(axis=-1).clip(1e-6)
    assert relative.max() < 0.03  # every row, the small ones beside the outliers included
    # each row alone gives what it gave inside the batch, to the bit
    for batch in range(3):
        alone = run(model, x[batch : batch + 1])
        np.testing.assert_array_equal(alone[0], quantised[batch])
    # and a token's answer does not depend on the other tokens of its tweet either
    np.testing.assert_array_equal(run(model, x[1:2, 2:3])[0, 0], quantised[1, 2])


def test_only_the_named_layers_change() -> None:
    weight = np.eye(8, dtype=np.float32)
    model = dense_model(weight, 17)
    assert rowwise_int8(model, ["layer1"]) == 1
    ops = [
        (node.name, node.op_type) for node in model.graph.node if node.name in {"layer0", "layer1", "side"}
    ]
    assert ops == [("layer0", "MatMul"), ("layer1", "MatMulInteger"), ("side", "MatMul")]
    assert "w" in {initializer.name for initializer in model.graph.initializer}  # still read by the others
