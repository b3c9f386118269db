#!/usr/bin/env bash
# Builds the flashpipe image with podman and runs the pipeline from it: `flashpipe run`
# on examples/vocabulary_1000.csv inside a container, then the services in containers
# against NATS and PostgreSQL on this machine (deploy/image_test.go, build tag image).
#
# Needs podman (Debian: apt-get update && apt-get install -y podman runc) and the
# PostgreSQL the tests use (127.0.0.1:5432, or FLASHPIPE_TEST_DATABASE_URL). No registry:
# the image is built FROM scratch (deploy/Dockerfile.prebuilt) from a binary built here.
#   scripts/image-test.sh                             # about a minute
#   FLASHPIPE_IMAGE_TEST_RPM=600 scripts/image-test.sh  # the processors at a real API's default limit
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v podman >/dev/null; then
  echo "image-test: podman not found; install it: apt-get update && apt-get install -y podman runc" >&2
  exit 1
fi
exec go test -tags image -run '^TestImage$' -count=1 -v -timeout 20m ./deploy/ "$@"
