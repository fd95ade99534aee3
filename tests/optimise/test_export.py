import json
import subprocess
import sys

import numpy as np
import pytest

from sentiment_api.core.engine import Classifier, OnnxBackend
from sentiment_api.core.errors import ConfigError, GateError
from sentiment_api.core.model_card import ModelCard
from sentiment_api.core.records import GateThresholds
from sentiment_api.optimise.export import build_package


def test_int8_package_has_model_tokenizer_and_extended_card(trained_tiny_bert, tiny_csv, tmp_path) -> None:
    out = tmp_path / "package"
    card = build_package(trained_tiny_bert, out, tiny_csv, log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model_card.json", "tokenizer.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["package"]  # no staging directory left
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in [out, *out.iterdir()])  # readable by others
    saved = ModelCard.load(out)
    assert saved.variant == "onnx-int8" and card.variant == "onnx-int8"
    assert saved.package is not None and saved.gate is not None and saved.source is not None
    assert saved.package.size_bytes == (out / "model.onnx").stat().st_size
    assert len(saved.package.sha256) == 64 and saved.package.opset == 17
    assert saved.package.fusions["Attention"] == 2  # both tiny layers fused
    assert saved.gate.passed and not saved.gate.override
    assert saved.gate.onnx_vs_pytorch_max_probability_diff is not None
    assert saved.gate.onnx_vs_pytorch_max_probability_diff <= 1e-4
    # the default int8 scheme: every token its own scale, so a tweet's answer ignores its batch
    assert saved.package.quantisation == "rowwise"
    assert saved.gate.batch_invariance_max_probability_diff is not None
    assert saved.gate.batch_invariance_max_probability_diff <= 1e-6
    assert saved.gate.batch_invariance_label_flips == 0
    assert saved.source.metrics["test"].n == 6
    assert set(saved.metrics) == {"validation", "test"}
    assert isinstance(Classifier.load(out).backend, OnnxBackend)


@pytest.mark.parametrize("variant", ["onnx", "onnx-optimised"])
def test_each_variant_can_be_produced_alone(trained_tiny_bert, tiny_csv, tmp_path, variant) -> None:
    card = build_package(trained_tiny_bert, tmp_path / variant, tiny_csv, variant=variant, log=lambda _: None)
    assert card.variant == variant
    assert card.gate is not None and card.gate.int8_vs_fp32_label_agreement is None
    torch_model = Classifier.load(trained_tiny_bert)
    onnx_model = Classifier.load(tmp_path / variant)
    torch_model.temperature = onnx_model.temperature  # the package's calibration, fitted at export
    texts = ["love the new ipad", "worst app crash ever " * 4, "panel at the store"]
    difference = np.abs(torch_model.probabilities(texts)[0] - onnx_model.probabilities(texts)[0])
    assert difference.max() <= 1e-4


def test_roberta_exports_too(tiny_csv, tiny_roberta, tmp_path) -> None:
    from sentiment_api.training import TrainingConfig, train

    checkpoint = tmp_path / "checkpoint"
    train(
        tiny_csv,
        checkpoint,
        TrainingConfig(base_model=str(tiny_roberta), epochs=1, batch_size=8),
        progress=False,
        log=lambda _: None,
    )
    card = build_package(checkpoint, tmp_path / "package", tiny_csv, log=lambda _: None)
    assert card.gate is not None and card.gate.onnx_vs_pytorch_max_probability_diff is not None
    assert card.gate.onnx_vs_pytorch_max_probability_diff <= 1e-4
    assert Classifier.load(tmp_path / "package").predict(["love it"])[0].label in card.labels


def test_gate_failure_refuses_the_package_unless_overridden(trained_tiny_bert, tiny_csv, tmp_path) -> None:
    impossible = GateThresholds(min_label_agreement=1.01)
    with pytest.raises(GateError, match=r"int8 agrees with fp32 on 100\.00% .* < 101%"):
        build_package(trained_tiny_bert, tmp_path / "p", tiny_csv, thresholds=impossible, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []
    card = build_package(
        trained_tiny_bert,
        tmp_path / "p",
        tiny_csv,
        thresholds=impossible,
        accept_gate_failure=True,
        log=lambda _: None,
    )
    assert card.gate is not None and card.gate.override and not card.gate.passed
    assert json.loads((tmp_path / "p" / "model_card.json").read_text())["gate"]["override"] is True


def test_unknown_variant_is_refused(trained_tiny_bert, tiny_csv, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown variant 'fp16'"):
        build_package(trained_tiny_bert, tmp_path / "p", tiny_csv, variant="fp16", log=lambda _: None)


def test_export_command_exits_non_zero_with_the_figures(trained_tiny_bert, tiny_csv, tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "sentiment_api", "export", str(trained_tiny_bert),
            "--out", str(tmp_path / "p"), "--data", str(tiny_csv), "--max-macro-f1-drop", "-1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "accuracy gate failed: int8 validation macro-F1" in result.stderr
    assert "--accept-gate-failure" in result.stderr


def test_the_gate_fails_a_model_whose_answers_depend_on_the_batch(onnx_package, tiny_csv) -> None:
    from sentiment_api.core.records import GateReport
    from sentiment_api.data.tweets import TEXT, load_splits
    from sentiment_api.optimise.gate import check_batch_invariance

    classifier = Classifier.load(onnx_package)
    real = classifier.backend

    class BatchDependent:  # per-tensor activation scales over the padded batch behave like this
        def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            logits = real.logits(input_ids, attention_mask)
            logits[:, 0] += len(input_ids) - 1  # the more company, the more the first label
            return logits

    _, splits = load_splits(tiny_csv, classifier.card.data.spec)
    validation = splits.validation[TEXT].tolist()
    report = check_batch_invariance(GateReport(), classifier, validation)
    assert report.passed and report.batch_invariance_max_probability_diff is not None
    assert report.batch_invariance_max_probability_diff <= 1e-6  # the shipped scheme ignores the batch
    classifier.backend = BatchDependent()
    report = check_batch_invariance(GateReport(), classifier, validation)
    assert not report.passed and "depends on its batch" in report.failures[0]


def test_fp16_package_keeps_fp32_probabilities_and_labels_on_validation(
    trained_tiny_bert, tiny_csv, tmp_path
) -> None:
    from sentiment_api.data.tweets import TEXT, load_splits

    card = build_package(
        trained_tiny_bert, tmp_path / "fp16", tiny_csv, variant="onnx-fp16", log=lambda _: None
    )
    build_package(trained_tiny_bert, tmp_path / "fp32", tiny_csv, variant="onnx", log=lambda _: None)

    assert card.variant == "onnx-fp16" and card.package is not None and card.gate is not None
    assert card.package.devices == ["cuda", "cpu"] and card.package.quantisation is None
    assert card.gate.passed and card.gate.fp16_vs_fp32_max_probability_diff is not None
    assert card.gate.fp16_vs_fp32_max_probability_diff <= 1e-2
    assert card.gate.fp16_vs_fp32_label_agreement is not None
    assert card.gate.fp16_vs_fp32_label_agreement >= 0.99
    assert card.gate.int8_vs_fp32_label_agreement is None  # int8 is not made on the way to fp16
    # the package itself, as the engine loads it on the CPU, against the fp32 package
    _, splits = load_splits(tiny_csv, ModelCard.load(trained_tiny_bert).data.spec)
    validation = splits.validation[TEXT].tolist()
    fp16 = Classifier.load(tmp_path / "fp16").probabilities(validation)[0]
    fp32 = Classifier.load(tmp_path / "fp32").probabilities(validation)[0]
    assert np.abs(fp16 - fp32).max() <= 1e-2
    assert (fp16.argmax(axis=1) == fp32.argmax(axis=1)).mean() >= 0.99
    assert not np.array_equal(fp16, fp32)  # it is fp16: not the same arithmetic


def test_fp16_gate_refuses_a_package_beyond_its_thresholds(trained_tiny_bert, tiny_csv, tmp_path) -> None:
    strict = GateThresholds(fp16_max_probability_diff=0.0)
    with pytest.raises(GateError, match=r"fp16 differs from fp32 by .* > 0e\+00"):
        build_package(
            trained_tiny_bert, tmp_path / "p", tiny_csv, variant="onnx-fp16", thresholds=strict,
            log=lambda _: None,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
