"""Where a process finds its CURVE keys (the ``curve_keys`` directory), and failing closed.

Layout (``contract.CURVE_*``; the same in a pod, where the directory is a mounted Secret, and
locally, where ``plantd keys generate`` writes it)::

    broker.key          the broker's public key: every peer needs it
    broker.key_secret   the broker's key pair (0600): the broker only
    NAME.key_secret     a peer's own key pair (0600), NAME = its component (echo, state, client...)
    NAME.key            a peer's public key; in the broker's directory these form the allow-list

The broker admits exactly the public keys of the ``*.key`` files in its directory (its own
excepted). With CURVE on, a missing or unreadable key is an error at startup, never a silent
fallback to plaintext, and so is a directory group or others can write (anyone who can write
there can add a key to the allow-list; :mod:`plantd.common.files`).
"""

from __future__ import annotations

import stat
from pathlib import Path

from plantd.common import contract
from plantd.common.curve import (
    CurveClient,
    CurveKeyError,
    CurveServer,
    load_allowed_keys,
    load_keypair,
)
from plantd.common.files import InsecureDirectoryError, check_private_dir

_HINT = "create keys with `plantd keys generate`, or run with --no-curve for development only"


class KeysError(RuntimeError):
    """CURVE is on but its keys are missing or unusable; the message says which file and why."""


class InsecureKeysDirError(KeysError):
    """The key directory is writable by group or others (exit 4 in every plantd command)."""


def check_keys_dir(keys_dir: Path) -> None:
    """Refuse a key directory group or others can write (missing is fine: it is created 0700)."""
    try:
        check_private_dir(keys_dir.expanduser(), "CURVE key directory")
    except InsecureDirectoryError as exc:
        raise InsecureKeysDirError(str(exc)) from None


def public_key_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}{contract.CURVE_PUBLIC_SUFFIX}"


def secret_key_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}{contract.CURVE_SECRET_SUFFIX}"


def _check_private(path: Path) -> None:
    """Refuse a secret key file every user can read (group access is allowed: Kubernetes adds
    the pod's fsGroup to Secret volumes)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeysError(f"cannot read {path}: {exc.strerror}; {_HINT}") from None
    if mode & stat.S_IRWXO:
        raise KeysError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}` (in Kubernetes, mount the Secret with defaultMode 0400)"
        )


def load_server(keys_dir: Path) -> CurveServer:
    """The broker's CURVE server settings: its key pair and the allow-list from ``keys_dir``."""
    keys_dir = keys_dir.expanduser()
    check_keys_dir(keys_dir)
    secret_path = secret_key_path(keys_dir, contract.BROKER)
    if not secret_path.is_file():
        raise KeysError(f"CURVE is on but the broker key pair {secret_path} is missing; {_HINT}")
    _check_private(secret_path)
    try:
        pair = load_keypair(secret_path)
        allowed = load_allowed_keys(keys_dir)
    except CurveKeyError as exc:
        raise KeysError(f"{exc}; {_HINT}") from None
    if pair.secret is None:
        raise KeysError(f"{secret_path} has no secret-key entry; {_HINT}")
    allowed.discard(pair.public)
    return CurveServer(pair.secret, pair.public, allowed, allow_dir=keys_dir)


def load_client(keys_dir: Path, name: str) -> CurveClient:
    """A peer's CURVE client settings: ``NAME.key_secret`` and ``broker.key`` from ``keys_dir``."""
    keys_dir = keys_dir.expanduser()
    check_keys_dir(keys_dir)
    own = secret_key_path(keys_dir, name)
    server = public_key_path(keys_dir, contract.BROKER)
    for path, what in ((own, f"the {name} key pair"), (server, "the broker's public key")):
        if not path.is_file():
            raise KeysError(f"CURVE is on but {what} {path} is missing; {_HINT}")
    _check_private(own)
    try:
        return CurveClient.from_files(own, server)
    except CurveKeyError as exc:
        raise KeysError(f"{exc}; {_HINT}") from None
