#!/usr/bin/env bash
# Generate and check the plantd.v1 protobuf code.
#
#   hack/protos/protos.sh gen       regenerate services/plantd/v1 (what `make protos` runs)
#   hack/protos/protos.sh check     regenerate into a temp dir and diff against the tree, then
#                                   buf lint and buf breaking (what `make protos-check` runs)
#   hack/protos/protos.sh diff      only the regenerate-and-diff part of check
#   hack/protos/protos.sh lint      only buf lint
#   hack/protos/protos.sh breaking  only buf breaking against $PROTOS_AGAINST (default: main)
#   hack/protos/protos.sh image OUT [EXTRA.proto...]
#                                   write the descriptor image (imports and source info
#                                   included) the SDK generators read (hack/sdk/*.sh); EXTRA
#                                   files from the include path (e.g. google/rpc/error_details.proto,
#                                   which clients decode but our protos do not import) go in too
#
# Python code comes from grpcio-tools' protoc (python, grpc_python) and mypy-protobuf (typed
# stubs), so it is exactly reproducible from the pins in pyproject.toml. The google/api and
# google/rpc imports are read from the installed googleapis-common-protos wheel, and
# google/protobuf from grpcio-tools; nothing is vendored. buf (the buf-bin wheel pinned in
# pyproject.toml's dev extra: bufbuild's release binary, no Go build) lints a
# descriptor image compiled the same way.
#
# Environment: PYTHON (default: this repository's .venv/bin/python), PROTOS_ROOT (the tree to
# work on, default this repository; tests point it at a copy), PROTOS_AGAINST (git ref for
# breaking, default main), BUF (a buf binary; default: the venv's, from buf-bin).
set -euo pipefail

log() { printf '[protos] %s\n' "$*" >&2; }
die() {
	printf '[protos] ERROR: %s\n' "$*" >&2
	exit 1
}

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${PROTOS_ROOT:-$(dirname "$HACK")}
ROOT=$(cd "$ROOT" && pwd)
PY=${PYTHON:-$(dirname "$HACK")/.venv/bin/python}
# Where the generated package lives: proto package plantd.v1 -> Python package plantd.v1.
GEN_REL=services/plantd/v1
PROTO_REL=protos/plantd/v1

[[ -x $PY ]] || die "$PY not found: run 'make install' first (or set PYTHON)"
PYBIN=$(dirname "$PY")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plantd-protos.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# include_dirs -> sets GOOGLEAPIS (google/api, google/rpc) and WKT (google/protobuf).
include_dirs() {
	GOOGLEAPIS=$("$PY" -c 'import os, google.api as a; print(os.path.dirname(os.path.dirname(a.__path__[0])))') ||
		die "googleapis-common-protos is not installed in $PY's environment (make install)"
	[[ -f $GOOGLEAPIS/google/api/annotations.proto && -f $GOOGLEAPIS/google/rpc/status.proto ]] ||
		die "no google/api/annotations.proto under $GOOGLEAPIS (googleapis-common-protos without its .proto files?)"
	WKT=$("$PY" -c 'import os, grpc_tools; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))') ||
		die "grpcio-tools is not installed in $PY's environment (make install)"
	[[ -f $WKT/google/protobuf/timestamp.proto ]] || die "no google/protobuf/*.proto under $WKT"
}

# proto_files ROOT -> the .proto files under ROOT/protos/plantd/v1, sorted (relative to ROOT/protos).
proto_files() {
	(cd "$1/protos" && LC_ALL=C find plantd -name '*.proto' -type f | LC_ALL=C sort)
}

# protoc ARGS...: grpcio-tools' protoc with the include path; run from a protos dir.
protoc() {
	"$PY" -m grpc_tools.protoc -I. -I"$GOOGLEAPIS" -I"$WKT" "$@"
}

# generate OUTDIR: write the plantd/v1 package under OUTDIR.
generate() {
	local out=$1 files
	include_dirs
	mapfile -t files < <(proto_files "$ROOT")
	((${#files[@]})) || die "no .proto files under $ROOT/$PROTO_REL"
	[[ -x $PYBIN/protoc-gen-mypy && -x $PYBIN/protoc-gen-mypy_grpc ]] ||
		die "mypy-protobuf's protoc-gen-mypy is not in $PYBIN (make install)"
	mkdir -p "$out"
	(cd "$ROOT/protos" && protoc \
		--plugin=protoc-gen-mypy="$PYBIN/protoc-gen-mypy" \
		--plugin=protoc-gen-mypy_grpc="$PYBIN/protoc-gen-mypy_grpc" \
		--python_out="$out" --grpc_python_out="$out" \
		--mypy_out="$out" --mypy_grpc_out="$out" \
		"${files[@]}") 2> >(grep -v '^Writing mypy to ' >&2)
	# The proto comments, which the generated modules do not carry (protoc strips source
	# info): the OpenAPI document's summaries and descriptions (plantd.gateway.rest.openapi).
	image "$ROOT" "$tmp/comments.binpb"
	"$PY" -m plantd.gateway.rest.proto_comments "$tmp/comments.binpb" "$out/plantd/v1/comments.json"
	cat >"$out/plantd/v1/__init__.py" <<'PY'
"""Generated gRPC code for the plantd.v1 protos (protos/plantd/v1). Do not edit.

Regenerate with ``make protos``; ``make protos-check`` fails when this package differs from
what the protos and the pinned generators produce.
"""
PY
}

cmd_gen() {
	generate "$tmp/out"
	mkdir -p "$ROOT/$GEN_REL"
	# Replace the package whole, so a removed .proto leaves no stale module behind.
	find "$ROOT/$GEN_REL" -mindepth 1 -maxdepth 1 ! -name __pycache__ -exec rm -rf {} +
	cp -p "$tmp/out/plantd/v1/"* "$ROOT/$GEN_REL/"
	log "generated $(find "$ROOT/$GEN_REL" -maxdepth 1 -type f | wc -l) files into $GEN_REL"
}

cmd_diff() {
	generate "$tmp/out"
	if ! diff -r -u -x __pycache__ "$tmp/out/plantd/v1" "$ROOT/$GEN_REL" >"$tmp/diff" 2>&1; then
		head -n 60 "$tmp/diff" >&2
		die "$GEN_REL differs from what the protos generate (shown above, first 60 lines): run 'make protos' and commit the result; never edit generated files by hand"
	fi
	log "generated code is up to date ($GEN_REL)"
}

buf_bin() {
	if [[ -n ${BUF:-} ]]; then
		[[ -x $BUF ]] || die "BUF=$BUF is not executable"
		printf '%s\n' "$BUF"
	else
		[[ -x $PYBIN/buf ]] || die "buf is not in $PYBIN: run 'make install' (buf-bin, pinned in pyproject.toml)"
		printf '%s\n' "$PYBIN/buf"
	fi
}

# image SRCROOT OUT [EXTRA...]: compile SRCROOT/protos/plantd (and EXTRA files from the
# include path) into a descriptor image for buf.
image() {
	local files root=$1 out=$2
	shift 2
	include_dirs
	mapfile -t files < <(proto_files "$root")
	(cd "$root/protos" && protoc --include_imports --include_source_info --descriptor_set_out="$out" "${files[@]}" "$@")
}

cmd_lint() {
	local buf
	buf=$(buf_bin)
	image "$ROOT" "$tmp/new.binpb"
	# --path: lint our files only, not the google imports inside the image.
	"$buf" lint "$tmp/new.binpb" --config "$ROOT/protos/buf.yaml" --path plantd ||
		die "buf lint (STANDARD + COMMENTS) failed: fix the findings above (each names the file, line and rule)"
	log "buf lint: clean"
}

cmd_breaking() {
	local buf against=${PROTOS_AGAINST:-main}
	if ! git -C "$ROOT" rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
		log "buf breaking: git ref '$against' does not exist here; nothing to compare (pass)"
		return 0
	fi
	if ! git -C "$ROOT" cat-file -e "$against:$PROTO_REL" 2>/dev/null; then
		log "buf breaking: $against has no $PROTO_REL yet; nothing to compare (pass)"
		return 0
	fi
	buf=$(buf_bin)
	mkdir -p "$tmp/against"
	git -C "$ROOT" archive "$against" protos | tar -x -C "$tmp/against"
	image "$ROOT" "$tmp/new.binpb"
	image "$tmp/against" "$tmp/old.binpb"
	"$buf" breaking "$tmp/new.binpb" --against "$tmp/old.binpb" --config "$ROOT/protos/buf.yaml" --path plantd ||
		die "buf breaking: the protos break compatibility with $against (above). Add new fields/RPCs instead of changing or removing existing ones, or start plantd.v2"
	log "buf breaking: compatible with $against"
}

case ${1:-} in
gen) cmd_gen ;;
image)
	[[ -n ${2:-} ]] || die "usage: protos.sh image OUT.binpb [EXTRA.proto...]"
	out=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
	image "$ROOT" "$out" "${@:3}"
	;;
diff) cmd_diff ;;
lint) cmd_lint ;;
breaking) cmd_breaking ;;
check)
	cmd_diff
	cmd_lint
	cmd_breaking
	;;
*)
	sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
