#!/usr/bin/env bash
# The real node's images, made here (no registry): the pod sandbox, CoreDNS,
# local-path-provisioner and Redis, each written as a docker-archive to NODE_DIR/images/
# with its reference in NODE_DIR/images/<name>.ref. Called by hack/testenv/node-build.sh.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: hack/testenv/node/images.sh NODE_DIR

Builds with buildah (the storage of hack/image, under ~/.cache/plantd-image), from the
binaries in NODE_DIR/bin:
  pause       localhost/plantd-pause:1                   static pause(2) loop, uid 65535
  coredns     localhost/plantd-coredns:<COREDNS_VERSION>  the coredns binary, uid 65532
  local-path  localhost/plantd-local-path:<version>       the provisioner binary
  redis       localhost/plantd-redis:bookworm             debootstrap minbase + redis-server
and writes NODE_DIR/images/<name>.tar (docker-archive) and <name>.ref. Existing archives
are kept. Needs root (debootstrap).
EOF
}
[[ ${1:-} == -h || ${1:-} == --help ]] && {
	usage
	exit 0
}
NODE_DIR=${1:?usage: images.sh NODE_DIR}
# shellcheck source=../../image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../image/lib.sh"
need_buildah
OUT=$NODE_DIR/images
BIN=$NODE_DIR/bin
mkdir -p "$OUT" "$IMAGE_CACHE"

# export_archive NAME REF: write the docker-archive `ctr images import` reads.
export_archive() {
	local name=$1 ref=$2
	rm -f "$OUT/$name.tar.tmp"
	bh push --quiet "$ref" "docker-archive:$OUT/$name.tar.tmp:$ref" >/dev/null
	mv -f "$OUT/$name.tar.tmp" "$OUT/$name.tar"
	printf '%s\n' "$ref" >"$OUT/$name.ref"
	log "node image $ref: $(du -h "$OUT/$name.tar" | cut -f1)"
}

# from_binary NAME REF BINARY UID ARGS...: an image holding one static binary and nothing else.
from_binary() {
	local name=$1 ref=$2 binary=$3 uid=$4 ctr mnt
	shift 4
	[[ -s $OUT/$name.tar ]] && return 0
	[[ -x $BIN/$binary ]] || die "missing $BIN/$binary (run hack/testenv/node-build.sh)"
	ctr=$(bh from scratch)
	mnt=$(bh mount "$ctr")
	install -m 0755 "$BIN/$binary" "$mnt/$binary"
	bh umount "$ctr" >/dev/null
	local entry
	entry=$(printf '"/%s"' "$binary")
	for a in "$@"; do entry+=$(printf ', "%s"' "$a"); done
	bh config --user "$uid:$uid" --entrypoint "[$entry]" --cmd '' \
		--label "org.opencontainers.image.title=plantd-$name" \
		--label "org.opencontainers.image.description=plantd test node: $binary" "$ctr"
	bh commit --quiet --rm "$ctr" "$ref" >/dev/null
	export_archive "$name" "$ref"
}

from_binary pause localhost/plantd-pause:1 pause 65535
from_binary coredns "localhost/plantd-coredns:$COREDNS_VERSION" coredns 65532
from_binary local-path "localhost/plantd-local-path:$LOCAL_PATH_PROVISIONER_VERSION" \
	local-path-provisioner 0

# Redis for the operator's managed StatefulSet (it runs `redis-server` as uid 999) and the
# local-path helper pods (they need sh, mkdir and rm). Debian's redis-server, so no build.
if [[ ! -s $OUT/redis.tar ]]; then
	[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
	mirror=${PLANTD_DEBIAN_MIRROR:-}
	if [[ -z $mirror ]]; then
		mirror=$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)\/\{0,1\}$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
	fi
	mirror=${mirror:-http://deb.debian.org/debian}
	work=$(mktemp -d "$IMAGE_CACHE/redis.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	t=$(now_s)
	log "node image redis: debootstrap $BASE_SUITE minbase + redis-server from $mirror ..."
	if ! debootstrap --variant=minbase --include=redis-server "$BASE_SUITE" "$work/rootfs" "$mirror" \
		>"$work/debootstrap.log" 2>&1; then
		tail -n 20 "$work/debootstrap.log" | sed 's/^/[image]   /' >&2
		die "debootstrap failed (log above); set PLANTD_DEBIAN_MIRROR to a reachable mirror"
	fi
	r=$work/rootfs
	rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/usr/share/doc/* "$r"/usr/share/man/* \
		"$r"/var/log/* "$r"/tmp/*
	: >"$r/etc/resolv.conf"
	: >"$r/etc/hostname"
	mkdir -p "$r/data"
	ctr=$(bh from scratch)
	mnt=$(bh mount "$ctr")
	cp -a "$r/." "$mnt/"
	bh umount "$ctr" >/dev/null
	bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--user 999:999 --cmd redis-server --workingdir /data \
		--label org.opencontainers.image.title=plantd-redis \
		--label "org.opencontainers.image.description=Debian $BASE_SUITE minbase with Debian's redis-server (debootstrap)" \
		"$ctr"
	bh commit --quiet --rm "$ctr" localhost/plantd-redis:bookworm >/dev/null
	log "node image redis: built in $(elapsed "$t")s"
	export_archive redis localhost/plantd-redis:bookworm
fi
