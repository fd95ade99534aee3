"""The tiny int8 package every batch test scores with."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiment_api.core.engine import Classifier


@pytest.fixture(scope="session")
def classifier(onnx_package: Path) -> Classifier:
    """The tiny int8 package on one thread: what every batch test scores with."""
    return Classifier.load(onnx_package, threads=1)
