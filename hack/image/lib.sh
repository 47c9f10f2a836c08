# shellcheck shell=bash
# Shared settings for hack/image/*.sh (`make image`, `make image-smoke`). Sourced, never executed.
#
# Without a Docker engine the image is built with buildah (Debian package) into its own
# storage under ~/.cache, never /var/lib/containers:
#   IMAGE_CACHE     ${PLANTD_IMAGE_CACHE:-$HOME/.cache/plantd-image}
#   IMAGE_STORAGE   $IMAGE_CACHE/storage (buildah --root), $IMAGE_CACHE/run (--runroot)
#   IMAGE_ARCHIVE   $IMAGE_CACHE/plantd-<tag>.tar   a docker-archive for `ctr images import`
# vfs + chroot isolation: no overlay mounts and no user namespaces needed, which is what works
# in unprivileged sandboxes and on these 2-core CI machines (overlay needs a kernel module).

IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$IMAGE_DIR/../.." && pwd)
readonly IMAGE_DIR REPO_DIR

IMAGE_CACHE=${PLANTD_IMAGE_CACHE:-$HOME/.cache/plantd-image}
IMAGE_NAME=${PLANTD_IMAGE:-localhost/plantd:dev}
# Debian suite of the locally made base (the official python:3.11-slim-bookworm is bookworm too).
BASE_SUITE=bookworm
# Bump when base.sh changes what goes into the base, so cached bases are rebuilt.
BASE_RECIPE=1
BASE_PACKAGES=python3,python3-venv,ca-certificates
export IMAGE_CACHE IMAGE_NAME

log() { printf '[image] %s\n' "$*" >&2; }
die() {
	printf '[image] ERROR: %s\n' "$*" >&2
	exit 1
}
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

# buildah with the project's storage; every call goes through this.
bh() {
	buildah --root "$IMAGE_CACHE/storage" --runroot "$IMAGE_CACHE/run" --storage-driver vfs "$@"
}

# The local base's tag: changes with the suite, the package list and the recipe.
base_tag() {
	local h
	h=$(printf '%s\n' "$BASE_SUITE" "$BASE_PACKAGES" "$BASE_RECIPE" | sha256sum | cut -c1-12)
	printf 'localhost/plantd-base:%s-%s' "$BASE_SUITE" "$h"
}

# The archive `ctr images import` reads (one per image tag).
image_archive() {
	local tag=${IMAGE_NAME##*:}
	printf '%s/plantd-%s.tar' "$IMAGE_CACHE" "$tag"
}

have_docker_engine() {
	command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# Whether the build goes through Docker: an engine runs and PLANTD_IMAGE_BUILDER does not ask
# for buildah (the e2e tier does, to test the path CI takes).
use_docker() {
	have_docker_engine && [[ ${PLANTD_IMAGE_BUILDER:-} != buildah ]]
}

need_buildah() {
	command -v buildah >/dev/null 2>&1 && return 0
	die "no Docker engine and no buildah: install buildah (apt-get install buildah), or build with Docker: docker build -t plantd:dev ."
}
