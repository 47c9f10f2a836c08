"""Keep a :class:`Verifier`'s inputs current: its JWKS and the per-user ``not_before``.

The I/O shell every token-verifying service shares (state's ``--auth identity``, the gateway),
each job in its own task:

- the **JWKS**: from a file (re-read when its mtime or size changes, polled every second) or
  fetched from ``org.plantd.Identity`` with ``[auth, jwks, {}]`` at start (retried with backoff
  until it answers), then every ``refresh_s``, and at most every 5 s sooner when a token named an
  unknown ``kid`` (a key rotated in);
- per-user **not_before** from the event bus (:func:`plantd.common.auth.follow`), seeded once
  from ``auth/revocations`` so bumps published before this process started count too.

Nothing here is on the request path: a verification costs the verifier's cache lookups only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from plantd.common import contract
from plantd.common.auth.keyset import KeySetError
from plantd.common.auth.revocation import NotBeforeMap, follow
from plantd.common.auth.verifier import Verifier
from plantd.common.curve import CurveClient
from plantd.common.service import ServiceError
from plantd.mdp import AsyncClient

POLL_S: Final = 1.0  # JWKS file change detection
UNKNOWN_KID_REFETCH_S: Final = 5.0
FETCH_TIMEOUT_S: Final = 2.0
RETRY_MAX_S: Final = 5.0
MAX_REPLY_BYTES: Final = 1024 * 1024  # a JWKS is <= 64 KiB; identity's envelope repeats it

Job = Callable[[], Coroutine[Any, Any, None]]


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of ``path``, None when it cannot be stat'ed: what "changed" means."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def identity_data(frames: list[bytes], what: str) -> dict[str, Any]:
    """The ``data`` of an org.plantd.Identity reply, or ValueError saying what went wrong."""
    if len(frames) != 1 or len(frames[0]) > MAX_REPLY_BYTES:
        raise ValueError(f"{what}: expected one reply frame of at most {MAX_REPLY_BYTES} bytes")
    doc = json.loads(frames[0])
    if not isinstance(doc, dict) or doc.get("success") is not True:
        err = doc.get("error") if isinstance(doc, dict) else doc
        raise ValueError(f"{what}: identity answered {err!r}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"{what}: the reply has no data object")
    return data


class KeyKeeper:
    """Feeds ``verifier`` its keys (``jwks_file`` or identity over the bus) and revocations.

    An unusable ``jwks_file`` at construction raises :class:`ServiceError` (the service must
    not start trusting nothing); later unusable versions are logged and the old keys kept.
    """

    def __init__(
        self,
        verifier: Verifier,
        not_before: NotBeforeMap,
        *,
        jwks_file: Path | None,
        refresh_s: float,
        broker_endpoint: str,
        event_sub_endpoint: str,
        curve: CurveClient | None,
        log: logging.Logger,
    ) -> None:
        self.verifier = verifier
        self.not_before = not_before
        self.jwks_file = jwks_file
        self.refresh_s = refresh_s
        self.broker_endpoint = broker_endpoint
        self.event_sub_endpoint = event_sub_endpoint
        self.curve = curve
        self.log = log
        self.jwks_fetches = 0
        self._jwks_stamp: tuple[int, int] | None = None
        self._client: AsyncClient | None = None
        if jwks_file is not None:
            self._load_jwks_file(fatal=True)

    def has_keys(self) -> bool:
        return bool(self.verifier.kids)

    def source(self) -> str:
        """Where the keys come from, for the startup log line."""
        return str(self.jwks_file or f"{contract.SERVICE_IDENTITY} auth/jwks")

    # ---- the JWKS file ---------------------------------------------------------------------------

    def _load_jwks_file(self, *, fatal: bool) -> None:
        path = self.jwks_file
        assert path is not None
        stamp = file_stamp(path)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_REPLY_BYTES + 1)
            self.verifier.set_jwks(data)
        except (OSError, KeySetError) as exc:
            msg = f"JWKS file {path} is unusable: {exc}"
            if fatal:
                raise ServiceError(f"--auth identity: {msg}; fix it or drop --jwks-file") from None
            self.log.error("%s; keeping the previous keys", msg)
        self._jwks_stamp = stamp

    async def _watch_jwks_file(self) -> None:
        path = self.jwks_file
        assert path is not None
        while True:
            await asyncio.sleep(POLL_S)
            if file_stamp(path) != self._jwks_stamp:
                self._load_jwks_file(fatal=False)

    # ---- the JWKS from identity ------------------------------------------------------------------

    async def _ask(self, operation: bytes) -> dict[str, Any]:
        assert self._client is not None
        frames = await self._client.request(
            contract.SERVICE_IDENTITY, b"auth", operation, b"{}", timeout=FETCH_TIMEOUT_S
        )
        return identity_data(frames, f"auth/{operation.decode()}")

    async def fetch_jwks(self) -> None:
        data = await self._ask(b"jwks")
        self.verifier.set_jwks(data)
        self.jwks_fetches += 1

    async def seed_revocations(self) -> int:
        data = await self._ask(b"revocations")
        rows = data.get("not_before")
        n = 0
        for row in rows if isinstance(rows, list) else ():
            if isinstance(row, dict) and self.not_before.apply(json.dumps(row).encode()):
                n += 1
        return n

    async def _keep_jwks(self) -> None:
        """Fetch until it works, then refresh; sooner after an unknown kid."""
        delay = 0.25
        seeded = False
        while True:
            try:
                await self.fetch_jwks()
                if not seeded:
                    n = await self.seed_revocations()
                    seeded = True
                    self.log.info(
                        "JWKS loaded", extra={"kids": sorted(self.verifier.kids), "seeded": n}
                    )
            except Exception as exc:  # identity down or a bad answer: keep the keys, retry
                self.log.warning(
                    "fetching the JWKS from %s failed: %s", contract.SERVICE_IDENTITY, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = 0.25
            unknown = self.verifier.unknown_kids
            waited = 0.0
            while waited < self.refresh_s:
                step = min(UNKNOWN_KID_REFETCH_S, self.refresh_s - waited)
                await asyncio.sleep(step)
                waited += step
                if self.verifier.unknown_kids != unknown:
                    break  # a token named a kid we do not know: maybe a rotation

    # ---- not_before ------------------------------------------------------------------------------

    async def _follow_not_before(self) -> None:
        while True:
            try:
                await follow(self.event_sub_endpoint, self.not_before, curve=self.curve)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("following identity.not_before failed (%s); again in 1 s", exc)
                await asyncio.sleep(1.0)

    # ---- lifecycle -------------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        """The coroutines to run as tasks (opens the bus client when the JWKS is fetched)."""
        jobs: list[Job] = [self._follow_not_before]
        if self.jwks_file is not None:
            jobs.append(self._watch_jwks_file)
        else:
            self._client = AsyncClient(
                self.broker_endpoint, timeout=FETCH_TIMEOUT_S, retries=0, curve=self.curve
            )
            jobs.append(self._keep_jwks)
        return jobs

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for each to end (their errors are not the caller's)."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
