#!/usr/bin/env bash
# Makes the local base image, for machines that reach Debian's package mirror but no container
# registry: Debian bookworm (minbase) + Debian's python3, from debootstrap, committed into the
# project's buildah storage as localhost/plantd-base:<suite>-<hash>. Kept there until the
# package list or the recipe changes (see lib.sh), so a warm `make image` skips this.
#
# Usage: hack/image/base.sh        prints the base image's name on stdout
# Needs root (debootstrap chroots), debootstrap and buildah (Debian packages).
set -euo pipefail
# shellcheck source=hack/image/lib.sh
source "$(dirname "$0")/lib.sh"

need_buildah
tag=$(base_tag)
if bh inspect --type image "$tag" >/dev/null 2>&1; then
	log "base $tag: cached"
	printf '%s\n' "$tag"
	exit 0
fi

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root (it chroots); run as root, or pass BASE_IMAGE=<an image with python3.11> to make image"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found: apt-get install debootstrap"

# The mirror this machine's apt already uses (deb822 or one-line sources), else Debian's CDN.
mirror=${PLANTD_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
	mirror=$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)\/\{0,1\}$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
fi
if [[ -z $mirror ]]; then
	mirror=$(sed -n 's/^deb[[:space:]]\{1,\}\(http[^[:space:]]*\/debian\)\/\{0,1\}[[:space:]].*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$IMAGE_CACHE"
work=$(mktemp -d "$IMAGE_CACHE/base.XXXXXX")
trap 'rm -rf "$work"' EXIT
t=$(now_s)
log "base $tag: debootstrap $BASE_SUITE (minbase + $BASE_PACKAGES) from $mirror ..."
if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
	tail -n 20 "$work/debootstrap.log" | sed 's/^/[image]   /' >&2
	die "debootstrap failed (log above); is $mirror reachable? set PLANTD_DEBIAN_MIRROR to another mirror"
fi
log "  debootstrap: $(elapsed "$t")s"

# What a runtime image does not need: package indexes, downloaded .debs, docs, logs.
r=$work/rootfs
rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
	"$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/var/log/* \
	"$r"/tmp/* "$r"/root/.cache
# debootstrap leaves the host's resolver and hostname behind; a container gets its own.
: >"$r/etc/resolv.conf"
: >"$r/etc/hostname"

ctr=$(bh from scratch)
mnt=$(bh mount "$ctr")
cp -a "$r/." "$mnt/"
bh umount "$ctr" >/dev/null
bh config \
	--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--env LANG=C.UTF-8 \
	--cmd /usr/bin/python3 \
	--label org.opencontainers.image.title=plantd-base \
	--label "org.opencontainers.image.description=Debian $BASE_SUITE minbase with Debian's python3 (debootstrap)" \
	--label "org.opencontainers.image.base.name=debian:$BASE_SUITE" \
	"$ctr"
bh commit --quiet --rm "$ctr" "$tag" >/dev/null
log "base $tag: built in $(elapsed "$t")s ($(bh images --format '{{.Size}}' "$tag" | head -1))"
printf '%s\n' "$tag"
