#!/usr/bin/env bash
# The Go SDK (sdk/go): generate, check and run its example.
#
#   hack/sdk/go.sh gen       regenerate sdk/go/plantd/v1 from protos/ (buf generate)
#   hack/sdk/go.sh check     regenerate into a temp dir and diff against the tree; go vet
#   hack/sdk/go.sh build OUT build the example program (examples/quickstart) into OUT
#
# The generators are protoc-gen-go and protoc-gen-go-grpc at the versions pinned as `tool`
# lines in sdk/go/go.mod (checksums in go.sum), built from the Go module proxy once into
# ~/.cache/plantd-sdk/go-plugins/<digest of go.sum>/. buf (the buf-bin wheel of the dev extra)
# runs them on the descriptor image hack/protos/protos.sh compiles, so Python and Go come from
# the same compiled protos.
#
# Environment: BUF (a buf binary; default: the venv's), GO (default: go on PATH).
set -euo pipefail

log() { printf '[sdk-go] %s\n' "$*" >&2; }
die() {
	printf '[sdk-go] ERROR: %s\n' "$*" >&2
	exit 1
}

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(dirname "$HACK")
SDK=$ROOT/sdk/go
GEN_REL=plantd/v1
GO=${GO:-go}
BUF=${BUF:-$ROOT/.venv/bin/buf}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/plantd-sdk/go-plugins

command -v "$GO" >/dev/null || die "go is not installed (the Go SDK needs Go $(sed -n 's/^go //p' "$SDK/go.mod") or newer)"
[[ -x $BUF ]] || die "buf not found at $BUF: run 'make install' (buf-bin, pinned in pyproject.toml)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plantd-sdk-go.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# plugins -> prints the directory holding the pinned protoc-gen-go and protoc-gen-go-grpc.
plugins() {
	local stamp dir
	stamp=$(sha256sum "$SDK/go.mod" "$SDK/go.sum" | sha256sum | cut -c1-16)
	dir=$CACHE/$stamp
	if [[ ! -x $dir/protoc-gen-go || ! -x $dir/protoc-gen-go-grpc ]]; then
		log "building protoc-gen-go and protoc-gen-go-grpc (pinned in sdk/go/go.mod) into $dir"
		mkdir -p "$dir.tmp"
		(cd "$SDK" && "$GO" build -o "$dir.tmp/" \
			google.golang.org/protobuf/cmd/protoc-gen-go \
			google.golang.org/grpc/cmd/protoc-gen-go-grpc) ||
			die "building the protoc plugins failed (above): is the Go module proxy reachable (GOPROXY=$("$GO" env GOPROXY))?"
		rm -rf "$dir" && mv "$dir.tmp" "$dir"
	fi
	printf '%s\n' "$dir"
}

# generate OUT: write plantd/v1/*.go under OUT.
generate() {
	local out=$1 bin
	bin=$(plugins)
	"$HACK/protos/protos.sh" image "$tmp/plantd.binpb"
	mkdir -p "$out"
	PATH=$bin:$PATH "$BUF" generate "$tmp/plantd.binpb" --template "$SDK/buf.gen.yaml" --path plantd -o "$out" ||
		die "buf generate failed (above)"
}

cmd_gen() {
	generate "$tmp/out"
	rm -rf "${SDK:?}/$GEN_REL"
	mkdir -p "$SDK/$GEN_REL"
	cp -p "$tmp/out/$GEN_REL/"*.go "$SDK/$GEN_REL/"
	log "generated $(find "$SDK/$GEN_REL" -name '*.go' | wc -l) files into sdk/go/$GEN_REL"
}

cmd_check() {
	generate "$tmp/out"
	if ! diff -r -u "$tmp/out/$GEN_REL" "$SDK/$GEN_REL" >"$tmp/diff" 2>&1; then
		head -n 60 "$tmp/diff" >&2
		die "sdk/go/$GEN_REL differs from what the protos generate (first 60 lines above): run 'hack/sdk/go.sh gen' and commit the result; never edit generated files by hand"
	fi
	log "generated code is up to date (sdk/go/$GEN_REL)"
	local unformatted
	unformatted=$(cd "$SDK" && gofmt -l .)
	[[ -z $unformatted ]] || die "not gofmt-formatted: $unformatted (run: gofmt -w sdk/go)"
	(cd "$SDK" && "$GO" vet ./...) || die "go vet found problems (above)"
	log "gofmt and go vet: clean"
}

cmd_build() {
	local out=${1:-}
	[[ -n $out ]] || die "usage: go.sh build OUT"
	(cd "$SDK" && "$GO" build -o "$out" ./examples/quickstart) || die "building the example failed (above)"
	log "built $out"
}

case ${1:-} in
gen) cmd_gen ;;
check) cmd_check ;;
build) cmd_build "${2:-}" ;;
*)
	sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
