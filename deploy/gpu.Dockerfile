# syntax=docker/dockerfile:1
# The GPU serving image: ONNX Runtime's GPU build (the gpu extra) on NVIDIA's CUDA 12 and cuDNN 9
# runtime, no torch, no transformers.
#   podman build -f deploy/gpu.Dockerfile -t sentiment-api:gpu .          (context: the repository root)
#   podman run --device nvidia.com/gpu=all -p 8000:8000 -v "$PWD/fp16:/models/fp16:ro" sentiment-api:gpu
# It runs on the GPU or not at all (SENTIMENT_DEVICE=cuda), so it serves a package made for one:
#   sentiment-api export CHECKPOINT --data DATA --out fp16 --variant onnx-fp16
# mounted at SENTIMENT_MODEL. The shipped int8 package is for the CPU: with it, serve exits with one line.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS python
# the distribution's Python 3.12; its exact version moves with Ubuntu's security updates
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile ".[gpu]"

FROM python AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SENTIMENT_HOST=0.0.0.0 \
    SENTIMENT_PORT=8000 \
    SENTIMENT_DEVICE=cuda \
    SENTIMENT_MODEL=/models/fp16
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
# the API; and the metrics port that deployments set with SENTIMENT_METRICS_PORT
EXPOSE 8000 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('SENTIMENT_PORT', '8000')}/readyz\", timeout=2)"]
ENTRYPOINT ["sentiment-api", "serve"]
