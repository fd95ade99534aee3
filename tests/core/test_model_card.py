"""A model package is served only as exported: `serve` refuses a changed model file, and a missing or
malformed card, at start-up with one line naming the file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentiment_api.core.engine import Classifier
from sentiment_api.core.errors import ModelError


def serve(package: Path) -> subprocess.CompletedProcess[str]:
    """The real `serve` command on a port nobody uses; it must refuse before it listens."""
    return subprocess.run(
        [sys.executable, "-m", "sentiment_api", "serve", "--model", str(package), "--port", "9"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def package(onnx_package: Path, tmp_path: Path) -> Path:
    """A copy of the tiny package to spoil."""
    return Path(shutil.copytree(onnx_package, tmp_path / "package"))


def spoil_model(package: Path) -> None:
    with (package / "model.onnx").open("ab") as model:
        model.write(b"\0")  # one byte more: still loads in many runtimes, but not the file exported


def spoil_card_json(package: Path) -> None:
    card = package / "model_card.json"
    card.write_text(card.read_text()[:-20])


def spoil_card_schema(package: Path) -> None:
    card = package / "model_card.json"
    card.write_text(card.read_text().replace('"max_length":', '"max_length": "long", "was":', 1))


def drop_package_record(package: Path) -> None:
    card = package / "model_card.json"
    card.write_text(card.read_text().replace('"package": {', '"unused": {', 1))


@pytest.mark.parametrize(
    ("spoil", "file", "words"),
    [
        (spoil_model, "model.onnx", "does not match package.sha256"),
        (lambda p: (p / "model_card.json").unlink(), "model_card.json", "not found"),
        (spoil_card_json, "model_card.json", "invalid model card"),
        (spoil_card_schema, "model_card.json", "max_length: Input should be a valid integer"),
        (drop_package_record, "model_card.json", "no package.sha256"),
    ],
    ids=["model-changed", "card-missing", "card-not-json", "card-wrong-type", "card-without-hash"],
)
def test_serve_refuses_a_spoilt_package_in_one_line_naming_the_file(package, spoil, file, words) -> None:
    spoil(package)

    result = serve(package)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr  # one line
    assert result.stderr.startswith(f"error: {package / file}: ")
    assert words in result.stderr
    assert "Traceback" not in result.stderr and "Uvicorn running" not in result.stderr


def test_every_process_that_loads_the_package_checks_it(package) -> None:
    spoil_model(package)

    with pytest.raises(ModelError, match=r"does not match package\.sha256"):
        Classifier.load(package)  # what each worker does, after the CLI's own check


def test_an_intact_package_loads(onnx_package) -> None:
    assert Classifier.load(onnx_package).predict(["love it"])[0].label


def test_a_package_says_which_devices_it_is_for_and_older_cards_get_it_from_their_quantisation(
    onnx_package,
) -> None:
    from sentiment_api.core.model_card import ModelCard, PackageRecord

    card = ModelCard.load(onnx_package)
    assert card.package is not None and card.package.devices == ["cpu"]
    assert card.devices() == ["cpu"]
    older = {"file": "model.onnx", "sha256": "0" * 64, "size_bytes": 1}
    assert PackageRecord.model_validate({**older, "quantisation": "hybrid"}).devices == ["cpu"]
    assert PackageRecord.model_validate(older).devices == ["cuda", "cpu"]
    assert PackageRecord.model_validate({**older, "devices": ["cpu"]}).devices == ["cpu"]
    with pytest.raises(ValueError, match="devices"):
        PackageRecord.model_validate({**older, "devices": ["tpu"]})


def test_a_card_written_while_soups_and_mixed_corpora_were_options_still_loads(tmp_path) -> None:
    import json

    from sentiment_api.core.model_card import ModelCard
    from sentiment_api.core.settings import default_model_dir

    card = json.loads((default_model_dir() / "model_card.json").read_text())
    card["hyperparameters"] |= {"members": 3, "corpus_mode": "mix", "corpus_mix_ratio": 0.5}
    card["training"]["members"] = [{"seed": 1, "best_epoch": 2, "validation": {"macro_f1": 0.6}}]
    card["corpora"][0]["mode"] = "mix"
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    loaded = ModelCard.load(tmp_path)
    assert loaded.corpora[0].mode == "mix"  # the card still says how that model was trained
    assert "members" not in loaded.hyperparameters.model_dump()
    assert loaded.hyperparameters.corpus_epochs == card["hyperparameters"]["corpus_epochs"]
