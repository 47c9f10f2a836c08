# shellcheck shell=bash
# Shared helpers for hack/testenv/*.sh. Sourced, never executed.
#
# Paths (all outside the repository, never committed):
#   TESTENV_CACHE   ${PLANTD_TESTENV_CACHE:-$HOME/.cache/plantd-testenv}
#   TESTENV_PINDIR  $TESTENV_CACHE/k8s-<K8S_VERSION>-<pins hash>   (one per set of pins)
#   TESTENV_BIN     $TESTENV_PINDIR/bin
#   TESTENV_CRDS    $TESTENV_PINDIR/crds
#   $TESTENV_CACHE/current -> the pin dir of the last successful build.sh
#   $TESTENV_CACHE/crds    -> current/crds

TESTENV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly TESTENV_DIR

# Bump when the build recipe changes in a way that must invalidate existing caches.
readonly TESTENV_RECIPE=1

log() { printf '[testenv] %s\n' "$*" >&2; }
die() {
	printf '[testenv] ERROR: %s\n' "$*" >&2
	exit 1
}

# Export the KEY=VALUE lines of a pins file, read as data so it cannot run code.
read_pins() {
	local f=$1 key value
	[[ -r $f ]] || die "missing $f"
	while IFS='=' read -r key value; do
		[[ -z $key || $key == \#* ]] && continue
		[[ $key =~ ^[A-Z0-9_]+$ ]] || die "bad key '$key' in $f"
		printf -v "$key" '%s' "$value"
		# shellcheck disable=SC2163  # exporting the variable named by $key
		export "$key"
	done <"$f"
}

load_versions() {
	local f="$TESTENV_DIR/versions.env"
	read_pins "$f"
	local v
	for v in K8S_VERSION K8S_STAGING_VERSION ETCD_VERSION KWOK_VERSION HELM_VERSION \
		KUBECONFORM_VERSION ISTIO_API_VERSION PROMETHEUS_OPERATOR_VERSION; do
		[[ -n ${!v:-} ]] || die "$v is not set in $f"
	done
}

# Sets TESTENV_CACHE, TESTENV_HASH, TESTENV_PINDIR, TESTENV_BIN, TESTENV_CRDS.
testenv_paths() {
	load_versions
	TESTENV_CACHE=${PLANTD_TESTENV_CACHE:-$HOME/.cache/plantd-testenv}
	TESTENV_HASH=$({
		printf 'recipe=%s\n' "$TESTENV_RECIPE"
		grep -E '^[A-Z0-9_]+=' "$TESTENV_DIR/versions.env"
	} | sha256sum | cut -c1-12)
	TESTENV_PINDIR=$TESTENV_CACHE/k8s-$K8S_VERSION-$TESTENV_HASH
	TESTENV_BIN=$TESTENV_PINDIR/bin
	TESTENV_CRDS=$TESTENV_PINDIR/crds
	export TESTENV_CACHE TESTENV_HASH TESTENV_PINDIR TESTENV_BIN TESTENV_CRDS
}

# ---------------------------------------------------------------- the real node
# Sets NODE_HASH, NODE_DIR, NODE_BIN (after testenv_paths) and exports node.env's pins.
# The node's pins hash covers node.env, the Kubernetes version and the node recipe, never
# the rest of versions.env: a node change does not rebuild the control plane.
readonly NODE_RECIPE=1
# shellcheck disable=SC2034  # used by the scripts that source this file
NODE_IMAGES=(pause coredns local-path redis)
node_paths() {
	local f=$TESTENV_DIR/node.env
	read_pins "$f"
	local v
	for v in CONTAINERD_VERSION RUNC_VERSION COREDNS_VERSION LOCAL_PATH_PROVISIONER_VERSION; do
		[[ -n ${!v:-} ]] || die "$v is not set in $f"
	done
	NODE_HASH=$({
		printf 'recipe=%s\nK8S_VERSION=%s\nK8S_STAGING_VERSION=%s\n' "$NODE_RECIPE" "$K8S_VERSION" "$K8S_STAGING_VERSION"
		grep -E '^[A-Z0-9_]+=' "$f"
		cat "$TESTENV_DIR/node/pause.c" "$TESTENV_DIR/node/images.sh"
	} | sha256sum | cut -c1-12)
	NODE_DIR=$TESTENV_CACHE/node-$NODE_HASH
	NODE_BIN=$NODE_DIR/bin
	export NODE_HASH NODE_DIR NODE_BIN
}

# node_cluster_env: the real-node cluster's name and kubeconfig, as PLANTD_TESTENV_NAME and
# PLANTD_TESTENV_KUBECONFIG for testenv_cluster_vars (one authority for both scripts).
node_cluster_env() {
	export PLANTD_TESTENV_NAME=${PLANTD_TESTENV_NODE_CLUSTER:-plantd-e2e}
	export PLANTD_TESTENV_KUBECONFIG=${PLANTD_TESTENV_NODE_KUBECONFIG:-${PLANTD_TESTENV_CACHE:-$HOME/.cache/plantd-testenv}/kubeconfig-e2e}
}

# The binaries build.sh must produce.
# shellcheck disable=SC2034  # used by the scripts that source this file
TESTENV_BINARIES=(etcd etcdctl kube-apiserver kube-controller-manager kube-scheduler kubectl
	kwok kwokctl helm kubeconform)

# Cluster runtime settings shared by up.sh / down.sh / env.sh.
testenv_cluster_vars() {
	TESTENV_NAME=${PLANTD_TESTENV_NAME:-plantd-test}
	[[ $TESTENV_NAME =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] ||
		die "PLANTD_TESTENV_NAME must be a DNS label (got '$TESTENV_NAME')"
	TESTENV_KUBECONFIG=${PLANTD_TESTENV_KUBECONFIG:-$HOME/.cache/plantd-testenv/kubeconfig}
	# kwokctl keeps each cluster's state (pki, logs, pids, etcd data) in $KWOK_WORKDIR/clusters/<name>.
	TESTENV_KWOK_WORKDIR=${PLANTD_TESTENV_WORKDIR:-${TESTENV_CACHE:-$HOME/.cache/plantd-testenv}/kwok}
	export TESTENV_NAME TESTENV_KUBECONFIG TESTENV_KWOK_WORKDIR
}

# now_s: seconds since the epoch with milliseconds.
now_s() { date +%s.%3N; }
# elapsed START: seconds since START, one decimal.
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

# run_clean CMD...: run CMD with every file descriptor above 2 closed. kwokctl starts the
# cluster components as daemons that inherit its descriptors; without this they would keep
# our lock files (and any pipe of the caller) open for as long as the cluster runs.
run_clean() {
	(
		local fd
		for fd in /proc/"$BASHPID"/fd/*; do
			fd=${fd##*/}
			if ((fd > 2)); then eval "exec ${fd}>&-"; fi
		done
		exec "$@"
	)
}

# ---------------------------------------------------------------- cluster processes
# kwokctl --runtime=binary records each component's pid in <cluster dir>/pids/<name>.pid and
# treats "kill -0 works" as running. That is wrong for a zombie (a killed component whose
# parent has not reaped it yet) and for a reused pid, so we check for ourselves.
TESTENV_COMPONENTS=(kwok-controller kube-scheduler kube-controller-manager kube-apiserver etcd)

# testenv_pid_ours PID: true when PID is alive (not a zombie) and runs a binary of our cache.
testenv_pid_ours() {
	local pid=$1 exe cache state
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z && $state != X ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	exe=${exe% (deleted)}
	cache=$(readlink -f "$TESTENV_CACHE")
	[[ $exe == "$cache"/* || $exe == "$TESTENV_CACHE"/* ]]
}

# testenv_components_alive CLUSTER_DIR: every component's pid file names a live process of ours.
testenv_components_alive() {
	local dir=$1 name pid
	for name in "${TESTENV_COMPONENTS[@]}"; do
		pid=$(tr -dc '0-9' <"$dir/pids/$name.pid" 2>/dev/null) || return 1
		testenv_pid_ours "$pid" || return 1
	done
}

# testenv_stop_pid NAME PID: SIGTERM, wait up to 20 s, then SIGKILL. Only a live process of
# ours is touched (a stale pid file may name a reused pid).
testenv_stop_pid() {
	local name=$1 pid=$2 deadline
	testenv_pid_ours "$pid" || return 0
	log "  stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || return 0
	deadline=$((SECONDS + 20))
	while testenv_pid_ours "$pid"; do
		if ((SECONDS >= deadline)); then
			log "  $name did not exit in 20s; SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
}

# testenv_stop_components CLUSTER_DIR: stop every component kwokctl started for the cluster,
# clients before servers (etcd last: it waits for the API server's streams to drain), then
# remove the pid files so a later `kwokctl start cluster` starts everything afresh.
testenv_stop_components() {
	local dir=$1 name f pid
	for name in "${TESTENV_COMPONENTS[@]}"; do
		f=$dir/pids/$name.pid
		[[ -f $f ]] || continue
		pid=$(tr -dc '0-9' <"$f")
		testenv_stop_pid "$name" "$pid"
	done
	for f in "$dir"/pids/*.pid; do
		[[ -e $f ]] || continue
		pid=$(tr -dc '0-9' <"$f")
		testenv_stop_pid "$(basename "$f" .pid)" "$pid"
	done
	rm -f "$dir"/pids/*.pid
}

# kwokctl_log: condense kwokctl's JSON log lines on stdin ("[testenv] kwokctl: <msg>");
# warnings, errors and anything that is not a JSON INFO line pass through whole.
kwokctl_log() {
	sed -u -E -e 's/^\{"time":"[^"]*","level":"INFO",.*"msg":"([^"]*)".*$/[testenv] kwokctl: \1/' \
		-e '/^\[testenv\] /!s/^/[testenv] kwokctl: /'
}

# prefixed: prefix every line on stdin with "[testenv]   " (for tool output on stderr).
prefixed() { sed -u 's/^/[testenv]   /'; }
