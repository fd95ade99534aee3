"""Per-row int8 matrix products in an ONNX graph: each token quantised with its own scale.

``rowwise_int8(model, names)`` replaces each named ``MatMul`` ``y = x · W`` (``x`` of shape
``[..., K]``, ``W`` a ``[K, N]`` weight) by

    amax = max(|x|) over the last axis, per row        s = amax / 127
    q    = uint8(floor(x · 127 / amax + 128.5))         (round to nearest, zero point 128)
    y    = float(MatMulInteger(q, W_int8, 128)) · s · w_scale

with ``W_int8`` and ``w_scale`` symmetric int8 per output column, computed here once. ``MatMulInteger``
with uint8 activations and int8 weights is the U8S8 product ONNX Runtime runs on VNNI (and AMX)
kernels; on CPUs without them it can saturate, and the engine loads the graph through
:func:`exact_int8` there. Every row's scale comes from that row alone, so a token's result never
depends on padding or on the other tweets of its batch, and a row of small values is not flattened
by another row's outliers, which is what per-tensor scales (``DynamicQuantizeLinear``, or ranges
calibrated ahead of time) cannot avoid. Rows that read the same input share one quantisation of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sentiment_api.core.extras import require

EPSILON = 1e-8  # the scale of an all-zero row, so that it divides to zeros, not NaN
LEVELS = 127.0
ZERO_POINT = 128
SATURATION_FREE = 63  # |w| ≤ 63: a pair of uint8 x int8 products stays below 2**15 (exact_int8)


def rowwise_int8(model: Any, names: list[str]) -> int:
    """Rewrite the ``MatMul`` nodes called ``names`` in ``model`` (in place); how many were rewritten."""
    require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    weights = {initializer.name: initializer for initializer in graph.initializer}
    wanted = set(names)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(LEVELS, np.float32), "rowwise_levels"),
            numpy_helper.from_array(np.array(ZERO_POINT + 0.5, np.float32), "rowwise_offset"),
            numpy_helper.from_array(np.array(EPSILON, np.float32), "rowwise_epsilon"),
            numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), "rowwise_zero_point"),
        ]
    )
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "rowwise_axes"))

    def reduce_max(source: str, output: str) -> Any:
        if opset >= 18:
            return helper.make_node("ReduceMax", [source, "rowwise_axes"], [output], keepdims=1)
        return helper.make_node("ReduceMax", [source], [output], keepdims=1, axes=[-1])

    quantised: dict[str, tuple[str, str]] = {}  # input -> (its uint8 rows, their scales)
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        if node.name not in wanted or node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        source, weight_name = node.input
        if source not in quantised:
            p = f"rowwise{len(quantised)}"
            nodes += [
                helper.make_node("Abs", [source], [f"{p}_abs"]),
                reduce_max(f"{p}_abs", f"{p}_amax"),
                helper.make_node("Max", [f"{p}_amax", "rowwise_epsilon"], [f"{p}_range"]),
                helper.make_node("Div", [f"{p}_range", "rowwise_levels"], [f"{p}_scale"]),
                helper.make_node("Div", ["rowwise_levels", f"{p}_range"], [f"{p}_inverse"]),
                helper.make_node("Mul", [source, f"{p}_inverse"], [f"{p}_scaled"]),
                helper.make_node("Add", [f"{p}_scaled", "rowwise_offset"], [f"{p}_shifted"]),
                # float -> uint8 truncates; the +0.5 in the offset makes that round to nearest
                helper.make_node("Cast", [f"{p}_shifted"], [f"{p}_q"], to=TensorProto.UINT8),
            ]
            quantised[source] = (f"{p}_q", f"{p}_scale")
        rows, scales = quantised[source]
        weight = numpy_helper.to_array(weights[weight_name]).astype(np.float32)
        column_scales = np.maximum(np.abs(weight).max(axis=0), EPSILON) / LEVELS
        integers = np.clip(np.round(weight / column_scales), -LEVELS, LEVELS).astype(np.int8)
        w = f"{node.name}_rowwise".replace("/", "_")
        graph.initializer.extend(
            [
                numpy_helper.from_array(integers, f"{w}_int8"),
                numpy_helper.from_array(column_scales.astype(np.float32), f"{w}_scale"),
            ]
        )
        nodes += [
            helper.make_node(
                "MatMulInteger", [rows, f"{w}_int8", "rowwise_zero_point"], [f"{w}_sum"], name=node.name
            ),
            helper.make_node("Cast", [f"{w}_sum"], [f"{w}_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{w}_float", scales], [f"{w}_rows"]),
            helper.make_node("Mul", [f"{w}_rows", f"{w}_scale"], [node.output[0]]),
        ]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [initializer for initializer in graph.initializer if initializer.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return rewritten


def exact_int8(model: Any) -> int:
    """Make every uint8 x int8 ``MatMulInteger`` whose weights reach beyond ±63 uint8 x uint8 (in place).

    ONNX Runtime runs uint8 x int8 products with VNNI (or AMX) where the CPU has it, summing in 32
    bits; without it, on AVX2 (and AVX-512 without VNNI), with ``vpmaddubsw``, which adds pairs of
    products in 16 bits and saturates at 32,767. A pair reaches ``2 · 255 · 127``, so the same package
    answered differently on the two: on an AMD EPYC without AVX-512 the shipped package disagreed with
    its own VNNI answers on 1.7 % of the reference test tweets, probabilities moving by up to 0.07.
    Shifting the weights by 128 into uint8, with 128 as their zero point, gives the same integers
    (``(w + 128) - 128``) and sends the product down ONNX Runtime's uint8 x uint8 path, which widens to
    16 bits before multiplying and cannot saturate: the answers are VNNI's, to the bit, at about 0.8x
    the (wrong) saturating speed. Weights within ±63 cannot saturate and are left as they are. Returns
    how many products were rewritten.
    """
    require("onnx")
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    initializers = {initializer.name: initializer for initializer in graph.initializer}
    shifted: dict[str, str] = {}  # int8 weight -> its uint8 copy
    rewritten = 0
    for node in graph.node:
        if node.op_type != "MatMulInteger" or len(node.input) > 3:  # a weight zero point of its own: left
            continue
        weight = initializers.get(node.input[1])
        if weight is None or weight.data_type != TensorProto.INT8:
            continue
        if weight.name not in shifted:
            values = numpy_helper.to_array(weight).astype(np.int16)
            if np.abs(values).max(initial=0) <= SATURATION_FREE:
                continue
            shifted[weight.name] = f"{weight.name}_uint8"
            graph.initializer.append(
                numpy_helper.from_array((values + 128).astype(np.uint8), shifted[weight.name])
            )
        if len(node.input) < 3:
            node.input.append("")  # no activation zero point
        node.input[1] = shifted[weight.name]
        node.input.append("exact_int8_zero_point")
        rewritten += 1
    if rewritten:
        graph.initializer.append(
            numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), "exact_int8_zero_point")
        )
        used = {name for node in graph.node for name in node.input}
        kept = [initializer for initializer in graph.initializer if initializer.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten


def exact_int8_model(path: str | Path) -> tuple[bytes, int] | None:
    """The ONNX model at ``path`` through :func:`exact_int8`, serialised, and how many products it
    rewrote; None when it rewrote none."""
    onnx = require("onnx")
    model = onnx.load(str(path))
    rewritten = exact_int8(model)
    return (model.SerializeToString(), rewritten) if rewritten else None
