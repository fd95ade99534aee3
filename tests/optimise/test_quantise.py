"""int8 embedding rows: a tall table stored as int8 with a scale per row, looked up as fp32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from sentiment_api.optimise.quantise import int8_embedding_rows


def lookup_model(vocabulary: np.ndarray, positions: np.ndarray) -> onnx.ModelProto:
    """ids -> vocabulary[ids] + positions[ids % len(positions)]: one tall table and one short one."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["vocab", "ids"], ["words"], name="word_embeddings/Gather", axis=0),
            helper.make_node(
                "Gather", ["pos", "pos_ids"], ["places"], name="position_embeddings/Gather", axis=0
            ),
            helper.make_node("Add", ["words", "places"], ["out"]),
        ],
        "lookup",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("pos_ids", TensorProto.INT64, [None]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, vocabulary.shape[1]])],
        [numpy_helper.from_array(vocabulary, "vocab"), numpy_helper.from_array(positions, "pos")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, ids: np.ndarray, pos_ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids, "pos_ids": pos_ids})[0]


def test_the_tall_table_becomes_int8_rows_each_within_half_a_step_of_its_own_scale() -> None:
    rng = np.random.default_rng(0)
    vocabulary = rng.normal(size=(5000, 16)).astype(np.float32)
    vocabulary[7] *= 1e-3  # a rare token's small row: one scale for the table would flatten it
    positions = rng.normal(size=(64, 16)).astype(np.float32)
    ids, pos_ids = np.array([7, 0, 4999, 123]), np.array([0, 1, 2, 63])
    model = lookup_model(vocabulary, positions)
    expected = run(model, ids, pos_ids)

    assert int8_embedding_rows(model) == 1  # the 64-row table stays fp32
    onnx.checker.check_model(model)
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert stored["pos"].dtype == np.float32 and "vocab" not in stored
    assert [a.dtype for n, a in stored.items() if n.endswith("_q")] == [np.int8]
    got = run(model, ids, pos_ids)
    step = np.abs(vocabulary[ids]).max(axis=1, keepdims=True) / 127
    assert (np.abs(got - expected) <= step / 2 + 1e-6).all()
    assert np.abs(got[0] - expected[0]).max() < 1e-5  # the small row keeps its precision
