"""Headless matplotlib and atomic PNGs: what every plot of the project starts and ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentiment_api.core.extras import require
from sentiment_api.core.files import staged_file


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure: Any, path: Path) -> Path:
    """Lay ``figure`` out, write it to ``path`` as a PNG (whole or not at all), and close it."""
    figure.tight_layout()
    with staged_file(path) as staging:
        figure.savefig(staging, format="png")
    pyplot().close(figure)
    return Path(path)
