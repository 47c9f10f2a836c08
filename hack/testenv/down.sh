#!/usr/bin/env bash
# Stop the plantd test cluster and remove its runtime state (etcd data, pki, logs, kubeconfig).
# The build cache (binaries, CRDs, Go caches) is kept.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: hack/testenv/down.sh [--help]

Stops the test cluster "${PLANTD_TESTENV_NAME:-plantd-test}" (every process kwokctl
started for it) and removes its runtime state:
  ${PLANTD_TESTENV_WORKDIR:-$HOME/.cache/plantd-testenv/kwok}/clusters/<name>/
  ${PLANTD_TESTENV_KUBECONFIG:-$HOME/.cache/plantd-testenv/kubeconfig}
Idempotent: with no cluster it says so and exits 0. The build cache is kept
(remove ${PLANTD_TESTENV_CACHE:-$HOME/.cache/plantd-testenv} by hand to reclaim it).
EOF
}

case ${1:-} in
-h | --help)
	usage
	exit 0
	;;
"") ;;
*)
	usage >&2
	exit 2
	;;
esac

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
testenv_paths
testenv_cluster_vars
export KWOK_WORKDIR=$TESTENV_KWOK_WORKDIR
CLUSTER_DIR=$KWOK_WORKDIR/clusters/$TESTENV_NAME

# Any kwokctl works for delete: prefer the current pins, else whatever build is cached.
KWOKCTL=
for c in "$TESTENV_BIN/kwokctl" "$TESTENV_CACHE"/current/bin/kwokctl "$TESTENV_CACHE"/k8s-*/bin/kwokctl; do
	if [[ -x $c ]]; then
		KWOKCTL=$c
		break
	fi
done

if [[ -d $CLUSTER_DIR ]]; then
	t=$(now_s)
	log "stopping cluster '$TESTENV_NAME'"
	if [[ -n $KWOKCTL ]]; then
		PATH="$(dirname "$KWOKCTL"):$PATH" "$KWOKCTL" delete cluster --name "$TESTENV_NAME" --kubeconfig "$TESTENV_KUBECONFIG" 2>&1 | kwokctl_log >&2 ||
			log "kwokctl delete cluster failed; stopping by pid files"
	fi
	testenv_stop_components "$CLUSTER_DIR"
	rm -rf "$CLUSTER_DIR"
	log "cluster '$TESTENV_NAME' removed in $(elapsed "$t")s"
else
	log "cluster '$TESTENV_NAME' is not present (nothing to stop)"
fi
rm -f "$KWOK_WORKDIR/$TESTENV_NAME.kwokctl.yaml" "$KWOK_WORKDIR/.$TESTENV_NAME.lock"
if [[ -e $TESTENV_KUBECONFIG ]]; then
	rm -f "$TESTENV_KUBECONFIG"
	log "removed $TESTENV_KUBECONFIG"
fi
