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
#
# Needs podman, runc (Debian's podman brings crun, not runc: without it the run fails with
# `default OCI runtime "runc" not found`), curl, and debootstrap for the base image:
#   apt-get install -y podman runc curl debootstrap
# The check container and the debootstrap work directory are removed however the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/common.sh
PODMAN=(podman --storage-driver vfs)
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-python:3.11-bookworm}
IMAGE=${IMAGE:-localhost/sentiment-api:latest}
PORT=${PORT:-8123}
CA=/etc/ssl/certs/ca-certificates.crt   # the machine's CA bundle, for pip behind TLS inspection

needs=(podman:podman runc:runc curl:curl)
build_base=0
if [[ $BASE_IMAGE == localhost/debian-python:* ]] \
  && ! { command -v podman >/dev/null 2>&1 && "${PODMAN[@]}" image exists "$BASE_IMAGE"; }; then
  build_base=1
  needs+=(debootstrap:debootstrap)
fi
require "${needs[@]}"

work=
name=
cleanup() {
  [[ -z $name ]] || "${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true
  [[ -z $work ]] || rm -rf "$work"
}
trap cleanup EXIT

if ((build_base)); then
  work=$(mktemp -d)
  echo "building $BASE_IMAGE with debootstrap"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | "${PODMAN[@]}" import - "$BASE_IMAGE" >/dev/null
fi

echo "building $IMAGE"
"${PODMAN[@]}" build --isolation chroot --network host --format docker -v "$CA:$CA:ro" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" -f deploy/Dockerfile -t "$IMAGE" . >/dev/null

name=sentiment-api-check-$$
"${PODMAN[@]}" run -d --name "$name" --runtime runc --network host \
  --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 -e SENTIMENT_PORT="$PORT" "$IMAGE" >/dev/null
wait_ready "http://127.0.0.1:$PORT/readyz" 60 || { "${PODMAN[@]}" logs "$name" 2>&1 | tail -n 20 >&2; exit 1; }
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
