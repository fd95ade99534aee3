# For the size comparison only: the earlier service's runtime (PyTorch + transformers + FastAPI)
# on the same base, built the same way. Not shipped.
ARG BASE_IMAGE=python:3.9-slim
FROM ${BASE_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# torch from the CPU wheel that build_image.sh mounts at /opt/wheels (PyPI's default is a CUDA build)
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --find-links /opt/wheels "torch==2.13.0" "transformers>=4.46,<6" \
        "fastapi>=0.110,<1" "uvicorn>=0.30,<1"
