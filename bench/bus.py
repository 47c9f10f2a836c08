"""Pub/sub bus throughput: publisher -> plantd BusProxy -> subscriber, against direct PUB -> SUB.

    python -m bench.bus [--messages N] [--size BYTES] [--rounds R]

Each process is separate (publisher here, proxy and subscriber forked). The baseline, measured
in the same run, is a publisher bound directly to the subscriber: the ratio is the cost of the
proxy hop. Prints a table and one JSON line; medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from multiprocessing.synchronize import Event as EventType
from typing import Any

import zmq

from bench._procs import free_endpoint
from bench._stats import median, ratio, table

TOPIC = b"bench"


def _subscriber(endpoint: str, count: int, results: Any, subscribed: EventType) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 0  # the benchmark measures throughput, not drops
    sub.subscribe(TOPIC)
    sub.connect(endpoint)
    subscribed.set()
    received, started = 0, 0.0
    while received < count and sub.poll(5000):
        sub.recv_multipart()
        if received == 0:
            started = time.perf_counter()
        received += 1
    results.put((received, time.perf_counter() - started if received else 0.0))
    sub.close(0)
    ctx.term()


def _proxy(front: str, back: str, stop: EventType, ready: EventType) -> None:
    from plantd.bus import BusProxy

    # Lossless queues, as the direct baseline has (sndhwm = rcvhwm = 0): the benchmark measures
    # forwarding throughput, not the default bound's drops under a 100k-message burst.
    proxy = BusProxy("bench", front, back, hwm=10_000_000)
    proxy.start()
    ready.set()
    stop.wait()
    proxy.stop()


def _run_direct(count: int, payload: bytes) -> float:
    endpoint = free_endpoint()
    results: Any = mp.Queue()
    subscribed = mp.Event()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # XPUB shows us the subscription, so no blind wait
    pub.sndhwm = 0
    pub.bind(endpoint)
    proc = mp.Process(target=_subscriber, args=(endpoint, count, results, subscribed))
    proc.start()
    if not pub.poll(10_000):
        raise RuntimeError("subscriber did not subscribe within 10 s")
    pub.recv()  # the subscription message
    for _ in range(count):
        pub.send_multipart([TOPIC, payload])
    received, elapsed = results.get(timeout=120)
    proc.join()
    pub.close(0)
    ctx.term()
    return received / elapsed if elapsed and received == count else 0.0


def _run_proxy(count: int, payload: bytes) -> float:
    from plantd.bus import Publisher

    front, back = free_endpoint(), free_endpoint()
    stop, ready, subscribed = mp.Event(), mp.Event(), mp.Event()
    results: Any = mp.Queue()
    proxy = mp.Process(target=_proxy, args=(front, back, stop, ready))
    proxy.start()
    if not ready.wait(30):
        raise RuntimeError("bus proxy did not start within 30 s")
    sub = mp.Process(target=_subscriber, args=(back, count, results, subscribed))
    sub.start()
    pub = Publisher(front, hwm=0)
    if not pub.wait_for_subscriber(TOPIC, timeout=10):
        raise RuntimeError("no subscriber reached the proxy within 10 s")
    for _ in range(count):
        pub.publish(TOPIC, payload)
    received, elapsed = results.get(timeout=120)
    sub.join()
    pub.close()
    stop.set()
    proxy.join()
    return received / elapsed if elapsed and received == count else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bus", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--messages", type=int, default=200_000, help="messages per round")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case (median)")
    parser.add_argument("--quick", action="store_true", help="20k messages, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rounds = 20_000, 1
    mp.set_start_method("fork", force=True)
    payload = b"x" * args.size
    rates: dict[str, list[float]] = {"direct": [], "proxy": []}
    for _ in range(args.rounds):
        rates["direct"].append(_run_direct(args.messages, payload))
        rates["proxy"].append(_run_proxy(args.messages, payload))
    direct, proxied = median(rates["direct"]), median(rates["proxy"])
    print(f"bus: {args.messages:,} messages of {args.size} B, median of {args.rounds} rounds")
    print(
        table(
            ["path", "msg/s", "ratio"],
            [
                ["direct PUB->SUB (baseline)", direct, 1.0],
                ["via BusProxy", proxied, ratio(proxied, direct)],
            ],
        )
    )
    print(
        json.dumps(
            {
                "bench": "bus",
                "messages": args.messages,
                "size": args.size,
                "direct_msg_s": round(direct),
                "proxy_msg_s": round(proxied),
                "ratio_proxy_to_direct": round(ratio(proxied, direct), 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
