#!/usr/bin/env bash
# `make image-smoke`: runs the built image the way a restricted pod does — runc (Debian
# package), uid 10001, read-only root filesystem, no capabilities, a tmpfs /tmp — and checks
# that `plantd version` and `plantd <component> --help` of every component in the image's own
# contract exit 0, that the process is not root, and that the root filesystem refuses writes.
#
# Usage: hack/image/smoke.sh [IMAGE]     (default localhost/plantd:dev, from `make image`)
# One line per check on stdout ("ok <check>" / "FAIL <check>: <why>"); exit 1 on any failure.
set -euo pipefail
# shellcheck source=hack/image/lib.sh
source "$(dirname "$0")/lib.sh"

image=${1:-$IMAGE_NAME}
need_buildah
command -v runc >/dev/null 2>&1 || die "runc not found: apt-get install runc"
work=$(mktemp -d)
bh inspect --type image "$image" >"$work/inspect.json" 2>/dev/null || {
	rm -rf "$work"
	die "no image $image in $IMAGE_CACHE/storage: run make image first"
}
ctr=$(bh from --pull-never "$image")
cleanup() {
	bh umount "$ctr" >/dev/null 2>&1 || true
	bh rm "$ctr" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
rootfs=$(bh mount "$ctr")
# The image's own config: user, environment and working directory, as a kubelet would use them.
read -r uid workdir < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["OCIv1"]["config"]
json.dump(c.get("Env", []), open(sys.argv[2], "w"))
print(c.get("User", "0").split(":")[0], c.get("WorkingDir") or "/")
' "$work/inspect.json" "$work/env.json")

# A runc bundle per run: the image's env, user and cwd; everything a restricted pod drops.
run_in_image() {
	local name=${1//[^a-zA-Z0-9_.-]/_}
	shift
	local b=$work/$name
	mkdir -p "$b"
	python3 - "$b/config.json" "$rootfs" "$uid" "$workdir" "$work/env.json" "$@" <<'PY'
import json, sys
out, rootfs, uid, cwd, env_file, *args = sys.argv[1:]
config = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": int(uid), "gid": int(uid)},
        "args": args,
        "env": json.load(open(env_file)),
        "cwd": cwd or "/",
        "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "noNewPrivileges": True,
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    },
    "root": {"path": rootfs, "readonly": True},
    "hostname": "plantd-smoke",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
    ],
    "linux": {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}
json.dump(config, open(out, "w"))
PY
	runc run --bundle "$b" "plantd-smoke-$$-$name" </dev/null
}

failures=0
check() {
	local name=$1 out rc
	shift
	if out=$(run_in_image "$name" "$@" 2>&1); then
		printf 'ok %s\n' "$name"
		return 0
	else
		rc=$?
		printf 'FAIL %s: exit %s: %s\n' "$name" "$rc" "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
		failures=$((failures + 1))
		return 1
	fi
}

# Not root, and the root filesystem is read-only (the write must fail).
out=$(run_in_image whoami /bin/sh -c 'id -u; if touch /opt/plantd/.w 2>/dev/null; then echo writable; else echo read-only; fi' 2>&1) || true
if [[ $out == "$uid"$'\n'read-only ]] && [[ $uid != 0 ]]; then
	printf 'ok uid %s, read-only root\n' "$uid"
else
	printf 'FAIL user/root filesystem: expected uid %s (not 0) and read-only, got: %s\n' "$uid" "$(tr '\n' ' ' <<<"$out")"
	failures=$((failures + 1))
fi

check "plantd version" plantd version || true
components=$(run_in_image components python3 -c 'from plantd.common import contract; print(" ".join(contract.COMPONENTS))') ||
	die "could not read the components from the image's plantd.common.contract"
for c in $components; do
	check "plantd $c --help" plantd "$c" --help || true
done
check "plant --help" plant --help || true
# The runtime stage carries no installer and no compiler.
check "no pip or compiler" /bin/sh -c '! command -v pip && ! command -v gcc && ! command -v cc && ! python3 -c "import pip" 2>/dev/null' || true

if ((failures > 0)); then
	log "$failures check(s) failed in $image"
	exit 1
fi
log "all checks passed in $image ($(bh images --format '{{.Size}}' "$image" | head -1))"
