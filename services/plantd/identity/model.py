"""Records the identity store keeps (users, service accounts, roles, organizations, sessions)."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Final

USERNAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{2,49}$")  # 3-50 (the original)
EMAIL_RE: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$")
ROLE_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_NAME_CHARS: Final = 100
MAX_PERMISSIONS_PER_ROLE: Final = 256


def new_family() -> str:
    """A refresh-token family id (random: never guessable, never reused)."""
    return uuid.uuid4().hex


def slugify(name: str) -> str:
    """The original's slug rule: lower-case, spaces/underscores to '-', only [a-z0-9-]."""
    s = re.sub(r"[\s_]+", "-", name.lower())
    s = re.sub(r"[^a-z0-9-]", "", s)
    return re.sub(r"-{2,}", "-", s).strip("-")


# Record ids are integers, as in the original (GORM ``uint``): its Go client decodes ``id``,
# ``user_id``, ``role_id`` and ``org_id`` as numbers. The store assigns them (0 = not stored yet)
# and never reuses one, so a deleted user's not_before and refresh tokens cannot apply to a new
# user. Token subjects are the id as a string (``sub`` is a string in JWT).


@dataclass(slots=True)
class User:
    id: int
    username: str
    email: str
    password_hash: str | None = None  # None: cannot log in with a password (service account)
    first_name: str = ""
    last_name: str = ""
    is_active: bool = True
    email_verified: bool = False
    kind: str = "user"  # user | service
    must_change_password: bool = False
    operator_critical: bool = False  # never locked out (only slowed)
    totp_secret: str | None = None  # base32; set by totp_enroll, used once totp_enabled
    totp_enabled: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    last_login_at: float | None = None
    roles: list[str] = field(default_factory=list)  # role names (filled by the store)
    organizations: list[str] = field(default_factory=list)  # org slugs (filled by the store)

    @property
    def subject(self) -> str:
        return str(self.id)

    def doc(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Role:
    id: int
    name: str
    description: str = ""
    permissions: list[str] = field(default_factory=list)
    scope: str = "organization"  # global | organization (the original's)
    created_at: float = 0.0
    updated_at: float = 0.0

    def doc(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Organization:
    id: int
    name: str
    slug: str
    description: str = ""
    is_active: bool = True
    created_at: float = 0.0
    updated_at: float = 0.0

    def doc(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    hash: str
    family: str
    user_id: str  # the token subject (str of the user id)
    audience: tuple[str, ...]
    created: float
    expires: float


@dataclass(frozen=True, slots=True)
class Rotation:
    """The outcome of one atomic refresh rotation."""

    outcome: str  # rotated | reused (family revoked) | unknown | expired | revoked
    record: RefreshRecord | None = None  # the old record, when it exists


@dataclass(frozen=True, slots=True)
class Module:
    """An enrolled machine identity: a CURVE public key and what it may do on the bus.

    The fields are one entry of the broker's registry document (interface 1 of issue 8:
    ``plantd.common.registry``); ``enrolled_at``/``enrolled_by`` are identity's own."""

    name: str
    kind: str  # plantd | module | device | client
    public_key: str  # Z85, 40 characters
    services: tuple[str, ...] = ()
    publish: dict[str, tuple[str, ...]] = field(default_factory=dict)
    permissions: tuple[str, ...] = ()
    enrolled_at: float = 0.0
    enrolled_by: str = ""  # a user id, or "join:<token id>"

    def registry_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "public_key": self.public_key,
            "services": list(self.services),
            "publish": {bus: list(p) for bus, p in sorted(self.publish.items())},
            "permissions": list(self.permissions),
        }

    def doc(self) -> dict[str, Any]:
        return {
            **self.registry_entry(),
            "enrolled_at": self.enrolled_at,
            "enrolled_by": self.enrolled_by,
        }
