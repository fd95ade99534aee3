"""int8 quantisation of an exported model: ``rowwise``, the one scheme packages are made with.

Every dense layer becomes an integer matrix product (``MatMulInteger``, U8S8: the product VNNI and
AMX compute natively) whose activations are quantised per row, that is per token, at run time: each
token's scale is the largest magnitude in its own row, so a row of small values keeps its precision
beside one with outliers, and padding or other tweets never touch it. A tweet therefore gets the same
answer whatever it is batched with, and the accuracy gate holds. Weights are int8 per output channel;
the vocabulary's embedding table is stored as int8 rows, each with its own scale; no calibration.
Schemes with activation scales per tensor (over the whole padded batch) or fixed ahead of time, and
one scale for a whole embedding table, were measured and not adopted (BENCHMARKS.md, "Tried and not
adopted").
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sentiment_api.core.extras import require

SCHEME = "rowwise"  # what a package's card records as its quantisation
HEADS = ("pooler", "classifier")  # small final layers, kept in fp32
EMBEDDING_MIN_ROWS = 4096  # embedding tables this tall (the vocabulary) are stored int8; smaller stay fp32


def quantise_onnx(source: Path, target: Path) -> None:
    """Quantise the plain fp32 export ``source`` to int8 into ``target``: every dense layer but the
    classification head as an integer product with per-row (per-token) activation scales computed
    at run time and int8 weights per output channel; the vocabulary's embedding table as int8 rows
    with a scale per row."""
    require("onnx")
    require("onnxruntime.quantization")
    import onnx

    from sentiment_api.core.rowwise import rowwise_int8

    with tempfile.TemporaryDirectory(prefix="sentiment-quantise-") as work:
        model = onnx.load(str(_prepared(source, Path(work))))
        rowwise_int8(model, _dense_layers(model))
        int8_embedding_rows(model)
        onnx.save(model, str(target))


def _prepared(source: Path, work: Path) -> Path:
    """ONNX Runtime's pre-processing for quantisation (shapes inferred, graph cleaned), into ``work``."""
    require("onnxruntime.quantization")
    from onnxruntime.quantization import quant_pre_process

    prepared = work / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return prepared


def _dense_layers(model: Any) -> list[str]:
    """The names of the MatMul nodes with a weight matrix, but for the small final layers."""
    weights = {initializer.name for initializer in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and node.input[1] in weights
        and not any(head in node.name for head in HEADS)
    ]


def int8_embedding_rows(model: Any, min_rows: int = EMBEDDING_MIN_ROWS) -> int:
    """Store each embedding table of ``min_rows`` rows or more as int8 rows, each with a scale of its
    own (its largest magnitude / 127), dequantised as the rows are looked up: ``Gather(table, ids)``
    becomes ``Gather(int8, ids) * Gather(scales, ids)``. A scale per row keeps a rare token's small
    values as precise as a frequent one's large ones, which one scale for the table does not (on
    all-mpnet-base-v2 it cost 1.4 points of label agreement with fp32); smaller tables (positions,
    token types, attention buckets) stay fp32. Returns how many tables were stored so."""
    require("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    tables = {initializer.name: initializer for initializer in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    replaced = 0
    nodes = []
    for node in graph.node:
        table = tables.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        if table is None or len(table.dims) != 2 or table.dims[0] < min_rows or users[table.name] != 1:
            nodes.append(node)
            continue
        values = numpy_helper.to_array(table).astype(np.float32)
        scales = np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-12) / 127.0
        rows = np.clip(np.rint(values / scales), -127, 127).astype(np.int8)
        base = f"{table.name}_int8rows".replace("/", "_")
        graph.initializer.remove(table)
        graph.initializer.extend(
            [
                numpy_helper.from_array(rows, f"{base}_q"),
                numpy_helper.from_array(scales.astype(np.float32), f"{base}_s"),
            ]
        )
        ids, out = node.input[1], node.output[0]
        axis = [helper.make_attribute("axis", 0)]
        looked_up = helper.make_node("Gather", [f"{base}_q", ids], [f"{base}_rows"], name=f"{node.name}_q")
        looked_up.attribute.extend(axis)
        scale = helper.make_node("Gather", [f"{base}_s", ids], [f"{base}_row_scales"], name=f"{node.name}_s")
        scale.attribute.extend(axis)
        nodes += [
            looked_up,
            scale,
            helper.make_node("Cast", [f"{base}_rows"], [f"{base}_float"], to=TensorProto.FLOAT),
            helper.make_node(
                "Mul", [f"{base}_float", f"{base}_row_scales"], [out], name=f"{node.name}_dequantise"
            ),
        ]
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return replaced
