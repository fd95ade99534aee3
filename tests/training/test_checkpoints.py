"""Resumable training: a run interrupted and resumed ends with the weights of an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.model_card import ModelCard
from sentiment_api.training import TrainingConfig, train
from sentiment_api.training import loop as training_loop


class Interrupted(Exception):
    """What a killed run looks like from inside: the step never returns."""


def interrupt_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    real = training_loop._step
    calls = {"n": 0}

    def step(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == call:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(training_loop, "_step", step)


def weights(directory) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    from safetensors.numpy import load_file

    return load_file(directory / "model.safetensors")


@pytest.fixture(scope="module")
def recipe(tiny_bert) -> TrainingConfig:  # type: ignore[no-untyped-def]
    # 48 rows in batches of 8: 6 steps an epoch, 18 in all; dropout on, so the random state matters
    return TrainingConfig(
        base_model=str(tiny_bert), epochs=3, batch_size=8, learning_rate=5e-3, threads=1, average_last=2
    )


@pytest.mark.parametrize(
    ("stop_at", "resumed_at"), [(4, 3), (10, 9)], ids=["in-the-first-epoch", "in-the-second-epoch"]
)
def test_an_interrupted_run_resumed_ends_with_the_uninterrupted_weights(
    tiny_csv, recipe, tmp_path, monkeypatch, stop_at, resumed_at
) -> None:
    quiet = {"progress": False, "log": lambda _: None, "checkpoint_every": 3}
    whole = train(tiny_csv, tmp_path / "whole", recipe, **quiet)
    assert not (tmp_path / "whole.partial").exists()  # a finished run leaves no checkpoint behind

    with monkeypatch.context() as patch:
        interrupt_at(patch, stop_at)
        with pytest.raises(Interrupted):
            train(tiny_csv, tmp_path / "cut", recipe, **quiet)
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.partial" / "state.pt").is_file()

    with pytest.raises(ConfigError, match="pass --resume to continue it"):
        train(tiny_csv, tmp_path / "cut", recipe, **quiet)
    said: list[str] = []
    resumed = train(tiny_csv, tmp_path / "cut", recipe, resume=True, **{**quiet, "log": said.append})
    assert any(line.startswith(f"resuming at step {resumed_at}/18") for line in said)  # every 3 steps
    assert not (tmp_path / "cut.partial").exists()
    expected, got = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert expected.keys() == got.keys()
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name
    assert resumed.training.history == whole.training.history
    assert ModelCard.load(tmp_path / "cut").training.best_epoch == whole.training.best_epoch


def test_a_checkpoint_of_other_settings_is_refused(tiny_csv, recipe, tmp_path, monkeypatch) -> None:
    with monkeypatch.context() as patch:
        interrupt_at(patch, 5)
        with pytest.raises(Interrupted):
            train(tiny_csv, tmp_path / "m", recipe, progress=False, log=lambda _: None, checkpoint_every=2)
    other = recipe.model_copy(update={"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="other settings or data"):
        train(tiny_csv, tmp_path / "m", other, resume=True, progress=False, log=lambda _: None)
