"""Secrets the operator generates once and then keeps: CURVE key pairs, JWT key, Redis password.

Generation is here; creating them (only when absent) is in ``reconcile``. Values never reach
logs: callers only ever log Secret names and key names.
"""

from __future__ import annotations

import base64
import hashlib
import secrets as random
from collections.abc import Iterable, Mapping
from typing import Any

import zmq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.context import ClusterContext


def curve_entries(
    components: Iterable[str], have: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """``NAME.key`` / ``NAME.key_secret`` for each component that has no pair yet."""
    out: dict[str, str] = {}
    for c in components:
        pub_key, sec_key = (
            f"{c}{contract.CURVE_PUBLIC_SUFFIX}",
            f"{c}{contract.CURVE_SECRET_SUFFIX}",
        )
        if have and pub_key in have and sec_key in have:
            continue
        public, secret = (k.decode() for k in zmq.curve_keypair())
        out[pub_key] = contract.curve_certificate(public, None)
        out[sec_key] = contract.curve_certificate(public, secret)
    return out


def jwt_entries(have: Mapping[str, Any] | None = None) -> dict[str, str]:
    """An ES256 (P-256) signing key in PKCS#8 PEM, and a key id for the JWKS."""
    if have and contract.JWT_KEY_FILE_NAME in have:
        return {}
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {contract.JWT_KEY_FILE_NAME: pem, "kid": random.token_hex(8)}


def redis_entries(have: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A password and the Redis ACL file that enforces it (kept off the command line)."""
    if have and "password" in have and "users.acl" in have:
        return {}
    password = random.token_urlsafe(32)
    acl = f"user default on >{password} ~* &* +@all\n"
    return {"password": password, "users.acl": acl}


def wanted(ctx: ClusterContext) -> dict[str, list[str]]:
    """Generated Secret name -> the components (or roles) it must hold entries for."""
    from plantd_operator.builders.pods import curve_clients

    out: dict[str, list[str]] = {naming.child(ctx.name, "jwt"): ["jwt"]}
    if ctx.spec.security.curve.enabled:
        out[naming.child(ctx.name, "curve")] = [naming.BROKER, *curve_clients(ctx)]
    if ctx.spec.state.redis.mode == "managed":
        out[naming.child(ctx.name, naming.REDIS)] = ["redis"]
    return out


def missing_entries(kind: list[str], have: Mapping[str, Any]) -> dict[str, str]:
    """Entries to add to a generated Secret so it holds everything ``kind`` needs."""
    if kind == ["jwt"]:
        return jwt_entries(have)
    if kind == ["redis"]:
        return redis_entries(have)
    return curve_entries(kind, have)


def encode(entries: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in entries.items()}


def digest(data: Mapping[str, str] | None, keys: Iterable[str] | None = None) -> str:
    """Digest of (some keys of) a Secret's base64 data: what a pod sees, not the values."""
    if not data:
        return "absent"
    chosen = sorted(keys) if keys is not None else sorted(data)
    h = hashlib.sha256()
    for k in chosen:
        h.update(k.encode() + b"\0" + str(data.get(k, "")).encode() + b"\0")
    return h.hexdigest()[:16]


def manifest(ctx: ClusterContext, name: str, entries: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": ctx.metadata(name),
        "data": encode(entries),
    }
