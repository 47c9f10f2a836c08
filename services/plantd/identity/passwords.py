"""Passwords: the NIST 800-63B-4 policy (pure) and argon2id hashing at OWASP parameters.

Policy: at least ``min_length`` characters (15 for password-only accounts), at most
:data:`MAX_CHARS` characters and :data:`MAX_BYTES` bytes (so a hostile 1 MB "password" costs
nothing: it is refused before hashing), not on the bundled blocklist, not the username or the
email. No composition rules, no forced periodic change.

Hashing: argon2id m=19456 KiB, t=2, p=1 (OWASP; 16.5 ms per hash measured on this VM, against
94 ms and 64 MiB for argon2-cffi's defaults). ``needs_rehash`` upgrades stored hashes on login
when the parameters change. Hashes run in a bounded thread pool: each one holds ``m`` of memory.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from plantd.identity.common_passwords import COMMON
from plantd.identity.errors import Code, IdentityError

MAX_CHARS: Final = 256
MAX_BYTES: Final = 1024
_TRAILING_JUNK = re.compile(r"[\d\W_]+$")


@dataclass(frozen=True, slots=True)
class Policy:
    min_length: int = 15

    def problems(self, password: str, *, username: str = "", email: str = "") -> list[str]:
        """Why ``password`` is refused (empty: accepted). Pure."""
        if len(password.encode("utf-8", "surrogatepass")) > MAX_BYTES or len(password) > MAX_CHARS:
            return [f"a password is at most {MAX_CHARS} characters ({MAX_BYTES} bytes)"]
        norm = unicodedata.normalize("NFKC", password)
        out: list[str] = []
        if len(norm) < self.min_length:
            out.append(
                f"a password needs at least {self.min_length} characters (a passphrase works)"
            )
        low = norm.strip().lower()
        stem = _TRAILING_JUNK.sub("", low)
        if low in COMMON or (stem and stem in COMMON):
            out.append("this password is on the list of common or breached passwords")
        for what, value in (("username", username), ("email", email)):
            if value and low in (value.lower(), value.lower().split("@", 1)[0]):
                out.append(f"a password may not be the {what}")
        return out

    def check(self, password: str, *, username: str = "", email: str = "") -> None:
        problems = self.problems(password, username=username, email=email)
        if problems:
            raise IdentityError(Code.PASSWORD_REJECTED, "; ".join(problems))


class Hasher:
    """argon2id with a bounded pool; ``verify`` of a wrong password takes as long as a right one."""

    def __init__(
        self, *, memory_kib: int = 19456, time_cost: int = 2, parallelism: int = 1, workers: int = 4
    ) -> None:
        self._ph = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self.params = {"m_kib": memory_kib, "t": time_cost, "p": parallelism}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        # Verified against for unknown users, so they cost the same as known ones.
        self._dummy = self._ph.hash("plantd-dummy-password-for-unknown-users")

    def hash_sync(self, password: str) -> str:
        return self._ph.hash(password)

    def verify_sync(self, stored: str | None, password: str) -> bool:
        """True on a match. ``stored`` None (unknown user) verifies against the dummy hash."""
        try:
            return bool(self._ph.verify(stored or self._dummy, password)) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._ph.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self.hash_sync, password
        )

    async def verify(self, stored: str | None, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.verify_sync, stored, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
