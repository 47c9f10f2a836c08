"""Group commit: batches that arrive while the store is busy go to it together, next.

The MDP worker starts a handler task for every burst it drains, so several small batches can
be waiting on the store at once. Sending them one by one would cost one Redis round trip or
one SQLite fsync each; instead, while one store call is in flight, later batches queue here and
then go as ONE call. No timer is involved: an idle store takes a batch at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Serialise calls of ``run(items) -> results`` (one result per item), merging waiters."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._queue: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs
        self.calls = 0  # store calls made (for tests and metrics)

    async def submit(self, items: Sequence[T]) -> list[R]:
        if self._busy:
            fut: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
            self._queue.append((items, fut))
            return await fut
        # An idle store runs this batch from here: no task or future in between (that hop
        # is a whole event-loop turn per batch, felt at low concurrency).
        self._busy = True
        try:
            self.calls += 1
            return await self._run(list(items))
        finally:
            if self._queue:  # batches that arrived meanwhile go next, together
                self._task = asyncio.get_running_loop().create_task(self._drain())
            else:
                self._busy = False

    async def _drain(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue, []
                merged = [item for items, _ in group for item in items]
                self.calls += 1
                try:
                    results = await self._run(merged)
                except BaseException as exc:  # every waiter learns why; the drain goes on
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                start = 0
                for items, fut in group:
                    end = start + len(items)
                    if not fut.done():
                        fut.set_result(results[start:end])
                    start = end
        finally:
            self._busy = False
            for _, fut in self._queue:  # only left when cancelled (shutdown)
                if not fut.done():
                    fut.cancel()
            self._queue = []
