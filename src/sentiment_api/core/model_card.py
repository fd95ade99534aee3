"""The record that travels with a model: labels, normaliser, data, settings, metrics, hashes.

Written as ``model_card.json`` next to the weights. The exporter and the server read it instead of
guessing: which labels in which order, which normaliser, the maximum sequence length, and how well the
model did. Later stages (export, quantisation) extend it rather than start a new one. Every part is
a typed model, so a card written by any earlier version loads into the same fields.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentiment_api.core.calibration import CalibrationRecord
from sentiment_api.core.devices import Device
from sentiment_api.core.errors import ModelError
from sentiment_api.core.files import file_sha256, write_text_atomic
from sentiment_api.core.metrics import Scores
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.core.records import CorpusRecord, DataSpec, GateReport

CARD_FILE = "model_card.json"


class DataRecord(BaseModel):
    """The labelled file a model learnt from and how it was prepared."""

    file: str = Field("", description="File name (no directory).")
    sha256: str = Field("", description="sha256 of the file.")
    spec: DataSpec = Field(default_factory=DataSpec, description="How it was read, cleaned and split.")
    dropped: dict[str, int] = Field(default_factory=dict, description="Rows dropped, by reason.")
    splits: dict[str, int] = Field(default_factory=dict, description="Rows per split.")


class EpochRecord(BaseModel):
    """One epoch: its mean training loss and its validation scores."""

    epoch: int
    loss: float
    accuracy: float
    balanced_accuracy: float
    macro_f1: float


class AveragedRecord(BaseModel):
    """The uniform average of the last epochs' weights, tried against the best single epoch."""

    epochs: int
    validation_macro_f1: float
    validation_score: float | None = Field(None, description="Its selection score (the criterion's).")
    used: bool = False


class TrainingRecord(BaseModel):
    """How training went: the epochs, the one kept, and how long it took."""

    best_epoch: int = 0
    selection: str = Field("macro_f1", description="The validation score the epoch was chosen by.")
    history: list[EpochRecord] = Field(default_factory=list)
    averaged: AveragedRecord | None = None
    seconds: float = 0.0
    steps: int = 0


class PackageRecord(BaseModel):
    """The ONNX file of a package and how it was made."""

    file: str
    sha256: str
    size_bytes: int
    opset: int | None = None
    onnxruntime: str = ""
    fusions: dict[str, int] = Field(default_factory=dict, description="Fused operators by type.")
    quantisation: str | None = Field(None, description="int8 scheme, for onnx-int8.")
    devices: list[Device] = Field(
        default_factory=list,
        description="Devices the package is for, preferred first: int8 packages are for the CPU only "
        "(their quantised ops have no CUDA kernels worth running); fp32 and fp16 ones for cuda and cpu. "
        "Cards written before this field get it from their quantisation.",
    )

    @model_validator(mode="after")
    def _devices_of_older_cards(self) -> PackageRecord:
        if not self.devices:
            self.devices = ["cpu"] if self.quantisation else ["cuda", "cpu"]
        return self


class SourceRecord(BaseModel):
    """The checkpoint a package was exported from, and that checkpoint's own metrics."""

    checkpoint: str
    created_at: str
    metrics: dict[str, Scores] = Field(default_factory=dict)


class ModelCard(BaseModel):
    """What a model directory is; every field is JSON so any tool can read it."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    name: str = Field("sentiment-model", description="A human name for the model.")
    labels: list[str] = Field(description="Label names in the order of the model's outputs.")
    normaliser: str = Field(description="Text normaliser the model was trained with, `name@version`.")
    max_length: int = Field(description="Maximum input length in tokens; longer inputs are truncated.")
    pad_token_id: int = Field(0, description="Token id used to pad a batch.")
    base_model: str = Field(description="What the model was fine-tuned from.")
    variant: str = Field("pytorch", description="pytorch, onnx, onnx-optimised, onnx-int8 or onnx-fp16.")
    data: DataRecord = Field(default_factory=DataRecord, description="Data file, hash, spec and splits.")
    label_shares: dict[str, float] = Field(
        default_factory=dict, description="Share of each label in the training split."
    )
    hyperparameters: TrainingConfig = Field(default_factory=TrainingConfig)
    corpora: list[CorpusRecord] = Field(
        default_factory=list, description="Extra corpora the model learnt from, and its scores on them."
    )
    metrics: dict[str, Scores] = Field(default_factory=dict, description="Metrics by split name.")
    training: TrainingRecord = Field(default_factory=TrainingRecord, description="Epochs and time.")
    package: PackageRecord | None = Field(None, description="The ONNX file (packages only).")
    gate: GateReport | None = Field(None, description="Accuracy-gate figures and verdict (packages only).")
    source: SourceRecord | None = Field(None, description="The checkpoint a package came from.")
    calibration: CalibrationRecord | None = Field(
        None, description="The temperature its logits are divided by, and the scores it gave (packages)."
    )
    versions: dict[str, str] = Field(default_factory=dict, description="Library versions used.")
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @field_validator("package", "gate", "source", "calibration", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """Cards written before the card was typed say ``{}`` where a part does not apply."""
        return None if value == {} else value

    def devices(self) -> list[Device]:
        """Devices this model runs on, preferred first: a package's say; a checkpoint runs on PyTorch,
        on either."""
        return list(self.package.devices) if self.package is not None else ["cuda", "cpu"]

    def save(self, directory: Path) -> Path:
        """Write the card into ``directory`` atomically."""
        target = Path(directory) / CARD_FILE
        write_text_atomic(target, self.model_dump_json(indent=2) + "\n")
        return target

    @classmethod
    def load(cls, directory: Path) -> ModelCard:
        """Read the card of a model directory; one line naming the file when it is missing or broken."""
        path = Path(directory) / CARD_FILE
        if not path.is_file():
            raise ModelError(f"{path}: not found, so {directory} is not a model directory")
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'card'}: {error['msg']}" for error in exc.errors()
            )
            raise ModelError(f"{path}: invalid model card: {problems}") from None
        except (ValueError, OSError) as exc:  # not JSON, not UTF-8, unreadable
            raise ModelError(f"{path}: invalid model card: {' '.join(str(exc).split())}") from None

    def verify_package(self, directory: Path) -> None:
        """Refuse a package whose ONNX file is not the one this card describes: changed, truncated or
        swapped since export. One line naming the file, as for a broken card."""
        card_path = Path(directory) / CARD_FILE
        if self.package is None or not self.package.sha256:
            raise ModelError(
                f"{card_path}: invalid model card: no package.sha256 to check the ONNX file against "
                "(export the package again)"
            )
        onnx_path = Path(directory) / self.package.file
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path}: not found, though {card_path} names it")
        digest = file_sha256(onnx_path)
        if digest != self.package.sha256:
            raise ModelError(
                f"{onnx_path}: sha256 {digest[:16]}... does not match package.sha256 "
                f"{self.package.sha256[:16]}... in {card_path}: the file was changed or damaged since "
                "export; restore it or export the package again"
            )


def library_versions(*modules: str) -> dict[str, str]:
    """Versions of the named installed distributions, plus Python's, for the card."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for module in modules:
        try:
            found[module] = version(module)
        except PackageNotFoundError:
            continue
    return found
