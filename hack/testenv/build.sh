#!/usr/bin/env bash
# Build the Kubernetes test environment binaries from Go modules (no Docker, no downloads
# other than the Go module proxy) and fetch the Istio / Prometheus Operator CRDs.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: hack/testenv/build.sh [--force] [--help]

Builds, from the Go module proxy, into
  ${PLANTD_TESTENV_CACHE:-$HOME/.cache/plantd-testenv}/k8s-<version>-<pins hash>/bin:
    etcd etcdctl kube-apiserver kube-controller-manager kube-scheduler kubectl
    kwok kwokctl helm kubeconform
and copies the Istio and Prometheus Operator CRDs into .../crds/.
Pins come from hack/testenv/versions.env.

Cached: when every binary and the stamp file are present it returns at once.
A failed or interrupted build resumes: binaries already built are kept.
Progress goes to stderr; the last (only) stdout line is the bin directory, so
  BIN=$(hack/testenv/build.sh | tail -1)

Options:
  --force   rebuild everything for the current pins (keeps the Go caches)
  --help    this text

Environment:
  PLANTD_TESTENV_CACHE      cache root (default $HOME/.cache/plantd-testenv)
  PLANTD_TESTENV_GOMODCACHE Go module cache (default <cache root>/gomod)
  PLANTD_TESTENV_GOCACHE    Go build cache  (default <cache root>/gocache)
  PLANTD_TESTENV_JOBS       go build -p value (default 2)
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

STAMP=$TESTENV_PINDIR/stamp
CRD_ISTIO=$TESTENV_CRDS/istio/customresourcedefinitions.gen.yaml
CRD_PROM_DIR=$TESTENV_CRDS/prometheus-operator

link_current() {
	ln -sfn "$TESTENV_PINDIR" "$TESTENV_CACHE/current.tmp" && mv -T "$TESTENV_CACHE/current.tmp" "$TESTENV_CACHE/current"
	ln -sfn current/crds "$TESTENV_CACHE/crds.tmp" && mv -T "$TESTENV_CACHE/crds.tmp" "$TESTENV_CACHE/crds"
}

all_present() {
	[[ -f $STAMP ]] || return 1
	[[ $(head -1 "$STAMP") == "pins=$TESTENV_HASH" ]] || return 1
	local b
	for b in "${TESTENV_BINARIES[@]}"; do
		[[ -x $TESTENV_BIN/$b ]] || return 1
	done
	[[ -s $CRD_ISTIO ]] || return 1
	compgen -G "$CRD_PROM_DIR/monitoring.coreos.com_*.yaml" >/dev/null || return 1
}

# Fast path: nothing to do (no go invocation at all, well under 2 s).
if ((force == 0)) && all_present; then
	[[ $(readlink "$TESTENV_CACHE/current" 2>/dev/null || true) == "$TESTENV_PINDIR" ]] || link_current
	log "cached: $TESTENV_BIN"
	printf '%s\n' "$TESTENV_BIN"
	exit 0
fi

command -v go >/dev/null || die "go is not on PATH (Go >= 1.26 is needed)"
mkdir -p "$TESTENV_BIN" "$TESTENV_PINDIR/src" "$TESTENV_CRDS"

# One build at a time per pin dir (up.sh may be started twice).
exec 9>"$TESTENV_PINDIR/.lock"
if ! flock -n 9; then
	log "another build.sh holds $TESTENV_PINDIR/.lock; waiting"
	flock 9
fi
if ((force == 0)) && all_present; then
	log "cached (built by the other run): $TESTENV_BIN"
	printf '%s\n' "$TESTENV_BIN"
	exit 0
fi
if ((force)); then
	log "--force: removing built binaries and the stamp"
	rm -f "$STAMP" "$TESTENV_BIN"/*
fi

export GOMODCACHE=${PLANTD_TESTENV_GOMODCACHE:-$TESTENV_CACHE/gomod}
export GOCACHE=${PLANTD_TESTENV_GOCACHE:-$TESTENV_CACHE/gocache}
export CGO_ENABLED=0
# Never fetch another Go toolchain: every pinned module declares go 1.26.0.
export GOTOOLCHAIN=local
export GOFLAGS=-buildvcs=false
JOBS=${PLANTD_TESTENV_JOBS:-2}
# Other engineers share the two cores: build at low priority.
NICE=(nice -n 10)

log "pins $TESTENV_HASH: k8s $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION"
log "cache dir: $TESTENV_PINDIR ($(go version | cut -d' ' -f3), -p $JOBS, nice 10)"
T_ALL=$(now_s)

# gomod_dir MOD@VER -> prints the unpacked module directory.
gomod_dir() {
	local out dir
	out=$(go mod download -json "$1") || die "go mod download $1 failed: $out"
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$out")
	[[ -n $dir && -d $dir ]] || die "go mod download $1 gave no Dir: $out"
	printf '%s\n' "$dir"
}

# go_get LOGFILE PKG@VER...: `go get -tool` in the current (wrapper) module. Its chatter
# ("go: downloading ...", hundreds of lines) goes to LOGFILE, shown only on failure.
go_get() {
	local logf=$1
	shift
	if ! "${NICE[@]}" go get -tool "$@" >"$logf" 2>&1; then
		log "go get -tool $* failed; last lines of $logf:"
		tail -n 30 "$logf" | prefixed >&2
		exit 1
	fi
	log "  $(grep -c '^go: downloading' "$logf" || true) modules downloaded (log: $logf)"
}

# gobuild ARGS...: go build/install at low priority, its messages prefixed on stderr.
gobuild() {
	"${NICE[@]}" go "$@" 2> >(prefixed >&2)
}

# built NAME: true when bin/NAME exists (then it is skipped).
built() {
	if [[ -x $TESTENV_BIN/$1 ]]; then
		log "  $1: already built, skipping"
		return 0
	fi
	return 1
}

# install_bin NAME TMPFILE VERSION-CHECK-REGEX VERSION-ARGS...: verify, then move into bin/.
install_bin() {
	local name=$1 tmp=$2 want=$3 out
	shift 3
	out=$("$tmp" "$@" 2>&1) || true
	grep -Eq -- "$want" <<<"$out" ||
		die "$name: '$name $*' printed '$out', expected /$want/ (version stamping failed?)"
	mv -f "$tmp" "$TESTENV_BIN/$name"
	log "  $name: $(head -1 <<<"$out")"
}

# ---------------------------------------------------------------- Kubernetes
# k8s.io/kubernetes cannot be `go install`ed: its go.mod requires every staging module at
# v0.0.0 with `replace => ./staging/...`. A wrapper main module replaces each one with its
# published tag; the staging list is derived from the real go.mod of the pinned release.
build_k8s() {
	local w=$TESTENV_PINDIR/src/k8s
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	if [[ ! -f $w/.resolved ]]; then
		local t
		t=$(now_s)
		log "k8s $K8S_VERSION: resolving the wrapper module (staging modules at $K8S_STAGING_VERSION)"
		rm -rf "$w" && mkdir -p "$w"
		local kgomod mods m gd
		kgomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
		[[ -f $kgomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
		mods=$({
			sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$kgomod"
			sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]][[:space:]]*v0\.0\.0\([[:space:]].*\)\{0,1\}$#\1#p' "$kgomod"
		} | sort -u)
		[[ -n $mods ]] || die "found no staging modules in $kgomod"
		(
			cd "$w"
			go mod init plantd.local/testenv-k8s >/dev/null 2>&1
			go mod edit -go=1.26.0
			for m in $mods; do go mod edit -replace="$m=$m@$K8S_STAGING_VERSION"; done
			gd=$(sed -n 's/^godebug[[:space:]][[:space:]]*default=\(.*\)$/\1/p' "$kgomod")
			if [[ -n $gd ]]; then go mod edit -godebug="default=$gd"; fi
			go_get "$w/go-get.log" \
				"k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
				"k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
				"k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" \
				"k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
		)
		log "k8s: $(wc -w <<<"$mods") staging modules replaced; resolved in $(elapsed "$t")s"
		touch "$w/.resolved"
	fi
	# Version stamping is mandatory: unstamped binaries say v0.0.0-master, which breaks
	# kwokctl's version-dependent flags, helm kubeVersion checks and kubectl skew checks.
	local bd ldf p cmd t tmp
	bd=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	ldf="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
		ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=$bd"
	done
	for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
		built "$cmd" && continue
		t=$(now_s)
		log "building $cmd $K8S_VERSION ..."
		tmp=$TESTENV_BIN/.$cmd.tmp
		(cd "$w" && gobuild build -p "$JOBS" -trimpath -ldflags "$ldf" -o "$tmp" "k8s.io/kubernetes/cmd/$cmd")
		if [[ $cmd == kubectl ]]; then
			install_bin "$cmd" "$tmp" "Client Version: $K8S_VERSION" version --client
		else
			install_bin "$cmd" "$tmp" "Kubernetes $K8S_VERSION" --version
		fi
		log "built $cmd in $(elapsed "$t")s"
	done
}

# ---------------------------------------------------------------- etcd
# go.etcd.io/etcd/server/v3 has replace directives too (so no `go install`); a wrapper
# module requiring server/v3 and etcdctl/v3 at the same tag resolves the published siblings.
build_etcd() {
	local w=$TESTENV_PINDIR/src/etcd t tmp
	if [[ ! -f $w/.resolved ]]; then
		t=$(now_s)
		log "etcd $ETCD_VERSION: resolving the wrapper module"
		rm -rf "$w" && mkdir -p "$w"
		(
			cd "$w"
			go mod init plantd.local/testenv-etcd >/dev/null 2>&1
			go mod edit -go=1.26.0
			go_get "$w/go-get.log" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
				"go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
		)
		log "etcd: resolved in $(elapsed "$t")s"
		touch "$w/.resolved"
	fi
	local ldf="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
	if ! built etcd; then
		t=$(now_s)
		log "building etcd $ETCD_VERSION ..."
		tmp=$TESTENV_BIN/.etcd.tmp
		(cd "$w" && gobuild build -p "$JOBS" -trimpath -ldflags "$ldf" -o "$tmp" go.etcd.io/etcd/server/v3)
		install_bin etcd "$tmp" "etcd Version: ${ETCD_VERSION#v}" --version
		log "built etcd in $(elapsed "$t")s"
	fi
	if ! built etcdctl; then
		t=$(now_s)
		log "building etcdctl $ETCD_VERSION ..."
		tmp=$TESTENV_BIN/.etcdctl.tmp
		(cd "$w" && gobuild build -p "$JOBS" -trimpath -ldflags "$ldf" -o "$tmp" go.etcd.io/etcd/etcdctl/v3)
		install_bin etcdctl "$tmp" "etcdctl version: ${ETCD_VERSION#v}" version
		log "built etcdctl in $(elapsed "$t")s"
	fi
}

# ---------------------------------------------------------------- go install'able tools
# go_install NAME PKG@VER VERSION-REGEX LDFLAGS VERSION-ARGS...
go_install() {
	local name=$1 pkg=$2 want=$3 ldf=$4 t gobin
	shift 4
	built "$name" && return 0
	t=$(now_s)
	log "building $name ($pkg) ..."
	gobin=$TESTENV_PINDIR/src/gobin-$name
	rm -rf "$gobin" && mkdir -p "$gobin"
	GOBIN=$gobin gobuild install -p "$JOBS" -trimpath -ldflags "$ldf" "$pkg"
	[[ -x $gobin/$name ]] || die "go install $pkg produced no $gobin/$name"
	install_bin "$name" "$gobin/$name" "$want" "$@"
	rmdir "$gobin" 2>/dev/null || true
	log "built $name in $(elapsed "$t")s"
}

build_tools() {
	local hminor=${K8S_VERSION#v1.}
	hminor=${hminor%%.*}
	go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "${KWOK_VERSION#v}" "-s -w" --version
	go_install kwokctl "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION" "${KWOK_VERSION#v}" "-s -w" --version
	# helm v3 defaults its offline Capabilities.KubeVersion to v1.20 unless stamped.
	local hl="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
	hl+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	hl+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$hminor"
	hl+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$hminor"
	go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "Version:\"$HELM_VERSION\"" "$hl" version
	go_install kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
		"^$KUBECONFORM_VERSION\$" "-s -w -X main.version=$KUBECONFORM_VERSION" -v
}

# ---------------------------------------------------------------- CRDs
fetch_crds() {
	local t d f n=0
	t=$(now_s)
	log "fetching CRDs: istio.io/api@$ISTIO_API_VERSION, prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
	d=$(gomod_dir "istio.io/api@$ISTIO_API_VERSION")
	mkdir -p "$(dirname "$CRD_ISTIO")"
	install -m 0644 "$d/kubernetes/customresourcedefinitions.gen.yaml" "$CRD_ISTIO.tmp"
	mv -f "$CRD_ISTIO.tmp" "$CRD_ISTIO"
	d=$(gomod_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
	rm -rf "$CRD_PROM_DIR.tmp" && mkdir -p "$CRD_PROM_DIR.tmp"
	for f in "$d"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml; do
		[[ -e $f ]] || die "no monitoring.coreos.com_*.yaml in $d/example/prometheus-operator-crd"
		install -m 0644 "$f" "$CRD_PROM_DIR.tmp/"
		n=$((n + 1))
	done
	rm -rf "$CRD_PROM_DIR" && mv "$CRD_PROM_DIR.tmp" "$CRD_PROM_DIR"
	printf 'istio.io/api %s\ngithub.com/prometheus-operator/prometheus-operator %s\n' \
		"$ISTIO_API_VERSION" "$PROMETHEUS_OPERATOR_VERSION" >"$TESTENV_CRDS/VERSIONS"
	log "CRDs: istio $(grep -c '^kind: CustomResourceDefinition' "$CRD_ISTIO") CRDs, prometheus-operator $n files, in $(elapsed "$t")s"
}

# Cheapest first, so a broken proxy or toolchain shows up early.
fetch_crds
build_etcd
build_k8s
build_tools

{
	printf 'pins=%s\n' "$TESTENV_HASH"
	printf 'built=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	printf 'go=%s\n' "$(go env GOVERSION)"
	grep -E '^[A-Z0-9_]+=' "$TESTENV_DIR/versions.env"
} >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"
link_current
log "all done in $(elapsed "$T_ALL")s; bin dir: $TESTENV_BIN ($(du -sh "$TESTENV_BIN" | cut -f1))"
printf '%s\n' "$TESTENV_BIN"
