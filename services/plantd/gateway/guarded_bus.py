"""The gateway's bus client behind a circuit breaker per bus service (docs/ha.md).

When a service keeps failing — no reply (``RequestTimeout``), its broker connection dropped
(``BROKER_LOST``), no worker (``SERVICE_UNAVAILABLE``), its worker lost (``WORKER_LOST``),
queued past its deadline (``DEADLINE_EXCEEDED``), refused by stopping brokers
(``SHUTTING_DOWN``) — ``failures`` times in a row, the gateway stops sending to it: calls fail
at once with ``CIRCUIT_OPEN`` (gRPC UNAVAILABLE, HTTP 503, with ``retry-after``) instead of each
holding a bus socket for its whole deadline, and after a pause (exponential, with jitter) one
call probes it (``plantd.common.breaker``).

No answer counts as a failure only when the call waited at least ``min_timeout_s`` for it —
whether the bus client timed out or the caller gave up at its deadline (gRPC cancels the call
then, usually just before the gateway's own timeout): a caller that sets a 1 ms deadline must
not be able to open the breaker for everyone. Any answer from the service, an error reply
included, is a success: the service is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from plantd.api.errors import GatewayCode, Origin
from plantd.common.breaker import Admission, Breakers, BreakerState, CircuitBreaker
from plantd.gateway.calls import StreamBus
from plantd.gateway.errors import RETRY_AFTER_KEY, retry_seconds
from plantd.gateway.state_map import RpcFailure
from plantd.mdp.client import StreamPart
from plantd.mdp.errors import BrokerError, ErrorCode, RequestTimeout

# Bus errors that say the service is not there (or not reachable), as opposed to an answer.
TRIPPING: Final = frozenset(
    (
        ErrorCode.BROKER_LOST,
        ErrorCode.SERVICE_UNAVAILABLE,
        ErrorCode.WORKER_LOST,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.SHUTTING_DOWN,
    )
)


class BreakerMetrics:
    """``plantd_gateway_circuit_*``, one series per service with a breaker (bounded by
    ``Breakers.max_names``: an evicted breaker's series go too)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.state = Gauge(
            "plantd_gateway_circuit_state",
            "Circuit breaker of a bus service: 0 closed, 1 half-open, 2 open",
            ["service"],
            registry=registry,
        )
        self.opened = Counter(
            "plantd_gateway_circuit_opened",
            "Times the breaker of a bus service opened",
            ["service"],
            registry=registry,
        )
        self.refused = Counter(
            "plantd_gateway_circuit_refused",
            "Calls refused at once (CIRCUIT_OPEN) because the service's breaker was open",
            ["service"],
            registry=registry,
        )

    def closed(self, service: str) -> None:
        """A new breaker: its series start at closed."""
        self.state.labels(service).set(int(BreakerState.CLOSED))

    def forget(self, service: str) -> None:
        for metric in (self.state, self.opened, self.refused):
            with contextlib.suppress(KeyError):
                metric.remove(service)


def circuit_open(service: str, admission: Admission) -> RpcFailure:
    retry = retry_seconds(admission.retry_after_s)
    return RpcFailure(
        Origin.GATEWAY,
        GatewayCode.CIRCUIT_OPEN,
        f"{service} kept failing; the gateway stopped sending to it and tries again in about "
        f"{retry} s (check its workers: `plant services`)",
        {RETRY_AFTER_KEY: str(retry), "service": service},
    )


class GuardedBus:
    """``request`` and ``stream_parts`` of the bus client, each behind its service's breaker."""

    def __init__(
        self,
        client: StreamBus,
        breakers: Breakers,
        *,
        min_timeout_s: float,
        metrics: BreakerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.breakers = breakers
        self.min_timeout_s = min_timeout_s
        self.metrics = metrics
        self._clock = clock

    def ready(self, service: str) -> bool:
        """False while ``service``'s breaker is open and in its pause (for /readyz). Ready
        again once the pause is over: an unready pod gets no calls from its Service, so a
        breaker that kept it unready until a probe succeeded would never see one."""
        return not self.breakers.pausing(service, self._clock())

    def _admit(self, name: str) -> tuple[CircuitBreaker, Admission]:
        breaker = self.breakers.get(name)
        before = breaker.state
        admission = breaker.admit(self._clock())
        self._show(name, breaker, before)
        if not admission.allowed:
            if self.metrics is not None:
                self.metrics.refused.labels(name).inc()
            raise circuit_open(name, admission)
        return breaker, admission

    def _verdict(
        self, name: str, breaker: CircuitBreaker, admission: Admission, exc: BaseException | None,
        waited: float,
    ) -> None:  # fmt: skip
        before = breaker.state
        unanswered = isinstance(exc, RequestTimeout | asyncio.CancelledError)
        if exc is None or (isinstance(exc, BrokerError) and exc.code not in TRIPPING):
            breaker.success()
        elif isinstance(exc, BrokerError) or (unanswered and waited >= self.min_timeout_s):
            if breaker.failure(self._clock(), admission.probe) and self.metrics is not None:
                self.metrics.opened.labels(name).inc()
        else:  # not waited long, or the client closing: says nothing about the service
            breaker.abandon(admission.probe)
        self._show(name, breaker, before)

    def _show(self, name: str, breaker: CircuitBreaker, before: BreakerState) -> None:
        """The state gauge, set when the state changed, not on every call: a labelled gauge
        set is a dict lookup and a lock on the hot path (a new breaker's series is set by
        ``BreakerMetrics.closed``, the ``Breakers`` on_create)."""
        if self.metrics is not None and breaker.state is not before:
            self.metrics.state.labels(name).set(int(breaker.state))

    async def request(
        self,
        service: bytes | str,
        *body: bytes | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the MDP wait, from the deadline
        idempotent: bool = False,
    ) -> list[bytes]:
        name = service.decode(errors="replace") if isinstance(service, bytes) else service
        if name.startswith("mmi."):  # the broker itself answers: nothing to break
            return await self.client.request(service, *body, timeout=timeout, idempotent=idempotent)
        breaker, admission = self._admit(name)
        outcome: BaseException | None = None
        started = self._clock()
        try:
            return await self.client.request(service, *body, timeout=timeout, idempotent=idempotent)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            self._verdict(name, breaker, admission, outcome, self._clock() - started)

    async def stream_parts(
        self,
        service: bytes | str,
        *body: bytes | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the MDP wait, from the deadline
    ) -> AsyncIterator[StreamPart]:
        name = service.decode(errors="replace") if isinstance(service, bytes) else service
        breaker, admission = self._admit(name)
        judged = False
        started = self._clock()
        try:
            async for part in self.client.stream_parts(service, *body, timeout=timeout):
                if not judged:  # the first part is the service answering
                    judged = True
                    self._verdict(name, breaker, admission, None, 0.0)
                yield part
        except BaseException as exc:
            if not judged:
                judged = True
                self._verdict(name, breaker, admission, exc, self._clock() - started)
            raise
        finally:
            if not judged:  # closed before any part: no verdict
                before = breaker.state
                breaker.abandon(admission.probe)
                self._show(name, breaker, before)
