#!/usr/bin/env bash
# The e2e tier (tests/e2e/test_e2e_real_node.py) on a kind cluster, where a container engine
# runs: Docker, or nerdctl with containerd (KIND_EXPERIMENTAL_PROVIDER=nerdctl). On this
# project's CI machines neither can make kind's node image: see hack/kind/README.md.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: hack/kind/e2e.sh [up|test|down] [--redis-image IMAGE]
       hack/kind/e2e.sh --help

up      kind create cluster from hack/kind/kind.yaml (kept when it exists), then kind load of
        the image of `make image` (~/.cache/plantd-image/plantd-dev.tar, built when missing)
        and of the Redis image (pulled by the engine; default redis:7.4). Writes the
        kubeconfig to ~/.cache/plantd-kind/kubeconfig (mode 0600).
test    up, then the e2e tier against it: PLANTD_E2E_KUBECONFIG, PLANTD_E2E_NODE (the worker)
        and PLANTD_E2E_REDIS_IMAGE set for tests/e2e/conftest.py. The default.
down    kind delete cluster.

Needs kind on PATH (go install sigs.k8s.io/kind@v0.33.0) and docker, or nerdctl (then
KIND_EXPERIMENTAL_PROVIDER=nerdctl is set for you).
USAGE
}

cmd="test"
redis=redis:7.4
while (($#)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	up | test | down) cmd=$1 ;;
	--redis-image)
		redis=${2:?--redis-image needs an image}
		shift
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
	shift
done

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
log() { printf '[kind] %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

name=plantd-kind
cache=${PLANTD_KIND_CACHE:-$HOME/.cache/plantd-kind}
kubeconfig=$cache/kubeconfig
command -v kind >/dev/null || die "kind not found: go install sigs.k8s.io/kind@v0.33.0"
if docker info >/dev/null 2>&1; then
	engine=docker
elif command -v nerdctl >/dev/null && nerdctl info >/dev/null 2>&1; then
	engine=nerdctl
	export KIND_EXPERIMENTAL_PROVIDER=nerdctl
else
	die "no container engine answers (docker info, nerdctl info): kind needs one"
fi

if [[ $cmd == down ]]; then
	kind delete cluster --name "$name"
	rm -f "$kubeconfig"
	exit 0
fi

if ! kind get clusters 2>/dev/null | grep -qx "$name"; then
	log "kind create cluster --name $name ($engine)"
	kind create cluster --name "$name" --config hack/kind/kind.yaml --wait 5m
fi
mkdir -p "$cache"
(
	umask 077
	kind get kubeconfig --name "$name" >"$kubeconfig"
)
archive=$(hack/image/build.sh --archive)
log "kind load image-archive $archive"
kind load image-archive "$archive" --name "$name"
"$engine" pull "$redis" >/dev/null
redis_archive=$cache/redis.tar
"$engine" save -o "$redis_archive" "$redis"
kind load image-archive "$redis_archive" --name "$name"

if [[ $cmd == test ]]; then
	export PLANTD_E2E_KUBECONFIG=$kubeconfig PLANTD_E2E_NODE=$name-worker PLANTD_E2E_REDIS_IMAGE=$redis
	exec .venv/bin/pytest -p no:cacheprovider tests/e2e/test_e2e_real_node.py
fi
printf 'export KUBECONFIG=%q\n' "$kubeconfig"
