"""int8 quantisation of an exported model: ``rowwise``, the one scheme packages are made with.

Every dense layer becomes an integer matrix product (``MatMulInteger``, U8S8: the product VNNI and
AMX compute natively) whose activations are quantised per row, that is per token, at run time: each
token's scale is the largest magnitude in its own row, so a row of small values keeps its precision
beside one with outliers, and padding or other tweets never touch it. A tweet therefore gets the same
answer whatever it is batched with, and the accuracy gate holds. Weights are int8 per output channel;
the embedding tables are stored as int8 too; no calibration. Schemes with activation scales per
tensor (over the whole padded batch) or fixed ahead of time were measured and not adopted
(BENCHMARKS.md, "Tried and not adopted").
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sentiment_api.core.extras import require

SCHEME = "rowwise"  # what a package's card records as its quantisation
HEADS = ("pooler", "classifier")  # small final layers, kept in fp32


def quantise_onnx(source: Path, target: Path) -> None:
    """Quantise the plain fp32 export ``source`` to int8 into ``target``: every dense layer but the
    classification head as an integer product with per-row (per-token) activation scales computed
    at run time and int8 weights per output channel; int8 embedding tables."""
    require("onnx")
    require("onnxruntime.quantization")
    import onnx

    from sentiment_api.core.rowwise import rowwise_int8

    with tempfile.TemporaryDirectory(prefix="sentiment-quantise-") as work:
        model = onnx.load(str(_prepared(source, Path(work))))
        rowwise_int8(model, _dense_layers(model))
        products = Path(work) / "products.onnx"
        onnx.save(model, str(products))
        _int8_embeddings(products, target)


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


def _int8_embeddings(source: Path, target: Path) -> None:
    """Embedding tables as int8 rows, dequantised as they are looked up; the rest as it is."""
    require("onnx")
    require("onnxruntime.quantization")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=["Gather"],
        weight_type=QuantType.QInt8,
        per_channel=False,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
