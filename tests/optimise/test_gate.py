import json

import numpy as np
import pytest

from sentiment_api.core.records import GateReport, GateThresholds
from sentiment_api.optimise.gate import run_gate

LABELS = ["a", "b", "c"]
PYTORCH = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
TRUTH = ["a", "b", "c", "a"]


def test_int8_that_flips_a_label_fails_on_agreement_and_macro_f1() -> None:
    drifted = PYTORCH + np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [-0.2, 0.2, 0.0]])
    gate = run_gate(
        {"pytorch": PYTORCH, "onnx": PYTORCH + 1e-6, "onnx-int8": drifted}, TRUTH, LABELS, GateThresholds()
    )
    assert gate.int8_vs_fp32_label_agreement == 0.75
    assert gate.int8_macro_f1_drop is not None and gate.int8_macro_f1_drop > 0.01
    assert not gate.passed and len(gate.failures) == 2
    assert gate.onnx_optimised_vs_pytorch_max_probability_diff is None  # not built


def test_onnx_far_from_pytorch_fails_on_parity() -> None:
    gate = run_gate({"pytorch": PYTORCH, "onnx": PYTORCH + 1e-3}, TRUTH, LABELS, GateThresholds())
    assert gate.failures == ["onnx differs from PyTorch by 1.00e-03 in probability > 1e-04"]
    assert gate.figures() == {
        "onnx_vs_pytorch_max_probability_diff": gate.onnx_vs_pytorch_max_probability_diff
    }


def test_a_report_written_before_typing_loads_into_its_fields() -> None:
    old = {
        "thresholds": {"max_probability_diff": 0.0001, "parity_samples": 256, "min_label_agreement": 0.98,
                       "max_macro_f1_drop": 0.01},
        "failures": [],
        "onnx_vs_pytorch_max_probability_diff": 1.6e-06,
        "onnx-optimised_vs_pytorch_max_probability_diff": 2.3e-06,
        "int8_vs_fp32_label_agreement": 0.9861,
        "passed": True,
        "override": False,
    }  # fmt: skip
    report = GateReport.model_validate(old)
    assert report.onnx_optimised_vs_pytorch_max_probability_diff == 2.3e-06
    assert GateReport.model_validate(json.loads(report.model_dump_json())) == report


def test_fp16_is_held_to_fp32_in_probability_and_labels_and_int8_figures_stay_unset() -> None:
    fp32 = PYTORCH
    close = fp32 + 5e-3
    flipped = fp32 + np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [-0.2, 0.2, 0.0]])

    passed = run_gate({"pytorch": fp32, "onnx": fp32, "onnx-fp16": close}, TRUTH, LABELS, GateThresholds())
    failed = run_gate({"pytorch": fp32, "onnx": fp32, "onnx-fp16": flipped}, TRUTH, LABELS, GateThresholds())

    assert passed.passed and passed.fp16_vs_fp32_label_agreement == 1.0
    assert passed.fp16_vs_fp32_max_probability_diff == pytest.approx(5e-3)
    assert passed.int8_vs_fp32_label_agreement is None
    assert failed.failures == [
        "fp16 differs from fp32 by 2.00e-01 in probability > 1e-02",
        "fp16 agrees with fp32 on 75.00% of validation labels < 99%",
    ]
