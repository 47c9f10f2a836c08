#!/usr/bin/env bash
# The TypeScript SDK (sdk/ts): generate, check and build it with its example.
#
#   hack/sdk/ts.sh gen        regenerate sdk/ts/src/gen from protos/ (buf generate)
#   hack/sdk/ts.sh check      regenerate into a temp dir and diff against the tree; tsc --noEmit
#   hack/sdk/ts.sh build      compile the SDK and examples/quickstart.ts into sdk/ts/dist
#
# The generator is protoc-gen-es and the runtime @bufbuild/protobuf and @connectrpc/connect(-node),
# at the exact versions in sdk/ts/package.json and package-lock.json (npm ci; npm's own cache in
# ~/.npm keeps the second install offline-fast). buf (the buf-bin wheel of the dev extra) runs the
# plugin on the descriptor image hack/protos/protos.sh compiles, so Python, Go and TypeScript come
# from the same compiled protos. protoc-gen-es imports each file's dependencies as files beside
# it, so google/api and google/rpc (with error_details.proto, for ErrorInfo) are generated too;
# google/protobuf is @bufbuild/protobuf/wkt.
#
# Environment: BUF (a buf binary; default: the venv's), NPM (default: npm on PATH).
set -euo pipefail

log() { printf '[sdk-ts] %s\n' "$*" >&2; }
die() {
	printf '[sdk-ts] ERROR: %s\n' "$*" >&2
	exit 1
}

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(dirname "$HACK")
SDK=$ROOT/sdk/ts
GEN_REL=src/gen
NPM=${NPM:-npm}
BUF=${BUF:-$ROOT/.venv/bin/buf}

command -v node >/dev/null || die "node is not installed (the TypeScript SDK needs Node.js $(sed -n 's/.*"node": *"\(.*\)".*/\1/p' "$SDK/package.json"))"
command -v "$NPM" >/dev/null || die "npm is not installed"
[[ -x $BUF ]] || die "buf not found at $BUF: run 'make install' (buf-bin, pinned in pyproject.toml)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plantd-sdk-ts.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# install: node_modules exactly as package-lock.json says, reinstalled when the lock changes.
install() {
	local stamp
	stamp=$(sha256sum "$SDK/package-lock.json" | cut -c1-16)
	if [[ $(cat "$SDK/node_modules/.plantd-lock" 2>/dev/null) != "$stamp" ]]; then
		log "npm ci (versions pinned in sdk/ts/package-lock.json)"
		(cd "$SDK" && "$NPM" ci --no-audit --no-fund --loglevel=error) ||
			die "npm ci failed (above): is the npm registry reachable ($("$NPM" config get registry))?"
		printf '%s\n' "$stamp" >"$SDK/node_modules/.plantd-lock"
	fi
}

# generate OUT: write OUT/src/gen/**/*_pb.ts.
generate() {
	local out=$1
	install
	"$HACK/protos/protos.sh" image "$tmp/plantd.binpb" google/rpc/error_details.proto
	mkdir -p "$out"
	(cd "$SDK" && "$BUF" generate "$tmp/plantd.binpb" --template buf.gen.yaml \
		--path plantd --path google/api --path google/rpc -o "$out") ||
		die "buf generate failed (above)"
}

cmd_gen() {
	generate "$tmp/out"
	rm -rf "${SDK:?}/$GEN_REL"
	cp -rp "$tmp/out/$GEN_REL" "$SDK/$GEN_REL"
	log "generated $(find "$SDK/$GEN_REL" -name '*.ts' | wc -l) files into sdk/ts/$GEN_REL"
}

cmd_check() {
	generate "$tmp/out"
	if ! diff -r -u "$tmp/out/$GEN_REL" "$SDK/$GEN_REL" >"$tmp/diff" 2>&1; then
		head -n 60 "$tmp/diff" >&2
		die "sdk/ts/$GEN_REL differs from what the protos generate (first 60 lines above): run 'hack/sdk/ts.sh gen' and commit the result; never edit generated files by hand"
	fi
	log "generated code is up to date (sdk/ts/$GEN_REL)"
	(cd "$SDK" && node_modules/.bin/tsc -p tsconfig.json --noEmit) || die "tsc found type errors (above)"
	log "tsc --strict: clean"
}

cmd_build() {
	install
	(cd "$SDK" && rm -rf dist && node_modules/.bin/tsc -p tsconfig.json) || die "tsc failed (above)"
	log "built sdk/ts/dist (example: node sdk/ts/dist/examples/quickstart.js)"
}

case ${1:-} in
gen) cmd_gen ;;
check) cmd_check ;;
build) cmd_build ;;
*)
	sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
