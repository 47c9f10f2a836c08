#!/usr/bin/env bash
# Fetch (once) skaffold's published JSON schema for an apiVersion, and print its path.
#
#   hack/tools/skaffold-schema.sh v4beta13   -> ~/.cache/plantd-tools/skaffold-<version>/v4beta13.json
#
# The schemas ship in skaffold's Go module (docs-v2/content/en/schemas/), which the Go module
# proxy serves (a 44 MB zip, about 2 s here; nothing is built). The cache directory is named by
# the skaffold version, so a new pin fetches anew.
set -euo pipefail

# The newest skaffold the proxy serves here (v2.17.0 is refused); it carries v1 .. v4beta13.
SKAFFOLD_VERSION=v2.16.1
api=${1:?usage: skaffold-schema.sh API_VERSION (e.g. v4beta13, from skaffold.yaml)}
[[ $api =~ ^v[0-9a-z]+$ ]] || { echo "[skaffold-schema] ERROR: bad apiVersion '$api'" >&2; exit 1; }
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/plantd-tools/skaffold-$SKAFFOLD_VERSION
OUT=$CACHE/$api.json

die() {
	printf '[skaffold-schema] ERROR: %s\n' "$*" >&2
	exit 1
}

if [[ ! -s $OUT ]]; then
	command -v go >/dev/null || die "go is not installed: the schema comes from skaffold's Go module"
	mod=github.com/GoogleContainerTools/skaffold/v2@$SKAFFOLD_VERSION
	printf '[skaffold-schema] fetching %s from %s\n' "$api" "$mod" >&2
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# Its own GOMODCACHE: only the zip is needed, not a 150 MB unpacked tree in the user's cache.
	json=$(cd "$tmp" && GOMODCACHE=$tmp/mod GOFLAGS=-mod=mod go mod download -json "$mod") ||
		die "go mod download $mod failed: is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?"
	zip=$(sed -n 's/^[[:space:]]*"Zip": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
	[[ -f $zip ]] || die "go mod download gave no zip: $json"
	mkdir -p "$CACHE"
	python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
		"$zip" "$mod/docs-v2/content/en/schemas/$api.json" >"$OUT.tmp" 2>/dev/null ||
		die "$mod has no schema for $api"
	chmod -R u+w "$tmp"
	mv "$OUT.tmp" "$OUT"
fi
printf '%s\n' "$OUT"
