#!/usr/bin/env bash
# Build the serving image for real with podman, run it, and check that it answers POST /predict.
#
#   bash deploy/build_image.sh            # base image from Debian packages, then the service image
#   COMPARE=1 bash deploy/build_image.sh  # also the earlier service's runtime, for the size table
#
# Where the registry of official images is unreachable, the base (Debian bookworm, Python 3.11) is
# made with debootstrap and imported; BASE_IMAGE=python:3.11-slim uses the official one instead.
# podman runs here with the vfs storage driver, chroot isolation for builds, and runc with explicit
# (lowered) ulimits for runs: the sandbox refuses podman's default rlimits.
set -euo pipefail
cd "$(dirname "$0")/.."
PODMAN=(podman --storage-driver vfs)
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-python:3.11-bookworm}
IMAGE=${IMAGE:-localhost/sentiment-api:latest}
PORT=${PORT:-8123}
CA=/etc/ssl/certs/ca-certificates.crt   # the machine's CA bundle, for pip behind TLS inspection

if [[ $BASE_IMAGE == localhost/debian-python:* ]] && ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "building $BASE_IMAGE with debootstrap"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | "${PODMAN[@]}" import - "$BASE_IMAGE" >/dev/null
fi

echo "building $IMAGE"
"${PODMAN[@]}" build --isolation chroot --network host --format docker -v "$CA:$CA:ro" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" -f deploy/Dockerfile -t "$IMAGE" . >/dev/null

name=sentiment-api-check-$$
"${PODMAN[@]}" run -d --name "$name" --runtime runc --network host \
  --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 -e SENTIMENT_PORT="$PORT" "$IMAGE" >/dev/null
cleanup() { "${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.5
done
answer=$(curl -sf "http://127.0.0.1:$PORT/predict" -H 'content-type: application/json' \
  -d '{"text": "I love my new iPad!"}')
echo "POST /predict: $answer"
grep -q '"label":"Positive emotion"' <<<"$answer"
echo "runs as: $("${PODMAN[@]}" exec "$name" id -u)"
"${PODMAN[@]}" exec "$name" python -c \
  "import importlib.util as u; assert not any(u.find_spec(m) for m in ('torch', 'transformers'))"

if [[ ${COMPARE:-0} == 1 ]]; then
  echo "building the earlier service's runtime for comparison"
  "${PODMAN[@]}" build --isolation chroot --network host -v "$CA:$CA:ro" -v /opt/wheels:/opt/wheels:ro \
    --build-arg BASE_IMAGE="$BASE_IMAGE" -f deploy/compare/earlier-service.Dockerfile \
    -t localhost/earlier-service:latest deploy/compare >/dev/null
fi
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "sentiment-api|earlier-service|debian-python"
