#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions below are called through wait_until
# One real Kubernetes node on this machine: containerd + runc + CNI bridge + kubelet +
# kube-proxy, joined to a control plane of its own (hack/testenv/up.sh --real-node), with
# CoreDNS and a default StorageClass (local-path-provisioner) running on it as pods.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: hack/testenv/node.sh up [--timeout SECONDS] [--image ARCHIVE]...
       hack/testenv/node.sh import IMAGE.tar...
       hack/testenv/node.sh status
       hack/testenv/node.sh down
       hack/testenv/node.sh --help

up      Builds what is missing (hack/testenv/node-build.sh, cached), starts the
        control plane of cluster "${PLANTD_TESTENV_NODE_CLUSTER:-plantd-e2e}"
        (hack/testenv/up.sh --real-node), then containerd, the kubelet and kube-proxy of
        node "plantd-node-1", imports the node's images into containerd's k8s.io
        namespace, and applies CoreDNS (Service 10.96.0.10) and local-path-provisioner
        (StorageClass local-path, the default). Waits until the node is Ready and both
        add-ons are available. Idempotent: what already runs is kept.
        --image imports a docker-archive (as `import` does) before the last line.
        The last stdout line is:  export KUBECONFIG=<the cluster's kubeconfig>
import  Imports docker-archives (e.g. ~/.cache/plantd-image/plantd-dev.tar from
        `make image`) into the node's containerd, for imagePullPolicy Never/IfNotPresent.
status  Says what runs (exit 0 when the node is up and Ready).
down    Stops every pod, kube-proxy (its iptables rules removed), the kubelet and
        containerd, unmounts and removes the node's state, then the control plane
        (hack/testenv/down.sh). Idempotent.

Needs root, cgroups (v1 works: failCgroupV1 is false), iptables and the Debian packages
of hack/install-system-deps.sh (containernetworking-plugins, conntrack).

Environment:
  PLANTD_TESTENV_NODE_CLUSTER     cluster name (default plantd-e2e)
  PLANTD_TESTENV_NODE_KUBECONFIG  its kubeconfig (default <cache>/kubeconfig-e2e)
  PLANTD_TESTENV_NODE_STATE       node state: containerd root, kubelet root, volumes, logs
                                  (default <cache>/node-state)
  PLANTD_TESTENV_NODE_IP          the node's IP (default: the source address of the
                                  default route)
EOF
}

cmd=${1:-}
[[ -n $cmd ]] || {
	usage >&2
	exit 2
}
shift
timeout=240
images=()
case $cmd in
-h | --help)
	usage
	exit 0
	;;
up)
	while (($#)); do
		case $1 in
		--timeout)
			timeout=${2:?--timeout needs a value}
			shift
			;;
		--image)
			images+=("${2:?--image needs a docker-archive}")
			shift
			;;
		*)
			usage >&2
			exit 2
			;;
		esac
		shift
	done
	;;
import | status | down) ;;
*)
	usage >&2
	exit 2
	;;
esac

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
testenv_paths
node_paths
node_cluster_env
testenv_cluster_vars

NODE_NAME=plantd-node-1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
BRIDGE=plantd0
STATE=${PLANTD_TESTENV_NODE_STATE:-$TESTENV_CACHE/node-state}
RUN=/run/plantd-node
SOCK=$RUN/containerd.sock
KC=$TESTENV_KUBECONFIG
CLUSTER_DIR=$TESTENV_KWOK_WORKDIR/clusters/$TESTENV_NAME
BIN=$TESTENV_BIN

kc() { "$BIN/kubectl" --kubeconfig "$KC" --request-timeout=20s "$@"; }
ctr_k8s() { "$NODE_BIN/ctr" --address "$SOCK" --namespace k8s.io "$@"; }

# wait_until DESCRIPTION COMMAND...: poll until COMMAND succeeds, or fail after $timeout s
# with the logs that say why.
wait_until() {
	local desc=$1 t deadline
	shift
	t=$(now_s)
	deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "node: timed out after ${timeout}s waiting for: $desc"
			log "node: logs in $STATE/logs/ (containerd.log, kubelet.log, kube-proxy.log); last kubelet lines:"
			tail -n 15 "$STATE/logs/kubelet.log" 2>/dev/null | prefixed >&2 || true
			exit 1
		fi
		sleep 0.5
	done
	log "node:   ready: $desc ($(elapsed "$t")s)"
}

# ---------------------------------------------------------------- processes
# pid_alive NAME: the process of $STATE/pids/NAME.pid is alive and runs our binary.
pid_alive() {
	local pid exe state
	pid=$(tr -dc "0-9" 2>/dev/null <"$STATE/pids/$1.pid") || return 1
	[[ -n $pid ]] || return 1
	state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ $state != Z && $state != X ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ ${exe% (deleted)} == "$NODE_BIN/$1" ]]
}

# start NAME ARGS...: run NODE_BIN/NAME detached (own session, no inherited descriptors),
# logging to $STATE/logs/NAME.log.
start() {
	local name=$1
	shift
	pid_alive "$name" && {
		log "node: $name already running (pid $(cat "$STATE/pids/$name.pid"))"
		return 0
	}
	mkdir -p "$STATE/logs" "$STATE/pids"
	# The background subshell closes what it inherited and becomes the binary (exec), so $!
	# is the daemon's own pid; setsid (no fork: a background subshell leads no group) gives it
	# a session of its own, so a signal to our process group does not reach it.
	(
		for fd in /proc/"$BASHPID"/fd/*; do
			fd=${fd##*/}
			if ((fd > 2)); then eval "exec ${fd}>&-"; fi
		done
		exec setsid "$NODE_BIN/$name" "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1
	) &
	printf '%s\n' "$!" >"$STATE/pids/$name.pid"
	log "node: started $name (pid $!, log $STATE/logs/$name.log)"
}

# stop NAME: SIGTERM, up to 20 s, then SIGKILL.
stop() {
	local name=$1 pid deadline
	pid_alive "$name" || {
		rm -f "$STATE/pids/$name.pid"
		return 0
	}
	pid=$(tr -dc '0-9' <"$STATE/pids/$name.pid")
	log "node: stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + 20))
	while pid_alive "$name"; do
		if ((SECONDS >= deadline)); then
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	rm -f "$STATE/pids/$name.pid"
}

# ---------------------------------------------------------------- configuration
node_ip() {
	local ip=${PLANTD_TESTENV_NODE_IP:-}
	[[ -n $ip ]] || ip=$(ip -4 route get 192.0.2.255 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)
	[[ -n $ip ]] || ip=$(ip -4 route show default | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)
	[[ -n $ip ]] || die "cannot find the node IP (no default route); set PLANTD_TESTENV_NODE_IP"
	printf '%s\n' "$ip"
}

# mint NAME CN ORG: a client certificate signed by the cluster's CA, 0600 key, into
# $STATE/pki/NAME.{crt,key}; re-minted when the cluster (its CA) was recreated.
mint() {
	local name=$1 cn=$2 org=$3 d=$STATE/pki ca=$CLUSTER_DIR/pki
	mkdir -p "$d" && chmod 0700 "$d"
	if [[ -s $d/$name.crt ]] && openssl verify -CAfile "$ca/ca.crt" "$d/$name.crt" >/dev/null 2>&1; then
		return 0
	fi
	(
		umask 077
		openssl req -new -newkey rsa:2048 -nodes -keyout "$d/$name.key" -subj "/O=$org/CN=$cn" \
			-out "$d/$name.csr" 2>/dev/null
		openssl x509 -req -in "$d/$name.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial \
			-days 30 -out "$d/$name.crt" 2>/dev/null
		rm -f "$d/$name.csr"
	)
	log "node: minted the $cn client certificate (group $org)"
}

# kubeconfig NAME: a kubeconfig with NAME's client certificate.
kubeconfig() {
	local name=$1 server
	server=$(sed -n 's/^[[:space:]]*server:[[:space:]]*//p' "$KC" | head -1)
	(
		umask 077
		cat >"$STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: $TESTENV_NAME
    cluster: {server: "$server", certificate-authority: "$CLUSTER_DIR/pki/ca.crt"}
users:
  - name: $name
    user: {client-certificate: "$STATE/pki/$name.crt", client-key: "$STATE/pki/$name.key"}
contexts:
  - name: $name
    context: {cluster: $TESTENV_NAME, user: $name}
current-context: $name
EOF
	)
}

write_configs() {
	local ip=$1
	mkdir -p "$STATE/cni/conf" "$STATE/cni/ipam" "$STATE/local-path" "$RUN"
	cat >"$STATE/containerd.toml" <<EOF
# Generated by hack/testenv/node.sh; do not edit.
version = 3
root = "$STATE/containerd"
state = "$RUN/containerd"

[grpc]
  address = "$SOCK"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$(cat "$NODE_DIR/images/pause.ref")"

[plugins.'io.containerd.cri.v1.runtime']
  # Without this, runc cannot lower the oom_score_adj of the sandbox's init when containerd
  # itself runs with a lower one than the kubelet asks for ("runc init: failed to update
  # /proc/self/oom_score_adj: Permission denied" on every pod).
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$NODE_BIN/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$STATE/cni/conf"
EOF
	cat >"$STATE/cni/conf/10-plantd.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "plantd",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
               "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
	cat >"$STATE/kubelet.yaml" <<EOF
# Generated by hack/testenv/node.sh; do not edit. Why each setting: docs/testenv.md.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CLUSTER_DIR/pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
failSwapOn: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 40
podPidsLimit: 4096
EOF
	cat >"$STATE/kube-proxy.yaml" <<EOF
# Generated by hack/testenv/node.sh; do not edit.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack table size alone (a shared machine's sysctl, not ours).
conntrack: {maxPerCore: 0}
EOF
}

# ---------------------------------------------------------------- checks
node_ready() {
	[[ $(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
deployment_available() {
	[[ $(kc -n "$1" get deployment "$2" -o jsonpath='{.status.availableReplicas}') -ge 1 ]]
}
containerd_up() { "$NODE_BIN/ctr" --address "$SOCK" version; }
kube_proxy_synced() { curl -sf --max-time 2 http://127.0.0.1:10256/healthz; }

# import_archive TAR: into the k8s.io namespace (what the kubelet's CRI sees).
import_archive() {
	local tar=$1 t
	[[ -s $tar ]] || die "no image archive $tar"
	t=$(now_s)
	ctr_k8s images import "$tar" >/dev/null || die "ctr images import $tar failed"
	log "node: imported $(basename "$tar") in $(elapsed "$t")s"
}

import_node_images() {
	local n stamp=$STATE/images.imported
	[[ -f $stamp && $(cat "$stamp") == "$NODE_HASH" ]] && return 0
	for n in "${NODE_IMAGES[@]}"; do import_archive "$NODE_DIR/images/$n.tar"; done
	printf '%s\n' "$NODE_HASH" >"$stamp"
}

apply_addons() {
	sed -e "s#@COREDNS_IMAGE@#$(cat "$NODE_DIR/images/coredns.ref")#g" \
		-e "s#@LOCAL_PATH_IMAGE@#$(cat "$NODE_DIR/images/local-path.ref")#g" \
		-e "s#@HELPER_IMAGE@#$(cat "$NODE_DIR/images/redis.ref")#g" \
		-e "s#@DNS_IP@#$DNS_IP#g" -e "s#@LOCAL_PATH_DIR@#$STATE/local-path#g" \
		"$TESTENV_DIR/node/addons.yaml" |
		kc apply --server-side --force-conflicts --field-manager=plantd-testenv -f - >/dev/null
}

# ---------------------------------------------------------------- up
node_up() {
	[[ $(id -u) -eq 0 ]] || die "the real node runs as root (containerd, kubelet, iptables)"
	local tool
	for tool in iptables iptables-restore conntrack openssl curl ip; do
		command -v "$tool" >/dev/null || die "$tool not found: run hack/install-system-deps.sh"
	done
	[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] ||
		die "CNI plugins not found in /usr/lib/cni: apt-get install containernetworking-plugins"
	local t_all ip
	t_all=$(now_s)
	"$TESTENV_DIR/node-build.sh" >/dev/null
	"$TESTENV_DIR/up.sh" --real-node --timeout "$timeout" >/dev/null
	ip=$(node_ip)
	log "node: $NODE_NAME at $ip, pods $POD_CIDR, services $SERVICE_CIDR, state $STATE"

	# Bridged pod traffic must pass iptables (kube-proxy's Service rules), and be routed.
	[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null ||
		die "net.bridge.bridge-nf-call-iptables is missing and modprobe br_netfilter failed"
	sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1

	mint kubelet "system:node:$NODE_NAME" system:nodes
	mint kube-proxy system:kube-proxy plantd-testenv
	kubeconfig kubelet
	kubeconfig kube-proxy
	write_configs "$ip"

	start containerd --config "$STATE/containerd.toml"
	wait_until "containerd on $SOCK" containerd_up
	import_node_images

	start kubelet --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
		--root-dir "$STATE/kubelet" --hostname-override "$NODE_NAME" --node-ip "$ip" \
		--node-labels plantd.io/real-node=true
	wait_until "node $NODE_NAME Ready" node_ready
	start kube-proxy --config "$STATE/kube-proxy.yaml"
	wait_until "kube-proxy synced its rules" kube_proxy_synced

	apply_addons
	wait_until "CoreDNS available" deployment_available kube-system coredns
	wait_until "local-path-provisioner available" deployment_available local-path-storage local-path-provisioner
	log "node: $NODE_NAME is up with CoreDNS and StorageClass local-path in $(elapsed "$t_all")s"
	local tar
	for tar in "${images[@]}"; do import_archive "$tar"; done
	printf 'export KUBECONFIG=%q\n' "$KC"
}

# ---------------------------------------------------------------- down
node_down() {
	[[ $(id -u) -eq 0 ]] || die "the real node runs as root; run down as root"
	stop kubelet
	if pid_alive containerd; then
		# Every pod's containers, then their sandboxes; the shims exit with their tasks.
		local id
		for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
			ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		local deadline=$((SECONDS + 20))
		while [[ -n $(ctr_k8s tasks ls -q 2>/dev/null | head -1) ]] && ((SECONDS < deadline)); do
			sleep 0.2
		done
	fi
	stop kube-proxy
	if [[ -x $NODE_BIN/kube-proxy ]]; then
		"$NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
	fi
	stop containerd
	# Shims left behind (a killed containerd) are ours when they run our binary.
	local pid
	for pid in $(pgrep -f containerd-shim-runc-v2 2>/dev/null || true); do
		[[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$NODE_BIN/containerd-shim-runc-v2" ]] &&
			kill -KILL "$pid" 2>/dev/null || true
	done
	# Mounts under the state and run dirs (secret volumes, rootfs, sandbox namespaces), deepest first.
	local m
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk -v s="$STATE/" -v r="$RUN/" 'index($2, s) == 1 || index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r)
	ip link delete "$BRIDGE" 2>/dev/null || true
	# The bridge plugin's masquerade rules and chains (CNI-<hash>) of pods that were killed
	# rather than torn down through CNI: only those of our pod network.
	local prefix=${POD_CIDR%.*}. rule chain
	while IFS= read -r rule; do
		eval "iptables -t nat ${rule/#-A /-D }" 2>/dev/null || true
	done < <(iptables -t nat -S POSTROUTING 2>/dev/null | grep -F -- "-s $prefix" | grep -- '-j CNI-' || true)
	for chain in $(iptables -t nat -S 2>/dev/null | sed -n 's/^-N \(CNI-[0-9a-f]\{1,\}\)$/\1/p'); do
		iptables -t nat -S "$chain" 2>/dev/null | grep -qF -- "-d $POD_CIDR" || continue
		iptables -t nat -F "$chain" 2>/dev/null && iptables -t nat -X "$chain" 2>/dev/null || true
	done
	# The kubelet's own chains (KUBE-FIREWALL with its INPUT/OUTPUT jumps, the canaries and
	# kube-proxy's hint), which neither kube-proxy --cleanup nor the kubelet removes; only
	# when no other kubelet runs on this machine, since they would be its chains too.
	if ! pgrep -x kubelet >/dev/null 2>&1; then
		local tool table
		for tool in iptables ip6tables; do
			command -v "$tool" >/dev/null 2>&1 || continue
			"$tool" -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
			"$tool" -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
			for table in filter nat mangle; do
				for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
					"$tool" -t "$table" -F "$chain" 2>/dev/null && "$tool" -t "$table" -X "$chain" 2>/dev/null || true
				done
			done
		done
	fi
	# The kubelet's pod cgroups (cgroupfs driver), leaf first; empty ones only.
	local cg
	for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	rm -rf "$RUN"
	if [[ -d $STATE ]]; then
		rm -rf "$STATE" 2>/dev/null || log "node: could not remove all of $STATE (a mount still busy?)"
	fi
	"$TESTENV_DIR/down.sh" >/dev/null
	log "node: down"
}

node_status() {
	local ok=0 name
	for name in containerd kubelet kube-proxy; do
		if pid_alive "$name"; then
			log "node: $name running (pid $(cat "$STATE/pids/$name.pid"))"
		else
			log "node: $name not running"
			ok=1
		fi
	done
	if ((ok == 0)) && node_ready 2>/dev/null; then
		log "node: $NODE_NAME Ready (kubeconfig $KC)"
		return 0
	fi
	return 1
}

case $cmd in
up) node_up ;;
import)
	(($#)) || die "import needs at least one docker-archive"
	pid_alive containerd || die "the node is not up: run hack/testenv/node.sh up"
	for tar in "$@"; do import_archive "$tar"; done
	;;
status) node_status ;;
down) node_down ;;
esac
