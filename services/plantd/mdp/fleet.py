"""A worker on every broker of a plant: active-active brokers (docs/ha.md).

A plant may run any number of brokers behind one Service. A client reaches one of them, so a
service is only reachable from every broker when its worker is registered with each:
:class:`WorkerFleet` runs one :class:`~plantd.mdp.worker.AsyncWorker` per broker, all with the
same handler, and keeps that set equal to what the broker setting names now:

- ``tcp://a:9797,tcp://b:9797``: those brokers;
- ``dns:tcp://plant-broker-headless.ns.svc:9797``: one broker per address the name resolves to
  (a Kubernetes headless Service lists the ready broker pods), resolved again every
  ``rediscover_s`` (and every second while one of them is silent: a replaced pod has a new
  address) so a new broker gets workers and a gone one is let go.

Credit (how many requests a worker takes at once) is split across the brokers so the process is
never asked for more than it allows: ``credit_split(8, 3) == [3, 3, 2]``. A broker that joins
later gets its share of the split for the new count; the others keep theirs until they next
connect, so for that while the process may hold up to one share more than ``credit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from plantd.common import endpoints
from plantd.common.discovery import BrokerSet
from plantd.mdp.errors import EndpointError
from plantd.mdp.worker import AsyncWorker

log = logging.getLogger(__name__)

WorkerFactory = Callable[[str, int], AsyncWorker]  # (broker endpoint, credit) -> worker

DEFAULT_REDISCOVER_S: Final = 10.0
UNREACHABLE_REDISCOVER_S: Final = 1.0


def credit_split(total: int, brokers: int) -> list[int]:
    """Share ``total`` credit across ``brokers``, larger shares first; at least 1 each."""
    if brokers <= 0:
        return []
    base, extra = divmod(total, brokers)
    return [max(1, base + (1 if i < extra else 0)) for i in range(brokers)]


class _AnyConnected:
    """``is_set()`` while the fleet is registered with at least one broker (readiness)."""

    def __init__(self, fleet: WorkerFleet) -> None:
        self._fleet = fleet

    def is_set(self) -> bool:
        return self._fleet.registered > 0


class WorkerFleet:
    """One worker per broker in ``brokers``; ``await run()``, ``await stop()``, as a worker."""

    def __init__(
        self,
        brokers: str | BrokerSet,
        factory: WorkerFactory,
        *,
        credit: int = 1,
        rediscover_s: float = DEFAULT_REDISCOVER_S,
        service: str = "",
    ) -> None:
        if credit < 1:
            raise ValueError("credit must be >= 1")
        if isinstance(brokers, str):
            try:
                brokers = BrokerSet(brokers)
            except endpoints.InvalidEndpoint as exc:
                raise EndpointError(exc.endpoint, exc.reason) from None
        self.brokers = brokers
        self.factory = factory
        self.credit = credit
        self.rediscover_s = rediscover_s
        self.service = service
        self.workers: dict[str, AsyncWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._drain_s = 5.0  # what stop() was given: the last drain must not extend it
        self._stop = asyncio.Event()
        self._failed: BaseException | None = None
        self.connected = _AnyConnected(self)
        self.joined = 0  # brokers added since start (metrics, logs)
        self.left = 0
        # Run on every discovery round, e.g. Publisher.rediscover: the service's bus
        # publishers follow the same brokers as its workers.
        self.also_rediscover: list[Callable[[], Awaitable[object]]] = []

    # ---- what services read -----------------------------------------------------------------

    @property
    def registered(self) -> int:
        """Brokers this process is registered with now."""
        return sum(1 for w in self.workers.values() if w.connected.is_set())

    @property
    def handled(self) -> int:
        return sum(w.handled for w in self.workers.values())

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.workers.values())

    @property
    def reconnects(self) -> int:
        return sum(w.reconnects for w in self.workers.values())

    @property
    def malformed(self) -> int:
        return sum(w.malformed for w in self.workers.values())

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve on every broker until :meth:`stop`; re-resolve ``dns:`` entries meanwhile.

        Raises what a worker raised (e.g. a bad endpoint), after stopping the others."""
        loop = asyncio.get_running_loop()
        try:
            next_round = 0.0
            while not self._stop.is_set():
                # A broker that stopped answering may have been replaced (a new pod, a new
                # address): look again every UNREACHABLE_REDISCOVER_S while one is silent.
                now = loop.time()
                if now >= next_round or (
                    self.brokers.discovering and self.registered < len(self.workers)
                ):
                    self._apply(await self.brokers.resolve())
                    for hook in self.also_rediscover:
                        await hook()
                    next_round = loop.time() + self.rediscover_s
                wait = min(self.rediscover_s, UNREACHABLE_REDISCOVER_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), wait if self.brokers.discovering else None
                    )
                if self._failed is not None:
                    raise self._failed
        finally:
            await self._stop_all(0.0 if self._failed else self._drain_s)

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a drain deadline
        """Finish in-flight requests on every broker (up to ``timeout``), DISCONNECT each."""
        self._drain_s = timeout
        self._stop.set()
        await asyncio.gather(*(w.stop(timeout) for w in self.workers.values()))

    def _apply(self, current: Sequence[str]) -> None:
        gone = [ep for ep in self.workers if ep not in current]
        new = [ep for ep in current if ep not in self.workers]
        for endpoint in gone:
            worker = self.workers.pop(endpoint)
            task = self._tasks.pop(endpoint)
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            self.left += 1
            # Its run task, kept in _retiring, finishes the requests in hand and says DISCONNECT.
            worker.request_stop(5.0)
            log.info(
                "worker %s: broker %s is gone from %s; leaving it",
                self.service,
                endpoint,
                self.brokers.value,
            )
        if not new:
            return
        shares = credit_split(self.credit, len(current))
        for endpoint in new:
            share = shares[list(current).index(endpoint)]
            worker = self.factory(endpoint, share)
            self.workers[endpoint] = worker
            task = asyncio.get_running_loop().create_task(worker.run())
            task.add_done_callback(self._worker_ended)
            self._tasks[endpoint] = task
            self.joined += 1
            log.info(
                "worker %s: serving on broker %s (credit %d; %d broker(s) in %s)",
                self.service,
                endpoint,
                share,
                len(current),
                self.brokers.value,
            )

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        error = task.exception()
        if error is not None and self._failed is None:
            self._failed = error
            self._stop.set()  # run() re-raises it

    async def _stop_all(self, drain_s: float) -> None:
        tasks = [*self._tasks.values(), *self._retiring]
        await asyncio.gather(*(w.stop(drain_s) for w in self.workers.values()))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_s + 3.0)
            for task in pending:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
