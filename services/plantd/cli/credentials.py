"""The tokens ``plant auth login`` keeps, and the token each request sends.

Where: ``$PLANTD_CLIENT_CREDENTIALS_DIR``, else ``$XDG_STATE_HOME/plantd/credentials``, else
``~/.local/state/plantd/credentials``; one file per profile, ``PROFILE.json``, mode 0600 in a
0700 directory (the refresh token in it is worth a week of sessions). Written atomically and
never through a symlink; a directory others can write, or a file others can read, is refused.

Which token a request sends (:func:`token_for_request`, the one function every ``plant``
command uses, ``plant state`` included): ``--token``, else ``PLANTD_CLIENT_TOKEN``, else the
profile's stored access token, refreshed first when it expires within ``REFRESH_MARGIN_S``. A
stored token is sent only to the broker endpoint it was obtained from (a token must not leak to
another plant because ``--endpoint`` changed). Refreshing happens under a per-profile lock and
re-reads the file inside it: two ``plant`` processes refreshing at once would otherwise present
the same refresh token twice, and identity treats that as theft (the whole family is revoked).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import MAX_TOKEN_CHARS, ClientSettings
from plantd.common import contract
from plantd.common.files import InsecureDirectoryError, check_private_dir, write_atomic

ENV_DIR: Final = contract.env_key(contract.CLIENT, "credentials_dir")
EXPIRES_SOON_S: Final = 300  # the original's "Expires Soon" threshold
REFRESH_MARGIN_S: Final = 60  # refresh before a request when the token has less than this left
LOCK_TIMEOUT_S: Final = 30.0  # another plant refreshing holds the lock for one round trip
MAX_FILE_BYTES: Final = 64 * 1024  # two tokens and a few names; a bigger file is not ours
MAX_REFRESH_CHARS: Final = 256  # pld_rt_ + 43 characters in practice
_PROFILE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VERSION: Final = 1


class CredentialsError(CliError):
    """A credentials file or directory that cannot be used (exit 4); the message says why."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code=ExitCode.CONFIG)


class InsecureCredentialsDirError(CredentialsError):
    """The directory is writable by group or others: nothing is read from or written there."""


# ---- the record and the rules about it (pure) ---------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    profile: str
    endpoint: str  # the broker the tokens came from
    access_token: str
    refresh_token: str  # "" when none (or identity refused it)
    expires_at: float  # of the access token, unix seconds
    user_id: int | None = None
    username: str = ""
    email: str = ""
    saved_at: float = 0.0
    password_change_required: bool = False

    def __repr__(self) -> str:  # tokens are secrets: never in a repr, a log or a traceback
        return f"Credentials(profile={self.profile!r}, username={self.username!r})"

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Credentials:
        """Parse a stored document; :class:`CredentialsError` names the file and the field."""
        if not isinstance(doc, dict):
            raise _corrupt(where, "it is not a JSON object")

        def text(name: str, limit: int, required: bool = True) -> str:
            v = doc.get(name, "")
            if not isinstance(v, str) or len(v) > limit or (required and not v):
                raise _corrupt(where, f"field {name!r} is missing or invalid")
            return v

        def number(name: str) -> float:
            v = doc.get(name, 0)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _corrupt(where, f"field {name!r} must be a number")
            return float(v)

        user_id = doc.get("user_id")
        if user_id is not None and (isinstance(user_id, bool) or not isinstance(user_id, int)):
            raise _corrupt(where, "field 'user_id' must be an integer")
        return cls(
            profile=text("profile", 64),
            endpoint=text("endpoint", 1024),
            access_token=text("access_token", MAX_TOKEN_CHARS),
            refresh_token=text("refresh_token", MAX_REFRESH_CHARS, required=False),
            expires_at=number("expires_at"),
            user_id=user_id,
            username=text("username", 320, required=False),
            email=text("email", 320, required=False),
            saved_at=number("saved_at"),
            password_change_required=doc.get("password_change_required") is True,
        )


def _corrupt(where: str, why: str) -> CredentialsError:
    return CredentialsError(
        f"unusable credentials file {where}: {why}",
        hint="run `plant auth login` again (it replaces the file)",
    )


def status(expires_at: float, now: float) -> str:
    """``valid``, ``expires soon`` (under 5 minutes left) or ``expired``."""
    left = expires_at - now
    if left <= 0:
        return "expired"
    return "expires soon" if left < EXPIRES_SOON_S else "valid"


def needs_refresh(creds: Credentials, now: float, margin: float = REFRESH_MARGIN_S) -> bool:
    return bool(creds.refresh_token) and creds.expires_at - now < margin


def check_profile(name: str) -> str:
    """A profile name usable as a file name (no path separators, no leading dot)."""
    if not _PROFILE_RE.match(name):
        raise CredentialsError(
            f"profile name {name!r} cannot name a credentials file",
            hint="use 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)",
        )
    return name


def peek_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT **without verifying it** (for display only: exp, sub, username).

    Never an authorization decision: services verify. ``{}`` when it does not decode.
    """
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_CHARS:
        return {}
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


# ---- the files (a thin I/O shell) ---------------------------------------------------------------


def default_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR]).expanduser()
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]).expanduser() / "plantd" / "credentials"
    return Path(contract.LOCAL_STATE_DIR).expanduser() / "credentials"


class CredentialStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_dir()

    def path(self, profile: str) -> Path:
        return self.directory / f"{check_profile(profile)}.json"

    def _check_dir(self) -> None:
        try:
            check_private_dir(self.directory, "credentials directory")
        except InsecureDirectoryError as exc:
            raise InsecureCredentialsDirError(str(exc), hint="then run the command again") from exc

    def load(self, profile: str, *, allow_readable: bool = False) -> Credentials | None:
        """The profile's credentials, or None when there are none."""
        path = self.path(profile)
        self._check_dir()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: a symlink planted at the name
            raise CredentialsError(
                f"cannot open {path}: {exc.strerror}", hint=f"remove {path} and log in again"
            ) from exc
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise CredentialsError(f"{path} is not a regular file", hint=f"remove {path}")
            if st.st_mode & 0o077 and not allow_readable:
                raise CredentialsError(
                    f"refusing {path}: other users may read it (mode "
                    f"{stat.S_IMODE(st.st_mode):o}), so its tokens may have leaked",
                    hint="run `plant auth logout` (it revokes every session of the user and "
                    "removes the file), then `plant auth login`",
                )
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise _corrupt(str(path), f"it is over {MAX_FILE_BYTES} bytes")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise _corrupt(str(path), "it is not JSON") from None
        creds = Credentials.from_json(doc, str(path))
        if creds.profile != profile:
            raise _corrupt(str(path), f"it belongs to profile {creds.profile!r}")
        return creds

    def save(self, creds: Credentials) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._check_dir()
        data = json.dumps(replace(creds, saved_at=time.time()).to_json(), indent=1).encode()
        try:
            return write_atomic(self.directory, self.path(creds.profile).name, data, 0o600)
        except OSError as exc:
            raise CredentialsError(
                f"cannot write credentials in {self.directory}: {exc.strerror}",
                hint=f"check that you own {self.directory}, or set {ENV_DIR}",
            ) from exc

    def delete(self, profile: str) -> bool:
        try:
            self.path(profile).unlink()
        except FileNotFoundError:
            return False
        return True

    @contextlib.contextmanager
    def locked(self, profile: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Exclusive per-profile lock (bounded wait: a stuck holder cannot hang us forever)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._check_dir()
        lock = self.directory / f".{check_profile(profile)}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CredentialsError(
                            f"another plant holds {lock} for over {timeout:g} s",
                            hint="let it finish, or remove the lock file if none is running",
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock


# ---- which token to send ------------------------------------------------------------------------


def store_for(settings: ClientSettings) -> CredentialStore:
    del settings  # one directory for every profile; the profile names the file
    return CredentialStore()


def _warn(message: str) -> None:
    sys.stderr.write(f"plant: warning: {message}\n")


def refresh(settings: ClientSettings, store: CredentialStore, creds: Credentials) -> Credentials:
    """Rotate the tokens at identity and store them; the caller holds ``store.locked``.

    On ``REFRESH_FAILED`` the refresh token is dropped from the file (it will never work again)
    and :class:`plantd.cli.identity_client.IdentityReplyError` propagates.
    """
    from plantd.cli.identity_client import IdentityReplyError, call

    try:
        data = call(settings, "auth", "refresh", {"refresh_token": creds.refresh_token})
    except IdentityReplyError as exc:
        if exc.code == "REFRESH_FAILED":
            store.save(replace(creds, refresh_token=""))
        raise
    access, rotated = data.get("access_token"), data.get("refresh_token")
    expires = data.get("expires_at")
    if not (isinstance(access, str) and isinstance(rotated, str) and isinstance(expires, int)):
        raise IdentityReplyError("BAD_REPLY", "refresh reply lacks access_token/refresh_token")
    new = replace(creds, access_token=access, refresh_token=rotated, expires_at=float(expires))
    store.save(new)
    return new


def stored_token(settings: ClientSettings, *, auto_refresh: bool = True) -> Credentials | None:
    """The profile's credentials for this endpoint, refreshed when near expiry (else None)."""
    from plantd.cli.identity_client import IdentityReplyError

    store = store_for(settings)
    creds = store.load(settings.profile)
    if creds is None:
        return None
    if creds.endpoint != settings.endpoint:
        _warn(
            f"the login of profile {settings.profile!r} is for {creds.endpoint}, not "
            f"{settings.endpoint}: sending no token (log in there, or choose the profile)"
        )
        return None
    if not (auto_refresh and needs_refresh(creds, time.time())):
        return creds
    with store.locked(settings.profile):
        fresh = store.load(settings.profile)  # another plant may have refreshed meanwhile
        if fresh is None or fresh.endpoint != settings.endpoint:
            return None
        if not needs_refresh(fresh, time.time()):
            return fresh
        try:
            return refresh(settings, store, fresh)
        except (IdentityReplyError, CliError) as exc:
            left = fresh.expires_at - time.time()
            _warn(
                f"could not refresh the login of profile {settings.profile!r} ({exc}); "
                + (
                    f"using the current token ({int(left)} s left)"
                    if left > 0
                    else "it has expired: run `plant auth login`"
                )
            )
            return fresh if left > 0 else None


def token_for_request(settings: ClientSettings, *, auto_refresh: bool = True) -> str | None:
    """The access token a request should carry (field ``token``), or None to send none.

    ``--token`` / ``PLANTD_CLIENT_TOKEN`` first, else the profile's stored login (refreshed
    when it has under a minute left). Raises ``CliError`` only for an unusable credentials
    file (exit 4); a login that expired and cannot be refreshed is a warning and None.
    """
    if settings.token:
        return settings.token
    creds = stored_token(settings, auto_refresh=auto_refresh)
    return creds.access_token if creds is not None else None


def with_token(body: dict[str, Any], settings: ClientSettings) -> dict[str, Any]:
    """``body`` plus field ``token`` when there is one to send (the original's field name)."""
    token = token_for_request(settings)
    return {**body, "token": token} if token else dict(body)
