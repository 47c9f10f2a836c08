#!/usr/bin/env bash
# Build buf (the protobuf linter / breaking-change checker) from its Go module into a
# versioned cache dir. No downloads other than the Go module proxy.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: hack/buf/build.sh [--force] [--help]

Builds github.com/bufbuild/buf/cmd/buf at the version pinned in hack/buf/versions.env into
  ${PLANTD_TOOLS_CACHE:-$HOME/.cache/plantd-tools}/buf-<version>/bin/buf
Cached: when the binary and its stamp are present it returns at once (no go invocation).
Progress goes to stderr; the only stdout line is the path of the buf binary, so
  BUF=$(hack/buf/build.sh | tail -1)

Options:
  --force   rebuild (keeps the Go caches)
  --help    this text

Environment:
  PLANTD_TOOLS_CACHE      cache root (default $HOME/.cache/plantd-tools)
  PLANTD_TOOLS_GOMODCACHE Go module cache (default <cache root>/gomod)
  PLANTD_TOOLS_GOCACHE    Go build cache  (default <cache root>/gocache)
  PLANTD_TOOLS_JOBS       go build -p value (default 2)
USAGE
}

log() { printf '[buf] %s\n' "$*" >&2; }
die() {
	printf '[buf] ERROR: %s\n' "$*" >&2
	exit 1
}
now_s() { date +%s.%3N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

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

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Read versions.env as data (KEY=VALUE lines only), so it cannot run code.
BUF_VERSION=
while IFS='=' read -r key value; do
	[[ -z $key || $key == \#* ]] && continue
	[[ $key == BUF_VERSION ]] && BUF_VERSION=$value
done <"$HERE/versions.env"
[[ $BUF_VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "BUF_VERSION missing or malformed in $HERE/versions.env"

CACHE=${PLANTD_TOOLS_CACHE:-$HOME/.cache/plantd-tools}
DIR=$CACHE/buf-$BUF_VERSION
BIN=$DIR/bin/buf
STAMP=$DIR/stamp

present() {
	[[ -x $BIN && -f $STAMP ]] && [[ $(head -1 "$STAMP") == "buf=$BUF_VERSION" ]]
}

if ((force == 0)) && present; then
	log "cached: $BIN"
	printf '%s\n' "$BIN"
	exit 0
fi

command -v go >/dev/null || die "go is not on PATH (Go >= 1.24 is needed to build buf $BUF_VERSION)"
mkdir -p "$DIR/bin"
# One build at a time (make lint and a test may both ask for buf).
exec 9>"$DIR/.lock"
if ! flock -n 9; then
	log "another build holds $DIR/.lock; waiting"
	flock 9
fi
if ((force == 0)) && present; then
	log "cached (built by the other run): $BIN"
	printf '%s\n' "$BIN"
	exit 0
fi
rm -f "$STAMP"

export GOMODCACHE=${PLANTD_TOOLS_GOMODCACHE:-$CACHE/gomod}
export GOCACHE=${PLANTD_TOOLS_GOCACHE:-$CACHE/gocache}
export CGO_ENABLED=0
# Never fetch another Go toolchain.
export GOTOOLCHAIN=local
export GOFLAGS=-buildvcs=false
JOBS=${PLANTD_TOOLS_JOBS:-2}

t=$(now_s)
log "building buf $BUF_VERSION into $DIR ($(go version | cut -d' ' -f3), -p $JOBS, nice 10)"
gobin=$DIR/gobin
rm -rf "$gobin" && mkdir -p "$gobin"
# buf's version is a source constant, so no -X stamping is needed; --version verifies it.
if ! GOBIN=$gobin nice -n 10 go install -p "$JOBS" -trimpath -ldflags "-s -w" \
	"github.com/bufbuild/buf/cmd/buf@$BUF_VERSION" 2> >(sed 's/^/[buf]   /' >&2); then
	die "go install github.com/bufbuild/buf/cmd/buf@$BUF_VERSION failed (is the Go module proxy reachable?)"
fi
[[ -x $gobin/buf ]] || die "go install produced no $gobin/buf"
out=$("$gobin/buf" --version 2>&1) || true
[[ $out == "${BUF_VERSION#v}" ]] || die "built buf says '$out', expected '${BUF_VERSION#v}'"
mv -f "$gobin/buf" "$BIN"
rmdir "$gobin" 2>/dev/null || true
{
	printf 'buf=%s\n' "$BUF_VERSION"
	printf 'built=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	printf 'go=%s\n' "$(go env GOVERSION)"
	printf 'seconds=%s\n' "$(elapsed "$t")"
} >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"
log "built buf $BUF_VERSION in $(elapsed "$t")s: $BIN"
printf '%s\n' "$BIN"
