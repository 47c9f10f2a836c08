#!/usr/bin/env bash
# Build (once) the grpcurl the tests drive the gateway with, and print its path.
#
#   hack/tools/grpcurl.sh        -> ~/.cache/plantd-tools/grpcurl-<version>/grpcurl
#
# grpcurl comes from its Go module at the version pinned here, through the Go module proxy
# (go install; about 30 s cold on 2 cores, nothing after). The cache directory is named by the
# version, so a new pin builds a new binary and never reuses a stale one.
set -euo pipefail

GRPCURL_VERSION=v1.9.4
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/plantd-tools/grpcurl-$GRPCURL_VERSION
BIN=$CACHE/grpcurl

die() {
	printf '[grpcurl] ERROR: %s\n' "$*" >&2
	exit 1
}

if [[ ! -x $BIN ]]; then
	command -v go >/dev/null || die "go is not installed: grpcurl is built from its Go module"
	printf '[grpcurl] building github.com/fullstorydev/grpcurl %s into %s\n' "$GRPCURL_VERSION" "$CACHE" >&2
	mkdir -p "$CACHE.tmp"
	# A temp dir as the working directory: go install must not see a go.mod around it.
	(cd "$CACHE.tmp" && GOBIN=$CACHE.tmp GOFLAGS=-mod=mod go install \
		"github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION") ||
		die "go install failed (above): is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?"
	rm -rf "$CACHE" && mv "$CACHE.tmp" "$CACHE"
fi
printf '%s\n' "$BIN"
