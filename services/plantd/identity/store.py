"""The interface of identity stores (embedded SQLite now; Redis next, for clusters).

Replicas are stateless: everything that matters (users, roles, refresh families, not_before,
buckets, failure counters) lives in the store. Every method is one atomic operation on the
backend, so two replicas never interleave inside one: ``rotate_refresh`` is ONE conditional
write (SQLite: ``UPDATE ... WHERE rotated_to IS NULL`` in a ``BEGIN IMMEDIATE`` transaction;
Redis: one Lua script), ``take_token``/``begin_attempt`` read-modify-write in one step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from plantd.identity.model import Module, Organization, RefreshRecord, Role, Rotation, User
from plantd.identity.throttle import Backoff, Bucket


class Store(ABC):
    kind: str = "store"

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @property
    @abstractmethod
    def available(self) -> bool: ...

    def describe(self) -> str:
        return self.kind

    # ---- users (service accounts are users of kind "service") --------------------------------
    @abstractmethod
    async def create_user(self, user: User) -> User:
        """Insert and assign ``id`` (never reused); ``Conflict`` when username or email is taken."""

    @abstractmethod
    async def get_user(
        self, *, user_id: int = 0, username: str = "", email: str = ""
    ) -> User | None: ...

    @abstractmethod
    async def find_login(self, identifier: str) -> User | None:
        """The user whose username or email (case-insensitive) is ``identifier``."""

    @abstractmethod
    async def update_user(self, user_id: int, changes: dict[str, Any]) -> User:
        """Apply ``changes`` (User field -> value); ``NotFound``/``Conflict``."""

    @abstractmethod
    async def delete_user(self, user_id: int) -> bool: ...

    @abstractmethod
    async def list_users(self, offset: int, limit: int) -> tuple[list[User], int]: ...

    @abstractmethod
    async def count_users(self) -> int: ...

    # ---- roles, organizations, assignments ---------------------------------------------------
    @abstractmethod
    async def create_role(self, role: Role) -> Role: ...

    @abstractmethod
    async def get_role(self, *, role_id: int = 0, name: str = "") -> Role | None: ...

    @abstractmethod
    async def update_role(self, role_id: int, changes: dict[str, Any]) -> Role: ...

    @abstractmethod
    async def delete_role(self, role_id: int) -> bool: ...

    @abstractmethod
    async def list_roles(self, offset: int, limit: int) -> tuple[list[Role], int]: ...

    @abstractmethod
    async def create_org(self, org: Organization) -> Organization: ...

    @abstractmethod
    async def get_org(self, *, org_id: int = 0, slug: str = "") -> Organization | None: ...

    @abstractmethod
    async def update_org(self, org_id: int, changes: dict[str, Any]) -> Organization: ...

    @abstractmethod
    async def delete_org(self, org_id: int) -> bool: ...

    @abstractmethod
    async def list_orgs(self, offset: int, limit: int) -> tuple[list[Organization], int]: ...

    @abstractmethod
    async def assign(self, kind: str, user_id: int, target_id: int, org_id: int = 0) -> bool:
        """kind ``role`` or ``org``; False when it already existed. ``NotFound`` for ids."""

    @abstractmethod
    async def unassign(self, kind: str, user_id: int, target_id: int, org_id: int = 0) -> bool: ...

    @abstractmethod
    async def user_roles(self, user_id: int) -> list[Role]: ...

    @abstractmethod
    async def user_orgs(self, user_id: int) -> list[Organization]: ...

    # ---- sessions -------------------------------------------------------------------------------
    @abstractmethod
    async def add_refresh(self, record: RefreshRecord) -> None: ...

    @abstractmethod
    async def rotate_refresh(self, old_hash: str, new: RefreshRecord, now: float) -> Rotation:
        """Atomically: if ``old_hash`` is live, mark it rotated and insert ``new`` (rotated);
        if it was already rotated or revoked, revoke its whole family (reused)."""

    @abstractmethod
    async def revoke_refresh_user(self, subject: str) -> int:
        """Revoke every refresh family of a user (by token subject); returns how many tokens."""

    @abstractmethod
    async def bump_not_before(self, subject: str, ts: float) -> float:
        """Raise the user's not_before to ``ts`` (never lower); returns the stored value."""

    @abstractmethod
    async def get_not_before(self, subject: str) -> float: ...

    @abstractmethod
    async def recent_not_before(self, since: float) -> list[tuple[str, float]]: ...

    # ---- brute force ----------------------------------------------------------------------------
    @abstractmethod
    async def take_token(self, key: str, bucket: Bucket, now: float) -> tuple[bool, float]:
        """Take one token from bucket ``key``: (allowed, retry_after seconds)."""

    @abstractmethod
    async def failures(self, key: str) -> tuple[int, float]:
        """(consecutive failures, time of the last one) for a login identifier key."""

    @abstractmethod
    async def record_failure(self, key: str, now: float) -> int: ...

    @abstractmethod
    async def begin_attempt(
        self, key: str, backoff: Backoff, now: float, *, critical: bool
    ) -> float:
        """Atomically: 0 and count this attempt as a failure in advance, or the seconds to wait
        (``inf``: locked) and change nothing. A success then calls ``clear_failures``; so two
        parallel guesses can never both pass one backoff window (GHSA-7h8m-vrxx-vr4m)."""

    @abstractmethod
    async def clear_failures(self, key: str) -> None: ...

    @abstractmethod
    async def accept_totp_step(self, user_id: int, step: int) -> bool:
        """Atomically record ``step`` as used if it is later than the last one used; False for a
        replay (the same or an older step)."""

    # ---- machine identities (enrolment) ---------------------------------------------------
    @abstractmethod
    async def add_module(self, module: Module, max_modules: int) -> None:
        """Insert atomically; ``Conflict`` when the name or the public key is enrolled already
        or ``max_modules`` are enrolled."""

    @abstractmethod
    async def get_module(self, name: str) -> Module | None: ...

    @abstractmethod
    async def list_modules(self) -> list[Module]:
        """Every enrolled identity, by name (at most the ``max_modules`` given to add)."""

    @abstractmethod
    async def delete_module(self, name: str) -> Module | None:
        """Remove and return it (None when there was none)."""

    @abstractmethod
    async def add_join_token(
        self, token_hash: str, grant: str, expires: float, now: float, max_live: int
    ) -> None:
        """Store a join token's grant (JSON) until ``expires``; ``Conflict`` past
        ``max_live`` unexpired tokens (expired ones are dropped first)."""

    @abstractmethod
    async def take_join_token(self, token_hash: str, now: float) -> str | None:
        """Atomically remove and return the grant of a live token: each is redeemed once."""

    # ---- small settings (bootstrap markers) ------------------------------------------------------
    @abstractmethod
    async def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    async def set_meta(self, key: str, value: str | None) -> None: ...
