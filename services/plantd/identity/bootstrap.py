"""The first administrator, created once while the store has no user at all.

- From a file (``bootstrap_file``, mode 0600, JSON ``{"username", "email", "password",
  "must_change_password": true}``): for the operator's Secret and for ``plantd up``.
- Otherwise a one-time setup token: user ``admin`` whose password is a random
  ``pld_setup_...`` written to ``DATA_DIR/setup-token`` (0600). It must be changed at the first
  login (``auth/change_password``); until then its tokens carry no permission.

The admin gets role ``admin`` (global, ``system:admin``) and is operator-critical (never locked,
only slowed). Two replicas bootstrapping at once are harmless: the second insert conflicts.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any, Final

from plantd.common.auth.permissions import SYSTEM_ADMIN
from plantd.identity.errors import Conflict
from plantd.identity.model import Role, User
from plantd.identity.passwords import Hasher, Policy
from plantd.identity.store import Store

log = logging.getLogger("plantd.identity")

ADMIN_ROLE: Final = "admin"
SETUP_TOKEN_FILE: Final = "setup-token"  # noqa: S105 - a file name
MAX_FILE_BYTES: Final = 16 * 1024


class BootstrapError(RuntimeError):
    """The bootstrap file is unusable; the message names it and the fix."""


def read_bootstrap_file(path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
    except OSError as exc:
        raise BootstrapError(f"cannot read bootstrap file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        raise BootstrapError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    if st.st_size > MAX_FILE_BYTES:
        raise BootstrapError(f"{path} is over {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as exc:
        raise BootstrapError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), str) and doc.get(k) for k in ("username", "email", "password")
    ):
        raise BootstrapError(f'{path} must hold {{"username", "email", "password"}} strings')
    return doc


async def ensure_admin(
    store: Store,
    hasher: Hasher,
    data_dir: Path,
    *,
    bootstrap_file: Path | None = None,
    policy: Policy | None = None,
) -> str | None:
    """Create the first admin if there is no user; returns how ("file", "setup-token") or None."""
    if await store.count_users() > 0:
        return None
    now = time.time()
    role = await store.get_role(name=ADMIN_ROLE)
    if role is None:
        role = Role(0, ADMIN_ROLE, "plantd administrators", [SYSTEM_ADMIN], "global", now, now)
        try:
            await store.create_role(role)
        except Conflict:
            role = await store.get_role(name=ADMIN_ROLE)
            assert role is not None
    if bootstrap_file is not None:
        doc = read_bootstrap_file(bootstrap_file)
        (policy or Policy()).check(doc["password"], username=doc["username"], email=doc["email"])
        username, email, password = doc["username"], doc["email"].lower(), doc["password"]
        must_change, how = bool(doc.get("must_change_password", True)), "file"
    else:
        password = "pld_setup_" + secrets.token_urlsafe(24)
        username, email, must_change, how = "admin", "admin@plantd.local", True, "setup-token"
    user = User(
        id=0,
        username=username,
        email=email,
        password_hash=await hasher.hash(password),
        must_change_password=must_change,
        operator_critical=True,
        created_at=now,
        updated_at=now,
    )
    try:
        await store.create_user(user)
    except Conflict:
        return None  # another replica was first
    await store.assign("role", user.id, role.id)
    if how == "setup-token":
        os.makedirs(data_dir, mode=0o700, exist_ok=True)  # a Redis store made none
        path = data_dir / SETUP_TOKEN_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        log.warning(
            "no user existed: created user 'admin' with a one-time password",
            extra={
                "setup_token_file": str(path),
                "next": "log in as admin with that password and change it "
                "(auth/change_password); then delete the file",
            },
        )
    else:
        log.info("created the first admin from the bootstrap file", extra={"user": username})
    return how
