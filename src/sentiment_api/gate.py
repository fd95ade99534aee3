"""The accuracy gate: what an exported or quantised model must keep to be packaged, and its verdict.

``run_gate`` compares each variant's validation probabilities with the model it must match: fp32
(and fused) ONNX with PyTorch, int8 and fp16 with fp32 ONNX. The :class:`GateReport` it returns is recorded
in the package's model card.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import AliasChoices, BaseModel, Field

from .evaluation import score_probabilities

if TYPE_CHECKING:
    from .engine import Classifier

BATCH_PARTNERS = 7  # a tweet shares each batch with this many random others


class GateThresholds(BaseModel):
    """What an exported model must keep to be accepted."""

    max_probability_diff: float = Field(
        1e-4, description="Largest |Δp| allowed between fp32 ONNX and PyTorch."
    )
    parity_samples: int = Field(256, ge=1, description="Validation tweets compared for that parity check.")
    min_label_agreement: float = Field(
        0.98, description="Smallest share of validation labels int8 must agree on with fp32."
    )
    max_macro_f1_drop: float = Field(
        0.01, description="Largest drop of validation macro-F1 from fp32 to int8."
    )
    max_batch_probability_diff: float = Field(
        1e-3,
        description="Largest |Δp| of a validation tweet between running alone and inside a padded "
        "batch of random others (the packaged model); any label flip fails too.",
    )
    invariance_samples: int = Field(200, ge=1, description="Validation tweets checked for batch invariance.")
    fp16_max_probability_diff: float = Field(
        1e-2, description="Largest |Δp| allowed between fp16 and fp32 ONNX on the validation split."
    )
    fp16_min_label_agreement: float = Field(
        0.99, description="Smallest share of validation labels fp16 must agree on with fp32."
    )


class GateReport(BaseModel):
    """The gate's figures and verdict; a figure is ``None`` when its variant was not built."""

    thresholds: GateThresholds = Field(default_factory=GateThresholds)
    failures: list[str] = Field(default_factory=list, description="Why the gate failed, one line each.")
    passed: bool = True
    override: bool = Field(False, description="Packaged although it failed (--accept-gate-failure).")
    onnx_vs_pytorch_max_probability_diff: float | None = None
    onnx_optimised_vs_pytorch_max_probability_diff: float | None = Field(
        None,
        # cards written before the card was typed spelled the variant with its hyphen
        validation_alias=AliasChoices(
            "onnx_optimised_vs_pytorch_max_probability_diff", "onnx-optimised_vs_pytorch_max_probability_diff"
        ),
    )
    int8_vs_fp32_label_agreement: float | None = None
    fp32_validation_macro_f1: float | None = None
    int8_validation_macro_f1: float | None = None
    int8_macro_f1_drop: float | None = None
    batch_invariance_max_probability_diff: float | None = Field(
        None, description="Largest |Δp| of a tweet alone against inside padded batches of others."
    )
    batch_invariance_label_flips: int | None = Field(
        None, description="Tweets whose label changed between alone and inside a batch."
    )
    fp16_vs_fp32_max_probability_diff: float | None = None
    fp16_vs_fp32_label_agreement: float | None = None

    def figures(self) -> dict[str, float]:
        """The measured figures, without thresholds, verdict or the ones not measured."""
        skip = {"thresholds", "failures", "passed", "override"}
        return {k: v for k, v in self.model_dump(exclude=skip).items() if v is not None}


def run_gate(
    probabilities: Mapping[str, np.ndarray],
    truth: Sequence[str],
    labels: Sequence[str],
    thresholds: GateThresholds,
) -> GateReport:
    """Compare each variant's validation probabilities with the one it must match.

    ``probabilities`` maps variant (``pytorch`` and the ONNX variants) to validation probabilities
    in the same row order. fp32 and optimised ONNX must match PyTorch on the first
    ``parity_samples`` rows; int8 must agree with fp32 on labels and keep its macro-F1; fp16 must
    stay close to fp32 in probability and agree with it on labels, on every validation row.
    """
    report = GateReport(thresholds=thresholds)
    parity = slice(0, thresholds.parity_samples)

    def parity_with_pytorch(variant: str) -> float | None:
        if variant not in probabilities:
            return None
        diff = float(np.abs(probabilities[variant][parity] - probabilities["pytorch"][parity]).max())
        if diff > thresholds.max_probability_diff:
            report.failures.append(
                f"{variant} differs from PyTorch by {diff:.2e} in probability "
                f"> {thresholds.max_probability_diff:.0e}"
            )
        return diff

    report.onnx_vs_pytorch_max_probability_diff = parity_with_pytorch("onnx")
    report.onnx_optimised_vs_pytorch_max_probability_diff = parity_with_pytorch("onnx-optimised")
    if "onnx-int8" in probabilities:
        full = probabilities["onnx"].argmax(axis=1)
        quantised = probabilities["onnx-int8"].argmax(axis=1)
        agreement = float((full == quantised).mean())
        f1_full = score_probabilities(truth, probabilities["onnx"], labels).macro_f1
        f1_int8 = score_probabilities(truth, probabilities["onnx-int8"], labels).macro_f1
        drop = round(f1_full - f1_int8, 4)
        report.int8_vs_fp32_label_agreement = round(agreement, 4)
        report.fp32_validation_macro_f1 = f1_full
        report.int8_validation_macro_f1 = f1_int8
        report.int8_macro_f1_drop = drop
        if agreement < thresholds.min_label_agreement:
            report.failures.append(
                f"int8 agrees with fp32 on {agreement:.2%} of validation labels "
                f"< {thresholds.min_label_agreement:.0%}"
            )
        if drop > thresholds.max_macro_f1_drop:
            report.failures.append(
                f"int8 validation macro-F1 {f1_int8:.4f} is {drop:.4f} below fp32 {f1_full:.4f} "
                f"> {thresholds.max_macro_f1_drop}"
            )
    if "onnx-fp16" in probabilities:
        _check_fp16(probabilities["onnx"], probabilities["onnx-fp16"], thresholds, report)
    report.passed = not report.failures
    return report


def _check_fp16(fp32: np.ndarray, fp16: np.ndarray, thresholds: GateThresholds, report: GateReport) -> None:
    diff = float(np.abs(fp16 - fp32).max())
    agreement = float((fp16.argmax(axis=1) == fp32.argmax(axis=1)).mean())
    report.fp16_vs_fp32_max_probability_diff = diff
    report.fp16_vs_fp32_label_agreement = round(agreement, 4)
    if diff > thresholds.fp16_max_probability_diff:
        report.failures.append(
            f"fp16 differs from fp32 by {diff:.2e} in probability "
            f"> {thresholds.fp16_max_probability_diff:.0e}"
        )
    if agreement < thresholds.fp16_min_label_agreement:
        report.failures.append(
            f"fp16 agrees with fp32 on {agreement:.2%} of validation labels "
            f"< {thresholds.fp16_min_label_agreement:.0%}"
        )


def check_batch_invariance(
    report: GateReport, classifier: Classifier, texts: Sequence[str], seed: int = 0
) -> GateReport:
    """Each of ``thresholds.invariance_samples`` texts alone against inside one padded batch with
    random others: a served tweet's answer must not depend on who else is asking at that moment."""
    from .engine import softmax

    thresholds = report.thresholds
    rng = np.random.default_rng(seed)
    ids = classifier.tokenizer.encode(list(texts)).ids
    chosen = rng.choice(len(ids), min(thresholds.invariance_samples, len(ids)), replace=False)
    worst, flips = 0.0, 0
    for index in chosen:
        alone = classifier.probabilities_of_ids([ids[index]])[0]
        others = rng.choice(len(ids), min(BATCH_PARTNERS, len(ids) - 1) or 1, replace=False)
        rows = [ids[index], *(ids[other] for other in others)]
        input_ids, attention_mask = classifier.tokenizer.pad(rows)  # one tensor, padded to the longest
        together = softmax(classifier.backend.logits(input_ids, attention_mask))[0]
        worst = max(worst, float(np.abs(together - alone).max()))
        flips += int(together.argmax() != alone.argmax())
    report.batch_invariance_max_probability_diff = worst
    report.batch_invariance_label_flips = flips
    if worst > thresholds.max_batch_probability_diff or flips:
        report.failures.append(
            f"a tweet's answer depends on its batch: |Δp| up to {worst:.2e} "
            f"(> {thresholds.max_batch_probability_diff:.0e} fails) and {flips} label flip(s) in "
            f"{len(chosen)} tweets run alone and inside padded batches of others"
        )
    report.passed = not report.failures
    return report
