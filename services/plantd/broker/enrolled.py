"""The broker asks org.plantd.Identity for the machine identities enrolled there.

With ``identity_registry`` on, :class:`EnrolledFetcher` sends ``[modules, registry, {}]`` to
``identity_service`` every ``identity_registry_poll_s`` and hands each good answer to the
broker, which merges it with its registry file (:func:`plantd.common.registry.merge_enrolled`).

How the broker reaches identity: as an MDP client on the broker's own inproc endpoint, through
its own dispatcher, like its ``org.plantd.Broker`` worker. Chosen over a CURVE client with the
broker's key pair because it needs no TCP hop to itself (``tcp://*`` is not an address to
connect to), no allow-list entry for the broker's own key and no ``broker`` entry in the file:
an inproc peer has no CURVE key, which with CURVE on only the broker itself can be, so the
caller frame names it ``broker`` (kind ``plantd``; :data:`plantd.common.registry.IN_PROCESS`)
and identity lets that caller, and only it, read ``modules/registry`` without a user token.

A failed fetch (identity down or slow, an error reply, a malformed or oversized answer) keeps
the last merged rights: the broker never drops to fewer rights because identity is away, and a
module enrolled before stays served. It is counted by reason, logged at warning (the first of a
run of failures, then once a minute) and shown with the age of the last good answer in
/metrics and ``org.plantd.Broker``'s ``broker`` answer. The reply parsing is pure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import zmq
import zmq.asyncio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plantd.common.registry import MAX_FILE_BYTES, Registry, RegistryError
from plantd.mdp.client import AsyncClient
from plantd.mdp.errors import BrokerError, RequestTimeout

log = logging.getLogger("plantd.broker.enrolled")

REQUEST: Final = (b"modules", b"registry", b"{}")
# Identity's envelope repeats the data at the top level (plantd.identity.protocol), so the
# reply may be twice the registry document, which has the registry file's budget.
MAX_REPLY_BYTES: Final = 2 * MAX_FILE_BYTES + 64 * 1024
REASONS: Final = ("unreachable", "error", "malformed")
WARN_EVERY_S: Final = 60.0
STARTUP_GRACE_S: Final = 30.0  # failures before identity's first answer are logged at info


class FetchError(Exception):
    """A fetch that gave no usable registry; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_reply(frames: Sequence[bytes], source: str) -> Registry:
    """Identity's ``modules/registry`` reply as a Registry (:class:`FetchError` if unusable)."""
    if len(frames) != 1:
        raise FetchError("malformed", f"{source} replied {len(frames)} frames, expected 1")
    raw = frames[0]
    if len(raw) > MAX_REPLY_BYTES:
        raise FetchError(
            "malformed", f"{source} replied {len(raw)} bytes, over the limit of {MAX_REPLY_BYTES}"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FetchError("malformed", f"{source} replied with invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise FetchError("malformed", f"{source} replied with JSON that is not an object")
    if doc.get("success") is not True:
        code, error = doc.get("code"), doc.get("error")
        raise FetchError("error", f"{source} refused: {str(code)[:40]}: {str(error)[:300]}")
    try:
        return Registry.from_dict(doc.get("data"), source=source)
    except RegistryError as exc:
        raise FetchError("malformed", str(exc)) from None


class EnrolledFetcher:
    """Polls identity for enrolments; ``apply`` gets each good answer (on this loop)."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        service: str,
        apply: Callable[[Registry], object],
        *,
        every_s: float,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.service = service
        self.apply = apply
        self.every_s = every_s
        # Under the poll interval, so one slow answer never delays the next poll much.
        self.timeout_s = timeout_s if timeout_s is not None else min(max(every_s, 1.0), 10.0)
        self.clock = clock
        # The broker's own context, shadowed for asyncio (inproc works only inside one
        # context; a shadow never terminates it).
        self._context = zmq.asyncio.Context.shadow(context.underlying)
        self.started = clock()
        self.last_ok: float | None = None
        self.fetches = 0
        self.failures = dict.fromkeys(REASONS, 0)
        self.failing_since: float | None = None
        self.last_error = ""
        self.identities = 0
        self._warned_at = float("-inf")

    # ------------------------------------------------------------------ one fetch

    async def fetch(self) -> Registry:
        """One request to identity (FetchError when it gives nothing usable)."""
        source = f"{self.service} modules/registry"
        client = AsyncClient(
            self.endpoint, timeout=self.timeout_s, retries=0, context=self._context, max_sockets=1
        )
        try:
            frames = await client.request(self.service, *REQUEST)
        except RequestTimeout:
            raise FetchError(
                "unreachable", f"{source}: no answer in {self.timeout_s:g} s"
            ) from None
        except BrokerError as exc:  # no worker for the name, deadline, overload
            raise FetchError("unreachable", f"{source}: {exc}") from None
        finally:
            await client.close()
        return parse_reply(frames, source)

    async def poll_once(self) -> bool:
        """Fetch and apply; True when identity gave a usable answer. Never raises."""
        self.fetches += 1
        try:
            reg = await self.fetch()
        except FetchError as exc:
            self._failed(exc.reason, str(exc))
            return False
        except (zmq.ZMQError, OSError) as exc:  # the context is going away at shutdown
            self._failed("unreachable", f"{self.service}: {exc}")
            return False
        try:
            self.apply(reg)
        except RegistryError as exc:  # cannot be merged: as unusable as a malformed reply
            self._failed("malformed", str(exc))
            return False
        now = self.clock()
        if self.failing_since is not None:
            log.info(
                "enrolments from identity are back",
                extra={"service": self.service, "failed_for_s": round(now - self.failing_since)},
            )
        self.failing_since = None
        self.last_ok = now
        self.identities = len(reg)
        return True

    def _failed(self, reason: str, message: str) -> None:
        now = self.clock()
        self.failures[reason] += 1
        self.last_error = message
        first = self.failing_since is None
        if first:
            self.failing_since = now
        if self.last_ok is None and now - self.started < STARTUP_GRACE_S:
            # `plantd up` and a pod rollout start identity after the broker: not news yet.
            if first:
                log.info("identity has not answered yet", extra={"error": message})
            return
        if first or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            kept = "no enrolments yet" if self.last_ok is None else "the last enrolments"
            log.warning(
                "cannot get the enrolled identities from identity; keeping %s. Check that "
                "`plantd identity` runs, is connected to this broker and is recent enough to "
                "answer the broker (docs/identity.md)",
                kept,
                extra={"reason": reason, "error": message, "service": self.service},
            )

    async def run(self) -> None:
        """Poll until cancelled (the first fetch at once: identity may be up already)."""
        while True:
            try:
                await self.poll_once()
            except Exception:  # a bug must not end the polling: the rights would freeze
                log.exception("fetching the enrolments from identity failed unexpectedly")
            await asyncio.sleep(self.every_s)

    # ------------------------------------------------------------------ reporting

    def age_s(self) -> float:
        """Seconds since the last good answer (since start while there was none)."""
        since = self.last_ok if self.last_ok is not None else self.started
        return max(0.0, self.clock() - since)

    def describe(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "ok": self.last_ok is not None and self.failing_since is None,
            "last_success_age_s": round(self.age_s(), 3) if self.last_ok is not None else None,
            "identities": self.identities,
            "failures": dict(self.failures),
            "last_error": self.last_error if self.failing_since is not None else "",
        }


class EnrolledCollector(Collector):
    """``plantd_broker_identity_registry_*`` from an :class:`EnrolledFetcher` at scrape time."""

    def __init__(self, fetcher: EnrolledFetcher, ignored: Callable[[], int]) -> None:
        self._f = fetcher
        self._ignored = ignored

    def collect(self) -> Iterable[Metric]:
        f = self._f
        failures = CounterMetricFamily(
            "plantd_broker_identity_registry_fetch_failures",
            "Fetches of the enrolled identities from identity that gave nothing usable, by "
            "reason (unreachable, error, malformed); the broker kept its last rights",
            labels=["reason"],
        )
        for reason, n in f.failures.items():
            failures.add_metric([reason], n)
        yield failures
        yield GaugeMetricFamily(
            "plantd_broker_identity_registry_up",
            "1 when the last fetch of the enrolled identities from identity succeeded",
            value=1.0 if f.last_ok is not None and f.failing_since is None else 0.0,
        )
        yield GaugeMetricFamily(
            "plantd_broker_identity_registry_age_seconds",
            "Seconds since the last good answer from identity (since start if none yet)",
            value=f.age_s(),
        )
        yield GaugeMetricFamily(
            "plantd_broker_identity_registry_identities",
            "Identities in identity's last good answer",
            value=f.identities,
        )
        yield GaugeMetricFamily(
            "plantd_broker_identity_registry_ignored",
            "Enrolled identities left out because their name or key is the registry file's",
            value=self._ignored(),
        )
