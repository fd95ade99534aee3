"""The accuracy gate: what an exported or quantised model must keep to be packaged, and its verdict.

``run_gate`` compares each variant's validation probabilities with the model it must match: fp32
(and fused) ONNX with PyTorch, int8 and fp16 with fp32 ONNX. The :class:`GateReport` it returns is recorded
in the package's model card.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sentiment_api.core.metrics import score_probabilities
from sentiment_api.core.records import GateReport, GateThresholds

if TYPE_CHECKING:
    from sentiment_api.core.engine import Classifier

BATCH_PARTNERS = 7  # a tweet shares each batch with this many random others


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
    thresholds = report.thresholds
    rng = np.random.default_rng(seed)
    ids = classifier.tokenise(texts).ids
    chosen = rng.choice(len(ids), min(thresholds.invariance_samples, len(ids)), replace=False)
    worst, flips = 0.0, 0
    for index in chosen:
        alone = classifier.infer([ids[index]])[0]
        others = rng.choice(len(ids), min(BATCH_PARTNERS, len(ids) - 1) or 1, replace=False)
        rows = [ids[index], *(ids[other] for other in others)]
        together = classifier.infer(rows, batch_size=len(rows))[0]  # one tensor, padded to the longest
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
