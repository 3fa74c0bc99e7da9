#!/usr/bin/env bash
# Build the cluster image's base from Debian's packages, for machines that reach Debian's mirrors but no
# image registry (docker/Dockerfile then builds with --build-arg BASE=labkit-base:bookworm).
# Idempotent: does nothing when the image exists (FORCE=1 rebuilds). Needs root (or sudo), mmdebstrap, docker.
# Takes about 40 s on the 2-core development machine.
set -euo pipefail
IMAGE="${1:-labkit-base:bookworm}"
SUITE="${SUITE:-bookworm}"
if [ -z "${FORCE:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 2; }
echo "building $IMAGE from Debian $SUITE (python3.11, iproute2) ..."
start=$(date +%s)
mmdebstrap --quiet --variant=minbase --include=python3.11,python3.11-venv,iproute2,ca-certificates \
    "$SUITE" - | docker import --change 'CMD ["python3.11"]' - "$IMAGE" >/dev/null
echo "$IMAGE built in $(( $(date +%s) - start )) s"
