"""Shared fixtures: the reference data file, tiny labelled files and tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_models import build_tiny_bert, build_tiny_roberta, labelled_rows, with_temperature, write_rows

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "nlp_data.xlsx"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data/nlp_data.xlsx``; CI has it beside the clone."""
    if not SHARED_DATA.is_file():
        pytest.skip(f"reference data not found at {SHARED_DATA} (CI keeps ../shared beside the clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sixty distinct labelled tweets, twenty per label."""
    return write_rows(tmp_path_factory.mktemp("data") / "tweets.csv", labelled_rows(20))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def trained_tiny_bert(tiny_csv: Path, tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint fine-tuned from the tiny BERT by the project's own training function."""
    from sentiment_api.training import TrainingConfig, train

    out = tmp_path_factory.mktemp("checkpoints") / "bert"
    train(
        tiny_csv,
        out,
        TrainingConfig(base_model=str(tiny_bert), epochs=3, batch_size=8, learning_rate=5e-3, average_last=2),
        progress=False,
        log=lambda _: None,
    )
    return out


@pytest.fixture(scope="session")
def exported_package(
    trained_tiny_bert: Path, tiny_csv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny checkpoint exported by the project's own exporter: a real int8 model package, with
    the temperature export fitted on its 6 validation rows (it differs from machine to machine)."""
    from sentiment_api.optimise.export import build_package

    out = tmp_path_factory.mktemp("served") / "package"
    # the tiny model's scores sit near a third each, so int8 flips some of its 6 validation labels on
    # some runs and the gate refuses it; this fixture wants a package, and test_export tests the gate
    build_package(trained_tiny_bert, out, tiny_csv, accept_gate_failure=True, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def onnx_package(exported_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported package with its temperature pinned to 1: a fitted one can be large enough on
    some machine to squeeze every score to a third, and tests that tell scores apart must not
    depend on it (tests of the fit itself use ``exported_package``)."""
    return with_temperature(exported_package, tmp_path_factory.mktemp("pinned"), 1.0)
