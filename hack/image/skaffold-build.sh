#!/usr/bin/env bash
# skaffold's custom builder for the plantd artifact (skaffold.yaml): `make image` with the tag
# skaffold chose, then hand the image over the way skaffold will look for it.
#
# skaffold sets IMAGE (the full tag) and PUSH_IMAGE. After the script it reads the image back:
# from the local Docker daemon when push is false, from the registry when push is true
# (skaffold v2.16 pkg/skaffold/build/custom/build.go). So:
#   - Docker engine present: `docker build`; pushed too when skaffold asks.
#   - No Docker engine: buildah builds, and the image must be pushed (push: true and
#     --default-repo REGISTRY, e.g. `skaffold dev -p dev --default-repo localhost:5000`):
#     a buildah-only image cannot be found by skaffold's local-daemon lookup.
set -euo pipefail
# shellcheck source=hack/image/lib.sh
source "$(dirname "$0")/lib.sh"

: "${IMAGE:?skaffold sets IMAGE; run this through skaffold (or set IMAGE=name:tag)}"
push=${PUSH_IMAGE:-false}

if ! use_docker && [[ $push != true ]]; then
	die "no Docker engine: skaffold looks a pushed image up in a registry only. Run with push enabled and a registry, e.g. skaffold dev -p dev --default-repo localhost:5000 (docs/operator.md, section skaffold)"
fi

PLANTD_IMAGE=$IMAGE "$IMAGE_DIR/build.sh" >/dev/null
[[ $push == true ]] || exit 0

if use_docker; then
	docker push "$IMAGE" >&2
else
	# PLANTD_REGISTRY_TLS_VERIFY=false for a plain-HTTP development registry on localhost.
	bh push --tls-verify="${PLANTD_REGISTRY_TLS_VERIFY:-true}" "$IMAGE" "docker://$IMAGE" >&2
fi
