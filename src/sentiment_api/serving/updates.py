"""What a package must pass before it may replace a served version: it lies inside the configured
models directory, its card reads, its ONNX file matches the card's sha256, and its gate passed.

The warm-up, the last check, is the load itself (:meth:`ServedModel.load`).
"""

from __future__ import annotations

from pathlib import Path

from sentiment_api.core.errors import (
    AdminDisabledError,
    ModelError,
    ModelUpdateError,
    PackageNotAllowedError,
    PackageNotFoundError,
)
from sentiment_api.core.model_card import ModelCard


def package_in(models_dir: Path | None, package: str) -> Path:
    """``package`` (a path inside ``models_dir``) as a directory there; a 403 naming the field for a
    path outside it (the admin API never reads one), a 404 for one it does not hold."""
    if models_dir is None:
        raise AdminDisabledError("the admin API cannot load packages: set SENTIMENT_MODELS_DIR")
    root = models_dir.resolve()
    try:
        candidate = (root / package).resolve()
        is_dir = candidate.is_dir()
    except (OSError, ValueError):  # a name too long, a NUL byte: no such directory either way
        candidate, is_dir = root / "?", False
    if not candidate.is_relative_to(root) or candidate == root:
        message = f"package {package!r} is not a directory inside the models directory"
        error = {"field": "package", "message": message, "type": "outside"}
        raise PackageNotAllowedError(f"package: {message}", [error])
    if not is_dir:
        message = f"package {package!r}: no such directory in the models directory"
        error = {"field": "package", "message": message, "type": "missing"}
        raise PackageNotFoundError(f"package: {message}", [error])
    return candidate


def check_package(name: str, package: Path) -> ModelCard:
    """The package's card once it reads, matches its ONNX file and records a passed gate; a
    :class:`ModelUpdateError` saying which check failed otherwise."""
    try:
        card = ModelCard.load(package)
        card.verify_package(package)
    except ModelError as exc:
        raise ModelUpdateError(f"model {name}: {package.name} refused: {exc}") from None
    gate = card.gate
    if gate is None:
        raise ModelUpdateError(f"model {name}: {package.name} refused: its card has no gate record")
    if not gate.passed:
        why = "; ".join(gate.failures) or "failed"
        raise ModelUpdateError(f"model {name}: {package.name} refused: its gate failed ({why})")
    return card
