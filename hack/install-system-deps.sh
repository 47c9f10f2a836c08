#!/usr/bin/env bash
# Installs the Debian packages the test tiers run for real (redis-server, openssl; buildah,
# debootstrap and runc for the image; the real node's CNI plugins and build tools), when missing.
# The tests start their own redis-server on a free port; the system service is not used.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # TLS certificates for the Redis TLS test
# The e2e tier builds the image without a Docker engine and runs it as a restricted pod would.
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v runc >/dev/null 2>&1 || missing+=(runc)
# The real node of the e2e tier (hack/testenv/node.sh): CNI plugins, kube-proxy's tools,
# and what runc's build with libseccomp needs (hack/testenv/node-build.sh).
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "[deps] installing Debian packages: ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system redis on 6379 after install; the tests don't need it.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
echo "[deps] installed: ${missing[*]}" >&2
