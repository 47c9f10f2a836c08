#!/usr/bin/env bash
# Build the real node's binaries and images (hack/testenv/node.sh runs them).
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: hack/testenv/node-build.sh [--force] [--help]

Builds, from the Go module proxy and Debian packages, into
  ${PLANTD_TESTENV_CACHE:-$HOME/.cache/plantd-testenv}/node-<pins hash>/:
    bin/    kubelet kube-proxy (K8S_VERSION, the control plane's wrapper module),
            containerd containerd-shim-runc-v2 ctr, runc (with libseccomp),
            coredns, local-path-provisioner, pause (static C)
    images/ docker-archives for `ctr -n k8s.io images import`: the pod sandbox (pause),
            CoreDNS, local-path-provisioner and Redis (debootstrap bookworm + redis-server)
Pins: K8S_VERSION from hack/testenv/versions.env, the rest from hack/testenv/node.env.
Needs root (debootstrap), go, gcc, pkg-config, libseccomp-dev, buildah and debootstrap
(hack/install-system-deps.sh installs the Debian ones).

Cached: when everything is present it returns at once; an interrupted build resumes.
Progress goes to stderr; the only stdout line is the node directory.
  Cold on 2 cores: about 8 minutes (kubelet and kube-proxy 4, CoreDNS 4, in parallel pairs).

Options:
  --force   rebuild everything for the current pins (keeps the Go caches)
  --help    this text
EOF
}

force=0
while (($#)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--force) force=1 ;;
	*)
		usage >&2
		exit 2
		;;
	esac
	shift
done

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
testenv_paths
node_paths

NODE_BINARIES=(kubelet kube-proxy containerd containerd-shim-runc-v2 ctr runc coredns
	local-path-provisioner pause)
STAMP=$NODE_DIR/stamp

all_present() {
	[[ -f $STAMP && $(head -1 "$STAMP") == "pins=$NODE_HASH" ]] || return 1
	local b
	for b in "${NODE_BINARIES[@]}"; do [[ -x $NODE_BIN/$b ]] || return 1; done
	for b in "${NODE_IMAGES[@]}"; do [[ -s $NODE_DIR/images/$b.tar ]] || return 1; done
}

if ((force == 0)) && all_present; then
	log "node: cached: $NODE_DIR"
	printf '%s\n' "$NODE_DIR"
	exit 0
fi

[[ $(id -u) -eq 0 ]] || die "node-build.sh needs root (debootstrap of the Redis image)"
command -v go >/dev/null || die "go is not on PATH (Go >= 1.26 is needed)"
for tool in gcc pkg-config buildah debootstrap; do
	command -v "$tool" >/dev/null || die "$tool not found: run hack/install-system-deps.sh"
done
pkg-config --exists libseccomp || die "libseccomp-dev not found: run hack/install-system-deps.sh"

# The kubelet must match the control plane: build that first if needed (cached: instant).
"$TESTENV_DIR/build.sh" >/dev/null

mkdir -p "$NODE_BIN" "$NODE_DIR/src" "$NODE_DIR/images"
exec 9>"$NODE_DIR/.lock"
if ! flock -n 9; then
	log "node: another node-build.sh holds $NODE_DIR/.lock; waiting"
	flock 9
fi
if ((force == 0)) && all_present; then
	printf '%s\n' "$NODE_DIR"
	exit 0
fi
if ((force)); then
	log "node: --force: removing built binaries, images and the stamp"
	rm -f "$STAMP" "$NODE_BIN"/* "$NODE_DIR"/images/*
fi

export GOMODCACHE=${PLANTD_TESTENV_GOMODCACHE:-$TESTENV_CACHE/gomod}
export GOCACHE=${PLANTD_TESTENV_GOCACHE:-$TESTENV_CACHE/gocache}
export GOTOOLCHAIN=local
export GOFLAGS=-buildvcs=false
export CGO_ENABLED=0
JOBS=${PLANTD_TESTENV_JOBS:-2}
NICE=(nice -n 10)
T_ALL=$(now_s)
log "node pins $NODE_HASH: kubelet/kube-proxy $K8S_VERSION, containerd $CONTAINERD_VERSION, runc $RUNC_VERSION, coredns $COREDNS_VERSION, local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION"

built() {
	if [[ -x $NODE_BIN/$1 ]]; then
		log "  $1: already built, skipping"
		return 0
	fi
	return 1
}

# check_version NAME BINARY REGEX ARGS...: the binary reports the pinned version.
check_version() {
	local name=$1 bin=$2 want=$3 out
	shift 3
	out=$("$bin" "$@" 2>&1) || true
	grep -Eq -- "$want" <<<"$out" || die "$name: '$name $*' printed '$out', expected /$want/"
	log "  $name: $(head -1 <<<"$out")"
}

# go_install NAME PKG@VER TAGS LDFLAGS: `go install` into bin/ (CGO as exported).
go_install() {
	local name=$1 pkg=$2 tags=$3 ldf=$4 gobin=$NODE_DIR/src/gobin-$1 t
	built "$name" && return 0
	t=$(now_s)
	log "node: building $name ($pkg) ..."
	rm -rf "$gobin" && mkdir -p "$gobin"
	GOBIN=$gobin "${NICE[@]}" go install -p "$JOBS" -trimpath -tags "$tags" -ldflags "$ldf" "$pkg" \
		2> >(grep -v '^go: downloading' | prefixed >&2) || die "go install $pkg failed"
	[[ -x $gobin/$name ]] || die "go install $pkg produced no $gobin/$name"
	mv -f "$gobin/$name" "$NODE_BIN/$name"
	rm -rf "$gobin"
	log "node: built $name in $(elapsed "$t")s"
}

# ---------------------------------------------------------------- kubelet, kube-proxy
# A copy of the control plane's wrapper module (src/k8s of the pin dir): adding the node
# commands pulls in modules (netlink, knftables, ipvs, cri-streaming) the control plane does
# not need, and the pin dir's module must stay as build.sh resolved it.
build_k8s_node() {
	local w=$NODE_DIR/src/k8s-node src=$TESTENV_PINDIR/src/k8s
	[[ -f $src/go.mod ]] || die "missing $src/go.mod: run hack/testenv/build.sh"
	if [[ ! -f $w/.resolved ]]; then
		local t
		t=$(now_s)
		log "node: resolving kubelet and kube-proxy $K8S_VERSION in a copy of the control plane's wrapper module"
		rm -rf "$w" && mkdir -p "$w"
		cp "$src/go.mod" "$src/go.sum" "$w/"
		if ! (cd "$w" && "${NICE[@]}" go get -tool "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" \
			"k8s.io/kubernetes/cmd/kube-proxy@$K8S_VERSION") >"$NODE_DIR/src/k8s-node-get.log" 2>&1; then
			tail -n 30 "$NODE_DIR/src/k8s-node-get.log" | prefixed >&2
			die "go get -tool kubelet kube-proxy failed (log above)"
		fi
		touch "$w/.resolved"
		log "node: resolved in $(elapsed "$t")s"
	fi
	local minor=${K8S_VERSION#v1.} bd ldf p cmd t tmp
	minor=${minor%%.*}
	bd=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	ldf="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
		ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=$bd"
	done
	for cmd in kubelet kube-proxy; do
		built "$cmd" && continue
		t=$(now_s)
		log "node: building $cmd $K8S_VERSION ..."
		tmp=$NODE_BIN/.$cmd.tmp
		(cd "$w" && "${NICE[@]}" go build -p "$JOBS" -trimpath -ldflags "$ldf" -o "$tmp" \
			"k8s.io/kubernetes/cmd/$cmd" 2> >(prefixed >&2)) || die "go build $cmd failed"
		check_version "$cmd" "$tmp" "Kubernetes $K8S_VERSION" --version
		mv -f "$tmp" "$NODE_BIN/$cmd"
		log "node: built $cmd in $(elapsed "$t")s"
	done
}

# ---------------------------------------------------------------- runtime
build_runtime() {
	local c=github.com/containerd/containerd/v2 v=$CONTAINERD_VERSION
	local cl="-s -w -X $c/version.Version=$v -X $c/version.Package=$c"
	# no_btrfs: the btrfs snapshotter needs libbtrfs headers; the node uses overlayfs.
	go_install containerd "$c/cmd/containerd@$v" no_btrfs "$cl"
	go_install containerd-shim-runc-v2 "$c/cmd/containerd-shim-runc-v2@$v" no_btrfs "$cl"
	go_install ctr "$c/cmd/ctr@$v" no_btrfs "$cl"
	check_version containerd "$NODE_BIN/containerd" "${v#v}" --version
	# runc needs CGO for libseccomp (RuntimeDefault profiles) and its nsenter C code.
	CGO_ENABLED=1 go_install runc "github.com/opencontainers/runc@$RUNC_VERSION" seccomp \
		"-s -w -X main.version=${RUNC_VERSION#v}"
	check_version runc "$NODE_BIN/runc" "runc version ${RUNC_VERSION#v}" --version
	grep -q 'seccomp' <<<"$("$NODE_BIN/runc" --version)" || die "runc was built without seccomp"
	if ! built pause; then
		gcc -static -O2 -o "$NODE_BIN/.pause.tmp" "$TESTENV_DIR/node/pause.c" || die "gcc pause.c failed"
		mv -f "$NODE_BIN/.pause.tmp" "$NODE_BIN/pause"
	fi
}

# ---------------------------------------------------------------- cluster add-ons
build_addons() {
	local cd=github.com/coredns/coredns
	go_install coredns "$cd@$COREDNS_VERSION" "" \
		"-s -w -X $cd/coremain.GitCommit=$COREDNS_VERSION"
	check_version coredns "$NODE_BIN/coredns" "CoreDNS-${COREDNS_VERSION#v}" -version
	go_install local-path-provisioner \
		"github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION" "" \
		"-s -w -X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION"
}

# Two builds at a time: each is mostly one long link step, so pairs keep both cores busy
# (measured cold: kubelet+kube-proxy 4 min, CoreDNS 4 min, local-path 3 min, runtime 2 min).
build_k8s_node &
k8s_pid=$!
build_addons &
addons_pid=$!
build_runtime
wait "$addons_pid" || die "building CoreDNS / local-path-provisioner failed (above)"
wait "$k8s_pid" || die "building kubelet / kube-proxy failed (above)"

"$TESTENV_DIR/node/images.sh" "$NODE_DIR"

{
	printf 'pins=%s\n' "$NODE_HASH"
	printf 'built=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	printf 'K8S_VERSION=%s\n' "$K8S_VERSION"
	grep -E '^[A-Z0-9_]+=' "$TESTENV_DIR/node.env"
} >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"
log "node: all done in $(elapsed "$T_ALL")s: $NODE_DIR ($(du -sh "$NODE_DIR/bin" | cut -f1) binaries, $(du -sh "$NODE_DIR/images" | cut -f1) images)"
printf '%s\n' "$NODE_DIR"
