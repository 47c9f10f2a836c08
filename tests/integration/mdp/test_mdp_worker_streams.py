"""How handler results become PARTIAL/FINAL, in process over real TCP: FinalPart returned or
yielded, generators from async and batch handlers, generator cleanup before the FINAL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from mdp_helpers import HB_MS

from plantd.mdp import AsyncClient, AsyncWorker, Broker, FinalPart, StreamPart

pytestmark = pytest.mark.integration


async def _serve(
    broker: Broker, service: str, **worker_kw: object
) -> tuple[AsyncWorker, asyncio.Task[None]]:
    w = AsyncWorker(broker.endpoints[0], service, heartbeat_ms=HB_MS, **worker_kw)  # type: ignore[arg-type]
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.connected.wait(), 5)
    return w, task


async def _parts(broker: Broker, service: str, *body: str) -> list[StreamPart]:
    async with AsyncClient(broker.endpoints[0], timeout=5) as c:
        return [p async for p in c.stream_parts(service, *body)]


async def _with_worker(
    broker: Broker,
    service: str,
    check: Callable[[], Awaitable[None]],
    **worker_kw: object,
) -> None:
    w, task = await _serve(broker, service, **worker_kw)
    try:
        await check()
    finally:
        await w.stop(1.0)
        await asyncio.wait_for(task, 5)


async def test_final_part_returned_is_a_plain_reply(broker: Broker) -> None:
    async def handler(frames: list[bytes]) -> FinalPart:
        return FinalPart([b"only", *frames])

    async def check() -> None:
        assert await _parts(broker, "fp", "x") == [StreamPart([b"only", b"x"], True)]

    await _with_worker(broker, "fp", check, handler=handler)


async def test_async_handler_returning_a_generator_and_cleanup(broker: Broker) -> None:
    cleaned: list[str] = []

    def rows(frames: list[bytes]) -> Iterator[object]:
        try:
            yield [b"a"]
            yield [b"b"]
            yield FinalPart([b"done", *frames])
            yield [b"never"]
        finally:
            cleaned.append("closed")

    async def handler(frames: list[bytes]) -> Iterator[object]:
        return rows(frames)

    async def check() -> None:
        got = await _parts(broker, "gen", "q")
        assert got == [
            StreamPart([b"a"], False),
            StreamPart([b"b"], False),
            StreamPart([b"done", b"q"], True),
        ]
        assert cleaned == ["closed"]  # before the FINAL went out, not at garbage collection

    await _with_worker(broker, "gen", check, handler=handler)


async def test_async_generator_without_final_part(broker: Broker) -> None:
    async def handler(frames: list[bytes]) -> AsyncIterator[list[bytes]]:
        for f in frames:
            yield [f]
            await asyncio.sleep(0)

    async def check() -> None:
        got = await _parts(broker, "agen", "1", "2")
        assert got == [StreamPart([b"1"], False), StreamPart([b"2"], False), StreamPart([], True)]

    await _with_worker(broker, "agen", check, handler=handler)


async def test_batch_handler_results_may_stream(broker: Broker) -> None:
    def one(frames: list[bytes]) -> Iterator[list[bytes]]:
        yield [b"p", *frames]
        return [b"f", *frames]

    async def batch(reqs: list[list[bytes]]) -> list[object]:
        return [one(r) if r[:1] == [b"s"] else [b"plain", *r] for r in reqs]

    async def check() -> None:
        streamed, plain = await asyncio.gather(
            _parts(broker, "batch", "s"), _parts(broker, "batch", "n")
        )
        assert streamed == [StreamPart([b"p", b"s"], False), StreamPart([b"f", b"s"], True)]
        assert plain == [StreamPart([b"plain", b"n"], True)]

    await _with_worker(broker, "batch", check, batch_handler=batch, credit=4)
