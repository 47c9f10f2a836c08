"""The first administrator of a ``plantd up`` stack: a random password in a 0600 file.

On the first run (identity has no database yet) ``plantd up`` draws a random password, writes
it to ``STATE_DIR/admin-credentials`` for the user and to identity's bootstrap file
``STATE_DIR/identity/bootstrap.json`` (both 0600, written atomically, never through a link);
identity creates user ``admin`` from that file while its store has no user
(:mod:`plantd.identity.bootstrap`) and ignores it afterwards.

The credentials file's first line is the password, so ``plant auth login -u admin
--password-stdin < STATE_DIR/admin-credentials`` works as it is (``--password-stdin`` reads one
line); the comment lines after it name the user and the command. The password is never
printed or logged: the banner names the file.

``must_change_password`` is false for this admin, unlike identity's one-time setup token: the
password is not a shared default but 32 random characters that exist only in owner-only files
beside the CURVE secret keys of the same stack, so whoever can read it could equally take the
stack's keys; forcing a change would only make the first `plant state set` fail until the user
ran `plant auth change-password`, and the new password would then not be in the file.
"""

from __future__ import annotations

import json
import secrets
import stat
from enum import Enum
from pathlib import Path
from typing import Final

from plantd.cli import stack
from plantd.cli.errors import CliError, ExitCode
from plantd.common.files import write_atomic

PASSWORD_BYTES: Final = 24  # token_urlsafe: 32 characters, 192 bits
MAX_PASSWORD_CHARS: Final = 1024  # identity's limit


class Admin(Enum):
    """What ``ensure`` found or did."""

    CREATED = "created"  # first run: a new password, identity creates the user from it
    KEPT = "kept"  # the credentials file exists: its password stays the admin's
    UNKNOWN = "unknown"  # identity has users but there is no credentials file: nothing written


def plan_action(*, db_exists: bool, credentials_exist: bool) -> Admin:
    """Pure: a password is drawn only when identity has no database (a fresh store would take
    it); with a database but no file, a new password would not be the admin's, so none is."""
    if credentials_exist:
        return Admin.KEPT
    return Admin.UNKNOWN if db_exists else Admin.CREATED


def credentials_text(password: str, plan: stack.StackPlan) -> str:
    """The credentials file: the password alone on line 1, then comments (pure)."""
    return (
        f"{password}\n"
        f"# line 1: the password of plantd user '{stack.ADMIN_USERNAME}' "
        "(created by `plantd up`); log in with:\n"
        f"# {stack.login_command(plan)}\n"
    )


def bootstrap_document(password: str) -> bytes:
    """identity's bootstrap file for the admin (pure; see the module docstring on the flag)."""
    doc = {
        "username": stack.ADMIN_USERNAME,
        "email": stack.ADMIN_EMAIL,
        "password": password,
        "must_change_password": False,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def read_password(path: Path) -> str:
    """Line 1 of the credentials file; a CliError (exit 4) naming the fix when unusable."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise CliError(
                f"{path} is not a regular file", hint=_start_over(path), code=ExitCode.CONFIG
            )
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CliError(
                f"{path} holds the admin password but is accessible by other users "
                f"(mode {stat.S_IMODE(st.st_mode):o})",
                hint=f"run `chmod 600 {path}` (and consider changing the password)",
                code=ExitCode.CONFIG,
            )
        with path.open("rb") as f:
            first = f.read(4 * MAX_PASSWORD_CHARS).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(
            f"cannot read the admin credentials {path}: {exc}",
            hint="fix or remove the file, then run `plantd up` again",
            code=ExitCode.CONFIG,
        ) from exc
    password = first[0] if first else ""
    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise CliError(
            f"{path} does not start with a password line",
            hint="put the admin's password alone on its first line; or " + _start_over(path),
            code=ExitCode.CONFIG,
        )
    return password


def _start_over(path: Path) -> str:
    return (
        f"remove it and {path.parent / 'identity'} (every identity user with it) to start over "
        "with a new admin"
    )


def ensure(plan: stack.StackPlan) -> Admin:
    """Create or keep the first admin's files (see the module docstring). Raises OSError when
    the filesystem refuses, CliError when the credentials file is unusable."""
    action = plan_action(
        db_exists=plan.identity_db.exists(), credentials_exist=plan.admin_credentials.exists()
    )
    if action is Admin.UNKNOWN:
        return action
    if action is Admin.CREATED:
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        write_atomic(
            plan.state_dir,
            plan.admin_credentials.name,
            credentials_text(password, plan).encode(),
            0o600,
        )
    else:
        password = read_password(plan.admin_credentials)
    if action is Admin.CREATED or not plan.identity_db.exists() or not plan.bootstrap_file.exists():
        # Always in step with the credentials file while identity may still read it.
        plan.identity_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(plan.identity_dir, stack.BOOTSTRAP_FILE, bootstrap_document(password), 0o600)
    return action
