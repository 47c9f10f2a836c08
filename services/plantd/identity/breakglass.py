"""``python -m plantd.identity.breakglass``: the offline break-glass key and its tokens.

``keygen DIR`` writes ``breakglass.pem`` (Ed25519 private key, 0600: keep it offline, e.g. on
a removable medium in a safe) and ``breakglass.pub.pem`` (give this to identity and every
verifier: ``--break-glass-key-file``). ``mint --key breakglass.pem --subject WHO --reason WHY``
prints an access token valid at most one hour, with claim ``break_glass: true``; verifiers
accept it only when they hold the public key, and log and audit every use at warning level.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from plantd.common import contract
from plantd.common.auth.breakglass import MAX_LIFETIME_S, BreakGlassKeyError, public_jwk
from plantd.identity.settings import DEFAULT_ISSUER

PRIVATE_NAME = "breakglass.pem"
PUBLIC_NAME = "breakglass.pub.pem"


def generate(directory: Path) -> tuple[Path, Path]:
    """Write a new break-glass key pair into ``directory`` (0700); refuses to overwrite."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out = []
    for name, data, mode in ((PRIVATE_NAME, priv, 0o600), (PUBLIC_NAME, pub, 0o644)):
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        out.append(path)
    return out[0], out[1]


def load_private(path: Path) -> Any:
    try:
        if path.stat().st_mode & 0o077:
            raise BreakGlassKeyError(f"{path} is readable by others: run `chmod 600 {path}`")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise BreakGlassKeyError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise BreakGlassKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    return key


def mint(
    key: Any,
    *,
    subject: str,
    reason: str,
    ttl_s: int = MAX_LIFETIME_S,
    audience: Sequence[str] = contract.TOKEN_AUDIENCES,
    permissions: Sequence[str] = ("system:admin",),
    issuer: str = DEFAULT_ISSUER,
    now: float | None = None,
) -> str:
    """A break-glass access token signed with ``key`` (pure but for the random jti)."""
    if not 0 < ttl_s <= MAX_LIFETIME_S:
        raise ValueError(f"a break-glass token lives 1-{MAX_LIFETIME_S} s, not {ttl_s}")
    if not subject or not reason.strip():
        raise ValueError("a break-glass token names who uses it (--subject) and why (--reason)")
    jwk = public_jwk(key.public_key())
    iat = round(time.time() if now is None else now, 3)
    claims = {
        "iss": issuer,
        "aud": list(audience),
        "sub": f"breakglass:{subject}",
        "jti": uuid.uuid4().hex,
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl_s,
        "token_type": "access",
        "break_glass": True,
        "reason": reason.strip()[:500],
        "username": subject,
        "roles": [],
        "permissions": list(permissions),
    }
    return jwt.encode(claims, key, algorithm=jwk["alg"], headers={"kid": jwk["kid"]})


@click.group("breakglass")
def cli() -> None:
    """Offline break-glass key and tokens (docs/identity.md#break-glass)."""


@cli.command("keygen")
@click.argument("directory", type=click.Path(path_type=Path))
def keygen_cmd(directory: Path) -> None:
    """Write breakglass.pem (keep offline) and breakglass.pub.pem (for the servers)."""
    try:
        priv, pub = generate(directory.expanduser())
    except (FileExistsError, OSError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(4)
    click.echo(f"{priv}\n{pub}")


@cli.command("mint")
@click.option("--key", "key_path", type=click.Path(path_type=Path), required=True)
@click.option("--subject", required=True, help="who uses it (recorded as sub breakglass:WHO)")
@click.option("--reason", required=True, help="why (recorded in the token and every audit event)")
@click.option("--ttl", "ttl_s", type=int, default=MAX_LIFETIME_S, show_default=True)
@click.option("--audience", multiple=True, help="target service (repeat); default state+identity")
@click.option("--permission", multiple=True, help="permission (repeat); default system:admin")
@click.option("--issuer", default=DEFAULT_ISSUER, show_default=True)
def mint_cmd(
    key_path: Path,
    subject: str,
    reason: str,
    ttl_s: int,
    audience: tuple[str, ...],
    permission: tuple[str, ...],
    issuer: str,
) -> None:
    """Print a break-glass access token (at most one hour)."""
    try:
        token = mint(
            load_private(key_path.expanduser()),
            subject=subject,
            reason=reason,
            ttl_s=ttl_s,
            audience=audience or contract.TOKEN_AUDIENCES,
            permissions=permission or ("system:admin",),
            issuer=issuer,
        )
    except BreakGlassKeyError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(4)
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    click.echo(token)


if __name__ == "__main__":
    cli(prog_name="python -m plantd.identity.breakglass")
