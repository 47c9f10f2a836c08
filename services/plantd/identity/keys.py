"""Signing keys from mounted files, with overlap: next -> active -> retired.

A key directory holds PEM private keys named ``STATE.KID.pem``:

- ``active.KID.pem``: exactly one; signs every new token;
- ``next.KID.pem``: published in the JWKS before it signs, so every verifier already trusts it
  when it becomes active (verifiers cache the JWKS; a key used the moment it appears would be
  refused until their next refresh);
- ``retired.KID.pem`` (or ``retired.KID.pub.pem``, a public key): still published so tokens
  it signed verify until they expire, never used to sign.

Rotation is renaming files (the operator rewrites its Secret): next -> active, active -> retired,
and deleting a retired key once the access-token lifetime has passed. A single
``jwt_key_file`` (the operator's ``signing-key.pem``) is the active key with kid = its RFC 7638
thumbprint, so every replica derives the same kid. The service refuses to start without an
active key: there is no default secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

STATES: Final = ("next", "active", "retired")
_NAME = re.compile(r"^(next|active|retired)\.([A-Za-z0-9_-]{1,64})(\.pub)?\.pem$")
MAX_KEY_FILE_BYTES: Final = 16 * 1024
GENERATE_HINT: Final = "create one with `python -m plantd.identity.keygen DIR`"


class SigningKeyError(RuntimeError):
    """No usable signing key; the message names the file or directory and the fix."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str  # ES256 | EdDSA
    state: str  # next | active | retired
    public: Any
    private: Any | None = None

    def jwk(self) -> dict[str, Any]:
        algo = ECAlgorithm if self.alg == "ES256" else OKPAlgorithm
        doc: dict[str, Any] = algo.to_jwk(self.public, as_dict=True)
        doc.update({"kid": self.kid, "alg": self.alg, "use": "sig", "status": self.state})
        return doc


def _alg(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise SigningKeyError(f"EC curve {key.curve.name} is not P-256 (ES256)")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise SigningKeyError(f"unsupported key type {type(key).__name__}: use EC P-256 or Ed25519")


def thumbprint(public: Any) -> str:
    """RFC 7638 JWK thumbprint (base64url sha256 of the canonical required members)."""
    jwk = (ECAlgorithm if _alg(public) == "ES256" else OKPAlgorithm).to_jwk(public, as_dict=True)
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    canon = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canon.encode()).digest()).rstrip(b"=").decode()


def _read(path: Path, private: bool) -> Any:
    try:
        st = path.stat()
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise SigningKeyError(f"{path} is {st.st_size} bytes: not a key file")
        if private and st.st_mode & stat.S_IRWXO:
            raise SigningKeyError(
                f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run `chmod 600 {path}` (in Kubernetes mount the Secret with defaultMode 0400)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror}") from None
    try:
        if private:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not an unencrypted PEM key: {exc}") from None


class KeyRing:
    """The keys a replica signs with and publishes."""

    def __init__(self, keys: list[SigningKey]) -> None:
        active = [k for k in keys if k.state == "active"]
        if len(active) != 1:
            found = ", ".join(k.kid for k in active) or "none"
            raise SigningKeyError(f"exactly one active signing key is needed, found {found}")
        self.keys = keys
        self.active = active[0]
        if self.active.private is None:
            raise SigningKeyError(f"active key {self.active.kid} has no private key")

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        if not path.is_file():
            raise SigningKeyError(f"signing key file {path} does not exist; {GENERATE_HINT}")
        priv = _read(path, True)
        pub = priv.public_key()
        return cls([SigningKey(thumbprint(pub)[:16], _alg(priv), "active", pub, priv)])

    @classmethod
    def from_dir(cls, directory: Path) -> KeyRing:
        if not directory.is_dir():
            raise SigningKeyError(
                f"signing key directory {directory} does not exist; {GENERATE_HINT}"
            )
        keys: list[SigningKey] = []
        for path in sorted(directory.iterdir()):
            m = _NAME.match(path.name)
            if m is None:
                continue
            state, kid, pub_only = m.group(1), m.group(2), m.group(3) is not None
            if pub_only and state != "retired":
                raise SigningKeyError(f"{path}: only retired keys may be public-only")
            key = _read(path, not pub_only)
            public = key if pub_only else key.public_key()
            keys.append(SigningKey(kid, _alg(key), state, public, None if pub_only else key))
        kids = [k.kid for k in keys]
        if len(set(kids)) != len(kids):
            raise SigningKeyError(f"{directory}: a kid appears in more than one file")
        if not keys:
            raise SigningKeyError(
                f"no signing key (active.KID.pem) in {directory}; {GENERATE_HINT}"
            )
        return cls(keys)

    def jwks(self) -> dict[str, Any]:
        order = {s: i for i, s in enumerate(STATES)}
        return {"keys": [k.jwk() for k in sorted(self.keys, key=lambda k: order[k.state])]}


def generate(directory: Path, *, alg: str = "ES256", state: str = "active", kid: str = "") -> Path:
    """Write a new private key ``STATE.KID.pem`` (0600) into ``directory`` (created 0700)."""
    if state not in ("next", "active"):
        raise ValueError("a new key is 'next' (to pre-publish) or 'active'")
    key: Any = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else None
    if alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    if key is None:
        raise ValueError(f"alg must be ES256 or EdDSA, not {alg!r}")
    kid = kid or thumbprint(key.public_key())[:16]
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", kid):
        raise ValueError("a kid is 1-64 characters of A-Z a-z 0-9 _ -")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if state == "active" and any(directory.glob("active.*.pem")):
        raise FileExistsError(
            f"{directory} already has an active key; add a 'next' key and rotate instead"
        )
    path = directory / f"{state}.{kid}.pem"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return path
