"""Optional dependencies: one table of extras, one way to import them, one line when one is missing."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from sentiment_api.core.errors import DependencyError
from sentiment_api.core.extras import EXTRA_OF_MODULE, require
from sentiment_api.core.settings import default_model_dir

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "sentiment_api"
EXTRAS = ("data", "train", "serve", "otel", "export", "ray")


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _requirements(extra: str) -> set[str]:
    """The distributions an extra lists itself (not the extras it includes)."""
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    names = {_canonical(re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0]) for requirement in listed}
    return names - {"sentiment-api"}


def _modules_of(distribution: str) -> set[str]:
    return {
        module
        for module, distributions in packages_distributions().items()
        if distribution in map(_canonical, distributions)
    }


@pytest.mark.parametrize("extra", EXTRAS)
def test_every_requirement_of_an_extra_has_its_module_in_the_table(extra: str) -> None:
    for distribution in _requirements(extra):
        modules = _modules_of(distribution)
        assert modules, f"{distribution} is not installed here; install every extra to run this test"
        # a distribution two extras list (openpyxl: data, and serve for /ui) is there under one of them
        listing = {name for name in EXTRAS if distribution in _requirements(name)}
        assert any(EXTRA_OF_MODULE.get(module) in listing for module in modules), (
            f"{distribution} ({extra}) provides {sorted(modules)}, none of them in extras.EXTRA_OF_MODULE"
        )


def test_every_module_in_the_table_is_installed_by_its_extra() -> None:
    for module, extra in EXTRA_OF_MODULE.items():
        distributions = {_canonical(name) for name in packages_distributions().get(module, [])}
        assert distributions & _requirements(extra), f"{module}: no requirement of [{extra}] provides it"


def _required(tree: ast.AST, before: int | None = None) -> set[str]:
    """Top-level names given to ``require("...")`` in ``tree`` (on lines before ``before``)."""
    return {
        node.args[0].value.partition(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "require"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and (before is None or node.lineno < before)
    }


def _unguarded_imports(path: Path, package_guard: set[str]) -> list[str]:
    """Imports of optional modules in ``path`` with no ``require`` of the same module before them.

    Exempt: imports under ``TYPE_CHECKING``, in a ``try`` that handles ``ImportError`` (a deliberate
    fallback), and of modules the package's ``__init__`` requires up front (``package_guard``).
    """
    found: list[str] = []

    def visit(node: ast.AST, function: ast.AST | None, exempt: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            exempt = True
        if isinstance(node, ast.Try) and any(
            "ImportError" in ast.unparse(handler.type) for handler in node.handlers if handler.type
        ):
            exempt = True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node
        if isinstance(node, ast.Import | ast.ImportFrom) and not exempt:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [] if node.level else [node.module or ""]
            for name in names:
                top = name.partition(".")[0]
                if top not in EXTRA_OF_MODULE or top in package_guard:
                    continue
                if function is None or top not in _required(function, before=node.lineno):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
        for child in ast.iter_child_nodes(node):
            visit(child, function, exempt)

    visit(ast.parse(path.read_text()), None, False)
    return found


def test_every_optional_import_comes_after_require() -> None:
    server_guard = _required(ast.parse((PACKAGE / "serving" / "__init__.py").read_text()))
    unguarded = [
        problem
        for path in sorted(PACKAGE.rglob("*.py"))
        for problem in _unguarded_imports(path, server_guard if "serving" in path.parts else set())
    ]
    assert unguarded == []


def test_a_missing_module_is_one_line_naming_its_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidfuzz", None)  # any import of it now fails

    with pytest.raises(DependencyError) as caught:
        require("rapidfuzz")

    assert (
        str(caught.value) == "rapidfuzz is not installed; install it with: pip install 'sentiment-api[data]'"
    )


def test_a_module_missing_its_own_optional_dependency_names_that_extra(tmp_path, monkeypatch) -> None:
    (tmp_path / "fusion_tool.py").write_text("import onnx_ir\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRA_OF_MODULE, "fusion_tool", "serve")
    monkeypatch.setitem(sys.modules, "onnx_ir", None)

    expected = "fusion_tool needs onnx_ir, which is not installed; "
    with pytest.raises(DependencyError, match=re.escape(expected)):
        require("fusion_tool")
    with pytest.raises(DependencyError, match=re.escape("pip install 'sentiment-api[export]'")):
        require("fusion_tool")


def test_only_optional_modules_go_through_require() -> None:
    with pytest.raises(ValueError, match="not an optional dependency"):
        require("json")


def test_the_command_line_imports_no_optional_module() -> None:
    script = "import json, sys, sentiment_api.cli.commands; "
    script += "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) & set(EXTRA_OF_MODULE) == set()


BLOCKER = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""

SERVING_INSTALL = {
    module for module, extra in EXTRA_OF_MODULE.items() if extra in ("data", "train", "export")
}
CORE_INSTALL = set(EXTRA_OF_MODULE)


def run_without(blocked: set[str], *args: object, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a process where ``blocked`` modules cannot be imported, as if not installed."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER.format(blocked=sorted(blocked))))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "sentiment_api", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )


@pytest.mark.parametrize(
    ("blocked", "command", "missing", "extra"),
    [
        (
            SERVING_INSTALL,
            ["predict", default_model_dir(), "--input", "in.csv", "--output", "out.csv"],
            "pyarrow",
            "data",
        ),
        (
            {"ray"},
            ["predict", "--input", "in.csv", "--output", "out", "--ray"],
            "ray",
            "ray",
        ),
        (SERVING_INSTALL, ["train", "tweets.csv", "--out", "checkpoint"], "torch", "train"),
        (
            SERVING_INSTALL,
            ["export", "checkpoint", "--out", "package", "--data", "tweets.csv"],
            "onnx_ir",
            "export",
        ),
        (SERVING_INSTALL, ["data", "split", "tweets.csv"], "pandas", "data"),
        (CORE_INSTALL, ["serve", "--model", default_model_dir()], "fastapi", "serve"),
    ],
    ids=["predict", "predict on ray", "train", "export", "data split", "serve"],
)
def test_a_command_without_its_extra_says_what_to_install(blocked, command, missing, extra, tmp_path) -> None:
    result = run_without(blocked, *command, tmp_path=tmp_path)

    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {missing} is not installed; install it with: pip install 'sentiment-api[{extra}]'"
    ]
    assert "Traceback" not in result.stderr


def test_the_gpu_extra_is_the_serve_extra_with_the_gpu_build_of_onnx_runtime() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    serve = [r.replace("onnxruntime>", "onnxruntime-gpu>") for r in extras["serve"]]

    assert sorted(extras["gpu"]) == sorted(serve)
    assert not any(r.startswith(("onnxruntime>", "onnxruntime=", "sentiment-api")) for r in extras["gpu"])
