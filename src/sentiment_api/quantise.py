"""int8 quantisation of an exported model: the schemes ``export`` offers, and their calibration.

``rowwise`` (the default) and ``static`` give every tweet the same answer whatever it is batched
with, and keep the accuracy gate, because no activation scale is shared between tweets:

- ``rowwise``: every dense layer becomes an integer matrix product (``MatMulInteger``, U8S8: the
  product VNNI and AMX compute natively) whose activations are quantised per row, that is per
  token, at run time: each token's scale is the largest magnitude in its own row, so a row of small
  values keeps its precision beside one with outliers, and padding or other tweets never touch it.
  Weights are int8 per output channel. No calibration. About 1.6x the ``hybrid`` scheme's speed on
  an AVX-512 VNNI CPU (BENCHMARKS.md).
- ``static``: the attention projections get int8 activations whose ranges are fixed ahead of time
  from training tweets (``QuantizeLinear``/``DequantizeLinear`` pairs that ONNX Runtime fuses into
  ``MatMulIntegerToFloat``); the feed-forward layers, whose inputs (layer-norm outputs with outlier
  channels, GELU outputs with long tails) lose two to three points of label agreement with any fixed
  per-tensor range, become 8-bit ``MatMulNBits`` with ``accuracy_level=4`` (activations quantised per
  row in blocks of 32): accurate, but barely faster than fp32 on the CPUs measured.
- both store the embedding tables as int8.

``dynamic`` and ``hybrid`` compute activation scales per tensor at run time, over the whole padded
batch, so a tweet's answer moves with its batch companions; they stay for comparison.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .extras import require
from .model_card import ModelCard
from .tokenization import TweetTokenizer

QUANTISATION_SCHEMES = ("rowwise", "static", "hybrid", "dynamic")
DEFAULT_SCHEME = "rowwise"
CALIBRATION_TWEETS = 300
HEADS = ("pooler", "classifier")  # small final layers, kept in fp32
PLAIN_INPUT_SCHEMES = ("rowwise", "static")  # these read the plain fp32 export, not the fused graph
NBITS_BLOCK = 32  # 128 is as accurate but not batch-invariant in ONNX Runtime 1.2x's kernels


def _is_feed_forward(name: str) -> bool:
    """A feed-forward layer of a BERT-, RoBERTa- or DistilBERT-style encoder, by its export name."""
    if "attention" in name:
        return False
    return any(part in name for part in ("/intermediate/", "/output/dense", "/ffn/"))


@dataclass(frozen=True)
class Calibration:
    """Training tweets for the ``static`` scheme to calibrate ranges on, one tweet per feed at its
    own length (padding would add the pad tokens' activations to the ranges)."""

    feeds: list[dict[str, np.ndarray]]


def calibration_feeds(checkpoint: Path, texts: Sequence[str], seed: int = 0) -> Calibration:
    """Draw :data:`CALIBRATION_TWEETS` of ``texts`` at random."""
    card = ModelCard.load(checkpoint)
    tokenizer = TweetTokenizer.from_file(checkpoint, card.max_length, card.pad_token_id)
    order = np.random.default_rng(seed).permutation(len(texts))
    ids = tokenizer.encode([texts[index] for index in order[:CALIBRATION_TWEETS]]).ids
    feeds = [
        {"input_ids": np.array([row], dtype=np.int64), "attention_mask": np.ones((1, len(row)), np.int64)}
        for row in ids
    ]
    return Calibration(feeds)


def quantise_onnx(
    source: Path,
    target: Path,
    scheme: str = DEFAULT_SCHEME,
    calibration: Calibration | None = None,
) -> None:
    """Quantise ``source`` to int8 into ``target``.

    ``rowwise`` (default; reads the plain fp32 export): every dense layer but the classification
    head as an integer product with per-row (per-token) activation scales computed at run time and
    int8 weights per output channel; int8 embedding tables (the module's docstring says why).

    ``static`` (reads the plain fp32 export and needs ``calibration``): attention
    projections with int8 weights per output channel and int8 activations in the min/max ranges the
    calibration tweets produce; feed-forward layers as 8-bit ``MatMulNBits`` in blocks of 32; int8
    embedding tables (the module's docstring says why).

    ``dynamic``: ONNX Runtime's dynamic quantisation everywhere, per channel; activation scales are
    computed per tensor at run time, over the whole padded batch: answers depend on the batch.

    ``hybrid``: the fused attention and embedding ops as ``dynamic``, the dense layers as 8-bit
    ``MatMulNBits`` (blocks of 128, ``accuracy_level=4``). Accurate, but barely faster than fp32
    where those kernels are weak, and the attention's per-tensor scales depend on the batch.
    """
    require("onnx")
    require("onnxruntime.quantization")
    if scheme not in QUANTISATION_SCHEMES:
        raise ConfigError(f"unknown quantisation scheme {scheme!r}; choose {QUANTISATION_SCHEMES}")
    if scheme == "static":
        if calibration is None or not calibration.feeds:
            raise ConfigError("the static int8 scheme needs calibration tweets: give the training data")
        _quantise_static(source, target, calibration)
    elif scheme == "rowwise":
        _quantise_rowwise(source, target)
    else:
        _quantise_dynamic(source, target, hybrid=scheme == "hybrid")


def _quantise_static(source: Path, target: Path, calibration: Calibration) -> None:
    require("onnx")
    require("onnxruntime.quantization.matmul_nbits_quantizer")
    import onnx

    with tempfile.TemporaryDirectory(prefix="sentiment-quantise-") as work:
        prepared, activations = _prepared(source, Path(work)), Path(work) / "activations.onnx"
        dense = _dense_layers(onnx.load(str(prepared)))
        feed_forward = [name for name in dense if _is_feed_forward(name)]
        _calibrate_and_quantise(
            prepared, activations, calibration, [n for n in dense if n not in feed_forward]
        )
        if feed_forward:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantiser = MatMulNBitsQuantizer(
                onnx.load(str(activations)),
                bits=8,
                block_size=NBITS_BLOCK,
                is_symmetric=True,
                accuracy_level=4,  # int8 arithmetic, activations quantised per row and block
                nodes_to_include=feed_forward,
            )
            quantiser.process()
            quantiser.model.save_model_to_file(str(activations), use_external_data_format=False)
        _int8_embeddings(activations, target)


def _quantise_rowwise(source: Path, target: Path) -> None:
    require("onnx")
    require("onnxruntime.quantization")
    import onnx

    from .rowwise import rowwise_int8

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


def _calibrate_and_quantise(source: Path, target: Path, calibration: Calibration, nodes: list[str]) -> None:
    require("onnxruntime.quantization")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Feeds(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.remaining = iter(calibration.feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    quantize_static(
        str(source),
        str(target),
        Feeds(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=nodes,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,  # clipping outliers costs more than it saves
        extra_options={
            # a MatMul's float output feeds the next op: no QDQ pair after it
            "OpTypesToExcludeOutputQuantization": ["MatMul"],
        },
    )


def _quantise_dynamic(source: Path, target: Path, hybrid: bool) -> None:
    require("onnx")
    require("onnxruntime.quantization.matmul_nbits_quantizer")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Attention", "EmbedLayerNormalization", "Gather"] if hybrid else None,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    if hybrid:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantiser = MatMulNBitsQuantizer(
            onnx.load(str(target)), bits=8, block_size=128, is_symmetric=True, accuracy_level=4
        )
        quantiser.process()
        quantiser.model.save_model_to_file(str(target), use_external_data_format=False)
