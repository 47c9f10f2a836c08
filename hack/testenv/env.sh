#!/usr/bin/env bash
# Print shell exports for the running test cluster:  eval "$(hack/testenv/env.sh)"
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: eval "$(hack/testenv/env.sh [--real-node])"      (or: hack/testenv/env.sh --help)

Prints export lines for the running test cluster (the kwok one; with --real-node the
cluster of hack/testenv/node.sh, plantd-e2e):
  KUBECONFIG              the cluster's admin kubeconfig
  PATH                    the testenv bin dir first (kubectl, helm, kubeconform, kwokctl, ...)
  PLANTD_TESTENV_BIN      that bin dir
  PLANTD_TESTENV_CRDS     the Istio / Prometheus Operator CRD directory
Exits non-zero, printing nothing on stdout, when the cluster is not up
(start it with make testenv-up).
EOF
}

case ${1:-} in
-h | --help)
	usage
	exit 0
	;;
--real-node) real_node=1 ;;
"") ;;
*)
	usage >&2
	exit 2
	;;
esac

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
testenv_paths
[[ -n ${real_node:-} ]] && node_cluster_env
testenv_cluster_vars

[[ -x $TESTENV_BIN/kubectl ]] ||
	die "testenv binaries are not built ($TESTENV_BIN); run make testenv-up"
[[ -f $TESTENV_KUBECONFIG ]] ||
	die "test cluster '$TESTENV_NAME' is not up (no $TESTENV_KUBECONFIG); run make testenv-up"
ready=$("$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG" --request-timeout=5s get --raw /readyz 2>/dev/null) || true
[[ $ready == ok ]] ||
	die "test cluster '$TESTENV_NAME' is not answering (kubeconfig $TESTENV_KUBECONFIG); run make testenv-up"

printf 'export KUBECONFIG=%q\n' "$TESTENV_KUBECONFIG"
# shellcheck disable=SC2016  # $PATH must expand when the output is eval'ed, not here
printf 'export PATH=%q:"$PATH"\n' "$TESTENV_BIN"
printf 'export PLANTD_TESTENV_BIN=%q\n' "$TESTENV_BIN"
printf 'export PLANTD_TESTENV_CRDS=%q\n' "$TESTENV_CRDS"
