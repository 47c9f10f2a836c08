#!/usr/bin/env bash
# `make image`: builds the Dockerfile into localhost/plantd:dev (PLANTD_IMAGE overrides).
#
# With a Docker engine: `docker build`. Without one: buildah (vfs storage, chroot isolation)
# into the project's own storage under ~/.cache/plantd-image, then a docker-archive next to it
# that containerd imports (`ctr -n k8s.io images import`) with no registry.
#
# The base: BASE_IMAGE if set; else the official python slim image when its registry answers;
# else a bookworm + python3 base made here with debootstrap (hack/image/base.sh).
#
# Prints the image name on stdout; progress and the image size on stderr.
# --archive: print the docker-archive's path instead, and build only when it is missing
# (`make testenv-up` imports the last `make image` without rebuilding it).
set -euo pipefail
# shellcheck source=hack/image/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"

case ${1:-} in
--archive)
	archive=$(image_archive)
	if [[ -s $archive ]]; then
		log "using $archive of $(date -r "$archive" -u +%Y-%m-%dT%H:%MZ) (make image rebuilds it)"
	else
		"$0" >/dev/null
	fi
	printf '%s\n' "$archive"
	exit 0
	;;
"") ;;
*) die "usage: hack/image/build.sh [--archive]" ;;
esac

version=$(sed -n 's/^__version__[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' services/plantd/__init__.py | head -1)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_args=(--build-arg "VERSION=${version:-dev}" --build-arg "REVISION=$revision" --build-arg "CREATED=$created")
[[ -n ${BASE_IMAGE:-} ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -n ${PIP_INDEX_URL:-} ]] && build_args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
# The CA bundle pip trusts here (PIP_CERT, a TLS-intercepting proxy) goes in as a build secret.
secret=()
[[ -n ${PIP_CERT:-} && -r ${PIP_CERT:-} ]] && secret=(--secret "id=pip-ca,src=$PIP_CERT")

t=$(now_s)
if use_docker; then
	log "docker build -t $IMAGE_NAME ."
	DOCKER_BUILDKIT=1 docker build "${build_args[@]}" "${secret[@]}" -t "$IMAGE_NAME" . >&2
	log "built $IMAGE_NAME in $(elapsed "$t")s ($(docker image inspect --format '{{.Size}}' "$IMAGE_NAME" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
	printf '%s\n' "$IMAGE_NAME"
	exit 0
fi

need_buildah
if [[ -z ${BASE_IMAGE:-} ]]; then
	# One short probe of the default base's registry; no answer means no registry here.
	if curl -fsS --max-time 5 -o /dev/null https://registry-1.docker.io/v2/ 2>/dev/null ||
		curl -sS --max-time 5 -o /dev/null -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null | grep -q '^401$'; then
		log "base: python:3.11-slim-bookworm (docker.io answers)"
	else
		log "base: docker.io unreachable, using the debootstrap base"
		base=$(hack/image/base.sh)
		build_args+=(--build-arg "BASE_IMAGE=$base")
	fi
fi

log "buildah bud -t $IMAGE_NAME . (vfs, chroot isolation) ..."
logf=$IMAGE_CACHE/build.log
mkdir -p "$IMAGE_CACHE"
# Labels that change per build go on the command line too: buildah 1.28 reuses a cached LABEL
# layer whatever the ARG values are (seen here: the created date of the previous build).
labels=(--label "org.opencontainers.image.version=${version:-dev}"
	--label "org.opencontainers.image.revision=$revision"
	--label "org.opencontainers.image.created=$created")
if ! bh bud --isolation chroot --layers --format oci "${build_args[@]}" "${labels[@]}" "${secret[@]}" \
	-t "$IMAGE_NAME" -f Dockerfile . >"$logf" 2>&1; then
	tail -n 30 "$logf" | sed 's/^/[image]   /' >&2
	die "buildah bud failed; full log: $logf"
fi
# Untagged layers of earlier builds would fill the cache (vfs copies the whole tree per layer,
# about 1 GB per build): keep only what is tagged. The build stage is then rebuilt each time
# (about 60 s of pip install, measured here), a price paid for a bounded cache.
bh rmi --prune >/dev/null 2>&1 || true

archive=$(image_archive)
rm -f "$archive"
bh push --quiet "$IMAGE_NAME" "docker-archive:$archive:$IMAGE_NAME" >/dev/null
size=$(bh images --format '{{.Size}}' "$IMAGE_NAME" | head -1)
log "built $IMAGE_NAME in $(elapsed "$t")s: $size; archive for containerd: $archive"
printf '%s\n' "$IMAGE_NAME"
