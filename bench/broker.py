"""Broker benchmark: round trips/s and latency through our MDP broker vs two baselines.

    python -m bench.broker               # full run (3 repetitions per cell, medians), < 5 minutes
    python -m bench.broker --quick       # one short repetition per cell
    python -m bench.broker --loaders 2   # each in-flight level shared by two load processes

Baselines measured in the same run, each with the same load generator:
  raw        a minimal pyzmq ROUTER forwarding loop (no protocol): the Python ceiling
  majortomo  the majortomo 0.2.0 broker from PyPI with its own Worker class

Every broker, worker and load generator is its own process (``--role``). A load generator is
one DEALER with N requests pipelined (``--loaders K`` splits N over K processes and merges
their latencies); each request carries its send time, so latency is measured in the process
that sent it. Load generators share the cores with the broker, so a closed loop's latency is
mostly N / throughput: compare our p99 with the raw forwarder's p99 at the same N, printed
beside it, and see the CPU table for where each round trip's CPU goes.

majortomo's Client is synchronous (one request per object), so the load generator sends
majortomo's exact client frames itself. Our workers are AsyncWorkers
with a batch handler and credit=100 (the credit window); majortomo's and raw workers take
what their broker gives them.

Also checks 10,000 connected clients against our broker: every one sends a request and every
one must get its reply.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from bench._procs import cpu_seconds, free_endpoint, stop
from bench._stats import median, percentiles, ratio, table
from plantd.mdp._wire import recv_multipart, send_multipart

SERVICE = b"bench.echo"
PY = sys.executable
_TS = struct.Struct("<d")


# --------------------------------------------------------------------------- roles


def _raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n)) if hard != resource.RLIM_INFINITY else max(soft, n)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def role_broker_ours(endpoint: str) -> None:
    from plantd.mdp import Broker

    _raise_fd_limit(30_000)
    broker = Broker(endpoint, heartbeat_ms=2500, max_queue=100_000)
    signal.signal(signal.SIGTERM, lambda *_: broker.request_stop(0.5))
    broker.run()


def role_broker_majortomo(endpoint: str) -> None:
    from majortomo.broker import Broker

    broker = Broker(bind=endpoint)
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())  # type: ignore[no-untyped-call]
    broker.run()  # type: ignore[no-untyped-call]


def role_broker_raw(endpoint: str) -> None:
    """Bare forwarding: workers say READY once; requests go round-robin, replies go back."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.sndhwm = sock.rcvhwm = 0
    sock.bind(endpoint)
    workers: list[bytes] = []
    i = 0
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    # The same fast frame helpers as our broker, so the ceiling stays a ceiling.
    while not stop:
        if not sock.poll(100):
            continue
        while True:
            try:
                f = recv_multipart(sock, zmq.NOBLOCK)
            except zmq.Again:
                break
            kind = f[1]
            if kind == b"R":  # worker reply: [w, "R", client, payload]
                send_multipart(sock, [f[2], f[3]])
            elif kind == b"W":  # worker ready
                workers.append(f[0])
            else:  # client request: [c, payload]
                if workers:
                    i = (i + 1) % len(workers)
                    send_multipart(sock, [workers[i], f[0], f[1]])
    sock.close(0)
    ctx.term()


def role_worker_ours(endpoint: str) -> None:
    import asyncio

    from plantd.mdp import AsyncWorker

    async def echo(batch: list[list[bytes]]) -> list[list[bytes]]:
        return batch

    async def main() -> None:
        w = AsyncWorker(endpoint, SERVICE, batch_handler=echo, credit=100)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(w.stop(0.2)))
        await w.run()

    asyncio.run(main())


def role_worker_majortomo(endpoint: str) -> None:
    from majortomo.worker import Worker

    w = Worker(endpoint, SERVICE)
    w.connect()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        client, body = w.wait_for_request()
        w.send_reply_final(client, body)


def role_worker_raw(endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.sndhwm = sock.rcvhwm = 0
    sock.connect(endpoint)
    sock.send_multipart([b"W"])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        f = recv_multipart(sock)  # [client, payload]
        send_multipart(sock, [b"R", f[0], f[1]])


_REQUEST_FRAMES: dict[str, Callable[[bytes], list[bytes]]] = {
    "ours": lambda p: [b"MDPC02", b"\x01", SERVICE, p],
    "majortomo": lambda p: [b"", b"MDPC02", b"\x02", SERVICE, p],  # its REQUEST byte
    "raw": lambda p: [p],
}


def role_load(
    endpoint: str,
    kind: str,
    inflight: int,
    duration: float,
    warmup: float,
    samples: str | None = None,
) -> None:
    """Pipelined load: keep ``inflight`` requests outstanding on one DEALER; one JSON line.

    With ``samples``, every measured latency (seconds, float64) is also written there, so that
    several load processes can be merged into one distribution.
    """
    make = _REQUEST_FRAMES[kind]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.sndhwm = sock.rcvhwm = 0
    sock.rcvtimeo = 5000
    brokers = endpoint.split(",")  # several (bench.ha): libzmq's round robin over them
    if len(brokers) > 1:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    for broker in brokers:
        sock.connect(broker)
    now = time.perf_counter
    pack, unpack = _TS.pack, _TS.unpack
    lat: list[float] = []
    done = errors = total = 0
    for _ in range(inflight):
        send_multipart(sock, make(pack(now())))
    t_measure = now() + warmup
    t_end = t_measure + duration
    measuring = False
    t_first = t_measure
    outstanding = inflight
    t_stop = t_measure
    while measuring or t_stop == t_measure:
        # Read every reply that is ready, then send their successors back to back: the same
        # for every broker, and it keeps this process's own wake-ups from dominating.
        try:
            f = recv_multipart(sock)
        except zmq.Again:
            errors += 1
            break
        replies = []
        while True:
            t = now()
            total += 1
            replies.append(t)
            if measuring:
                lat.append(t - unpack(f[-1])[0])
                done += 1
                if t >= t_end:
                    measuring = False
                    t_stop = t
            elif t >= t_measure and t_stop == t_measure:
                measuring = True
                t_first = t
            try:
                f = recv_multipart(sock, zmq.NOBLOCK)
            except zmq.Again:
                break
        if t_stop == t_measure or measuring:
            for _ in replies:
                send_multipart(sock, make(pack(now())))
        else:
            outstanding -= len(replies)  # the last burst is not replaced
    elapsed = t_stop - t_first
    # Collect what is still in flight, so the broker is idle when the next cell starts.
    for _ in range(outstanding):
        try:
            recv_multipart(sock)
            total += 1
        except zmq.Again:
            errors += 1
            break
    if samples:
        with open(samples, "wb") as out:
            array("d", lat).tofile(out)
    pct = percentiles(lat)
    print(
        json.dumps(
            {
                "inflight": inflight,
                "rps": done / elapsed if elapsed > 0 else 0.0,
                "p50_ms": pct["p50"] * 1000,
                "p99_ms": pct["p99"] * 1000,
                "p999_ms": pct["p99.9"] * 1000,
                "n": done,
                "total": total,
                "errors": errors,
                "cpu_s": time.process_time(),
            }
        ),
        flush=True,
    )
    sock.close(0)
    ctx.term()


def role_conns(endpoint: str, count: int, timeout: float) -> None:
    """Open ``count`` DEALER sockets, send one request on each, expect one reply on each."""
    _raise_fd_limit(count + 1000)
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, count + 100)
    t0 = time.perf_counter()
    socks = []
    for i in range(count):
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(endpoint)
        s.send_multipart([b"MDPC02", b"\x01", SERVICE, str(i).encode()], zmq.NOBLOCK)
        socks.append(s)
    # One zmq_poll over every socket per round (C loop), not one Python call per socket.
    poller = zmq.Poller()
    index = {}
    for i, s in enumerate(socks):
        poller.register(s, zmq.POLLIN)
        index[s] = i
    pending = count
    served = 0
    deadline = time.perf_counter() + timeout
    while pending and time.perf_counter() < deadline:
        for s, _ in poller.poll(100):
            f = recv_multipart(s)
            i = index[s]
            if f[-1] == str(i).encode():
                served += 1
            poller.unregister(s)
            pending -= 1
    elapsed = time.perf_counter() - t0
    for s in socks:
        s.close(0)
    ctx.term()
    print(json.dumps({"clients": count, "served": served, "seconds": elapsed}), flush=True)


# --------------------------------------------------------------------------- orchestration


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [PY, "-m", "bench.broker", "--role", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _wait_ready(endpoint: str, kind: str, timeout: float = 10.0) -> None:
    """Send single requests until one round trip succeeds (workers registered)."""
    make = _REQUEST_FRAMES[kind]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(endpoint)
        s.send_multipart(make(b"ping"))
        ok = s.poll(300)
        s.close(0)
        if ok:
            return
    raise RuntimeError(f"{kind} broker at {endpoint} did not answer within {timeout}s")


CPU_PARTS = ("broker", "worker", "load")


def _run_level(
    ep: str,
    kind: str,
    inflight: int,
    loaders: int,
    duration: float,
    warmup: float,
    cpu_pids: dict[str, list[int]],
) -> dict[str, Any]:
    """``inflight`` requests kept outstanding by ``loaders`` processes; merged figures."""
    shares = [inflight // loaders + (i < inflight % loaders) for i in range(loaders)]
    shares = [n for n in shares if n]
    with tempfile.TemporaryDirectory(prefix="plantd-bench-broker-") as tmp:
        before = {k: sum(map(cpu_seconds, pids)) for k, pids in cpu_pids.items()}
        procs = [
            _spawn(
                "load",
                "--endpoint",
                ep,
                "--kind",
                kind,
                "--inflight",
                str(n),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--samples",
                f"{tmp}/{i}.f64",
            )
            for i, n in enumerate(shares)
        ]
        rows = []
        for proc in procs:
            out, _ = proc.communicate(timeout=duration + warmup + 30)
            rows.append(json.loads(out.strip().splitlines()[-1]))
        after = {k: sum(map(cpu_seconds, pids)) for k, pids in cpu_pids.items()}
        lat = array("d")
        for i in range(len(shares)):
            with open(f"{tmp}/{i}.f64", "rb") as f:
                lat.frombytes(f.read())
    pct = percentiles(lat)
    total = max(1, sum(int(r["total"]) for r in rows))
    result: dict[str, Any] = {
        "inflight": inflight,
        "rps": sum(r["rps"] for r in rows),
        "p50_ms": pct["p50"] * 1000,
        "p99_ms": pct["p99"] * 1000,
        "p999_ms": pct["p99.9"] * 1000,
        "errors": sum(r["errors"] for r in rows),
        # CPU per round trip of each process kind (every thread, libzmq's I/O thread included)
        "cpu_load_us": sum(r["cpu_s"] for r in rows) / total * 1e6,
    }
    for k in cpu_pids:
        result[f"cpu_{k}_us"] = (after[k] - before[k]) / total * 1e6
    return result


def run_setup(
    kind: str,
    workers: int,
    levels: Sequence[int],
    duration: float,
    warmup: float,
    loaders: int = 1,
) -> dict[int, dict[str, Any]]:
    """One broker and its workers; each in-flight level measured in turn."""
    ep = free_endpoint()
    broker = _spawn(f"broker-{kind}", "--endpoint", ep)
    procs = [broker]
    try:
        procs += [_spawn(f"worker-{kind}", "--endpoint", ep) for _ in range(workers)]
        _wait_ready(ep, kind)
        time.sleep(0.3 if workers > 1 else 0.1)  # let every worker register
        cpu = {"broker": [broker.pid], "worker": [p.pid for p in procs[1:]]}
        return {n: _run_level(ep, kind, n, min(loaders, n), duration, warmup, cpu) for n in levels}
    finally:
        stop(procs)


def run_conns(count: int, procs_n: int = 2) -> dict[str, Any]:
    ep = free_endpoint()
    procs = [_spawn("broker-ours", "--endpoint", ep)]
    try:
        time.sleep(0.2)
        procs += [_spawn("worker-ours", "--endpoint", ep)]
        _wait_ready(ep, "ours")
        per = count // procs_n
        loaders = [
            _spawn("conns", "--endpoint", ep, "--count", str(per), "--duration", "60")
            for _ in range(procs_n)
        ]
        results = [
            json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in loaders
        ]
        return {
            "clients": sum(r["clients"] for r in results),
            "served": sum(r["served"] for r in results),
            "seconds": max(r["seconds"] for r in results),
        }
    finally:
        stop(procs)


def orchestrate(
    quick: bool, reps: int | None, duration: float | None, conns: int, loaders: int
) -> int:
    reps = reps or (1 if quick else 3)
    duration = duration or (1.0 if quick else 1.5)
    warmup = 0.3
    kinds = ("ours", "raw", "majortomo")
    levels = (1, 10, 100)
    cells = [(w, n) for w in (1, 4) for n in levels]
    results: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    t0 = time.monotonic()
    for rep in range(reps):
        for w in (1, 4):
            for kind in kinds:  # interleaved, so load from elsewhere hits all three alike
                for n, r in run_setup(kind, w, levels, duration, warmup, loaders).items():
                    results.setdefault((kind, w, n), []).append(r)
                    print(
                        f"  rep {rep + 1}/{reps} {kind:9} workers={w} inflight={n:3}: "
                        f"{r['rps']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                        f"p99 {r['p99_ms']:.2f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    metrics = ("rps", "p50_ms", "p99_ms", "p999_ms", *(f"cpu_{p}_us" for p in CPU_PARTS))
    med: dict[tuple[str, int, int], dict[str, float]] = {
        k: {m: median(x[m] for x in v) for m in metrics} for k, v in results.items()
    }
    rows = []
    for w, n in cells:
        ours, raw, mt = med["ours", w, n], med["raw", w, n], med["majortomo", w, n]
        rows.append(
            [
                f"{w} worker{'s' if w > 1 else ''}, {n} in flight",
                ours["rps"],
                ours["p50_ms"],
                ours["p99_ms"],
                ours["p999_ms"],
                raw["rps"],
                raw["p99_ms"],
                mt["rps"],
                mt["p99_ms"],
                ratio(ours["rps"], raw["rps"]),
                ratio(ours["rps"], mt["rps"]),
            ]
        )
    print(
        f"\nMDP broker round trips, medians of {reps} run(s) x {duration:g}s, 64-bit payload, "
        f"{loaders} load process{'es' if loaders > 1 else ''}"
    )
    print(
        table(
            [
                "cell",
                "ours req/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "raw req/s",
                "raw p99 ms",
                "majortomo req/s",
                "mt p99 ms",
                "ours/raw",
                "ours/mt",
            ],
            rows,
        )
    )
    print(
        "\nCPU microseconds per round trip at 100 in flight (every thread of each process, "
        "libzmq I/O threads included; all share the same cores)"
    )
    rows = []
    for w in (1, 4):
        for kind in kinds:
            m = med[kind, w, 100]
            parts = [m[f"cpu_{p}_us"] for p in CPU_PARTS]
            rows.append([f"{kind}, {w} worker{'s' if w > 1 else ''}", *parts, sum(parts)])
    print(table(["cell", *CPU_PARTS, "total"], rows))
    conn = run_conns(conns) if conns else {"clients": 0, "served": 0, "seconds": float("nan")}
    print(
        f"\n{conn['clients']:,} connected clients: {conn['served']:,} served "
        f"in {conn['seconds']:.2f}s"
    )
    o1, o4 = med["ours", 1, 100], med["ours", 4, 100]
    summary = {
        "bench": "broker",
        "reps": reps,
        "duration_s": duration,
        "loaders": loaders,
        "ours_1w_100_rps": round(o1["rps"]),
        "ours_4w_100_rps": round(o4["rps"]),
        "ours_1w_100_p99_ms": round(o1["p99_ms"], 3),
        "ours_4w_100_p99_ms": round(o4["p99_ms"], 3),
        "raw_1w_100_p99_ms": round(med["raw", 1, 100]["p99_ms"], 3),
        "raw_4w_100_p99_ms": round(med["raw", 4, 100]["p99_ms"], 3),
        "ratio_1w_100_vs_raw": round(ratio(o1["rps"], med["raw", 1, 100]["rps"]), 3),
        "ratio_1w_100_vs_majortomo": round(ratio(o1["rps"], med["majortomo", 1, 100]["rps"]), 3),
        "ratio_4w_100_vs_majortomo": round(ratio(o4["rps"], med["majortomo", 4, 100]["rps"]), 3),
        "clients_connected": conn["clients"],
        "clients_served": conn["served"],
        "errors": sum(x["errors"] for v in results.values() for x in v),
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.broker",
        description="Round trips/s and latency through the plantd MDP broker, compared in the "
        "same run with a raw pyzmq forwarder and the majortomo broker.",
    )
    ap.add_argument("--quick", action="store_true", help="one short repetition per cell")
    ap.add_argument("--reps", type=int, help="repetitions per cell (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds measured per cell (default 1.5)")
    ap.add_argument(
        "--clients", type=int, default=10_000, help="connected-clients check size (0 skips)"
    )
    ap.add_argument(
        "--loaders",
        type=int,
        default=1,
        help="load processes sharing each in-flight level (default 1; their latencies are "
        "merged into one distribution)",
    )
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--inflight", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--samples", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=float, default=0.5, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role:
        ep = a.endpoint
        roles = {
            "broker-ours": lambda: role_broker_ours(ep),
            "broker-raw": lambda: role_broker_raw(ep),
            "broker-majortomo": lambda: role_broker_majortomo(ep),
            "worker-ours": lambda: role_worker_ours(ep),
            "worker-raw": lambda: role_worker_raw(ep),
            "worker-majortomo": lambda: role_worker_majortomo(ep),
            "load": lambda: role_load(
                ep, a.kind, a.inflight, a.duration or 1.5, a.warmup, a.samples
            ),
            "conns": lambda: role_conns(ep, a.count, a.duration or 60.0),
        }
        roles[a.role]()
        return 0
    if a.loaders < 1:
        ap.error("--loaders must be at least 1")
    return orchestrate(a.quick, a.reps, a.duration, a.clients, a.loaders)


if __name__ == "__main__":
    sys.exit(main())
