"""Secrets the operator generates once and then keeps: CURVE key pairs, JWT key, Redis password.

Generation is here; creating them (only when absent) is in ``reconcile``. Values never reach
logs: callers only ever log Secret names and key names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets as random
from collections.abc import Iterable, Mapping
from typing import Any

import zmq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from plantd.common import contract
from plantd.common.registry import valid_key
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


_PUBLIC_KEY_LINE = re.compile(r'^\s*public-key\s*=\s*"([^"]{40})"\s*$', re.MULTILINE)


def curve_public_keys(have: Mapping[str, Any], components: Iterable[str]) -> dict[str, str]:
    """Component -> Z85 public key, read from the ``NAME.key`` certificates of a CURVE Secret
    (base64 data as read); components without a readable one are left out."""
    out: dict[str, str] = {}
    for c in components:
        raw = have.get(f"{c}{contract.CURVE_PUBLIC_SUFFIX}")
        if raw is None:
            continue
        try:
            text = base64.b64decode(str(raw)).decode()
        except (ValueError, UnicodeDecodeError):
            continue
        # An edited, broken entry stays out: the broker refuses a registry with a bad key.
        if (m := _PUBLIC_KEY_LINE.search(text)) and valid_key(m.group(1)):
            out[c] = m.group(1)
    return out


# Signing keys, named as `plantd identity --jwt-keys-dir` reads them: STATE.KID.pem with STATE
# next | active | retired. A `next` key is always present, so it is in every verifier's JWKS
# (and Istio's inline copy) before it signs: rotation is then a rename (docs/operator.md).
_JWT_NAME = re.compile(r"^(next|active|retired)\.([A-Za-z0-9_-]{1,64})\.pem$")
LEGACY_JWT_KEY = contract.JWT_KEY_FILE_NAME  # signing-key.pem, written by operators before 0.2


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def kid_of(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint, first 16 characters: the kid the identity service derives too."""
    jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    canon = json.dumps({m: jwk[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    digest_ = hashlib.sha256(canon.encode()).digest()
    return base64.urlsafe_b64encode(digest_).rstrip(b"=").decode()[:16]


def _new_key(state: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return f"{state}.{kid_of(key.public_key())}.pem", _pem(key)


def _decoded(have: Mapping[str, Any], name: str) -> bytes:
    return base64.b64decode(str(have[name]))


def jwt_keys(have: Mapping[str, Any]) -> dict[str, list[str]]:
    """State -> Secret entry names of the signing keys present (base64 data as read)."""
    out: dict[str, list[str]] = {"next": [], "active": [], "retired": []}
    for name in sorted(have):
        if m := _JWT_NAME.match(name):
            out[m.group(1)].append(name)
    return out


def _legacy_key(have: Mapping[str, Any]) -> ec.EllipticCurvePrivateKey | None:
    """The P-256 key of an older operator's ``signing-key.pem``; None if absent or unusable
    (then a new active key is generated: tokens it signed stop verifying, nothing breaks)."""
    if LEGACY_JWT_KEY not in have:
        return None
    try:
        key = serialization.load_pem_private_key(_decoded(have, LEGACY_JWT_KEY), None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def jwt_entries(have: Mapping[str, Any] | None = None) -> dict[str, str]:
    """ES256 (P-256) keys in PKCS#8 PEM: an active key and a next key, whichever is missing.

    A Secret from an older operator (one ``signing-key.pem``) keeps that key as the active one,
    with the kid the identity service gave it (the same thumbprint), so tokens stay valid.
    """
    have = have or {}
    found = jwt_keys(have)
    out: dict[str, str] = {}
    if not found["active"]:
        legacy = _legacy_key(have)
        if legacy is not None:
            out[f"active.{kid_of(legacy.public_key())}.pem"] = _pem(legacy)
        else:
            out.update([_new_key("active")])
    if not found["next"]:
        out.update([_new_key("next")])
    return out


def rotate_jwt(have: Mapping[str, Any]) -> dict[str, str | None]:
    """A merge patch of ``data`` that rotates: next -> active -> retired, a new next key.

    Keys retired by the previous rotation are removed (``None``): rotate no more often than the
    access-token lifetime (15 min by default), or tokens they signed stop verifying early.
    """
    found = jwt_keys(have)
    if len(found["active"]) != 1 or len(found["next"]) != 1:
        raise ValueError("the signing-key Secret needs one active and one next key to rotate")
    patch: dict[str, str | None] = {name: None for name in found["retired"]}
    active, nxt = found["active"][0], found["next"][0]
    patch[active] = None
    patch["retired." + active.split(".", 1)[1]] = str(have[active])
    patch[nxt] = None
    patch["active." + nxt.split(".", 1)[1]] = str(have[nxt])
    name, pem = _new_key("next")
    patch[name] = base64.b64encode(pem.encode()).decode()
    return patch


def jwks(have: Mapping[str, Any]) -> dict[str, Any]:
    """The public JWKS of the Secret's keys (next, active, retired): for Istio, never private."""
    keys = []
    for names in jwt_keys(have).values():
        for name in names:
            key = serialization.load_pem_private_key(_decoded(have, name), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                continue  # only the operator's own ES256 keys are published inline
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            kid = name.split(".")[1]
            keys.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
    return {"keys": keys}


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
