"""Per-row int8 products: close to the float product, each row independent of the others."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sentiment_api.core import engine
from sentiment_api.core.devices import Cpu
from sentiment_api.core.rowwise import exact_int8, rowwise_int8


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
    """``model`` on ONNX Runtime, its int8 products exact on any CPU (``exact_int8``, on a copy)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    exact_int8(model)
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


def worst_case() -> tuple:
    """Every activation at the top of its row (uint8 255) against columns of weights at their largest
    (int8 127): each pair of products 2 · 255 · 127, twice what a 16-bit sum holds."""
    weight = np.full((64, 8), 0.05, dtype=np.float32)
    x = np.ones((1, 2, 64), dtype=np.float32)
    model = dense_model(weight, 17, layers=1)
    rowwise_int8(model, ["layer0", "side"])
    return model, x, 2 * x @ weight  # layer0 + side, the same product twice


def test_exact_int8_makes_the_largest_products_exact_on_every_cpu() -> None:
    """On AVX2 without VNNI the uint8 x int8 product saturates (``vpmaddubsw``); uint8 x uint8 with
    the weights shifted by their zero point gives the same integers on a path that cannot."""
    model, x, expected = worst_case()
    assert exact_int8(model) == 2
    onnx.checker.check_model(model)
    weights = [i for i in model.graph.initializer if i.data_type in (TensorProto.INT8, TensorProto.UINT8)]
    assert {numpy_helper.to_array(w).dtype for w in weights} == {np.dtype(np.uint8)}  # one shifted copy
    np.testing.assert_allclose(run(model, x), expected, rtol=0.02)
    assert exact_int8(model) == 0  # nothing left to rewrite


def test_weights_that_cannot_saturate_are_left_alone() -> None:
    model = dense_model(np.eye(8, dtype=np.float32) * 0.5, 17)
    rowwise_int8(model, ["layer0"])
    for initializer in model.graph.initializer:
        if initializer.data_type == TensorProto.INT8:
            initializer.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(initializer) // 2, initializer.name)
            )
    assert exact_int8(model) == 0  # |w| ≤ 63: no pair can reach 2**15


@pytest.mark.parametrize(
    ("flags", "rewritten"), [({"avx2"}, 2), ({"avx2", "avx512_vnni"}, 0), ({"amx_int8"}, 0)]
)
def test_the_engine_loads_int8_products_exactly_where_the_cpu_would_saturate(
    tmp_path, monkeypatch, flags, rewritten
) -> None:
    import platform

    model, x, expected = worst_case()
    onnx.save(model, tmp_path / "model.onnx")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(engine, "this_cpu", lambda: Cpu("a test CPU", frozenset(flags)))
    # what the engine says, whatever logging configuration earlier tests (or libraries) left behind
    said: list[str] = []
    monkeypatch.setattr(engine.log, "info", lambda message, *args: said.append(message % args))
    backend = engine.OnnxBackend(tmp_path / "model.onnx", threads=1)
    engine.OnnxBackend(tmp_path / "model.onnx", threads=2)  # a server's second session of it
    assert backend.exact_int8_products == rewritten
    assert len([line for line in said if "cannot saturate" in line]) == (1 if rewritten else 0)
    if rewritten:  # exact here whatever this machine's CPU is
        np.testing.assert_allclose(backend.session.run(None, {"x": x})[0], expected, rtol=0.02)


def test_a_second_session_of_a_model_reuses_its_int8_rewrite_once(tmp_path, monkeypatch) -> None:
    """The server's solo session takes the streams' session's rewritten model rather than redoing it
    (which left as much memory behind as a session holds); a later one rewrites again."""
    import platform

    from sentiment_api.core import rowwise

    model, x, expected = worst_case()
    onnx.save(model, tmp_path / "model.onnx")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(engine, "this_cpu", lambda: Cpu("a test CPU", frozenset({"avx2"})))
    rewrites: list[object] = []
    original = rowwise.exact_int8_model
    monkeypatch.setattr(rowwise, "exact_int8_model", lambda path: rewrites.append(path) or original(path))

    streams = engine.OnnxBackend(tmp_path / "model.onnx", threads=1)
    solo = streams.sibling(2)
    assert len(rewrites) == 1
    later = streams.sibling(2)

    assert len(rewrites) == 2
    assert streams.exact_int8_products == solo.exact_int8_products == later.exact_int8_products == 2
    assert solo.threads == 2
    for backend in (streams, solo, later):
        np.testing.assert_allclose(backend.session.run(None, {"x": x})[0], expected, rtol=0.02)
