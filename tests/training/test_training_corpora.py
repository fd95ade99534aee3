"""Training with extra corpora: a first stage kept and reused, the head carried across by the label
map, logit offsets built into the head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sentiment_api.core.model_card import ModelCard
from sentiment_api.core.records import CorpusSpec, DataSpec
from sentiment_api.training import TrainingConfig, class_weights, load_base, train
from sentiment_api.training.loop import selection_score
from tiny_models import LABELS, MAP, labelled_rows, write_corpus

NAMES = {target: corpus for corpus, target in MAP.items()}


@pytest.fixture(scope="module")
def corpus_spec(tmp_path_factory: pytest.TempPathFactory) -> CorpusSpec:
    """Forty tweets per label with the corpus' own label names."""
    folder = tmp_path_factory.mktemp("corpus")
    rows = [(f"{text} extra", NAMES[label]) for text, label in labelled_rows(40, seed=7)]
    return CorpusSpec(path=write_corpus(folder / "train.csv", rows), label_map=MAP, holdout=0.1)


def tiny(base: Path, **overrides: object) -> TrainingConfig:
    values: dict[str, object] = {"base_model": str(base), "epochs": 1, "batch_size": 8, "learning_rate": 5e-3}
    return TrainingConfig(**{**values, **overrides})  # type: ignore[arg-type]


def quiet(messages: list[str]) -> Callable[[str], None]:
    return messages.append


def test_first_stage_is_kept_reused_and_recorded(tiny_csv, tiny_bert, corpus_spec, tmp_path) -> None:
    stages = tmp_path / "stages"
    config = tiny(tiny_bert, corpora=[corpus_spec], corpus_epochs=1)
    first: list[str] = []
    card = train(tiny_csv, tmp_path / "a", config, stage_dir=stages, progress=False, log=quiet(first))
    [stage] = list(stages.iterdir())
    assert any(m.startswith("first stage: 1 epoch(s)") for m in first)
    [record] = card.corpora
    assert record.mode == "stage" and record.stage_checkpoint == stage.name
    assert record.file == "train.csv" and len(record.sha256) == 64 and record.label_map == MAP
    assert record.rows == 108 and record.validation_rows == 12
    assert record.stage_metrics is not None and record.stage_metrics.n == 12
    assert record.metrics is not None and record.metrics.n == 12  # the final model on the corpus
    assert ModelCard.load(tmp_path / "a").corpora == card.corpora

    second: list[str] = []
    train(tiny_csv, tmp_path / "b", config.model_copy(update={"seed": config.seed}), stage_dir=stages,
          progress=False, log=quiet(second))  # fmt: skip
    assert f"first stage: reusing {stage}" in second and list(stages.iterdir()) == [stage]

    stage_card = ModelCard.load(stage)  # an ordinary checkpoint that --base-model accepts
    assert stage_card.labels == LABELS and stage_card.corpora[0].mode == "stage"
    direct = train(tiny_csv, tmp_path / "c", tiny(stage), progress=False, log=lambda _: None)
    assert direct.base_model == str(stage)


def test_the_first_stages_head_is_carried_across_by_the_label_map(tiny_bert, corpus_spec, tmp_path) -> None:
    from safetensors.numpy import load_file

    own_labels = DataSpec(sheet=None, text_column="text", label_column="label", drop_labels=[],
                          near_duplicate_threshold=100)  # fmt: skip
    stage = tmp_path / "stage"  # a model of the corpus' own labels: negative, neutral, positive
    train(corpus_spec.path, stage, tiny(tiny_bert), own_labels, progress=False, log=lambda _: None)
    trained = load_file(stage / "model.safetensors")
    swapped = {"negative": LABELS[2], "neutral": LABELS[1], "positive": LABELS[0]}  # reverses the rows
    start = load_base(tiny(stage, base_label_map=swapped), LABELS, log=lambda _: None)
    head = start.model.classifier
    assert np.array_equal(head.weight.detach().numpy(), trained["classifier.weight"][[2, 1, 0]])
    assert np.array_equal(head.bias.detach().numpy(), trained["classifier.bias"][[2, 1, 0]])
    assert start.model.config.id2label == dict(enumerate(LABELS))

    fresh = load_base(tiny(stage), LABELS, log=lambda _: None).model.classifier  # names differ: no map
    assert not np.array_equal(fresh.weight.detach().numpy(), trained["classifier.weight"])


def test_logit_offsets_are_built_into_the_heads_bias(tiny_csv, tiny_bert, tmp_path) -> None:
    from safetensors.numpy import load_file

    train(tiny_csv, tmp_path / "plain", tiny(tiny_bert), progress=False, log=lambda _: None)
    offsets = {LABELS[0]: 1.5, LABELS[2]: -0.5}
    train(
        tiny_csv,
        tmp_path / "offset",
        tiny(tiny_bert, logit_offsets=offsets),
        progress=False,
        log=lambda _: None,
    )
    plain = load_file(tmp_path / "plain" / "model.safetensors")["classifier.bias"]
    shifted = load_file(tmp_path / "offset" / "model.safetensors")["classifier.bias"]
    assert np.allclose(shifted - plain, [1.5, 0.0, -0.5], atol=1e-6)


def test_offsets_for_an_unknown_label_are_refused(tiny_csv, tiny_bert, tmp_path) -> None:
    from sentiment_api.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"logit offsets for unknown label\(s\) \['Neutral'\]"):
        train(tiny_csv, tmp_path / "x", tiny(tiny_bert, logit_offsets={"Neutral": 1.0}), progress=False,
              log=lambda _: None)  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_class_weight_power_sharpens_inverse_frequency() -> None:
    y = np.array([0] * 10 + [1] * 60 + [2] * 30)
    assert np.allclose(class_weights(LABELS, y, 2.0), class_weights(LABELS, y) ** 2)
    assert np.allclose(class_weights(LABELS, y, 0.0), 1.0)


def test_epochs_can_be_chosen_by_balanced_accuracy_too() -> None:
    from sentiment_api.core.model_card import EpochRecord

    record = EpochRecord(epoch=1, loss=0.5, accuracy=0.7, balanced_accuracy=0.6, macro_f1=0.5)
    assert selection_score(record, "macro_f1") == 0.5
    assert selection_score(record, "balanced_accuracy") == 0.6
    assert selection_score(record, "f1_and_balanced") == pytest.approx(0.55)
    assert selection_score(record, "acc_f1_balanced") == pytest.approx(0.6)
