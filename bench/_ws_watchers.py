"""N WebSocket watchers of one gateway stream in a process of their own (``bench.gateway``).

Why not aiohttp's client in the bench's own process: reading 5,000 sockets there costs ~20 us
a message (measured: CPU per watcher per update), as much as the gateway's whole share, so the
fan-out cell measured the client as much as the gateway. Here each watcher is a bare
:class:`asyncio.Protocol` under uvloop that speaks just enough RFC 6455 for a watch: the
upgrade, unmasked server frames, a masked pong for each ping, a close. Real clients (aiohttp,
browsers) are what the integration tests use; this one exists to measure the server.

Run by ``bench.gateway``: ``python -m bench._ws_watchers URL N ROUNDS``, the bearer token on
stdin (never in argv, which ``ps`` shows). Lines on stdout: ``connected SECONDS``, then
``round N`` once every open watcher has update N, then ``result {json}`` with each round's
arrival times (``time.perf_counter``, one clock for every process of the machine).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from typing import cast
from urllib.parse import urlsplit

CONNECT_AT_ONCE = 64  # handshakes in flight: they share the cores with the gateway
TIMEOUT_S = 30.0


class Watcher(asyncio.Protocol):
    """One watch: counts the events that carry changes, answers pings."""

    def __init__(self, request: bytes, on_event: Watchers) -> None:
        self.request = request
        self.watchers = on_event
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.created: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seen = 0
        self.gone = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport: no isinstance here.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            if b" 101 " not in status:
                self._fail(f"no upgrade: {status[:80]!r}")
                return
            del self.buffer[: end + 4]
            self.upgraded = True
        while (frame := self._frame()) is not None:
            opcode, payload = frame
            if opcode == 0x1:
                self._text(payload)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(masked(0xA, payload))
            elif opcode == 0x8:
                self._fail(f"closed by the gateway ({int.from_bytes(payload[:2], 'big')})")

    def _frame(self) -> tuple[int, bytes] | None:
        b = self.buffer
        if len(b) < 2:
            return None
        length, offset = b[1] & 0x7F, 2
        if length == 126:
            if len(b) < 4:
                return None
            length, offset = int.from_bytes(b[2:4], "big"), 4
        elif length == 127:
            if len(b) < 10:
                return None
            length, offset = int.from_bytes(b[2:10], "big"), 10
        if len(b) < offset + length:
            return None
        opcode, payload = b[0] & 0x0F, bytes(b[offset : offset + length])
        del b[: offset + length]
        return opcode, payload

    def _text(self, payload: bytes) -> None:
        if not self.created.done():
            if b'"created":true' in payload:
                self.created.set_result(None)
            else:
                self._fail(f"unexpected first frame {payload[:120]!r}")
        elif b'"changes":[' in payload:
            self.watchers.arrived(self, time.perf_counter())

    def _fail(self, why: str) -> None:
        if not self.gone:
            self.gone = why
            if not self.created.done():
                self.created.set_exception(RuntimeError(why))
            self.watchers.lost(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost ({exc})")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.gone = self.gone or "closed by the bench"
            self.transport.write(masked(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask, RFC 6455 §5.3) of a control payload (<= 125 B)."""
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


class Watchers:
    """The watchers of one run and each round's arrivals."""

    def __init__(self, count: int, rounds: int) -> None:
        self.count = count
        self.arrivals: list[list[float]] = [[] for _ in range(rounds)]
        self.reached = [asyncio.Event() for _ in range(rounds)]
        self.gone: list[str] = []
        self.open: list[Watcher] = []

    def arrived(self, watcher: Watcher, at: float) -> None:
        if watcher.seen < len(self.arrivals):
            self.arrivals[watcher.seen].append(at)
            self._check(watcher.seen)
            watcher.seen += 1

    def lost(self, watcher: Watcher) -> None:
        if watcher.seen < len(self.arrivals):
            self.gone.append(watcher.gone)
            for n in range(len(self.arrivals)):
                self._check(n)

    def _check(self, n: int) -> None:
        if len(self.arrivals[n]) + len(self.gone) >= self.count:
            self.reached[n].set()


async def run(url: str, token: str, count: int, rounds: int) -> None:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    watchers = Watchers(count, rounds)
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def connect() -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        async with gate:
            _, watcher = await loop.create_connection(
                lambda: Watcher(request, watchers), host, port
            )
            async with asyncio.timeout(TIMEOUT_S):
                await watcher.created
        watchers.open.append(watcher)

    started = time.perf_counter()
    await asyncio.gather(*(connect() for _ in range(count)))
    print(f"connected {time.perf_counter() - started:.3f}", flush=True)
    for n in range(rounds):
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await watchers.reached[n].wait()
        except TimeoutError:
            watchers.gone.append(f"update {n + 1} not everywhere within {TIMEOUT_S:.0f} s")
            break
        print(f"round {n + 1}", flush=True)
    for watcher in watchers.open:
        watcher.close()
    result = {"arrivals": watchers.arrivals, "lost": sorted(set(watchers.gone))}
    print(f"result {json.dumps(result)}", flush=True)


def main() -> int:
    import uvloop

    url, count, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    token = sys.stdin.readline().strip()
    uvloop.run(run(url, token, count, rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
