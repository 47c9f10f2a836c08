"""Throwaway TLS certificates for tests: a CA and a server certificate for 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .prereq import require

# EC P-256 keys: fast to make, and every TLS build of redis-server accepts them.
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> Path:
    """``ca.crt``/``ca.key`` and ``server.crt``/``server.key`` (SAN IP:127.0.0.1, one day) in
    ``d``, the layout :class:`tests.kit.RedisServer`'s ``tls_dir`` takes; returns ``d``.

    Skips (fails under CI) when openssl is not installed."""
    require(
        shutil.which("openssl") is not None, "openssl is not installed (apt-get install openssl)"
    )
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=plantd-test-ca", cwd=d)  # fmt: skip
    _openssl("req", *_EC, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext",
             cwd=d)  # fmt: skip
    return d
