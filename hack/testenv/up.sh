#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions below are called through wait_for
# Start (or reuse) the plantd test cluster: etcd + kube-apiserver + kube-controller-manager +
# kube-scheduler + kwok fake nodes, orchestrated by kwokctl --runtime=binary with our binaries.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: hack/testenv/up.sh [--nodes N] [--real-node] [--recreate] [--timeout SECONDS] [--help]

Starts the test cluster "${PLANTD_TESTENV_NAME:-plantd-test}" from the binaries that
hack/testenv/build.sh builds (it is run first; cached):
  etcd, kube-apiserver (RBAC, ServiceAccount tokens/TokenRequest, admission on),
  kube-controller-manager (all default controllers), kube-scheduler, kwok controller,
  and N fake kwok nodes (default 2), so Deployments/StatefulSets roll out to Ready pods.
Then applies the Istio and Prometheus Operator CRDs (server-side) and waits until they
are Established.

Idempotent: when the cluster is already up and healthy it returns at once; when its
processes are gone (reboot, CI cleanup) it restarts them, and recreates the cluster if
that fails.

The kubeconfig (admin, client certificate) is written to
  ${PLANTD_TESTENV_KUBECONFIG:-$HOME/.cache/plantd-testenv/kubeconfig}
and the last stdout line is:  export KUBECONFIG=<that path>

Options:
  --nodes N          number of fake nodes (default 2, or $PLANTD_TESTENV_NODES)
  --real-node        the control plane of the real-node cluster instead (hack/testenv/node.sh
                     up runs this): cluster "${PLANTD_TESTENV_NODE_CLUSTER:-plantd-e2e}",
                     kubeconfig ${PLANTD_TESTENV_NODE_KUBECONFIG:-<cache>/kubeconfig-e2e},
                     no kwok controller and no fake nodes; the API server listens on every
                     address (pods reach it through the kubernetes Service), its certificate
                     also names the Service IP 10.96.0.1, and it reaches the kubelet by IP
  --recreate         delete the cluster first (fresh etcd)
  --timeout SECONDS  deadline for each readiness wait (default 180)
  --help             this text

Environment: PLANTD_TESTENV_NAME, PLANTD_TESTENV_KUBECONFIG, PLANTD_TESTENV_WORKDIR
(kwokctl state, default $HOME/.cache/plantd-testenv/kwok), PLANTD_TESTENV_CACHE.
EOF
}

nodes=${PLANTD_TESTENV_NODES:-2}
real_node=0
recreate=0
timeout=180
while (($#)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--nodes)
		nodes=${2:?--nodes needs a value}
		shift
		;;
	--recreate) recreate=1 ;;
	--real-node) real_node=1 ;;
	--timeout)
		timeout=${2:?--timeout needs a value}
		shift
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
	shift
done
if ((real_node)); then
	nodes=0
elif ! [[ $nodes =~ ^[1-9][0-9]*$ ]]; then
	echo "[testenv] --nodes must be a positive integer" >&2
	exit 2
fi
[[ $timeout =~ ^[1-9][0-9]*$ ]] || {
	echo "[testenv] --timeout must be a positive integer" >&2
	exit 2
}

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
testenv_paths
if ((real_node)); then node_cluster_env; fi
testenv_cluster_vars
T_ALL=$(now_s)

BIN=$("$TESTENV_DIR/build.sh" | tail -1)
[[ -x $BIN/kwokctl ]] || die "build.sh did not produce $BIN/kwokctl"
export PATH="$BIN:$PATH"
export KWOK_WORKDIR=$TESTENV_KWOK_WORKDIR
# kwokctl shells out to kubectl; make sure it is ours, never /usr/bin/kubectl.
export KWOK_KUBECTL_BINARY=$BIN/kubectl
CLUSTER_DIR=$KWOK_WORKDIR/clusters/$TESTENV_NAME
PINS_FILE=$CLUSTER_DIR/plantd-testenv.pins
# What the pins file records: the pins, and the real-node shape when asked for (a cluster
# made the other way is recreated, not reused).
PINS=$TESTENV_HASH
if ((real_node)); then
	PINS+=" real-node"
	# No kwok controller in this cluster: it would fake the real node's status.
	TESTENV_COMPONENTS=(kube-scheduler kube-controller-manager kube-apiserver etcd)
fi
KC=$TESTENV_KUBECONFIG

kc() { "$BIN/kubectl" --kubeconfig "$KC" --request-timeout=10s "$@"; }

# kwokctl ARGS...: run our kwokctl with no inherited descriptors (see run_clean), its output
# on stderr, condensed. The components it starts log to $CLUSTER_DIR/logs/, not to us.
kwokctl() {
	run_clean "$BIN/kwokctl" "$@" 2>&1 | kwokctl_log >&2
	return "${PIPESTATUS[0]}"
}

# wait_for DESCRIPTION COMMAND...: poll COMMAND until it succeeds or the deadline passes.
wait_for() {
	local desc=$1 t deadline
	shift
	t=$(now_s)
	deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "timed out after ${timeout}s waiting for: $desc"
			log "component logs: $CLUSTER_DIR/logs/ (or: KWOK_WORKDIR=$KWOK_WORKDIR $BIN/kwokctl logs <component> --name $TESTENV_NAME)"
			"$@" >&2 || true
			exit 1
		fi
		sleep 0.5
	done
	log "  ready: $desc ($(elapsed "$t")s)"
}

api_ready() { [[ $(kc get --raw /readyz 2>/dev/null) == ok ]]; }
nodes_ready() {
	local n
	n=$(kc get nodes -o jsonpath='{range .items[*]}{range .status.conditions[?(@.type=="Ready")]}{.status}{"\n"}{end}{end}' 2>/dev/null | grep -c '^True$') || true
	((n >= nodes))
}
default_sa() { kc -n default get serviceaccount default -o name; }
# Every controller we rely on has to be running: the kube-root-ca.crt ConfigMap (root-ca
# publisher) and the default ServiceAccount (serviceaccount controller) prove the
# controller-manager is up and talking to the API server.
root_ca() { kc -n default get configmap kube-root-ca.crt -o name; }

# The controllers the tests rely on, as named by kube-controller-manager's /healthz?verbose.
KCM_REQUIRED=(garbage-collector-controller deployment-controller replicaset-controller
	statefulset-controller endpointslice-controller serviceaccount-controller
	serviceaccount-token-controller namespace-controller root-ca-certificate-publisher-controller)
# kcm_controllers: the controller-manager's /healthz?verbose reports each required controller ok.
kcm_controllers() {
	local pid port out c
	pid=$(tr -dc '0-9' <"$CLUSTER_DIR/pids/kube-controller-manager.pid" 2>/dev/null) || return 1
	port=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 's/^--secure-port=\([0-9]*\)$/\1/p')
	[[ -n $port ]] || return 1
	out=$(curl -sk --max-time 5 "https://127.0.0.1:$port/healthz?verbose") || return 1
	for c in "${KCM_REQUIRED[@]}"; do
		grep -qx "\[+\]$c ok" <<<"$out" || return 1
	done
}

write_kubeconfig() {
	mkdir -p "$(dirname "$KC")"
	local tmp
	tmp=$(mktemp "$KC.XXXXXX")
	"$BIN/kwokctl" get kubeconfig --name "$TESTENV_NAME" >"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$KC"
}

healthy() {
	[[ -f $PINS_FILE && -f $KC ]] || return 1
	[[ $(cat "$PINS_FILE") == "$PINS" ]] || return 1
	testenv_components_alive "$CLUSTER_DIR" || return 1
	api_ready && nodes_ready && default_sa >/dev/null 2>&1
}

crd_files() {
	printf '%s\n' "$TESTENV_CRDS/istio/customresourcedefinitions.gen.yaml"
	printf '%s\n' "$TESTENV_CRDS"/prometheus-operator/monitoring.coreos.com_*.yaml
}

# Names of all CRDs in our CRD files (metadata.name of each CustomResourceDefinition),
# computed once per pin dir and cached next to the files.
crd_names() {
	local cache=$TESTENV_CRDS/.names f
	if [[ ! -s $cache ]]; then
		while IFS= read -r f; do
			awk '/^kind: CustomResourceDefinition/ { crd = 1 }
			     /^---/ { crd = 0; meta = 0 }
			     crd && /^metadata:/ { meta = 1; next }
			     crd && meta && /^  name: / { print $2; meta = 0 }
			     /^[a-z]/ && !/^metadata:/ { meta = 0 }' "$f"
		done < <(crd_files) | sort -u >"$cache.tmp"
		mv -f "$cache.tmp" "$cache"
	fi
	cat "$cache"
}

crds_established() {
	local want have
	want=$(crd_names | wc -l)
	have=$(kc get crd -o jsonpath='{range .items[*]}{.metadata.name}{" "}{range .status.conditions[?(@.type=="Established")]}{.status}{end}{"\n"}{end}' |
		awk '$2 == "True" { print $1 }' | sort | comm -12 - <(crd_names) | wc -l)
	((want > 0 && have == want))
}

# Cheap check for the fast path: every CRD exists (server-side Table output is small; the
# full objects are ~5 MB). They were Established when applied and stay so until deleted.
crds_present() {
	local have
	have=$(kc get crd --no-headers 2>/dev/null | awk '{ print $1 }' | sort) || return 1
	[[ -z $(comm -13 <(printf '%s\n' "$have") <(crd_names)) ]]
}

apply_crds() {
	if crds_present; then
		log "Istio + Prometheus Operator CRDs already established"
		return 0
	fi
	local t args=() f
	t=$(now_s)
	while IFS= read -r f; do args+=(-f "$f"); done < <(crd_files)
	log "applying $(crd_names | wc -l) CRDs (Istio $ISTIO_API_VERSION, Prometheus Operator $PROMETHEUS_OPERATOR_VERSION), server-side"
	"$BIN/kubectl" --kubeconfig "$KC" --request-timeout=120s apply --server-side --force-conflicts \
		--field-manager=plantd-testenv "${args[@]}" >/dev/null
	wait_for "CRDs Established" crds_established
	log "CRDs applied in $(elapsed "$t")s"
}

finish() {
	apply_crds
	log "cluster '$TESTENV_NAME' is up ($(kc version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1), $nodes fake nodes) in $(elapsed "$T_ALL")s"
	log "API server: $(sed -n 's/^[[:space:]]*server:[[:space:]]*//p' "$KC" | head -1)"
	printf 'export KUBECONFIG=%q\n' "$KC"
	exit 0
}

delete_cluster() {
	if [[ -d $CLUSTER_DIR ]]; then
		log "deleting cluster '$TESTENV_NAME'"
		kwokctl delete cluster --name "$TESTENV_NAME" --kubeconfig "$KC" || true
		rm -rf "$CLUSTER_DIR"
	fi
}

wait_all() {
	wait_for "kube-apiserver /readyz" api_ready
	wait_for "$nodes Ready node(s)" nodes_ready
	wait_for "ServiceAccount default/default" default_sa
	wait_for "ConfigMap default/kube-root-ca.crt" root_ca
	if command -v curl >/dev/null; then
		wait_for "controller-manager: ${#KCM_REQUIRED[@]} required controllers healthy" kcm_controllers
	else
		log "  (curl not found: not checking the controller-manager's controllers)"
	fi
}

# ---------------------------------------------------------------- already up?
mkdir -p "$KWOK_WORKDIR"
exec 8>"$KWOK_WORKDIR/.$TESTENV_NAME.lock"
flock 8

if ((recreate)); then
	delete_cluster
elif [[ -d $CLUSTER_DIR ]]; then
	if healthy; then
		log "cluster '$TESTENV_NAME' already up and healthy"
		finish
	fi
	if [[ -f $PINS_FILE && $(cat "$PINS_FILE") == "$PINS" ]]; then
		log "cluster '$TESTENV_NAME' exists but is not healthy: restarting all its components"
		# kwokctl skips components whose pid file looks alive; stop whatever is left and
		# drop the pid files so every component starts afresh (etcd data and pki are kept).
		testenv_stop_components "$CLUSTER_DIR"
		if kwokctl start cluster --name "$TESTENV_NAME"; then
			write_kubeconfig
			cur=$(kc get nodes --no-headers 2>/dev/null | wc -l) || cur=0
			if ((nodes > 0 && cur < nodes)); then
				kwokctl scale node --name "$TESTENV_NAME" --replicas "$nodes"
			fi
			wait_all
			finish
		fi
		log "restart failed; recreating the cluster"
	else
		log "cluster '$TESTENV_NAME' was made with other pins; recreating it"
	fi
	delete_cluster
fi

# ---------------------------------------------------------------- create
t=$(now_s)
log "creating cluster '$TESTENV_NAME' (kwokctl --runtime=binary, workdir $KWOK_WORKDIR)"
mkdir -p "$KWOK_WORKDIR"
CONF=$KWOK_WORKDIR/$TESTENV_NAME.kwokctl.yaml
cat >"$CONF" <<EOF
# Generated by hack/testenv/up.sh; do not edit.
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  kubeVersion: $K8S_VERSION
  kubeBinaryPrefix: $BIN
  kubectlBinary: $BIN/kubectl
  etcdBinary: $BIN/etcd
  etcdctlBinary: $BIN/etcdctl
  kwokControllerBinary: $BIN/kwok
  bindAddress: 127.0.0.1
  kubeAuthorization: true
  kubeAdmission: true
EOF
create_args=()
if ((real_node)); then
	# Pods reach the API server as https://10.96.0.1 (the kubernetes Service), which
	# kube-proxy sends to the advertised host address: the certificate must name the Service
	# IP and the server must listen beyond loopback. The kubelet is reached by its IP (the
	# node's name resolves nowhere) with a client certificate, for logs, exec, port-forward.
	printf '  kubeApiserverCertSANs: ["10.96.0.1", "kubernetes.default.svc.cluster.local"]\n' >>"$CONF"
	# Ports of its own, below those kwokctl hands out (from 32767 down), so this cluster and
	# the fake-node one never take each other's ports, whichever was created first.
	cat >>"$CONF" <<PORTS
  etcdPeerPort: 32746
  etcdPort: 32745
  kubeApiserverPort: 32744
  kubeControllerManagerPort: 32742
  kubeSchedulerPort: 32741
PORTS
	pki=$CLUSTER_DIR/pki
	create_args+=(--disable kwok-controller
		--extra-args "kube-apiserver=bind-address=0.0.0.0"
		--extra-args "kube-apiserver=service-cluster-ip-range=10.96.0.0/16"
		--extra-args "kube-apiserver=kubelet-preferred-address-types=InternalIP"
		--extra-args "kube-apiserver=kubelet-client-certificate=$pki/admin.crt"
		--extra-args "kube-apiserver=kubelet-client-key=$pki/admin.key"
		--extra-args "kube-controller-manager=service-cluster-ip-range=10.96.0.0/16")
fi
# etcd: no fsync (test data is disposable; saves the 2 shared cores a lot of I/O wait).
# controller-manager / scheduler: one instance each, so no leader election; after a restart
# they act at once instead of waiting ~15 s for the dead leader's lease to expire.
# (kwokctl already runs the API server with --authorization-mode=Node,RBAC, the default
# admission plugins and a ServiceAccount signing key, so TokenRequest works.)
kwokctl create cluster \
	--name "$TESTENV_NAME" \
	--config "$CONF" \
	--kubeconfig "" \
	--extra-args "etcd=unsafe-no-fsync=true" \
	--extra-args "kube-controller-manager=leader-elect=false" \
	--extra-args "kube-scheduler=leader-elect=false" \
	"${create_args[@]}" \
	--timeout "${timeout}s" \
	--wait "${timeout}s"
log "kwokctl create cluster took $(elapsed "$t")s"
printf '%s\n' "$PINS" >"$PINS_FILE"
write_kubeconfig
if ((nodes > 0)); then
	t=$(now_s)
	kwokctl scale node --name "$TESTENV_NAME" --replicas "$nodes"
	log "scaled to $nodes fake nodes in $(elapsed "$t")s"
fi
wait_all
finish
