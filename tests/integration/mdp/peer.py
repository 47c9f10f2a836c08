"""A real MDP peer in its own process, for the integration tests.

    python peer.py worker --hb MS --endpoint EP --service S [--dialect mdp02] [--mode echo] ...
    python peer.py broker --hb MS --endpoint EP
    python peer.py majortomo-worker --hb MS --endpoint EP --service S [--mode echo|stream]

Modes: echo (reply = request), stream (3 PARTIALs then a FINAL from the generator's return),
astream (the same from an async generator ending in FinalPart), trailing (3 PARTIALs, then the
generator just ends: empty FINAL), slow (sleep --delay, then echo),
slowstream (two parts, sleep --delay, FinalPart), failstream (two parts, then raise if the
request is 'boom', else return the FINAL), bigstream (a part, then for 'big' a 5 KB part, for
'many' six 1 KB parts, then the FINAL),
fail (raise), batch (AsyncWorker batch_handler that tags each reply with the batch size),
gate (echo once the file --gate names exists: busy until the test says so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

from plantd.common.contract import HEARTBEAT_LIVENESS
from plantd.common.curve import CurveClient, load_keypair
from plantd.mdp import AsyncWorker, Broker, Dialect, FinalPart, Worker

# A generator handler: PARTIALs yielded, the FINAL returned.
Stream = Generator[list[bytes], None, list[bytes]]

DIALECTS = {"mdp02": Dialect.MDP02, "mdp01": Dialect.MDP01, "legacy": Dialect.LEGACY}


def run_worker(a: argparse.Namespace) -> None:
    curve = None
    if a.curve_keys:
        pair = load_keypair(a.curve_keys)
        assert pair.secret is not None
        curve = CurveClient(pair.secret, pair.public, load_keypair(a.server_key).public)

    if a.mode == "astream":

        async def astream(frames: list[bytes]) -> AsyncIterator[object]:
            for i in range(3):
                yield [b"part", str(i).encode()]
                await asyncio.sleep(0)
            yield FinalPart([b"final", *frames])
            yield [b"never sent"]

        async def amain() -> None:
            w = AsyncWorker(
                a.endpoint, a.service, astream, heartbeat_ms=a.hb, dialect=DIALECTS[a.dialect]
            )
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(w.stop(1.0)))
            await w.run()

        asyncio.run(amain())
        return

    if a.mode == "batch":

        async def batch(reqs: list[list[bytes]]) -> list[list[bytes]]:
            await asyncio.sleep(a.delay)
            return [[*r, str(len(reqs)).encode()] for r in reqs]

        async def main() -> None:
            w = AsyncWorker(
                a.endpoint,
                a.service,
                batch_handler=batch,
                heartbeat_ms=a.hb,
                credit=a.credit,
                dialect=DIALECTS[a.dialect],
                curve=curve,
            )
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(w.stop(1.0)))
            await w.run()

        asyncio.run(main())
        return

    def echo(frames: list[bytes]) -> list[bytes]:
        return frames

    def stream(frames: list[bytes]) -> Stream:
        for i in range(3):
            yield [b"part", str(i).encode()]
        return [b"final", *frames]

    def trailing(frames: list[bytes]) -> Iterator[list[bytes]]:
        for i in range(3):
            yield [b"part", str(i).encode()]

    def slowstream(frames: list[bytes]) -> Iterator[object]:
        yield [b"first"]
        yield [b"second"]
        time.sleep(a.delay)
        yield FinalPart([b"last", *frames])

    def failstream(frames: list[bytes]) -> Stream:
        yield [b"first"]
        yield [b"second"]
        if frames[:1] == [b"boom"]:
            raise RuntimeError("stream exploded on purpose")
        return [b"last", *frames]

    def bigstream(frames: list[bytes]) -> Stream:
        yield [b"small"]
        if frames[:1] == [b"big"]:
            yield [b"x" * 1000] * 5  # one part above a 4 KiB message limit
        elif frames[:1] == [b"many"]:
            for _ in range(6):  # parts below the limit, 6 KB in all
                yield [b"y" * 1000]
        return [b"end", *frames]

    def slow(frames: list[bytes]) -> list[bytes]:
        time.sleep(a.delay)
        return frames

    def gate(frames: list[bytes]) -> list[bytes]:
        # Held until the test creates the --gate file: "still busy" is a condition the test
        # controls, not a delay that a loaded machine can outrun or overrun.
        deadline = time.monotonic() + 120
        while not os.path.exists(a.gate):
            if time.monotonic() > deadline:
                raise RuntimeError(f"gate {a.gate} never opened")
            time.sleep(0.01)
        return frames

    def fail(frames: list[bytes]) -> list[bytes]:
        if frames and frames[0] == b"ok":
            return frames
        raise RuntimeError("handler exploded on purpose")

    modes = {
        "echo": echo,
        "stream": stream,
        "trailing": trailing,
        "slow": slow,
        "gate": gate,
        "fail": fail,
        "slowstream": slowstream,
        "failstream": failstream,
        "bigstream": bigstream,
    }
    handler = modes[a.mode]
    w = Worker(
        a.endpoint,
        a.service,
        handler,
        heartbeat_ms=a.hb,
        credit=a.credit,
        dialect=DIALECTS[a.dialect],
        curve=curve,
    )
    signal.signal(signal.SIGTERM, lambda *_: w.stop(1.0))
    w.start()
    while w._thread is not None and w._thread.is_alive():
        w._thread.join(0.2)


def run_majortomo_worker(a: argparse.Namespace) -> None:
    """majortomo's MDP/0.2 worker (an independent implementation): echo, or for ``--mode
    stream`` three PARTIALs then a FINAL. SIGTERM sends DISCONNECT (majortomo's close)."""
    from majortomo import Worker as MtWorker
    from majortomo.worker import WorkerRequestsIterator

    hb = a.hb / 1000
    worker = MtWorker(
        a.endpoint, a.service, heartbeat_interval=hb, heartbeat_timeout=HEARTBEAT_LIVENESS * hb
    )
    requests: Any = WorkerRequestsIterator(worker)  # untyped library
    requests.stop_on_signal()
    for request in requests:
        if a.mode == "stream":
            parts = [[b"part", str(i).encode()] for i in range(3)]
            requests.send_reply_from_iterable(parts, final=[b"final", *request])
        else:
            requests.send_reply_final(request)


def run_broker(a: argparse.Namespace) -> None:
    b = Broker(a.endpoint, heartbeat_ms=a.hb, request_timeout=a.request_timeout)
    signal.signal(signal.SIGTERM, lambda *_: b.request_stop(0.5))
    b.run()


ROLES = {
    "worker": run_worker,
    "broker": run_broker,
    "majortomo-worker": run_majortomo_worker,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=sorted(ROLES))
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--service", default="echo")
    ap.add_argument("--dialect", default="mdp02", choices=sorted(DIALECTS))
    ap.add_argument("--mode", default="echo")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--gate", default="", help="gate mode: reply once this file exists")
    ap.add_argument("--credit", type=int, default=1)
    # No default: the test side passes its own (mdp_helpers.HB_MS), so the two always agree.
    ap.add_argument("--hb", type=int, required=True)
    ap.add_argument("--request-timeout", type=float, default=3.0)
    ap.add_argument("--curve-keys")
    ap.add_argument("--server-key")
    a = ap.parse_args()
    ROLES[a.role](a)


if __name__ == "__main__":
    main()
