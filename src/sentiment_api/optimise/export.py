"""ONNX export, transformer graph fusion, int8 quantisation and fp16, behind an accuracy gate.

``build_package`` turns a training checkpoint into the model package the engine and the server load:
``model.onnx``, ``tokenizer.json`` and ``model_card.json``. It is written to a temporary directory and
renamed at the end, and it is refused when the exported model lost accuracy (unless overridden).

Tooling: torch's TorchScript exporter (with eager attention, whose graph ONNX Runtime's fusions
recognise) plus ONNX Runtime's own transformer optimiser and quantisers (static, calibrated on
training tweets, by default). ``optimum`` is not
used: the earlier service had to pin an old release of it, and these two cover what it did.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_api.core.devices import Device
from sentiment_api.core.engine import ONNX_FILE, Classifier
from sentiment_api.core.errors import ConfigError, GateError, ModelError
from sentiment_api.core.extras import require
from sentiment_api.core.files import file_sha256, staged_directory
from sentiment_api.core.model_card import ModelCard, PackageRecord, SourceRecord, library_versions
from sentiment_api.core.records import GateThresholds
from sentiment_api.core.tokenization import TOKENIZER_FILE
from sentiment_api.data.tweets import LABEL, TEXT, load_splits
from sentiment_api.optimise.calibrate import fit_calibration
from sentiment_api.optimise.calibrate import summary as calibration_summary
from sentiment_api.optimise.gate import check_batch_invariance, run_gate
from sentiment_api.optimise.quantise import SCHEME, quantise_onnx

__all__ = [
    "DEVICES_OF_VARIANT",
    "VARIANTS",
    "GateThresholds",
    "build_package",
    "convert_to_fp16",
    "export_onnx",
    "export_variants",
    "quantise_onnx",
    "run_gate",
]


def _probabilities(classifier: Classifier, texts: list[str]) -> np.ndarray:
    return classifier.probabilities(texts)[0]


VARIANTS = ("onnx", "onnx-optimised", "onnx-int8", "onnx-fp16")
# each variant is made from the one named here: fp32 export -> fusions -> int8 (CPU) or fp16 (GPU)
MADE_FROM: dict[str, str | None] = {
    "onnx": None,
    "onnx-optimised": "onnx",
    "onnx-int8": "onnx-optimised",
    "onnx-fp16": "onnx-optimised",
}
# where each variant runs (preferred first), recorded in its card: int8's integer products have no
# CUDA kernels worth running, so on a GPU it would run op by op on the CPU
DEVICES_OF_VARIANT: dict[str, list[Device]] = {
    "onnx": ["cuda", "cpu"],
    "onnx-optimised": ["cuda", "cpu"],
    "onnx-int8": ["cpu"],
    "onnx-fp16": ["cuda", "cpu"],
}
OPSET = 17


def export_onnx(checkpoint: Path, path: Path, opset: int = OPSET) -> Path:
    """Export a PyTorch checkpoint to fp32 ONNX with dynamic batch and sequence axes."""
    torch: Any = require("torch")
    transformers: Any = require("transformers")
    # eager attention exports as MatMul/Softmax, the pattern ONNX Runtime fuses into Attention
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        checkpoint, attn_implementation="eager"
    ).eval()
    sample = torch.ones((2, 8), dtype=torch.long)
    dynamic = {0: "batch", 1: "sequence"}
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (sample, sample),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def optimise_onnx(source: Path, target: Path, checkpoint: Path) -> dict[str, int]:
    """Apply ONNX Runtime's transformer fusions (attention, layer norms, GELU); return their counts."""
    require("onnxruntime.transformers.optimizer")
    from onnxruntime.transformers import optimizer

    config = json.loads((Path(checkpoint) / "config.json").read_text())
    model = optimizer.optimize_model(
        str(source),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
        opt_level=0,
    )
    model.save_model_to_file(str(target))
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}


def convert_to_fp16(source: Path, target: Path) -> None:
    """Halve the fused graph's weights and arithmetic to fp16, keeping int64 inputs and fp32 logits.

    ``keep_io_types``: callers feed and read the same arrays as for fp32. On a GPU every op of the
    fused BERT graph has an fp16 kernel. ONNX Runtime's CPU provider lacks fp16 kernels for most of
    them; its graph optimiser then inserts casts to fp32 around those ops by itself, so the package
    still runs on the CPU (slower than fp32: the export gate and the CPU tests use that).
    """
    require("onnx")
    require("onnxruntime.transformers.onnx_model")
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target), use_external_data_format=False)


def onnx_facts(
    path: Path, fusions: dict[str, int], quantisation: str | None, devices: list[Device] | None = None
) -> PackageRecord:
    """File name, sha256, size and opset of an ONNX file, and the runtime version, for the card."""
    require("onnx")
    require("onnxruntime")
    import onnx
    import onnxruntime

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return PackageRecord(
        file=ONNX_FILE,
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        opset=opset,
        onnxruntime=onnxruntime.__version__,
        fusions=fusions,
        quantisation=quantisation,
        devices=devices or [],
    )


def export_variants(
    checkpoint: Path,
    work: Path,
    variant: str | Sequence[str] = "onnx-int8",
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Path], dict[str, int]]:
    """Write ``variant`` (or each of several) into ``work`` with every variant it is made from;
    return their paths and the fusions.

    The chain is fp32 export -> transformer fusions -> int8 or fp16, each step reading the one before
    (``MADE_FROM``), except int8: it reads the plain fp32 export, whose dense layers are still plain
    ``MatMul`` nodes (ONNX Runtime fuses the quantised graph when it loads it), and the fused graph
    is still made and gated beside it, its fusions recorded in the card.
    """
    wanted: set[str] = set()
    for name in (variant,) if isinstance(variant, str) else variant:
        if name not in VARIANTS:
            raise ConfigError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
        step: str | None = name
        while step is not None:
            wanted.add(step)
            step = MADE_FROM[step]
    log("exporting to ONNX (fp32)")
    paths = {"onnx": export_onnx(checkpoint, Path(work) / "fp32.onnx")}
    fusions: dict[str, int] = {}
    if "onnx-optimised" in wanted:
        log("applying ONNX Runtime transformer fusions")
        paths["onnx-optimised"] = Path(work) / "optimised.onnx"
        fusions = optimise_onnx(paths["onnx"], paths["onnx-optimised"], checkpoint)
    if "onnx-int8" in wanted:
        paths["onnx-int8"] = Path(work) / "int8.onnx"
        log(f"quantising to int8 ({SCHEME})")
        quantise_onnx(paths["onnx"], paths["onnx-int8"])
    if "onnx-fp16" in wanted:
        log("converting the fused graph to fp16")
        paths["onnx-fp16"] = Path(work) / "fp16.onnx"
        convert_to_fp16(paths["onnx-optimised"], paths["onnx-fp16"])
    return paths, fusions


def build_package(
    checkpoint: Path,
    output_dir: Path,
    data_path: Path,
    *,
    variant: str = "onnx-int8",
    thresholds: GateThresholds | None = None,
    accept_gate_failure: bool = False,
    overwrite: bool = False,
    calibration_oof: Path | None = None,
    log: Callable[[str], None] = print,
) -> ModelCard:
    """Export a checkpoint as far as ``variant``, gate it on the validation split, fit its
    calibration (on the validation split, or ``calibration_oof``: a crossval ``oof.csv``), package it."""
    from sentiment_api.core.engine import OnnxBackend
    from sentiment_api.core.metrics import score_probabilities

    # what only the export extra brings (torch's ONNX exporter reads graphs with it); it brings the
    # rest this needs too: name it first
    require("onnx_ir")
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise ConfigError(f"{output_dir} exists; choose another output or pass --overwrite")
    thresholds = thresholds or GateThresholds()
    card = ModelCard.load(checkpoint)
    if card.variant != "pytorch":
        raise ModelError(f"{checkpoint}: already an exported package ({card.variant})")
    data, splits = load_splits(data_path, card.data.spec)
    if data.sha256 != card.data.sha256:
        log(f"warning: {data_path} is not the file the model was trained on (sha256 differs)")
    validation = splits.validation[TEXT].tolist()

    with staged_directory(output_dir) as staging:
        work = staging / "work"
        work.mkdir()
        torch_classifier = Classifier.load(checkpoint)
        paths, fusions = export_variants(checkpoint, work, variant, log)

        def onnx_classifier(path: Path) -> Classifier:
            return Classifier(OnnxBackend(path), torch_classifier.tokenizer, card)

        log("checking accuracy on the validation split")
        probabilities = {"pytorch": _probabilities(torch_classifier, validation)}
        for name, path in paths.items():
            probabilities[name] = _probabilities(onnx_classifier(path), validation)
        gate = run_gate(probabilities, splits.validation[LABEL].tolist(), card.labels, thresholds)
        log("checking that a tweet's answer does not depend on its batch")
        check_batch_invariance(gate, onnx_classifier(paths[variant]), validation)
        gate.override = bool(gate.failures) and accept_gate_failure
        if gate.failures and not accept_gate_failure:
            raise GateError(
                "accuracy gate failed: "
                + "; ".join(gate.failures)
                + " (pass --accept-gate-failure to package it anyway)"
            )
        for failure in gate.failures:
            log(f"warning: gate failure accepted by override: {failure}")

        shutil.move(str(paths[variant]), staging / ONNX_FILE)
        shutil.rmtree(work)
        shutil.copy2(checkpoint / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        packaged = onnx_classifier(staging / ONNX_FILE)
        card.source = SourceRecord(
            checkpoint=checkpoint.name, created_at=card.created_at, metrics=card.metrics
        )
        card.metrics = {
            split: score_probabilities(
                frame[LABEL].tolist(), _probabilities(packaged, frame[TEXT].tolist()), card.labels
            )
            for split, frame in (("validation", splits.validation), ("test", splits.test))
        }
        card.variant = variant
        card.package = onnx_facts(
            staging / ONNX_FILE,
            fusions,
            SCHEME if variant == "onnx-int8" else None,
            DEVICES_OF_VARIANT[variant],
        )
        card.gate = gate
        log("fitting the calibration of its scores")
        card.calibration = fit_calibration(packaged, splits, calibration_oof)
        log(calibration_summary(card.calibration))
        card.versions = {
            **card.versions,
            **library_versions("onnx", "onnxruntime", "tokenizers", "sentiment-api"),
        }
        card.save(staging)
    return card
