import json

import numpy as np
import pytest

from sentiment_api.core.engine import Classifier
from sentiment_api.core.errors import ConfigError
from sentiment_api.core.model_card import ModelCard
from sentiment_api.training import TrainingConfig, class_weights, train
from tiny_models import LABELS


def test_class_weights_follow_the_model_label_order() -> None:
    # the earlier code reversed them and weighted the commonest label most
    y = np.array([0] * 10 + [1] * 60 + [2] * 30)
    weights = class_weights(LABELS, y)
    assert weights.argmax() == 0 and weights.argmin() == 1
    assert np.allclose(weights, [100 / 30, 100 / 180, 100 / 90])


def test_class_weights_refuse_a_label_without_rows() -> None:
    with pytest.raises(ConfigError, match="Positive emotion"):
        class_weights(LABELS, np.array([0, 1, 1]))


def test_tiny_bert_checkpoint_reloads_and_predicts(trained_tiny_bert) -> None:
    files = {path.name for path in trained_tiny_bert.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "model_card.json"} <= files
    card = ModelCard.load(trained_tiny_bert)
    assert card.labels == LABELS
    assert card.normaliser == "legacy@1"
    assert card.data.splits == {"train": 48, "validation": 6, "test": 6}
    assert len(card.data.sha256) == 64
    assert card.hyperparameters.epochs == 3 and len(card.training.history) == 3
    assert 1 <= card.training.best_epoch <= 3
    assert set(card.metrics) == {"validation", "test"}
    assert {"torch", "transformers", "tokenizers"} <= set(card.versions)
    assert abs(sum(card.label_shares.values()) - 1) < 1e-3
    config = json.loads((trained_tiny_bert / "config.json").read_text())
    assert config["id2label"] == {str(i): label for i, label in enumerate(LABELS)}

    classifier = Classifier.load(trained_tiny_bert)
    predictions = classifier.predict(["I LOVE the new ipad, awesome!", "worst app, it crashes"], top_k=3)
    assert [sorted(p.labels) for p in predictions] == [LABELS, LABELS]
    assert all(abs(sum(p.scores) - 1) < 1e-5 for p in predictions)
    assert all(p.scores == sorted(p.scores, reverse=True) for p in predictions)


def test_best_validation_epoch_or_average_is_the_one_saved(trained_tiny_bert) -> None:
    card = ModelCard.load(trained_tiny_bert)
    best = max(card.training.history, key=lambda row: row.macro_f1)
    assert card.training.best_epoch == best.epoch
    averaged = card.training.averaged
    assert averaged is not None and averaged.epochs == 2
    assert averaged.used == (averaged.validation_macro_f1 > best.macro_f1)
    kept = averaged.validation_macro_f1 if averaged.used else best.macro_f1
    assert card.metrics["validation"].macro_f1 == kept


def test_average_states_is_the_mean_of_float_tensors() -> None:
    import torch

    from sentiment_api.training import average_states

    states = [
        {"w": torch.tensor([1.0, 3.0]), "ids": torch.tensor([1])},
        {"w": torch.tensor([3.0, 5.0]), "ids": torch.tensor([2])},
    ]
    averaged = average_states(states)
    assert averaged["w"].tolist() == [2.0, 4.0] and averaged["ids"].tolist() == [2]


def test_tiny_roberta_trains_with_a_bpe_tokenizer(tiny_csv, tiny_roberta, tmp_path) -> None:
    out = tmp_path / "roberta"
    card = train(
        tiny_csv,
        out,
        TrainingConfig(base_model=str(tiny_roberta), epochs=2, batch_size=8, learning_rate=5e-3),
        progress=False,
        log=lambda _: None,
    )
    assert card.pad_token_id == 1
    prediction = Classifier.load(out).predict(["love it " * 100])[0]
    assert prediction.label in LABELS
    assert prediction.truncated  # 300 words exceed the tiny model's 64 positions


def test_existing_output_is_not_overwritten_by_default(tiny_csv, tiny_bert, tmp_path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(ConfigError, match="--overwrite"):
        train(tiny_csv, tmp_path / "out", TrainingConfig(base_model=str(tiny_bert)))


def test_a_failed_run_leaves_no_output(tiny_csv, tmp_path) -> None:
    from sentiment_api.core.errors import ModelError

    with pytest.raises(ModelError, match="cannot load base model"):
        train(tiny_csv, tmp_path / "out", TrainingConfig(base_model=str(tmp_path / "missing")))
    assert list(tmp_path.iterdir()) == []


def test_frozen_embeddings_do_not_move(tiny_csv, tiny_bert, tmp_path) -> None:
    from safetensors.numpy import load_file

    train(
        tiny_csv,
        tmp_path / "frozen",
        TrainingConfig(base_model=str(tiny_bert), epochs=1, batch_size=8, freeze_embeddings=True),
        progress=False,
        log=lambda _: None,
    )
    key = "bert.embeddings.word_embeddings.weight"
    before = load_file(tiny_bert / "model.safetensors")[key]
    after = load_file(tmp_path / "frozen" / "model.safetensors")[key]
    assert np.array_equal(before, after)
    moved = "bert.encoder.layer.0.output.dense.weight"
    assert not np.array_equal(
        load_file(tiny_bert / "model.safetensors")[moved],
        load_file(tmp_path / "frozen" / "model.safetensors")[moved],
    )


def test_layer_lr_decay_scales_each_layer(tiny_bert) -> None:
    from transformers import AutoModelForSequenceClassification

    from sentiment_api.training import parameter_groups

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    config = TrainingConfig(learning_rate=1.0, layer_lr_decay=0.5, weight_decay=0.1)
    rate = {id(p): g["lr"] for g in parameter_groups(model, config) for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in parameter_groups(model, config) for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["classifier.weight"])] == 1.0
    assert rate[id(named["bert.encoder.layer.1.output.dense.weight"])] == 0.5
    assert rate[id(named["bert.encoder.layer.0.output.dense.weight"])] == 0.25
    assert rate[id(named["bert.embeddings.word_embeddings.weight"])] == 0.125
    assert decay[id(named["bert.encoder.layer.0.output.dense.bias"])] == 0.0
    assert decay[id(named["classifier.weight"])] == 0.1
    assert len(rate) == len(named)
