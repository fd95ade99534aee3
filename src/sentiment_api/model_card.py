"""The record that travels with a model: labels, normaliser, data, settings, metrics, hashes.

Written as ``model_card.json`` next to the weights. The exporter and the server read it instead of
guessing: which labels in which order, which normaliser, the maximum sequence length, and how well the
model did. Later stages (export, quantisation) extend it rather than start a new one.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ModelError
from .files import write_text_atomic

CARD_FILE = "model_card.json"


class ModelCard(BaseModel):
    """What a model directory is; every field is JSON so any tool can read it."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = 1
    name: str = Field("sentiment-model", description="A human name for the model.")
    labels: list[str] = Field(description="Label names in the order of the model's outputs.")
    normaliser: str = Field(description="Text normaliser the model was trained with, `name@version`.")
    max_length: int = Field(description="Maximum input length in tokens; longer inputs are truncated.")
    pad_token_id: int = Field(0, description="Token id used to pad a batch.")
    base_model: str = Field(description="What the model was fine-tuned from.")
    variant: str = Field("pytorch", description="pytorch, onnx, onnx-optimised or onnx-int8.")
    data: dict[str, Any] = Field(default_factory=dict, description="Data file, hash, spec and splits.")
    label_shares: dict[str, float] = Field(
        default_factory=dict, description="Share of each label in the training split."
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Metrics by split name (validation, test)."
    )
    training: dict[str, Any] = Field(default_factory=dict, description="Epoch history and time.")
    package: dict[str, Any] = Field(
        default_factory=dict, description="ONNX file, sha256, size, opset, runtime version, fusions."
    )
    gate: dict[str, Any] = Field(
        default_factory=dict, description="Accuracy-gate thresholds, figures, verdict, override."
    )
    source: dict[str, Any] = Field(
        default_factory=dict, description="The checkpoint a package was exported from, its metrics."
    )
    versions: dict[str, str] = Field(default_factory=dict, description="Library versions used.")
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def save(self, directory: Path) -> Path:
        """Write the card into ``directory`` atomically."""
        target = Path(directory) / CARD_FILE
        write_text_atomic(target, self.model_dump_json(indent=2) + "\n")
        return target

    @classmethod
    def load(cls, directory: Path) -> ModelCard:
        """Read the card of a model directory, with a clear error when it is missing or broken."""
        path = Path(directory) / CARD_FILE
        if not path.is_file():
            raise ModelError(f"{directory}: not a model directory (no {CARD_FILE})")
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (ValueError, ValidationError) as exc:
            raise ModelError(f"{path}: invalid model card: {exc}") from exc


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
