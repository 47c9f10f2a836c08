"""State service benchmark: org.plantd.State through the broker vs the bus and Redis ceilings.

    python -m bench.state            # 3 repetitions per cell, medians (~5 minutes)
    python -m bench.state --quick    # 1 short repetition per cell (~1.5 minutes)

Measured (Redis store unless noted), every component its own process:
  state-get / state-set     req/s, p50/p99 latency; 1 and 2 state workers; 1/10/100 in flight
  batch-get / batch-set     keys/s with 10 and 100 keys per request (100 in flight)
  embedded store (SQLite)   the same single-key and 10-key figures, 1 worker
Baselines in the same run, with the same load generator and concurrency:
  echo      our broker + an echo worker (batch handler, same credit): the bus ceiling
  redis-py  direct GET/SET (and MGET/MSET) from N asyncio tasks, no broker, no service

Targets (issue #4): single-key get/set >= 0.7 x echo; 10-key batches >= 100,000 keys read/s and
>= 50,000 keys written/s; p99 < 10 ms at 100 in flight.

The load generator is one DEALER keeping N requests in flight; slot i always uses keys
``s<i>...``, and the reply names its key, so each reply is matched to its request for latency.
CURVE is off for every cell (ratios compare like with like; see docs/state.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq

from bench._procs import cpu_seconds, free_port, stop
from bench._stats import median, percentiles, ratio, table
from plantd.mdp._wire import recv_multipart, send_multipart

PY = sys.executable
STATE = b"org.plantd.State"
ECHO = b"bench.echo"
VALUE = "v" * 64
SCOPE = "bench"
CREDIT = 200
_SLOT = re.compile(rb'"key":"s(\d+)')


# --------------------------------------------------------------------------- request bodies


def _keys(slot: int, nkeys: int) -> list[str]:
    return [f"s{slot}"] if nkeys == 1 else [f"s{slot}/{j}" for j in range(nkeys)]


def _body(op: str, slot: int, nkeys: int) -> bytes:
    keys = _keys(slot, nkeys)
    doc: dict[str, Any]
    if op == "state-get":
        doc = {"service": SCOPE, "key": keys[0]}
    elif op == "state-set":
        doc = {"service": SCOPE, "key": keys[0], "value": VALUE}
    elif op == "batch-get":
        doc = {"service": SCOPE, "keys": keys}
    elif op == "batch-set":
        doc = {"service": SCOPE, "items": [{"key": k, "value": VALUE} for k in keys]}
    else:
        raise ValueError(op)
    return json.dumps(doc, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- roles


def role_broker(endpoint: str) -> None:
    from plantd.mdp import Broker

    broker = Broker(endpoint, heartbeat_ms=2500, max_queue=100_000)
    signal.signal(signal.SIGTERM, lambda *_: broker.request_stop(0.5))
    broker.run()


def role_echo(endpoint: str) -> None:
    from plantd.mdp import AsyncWorker

    async def echo(batch: list[list[bytes]]) -> list[list[bytes]]:
        return batch

    async def main() -> None:
        w = AsyncWorker(endpoint, ECHO, batch_handler=echo, credit=CREDIT)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(w.stop(0.2)))
        await w.run()

    asyncio.run(main())


def role_load(
    endpoint: str,
    service: bytes,
    op: str,
    nkeys: int,
    inflight: int,
    duration: float,
    warmup: float,
) -> None:
    """Keep ``inflight`` requests outstanding on one DEALER; print one JSON line."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.sndhwm = sock.rcvhwm = 0
    sock.rcvtimeo = 10_000
    sock.connect(endpoint)
    head = [b"MDPC02", b"\x01", service]
    if op.endswith("get") and service == STATE:
        # The keys must exist: write them once, unmeasured.
        setter = "state-set" if nkeys == 1 else "batch-set"
        for slot in range(inflight):
            send_multipart(sock, [*head, setter.encode(), _body(setter, slot, nkeys)])
        for _ in range(inflight):
            recv_multipart(sock)
    frames = [[*head, op.encode(), _body(op, slot, nkeys)] for slot in range(inflight)]
    now = time.perf_counter
    sent = [0.0] * inflight
    for slot in range(inflight):
        sent[slot] = now()
        send_multipart(sock, frames[slot])
    lat: list[float] = []
    done = errors = total = 0
    t_measure = now() + warmup
    t_end = t_measure + duration
    measuring = False
    t_first = t_measure
    search = _SLOT.search
    t_stop = 0.0
    while not t_stop:
        # Read every reply that is ready, then send their successors back to back: the same
        # for every cell, and it keeps this process's own wake-ups from dominating.
        try:
            f = recv_multipart(sock)
        except zmq.Again:
            errors += 1
            break
        again: list[int] = []
        while True:
            t = now()
            total += 1
            body = f[-1]
            m = search(body)
            if m is None:
                raise SystemExit(f"unexpected reply: {f!r}")
            slot = int(m.group(1))
            if service == STATE and not body.startswith(b'{"success":true'):
                errors += 1
            if measuring:
                lat.append(t - sent[slot])
                done += 1
                if t >= t_end:
                    measuring = False
                    t_stop = t
            elif t >= t_measure and not t_stop:
                measuring = True
                t_first = t
            again.append(slot)
            try:
                f = recv_multipart(sock, zmq.NOBLOCK)
            except zmq.Again:
                break
        if not t_stop:
            for slot in again:
                sent[slot] = now()
                send_multipart(sock, frames[slot])
    elapsed = t_stop - t_first if t_stop else 0.0
    pct = percentiles(lat)
    print(
        json.dumps(
            {
                "rps": done / elapsed if elapsed > 0 else 0.0,
                "p50_ms": pct["p50"] * 1000,
                "p99_ms": pct["p99"] * 1000,
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


def role_redis_load(
    url: str, op: str, nkeys: int, inflight: int, duration: float, warmup: float
) -> None:
    """N asyncio tasks doing GET/SET (or MGET/MSET of nkeys) directly with redis-py."""
    import redis.asyncio as aioredis

    async def main() -> dict[str, Any]:
        r = aioredis.Redis.from_url(url, max_connections=inflight)
        keys = [[f"rb:{k}" for k in _keys(slot, nkeys)] for slot in range(inflight)]
        mapping = [dict.fromkeys(ks, VALUE) for ks in keys]
        for m in mapping:
            await r.mset(m)
        lat: list[float] = []
        now = time.perf_counter
        t_measure = now() + warmup
        t_end = t_measure + duration
        count = [0]

        async def worker(slot: int) -> None:
            ks, mp = keys[slot], mapping[slot]
            while True:
                t0 = now()
                if op == "get":
                    await (r.get(ks[0]) if nkeys == 1 else r.mget(ks))
                else:
                    await (r.set(ks[0], VALUE) if nkeys == 1 else r.mset(mp))
                t = now()
                if t >= t_measure:
                    lat.append(t - t0)
                    count[0] += 1
                if t >= t_end:
                    return

        await asyncio.gather(*(worker(s) for s in range(inflight)))
        await r.aclose()
        pct = percentiles(lat)
        return {
            "rps": count[0] / duration,
            "p50_ms": pct["p50"] * 1000,
            "p99_ms": pct["p99"] * 1000,
            "n": count[0],
            "errors": 0,
        }

    print(json.dumps(asyncio.run(main())), flush=True)


# --------------------------------------------------------------------------- orchestration


def _spawn(args: list[str], quiet: bool = True) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
    )


def _role(*args: str) -> list[str]:
    return [PY, "-m", "bench.state", "--role", *args]


def _wait(endpoint: str, service: bytes, timeout: float = 20.0) -> None:
    """Until one request round-trips (the workers registered)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    deadline = time.monotonic() + timeout
    body = [b"MDPC02", b"\x01", service, b"state-get", _body("state-get", 0, 1)]
    while time.monotonic() < deadline:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(endpoint)
        s.send_multipart(body)
        ok = s.poll(500)
        s.close(0)
        if ok:
            return
    raise RuntimeError(f"{service.decode()} at {endpoint} did not answer within {timeout}s")


def _wait_workers(endpoint: str, service: bytes, count: int, timeout: float = 20.0) -> None:
    """Until the broker lists ``count`` workers for ``service`` (mmi.workers)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(endpoint)
        s.send_multipart([b"MDPC02", b"\x01", b"mmi.workers"])
        reply = s.recv_multipart() if s.poll(1000) else []
        s.close(0)
        if len(reply) >= 5 and reply[3] == b"200":
            info = json.loads(reply[4]).get(service.decode(), {})
            if int(info.get("workers", 0)) >= count:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{count} workers for {service.decode()} did not register in {timeout}s")


class Stack:
    """A broker plus N workers (echo, or real `plantd state` processes) kept for many cells."""

    def __init__(
        self,
        kind: str,
        workers: int,
        redis_url: str,
        data_dir: Path,
        extra: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.procs = [_spawn(_role("broker", "--endpoint", self.endpoint))]
        for i in range(workers):
            if kind == "echo":
                self.procs.append(_spawn(_role("echo", "--endpoint", self.endpoint)))
                continue
            cmd = [
                PY,
                "-m",
                "plantd.state",
                "--no-curve",
                "--http-port",
                "0",
                "--broker-endpoint",
                self.endpoint,
                "--log-level",
                "warning",
                "--credit",
                str(CREDIT),
                "--store",
                kind,
                "--bus-endpoint",
                f"tcp://127.0.0.1:{free_port()}",
                "--data-dir",
                str(data_dir / f"{kind}-{i}"),
            ]
            if kind == "redis":
                cmd += ["--redis-url", redis_url, "--redis-prefix", f"bench{workers}:"]
            self.procs.append(_spawn([*cmd, *extra]))
        self.cpu_pids = {"broker": self.procs[0].pid, "workers": [p.pid for p in self.procs[1:]]}
        _wait(self.endpoint, ECHO if kind == "echo" else STATE)
        _wait_workers(self.endpoint, self.service, workers)

    @property
    def service(self) -> bytes:
        return ECHO if self.kind == "echo" else STATE

    def run(
        self,
        op: str,
        nkeys: int,
        inflight: int,
        duration: float,
        warmup: float,
        redis_pid: int | None = None,
    ) -> Any:
        """One cell; adds CPU microseconds per request of each process to the result."""
        pids: dict[str, list[int]] = {
            "broker": [self.procs[0].pid],
            "worker": [p.pid for p in self.procs[1:]],
            "redis": [redis_pid] if redis_pid else [],
        }
        before = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        load = _spawn(
            _role(
                "load",
                "--endpoint",
                self.endpoint,
                "--service",
                self.service.decode(),
                "--op",
                op,
                "--keys",
                str(nkeys),
                "--inflight",
                str(inflight),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
            ),
            quiet=False,
        )
        out, _ = load.communicate(timeout=duration + warmup + 60)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        total = max(1, int(result["total"]))
        for name, ps in pids.items():
            used = sum(cpu_seconds(p) for p in ps) - before[name]
            result[f"cpu_{name}_us"] = used / total * 1e6
        result["cpu_load_us"] = result["cpu_s"] / total * 1e6
        return result

    def close(self) -> None:
        stop(self.procs[1:])
        stop(self.procs[:1])


def _redis_cell(
    url: str, op: str, nkeys: int, inflight: int, duration: float, warmup: float
) -> Any:
    p = _spawn(
        _role(
            "redis-load",
            "--url",
            url,
            "--op",
            op,
            "--keys",
            str(nkeys),
            "--inflight",
            str(inflight),
            "--duration",
            str(duration),
            "--warmup",
            str(warmup),
        ),
        quiet=False,
    )
    out, _ = p.communicate(timeout=duration + warmup + 60)
    return json.loads(out.strip().splitlines()[-1])


class RedisServer:
    def __init__(self, workdir: Path, replica_of: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                *(["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


CPU_PARTS = ("worker", "broker", "redis", "load")
SINGLE = [(op, w, n) for op in ("state-get", "state-set") for w in (1, 2) for n in (1, 10, 100)]
BATCH = [(op, k, w) for op in ("batch-get", "batch-set") for k in (10, 100) for w in (1, 2)]
EMBEDDED = [("state-get", 1, n) for n in (1, 10, 100)] + [("state-set", 1, n) for n in (1, 10, 100)]
EMBEDDED_BATCH = [("batch-get", 10), ("batch-set", 10)]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def orchestrate(quick: bool, reps: int | None, duration: float | None) -> int:
    reps = reps or (1 if quick else 3)
    duration = duration or (1.0 if quick else 1.5)
    warmup = 0.3 if quick else 0.5
    t0 = time.monotonic()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every child process.
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="plantd-bench-state-"))
    redis = RedisServer(tmp)
    res: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def record(key: tuple[Any, ...], r: dict[str, Any]) -> None:
        res.setdefault(key, []).append(r)
        print(
            f"  {' '.join(str(k) for k in key):40} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:6.2f} ms"
            f"  p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}",
            file=sys.stderr,
            flush=True,
        )

    try:
        for rep in range(reps):
            print(f"rep {rep + 1}/{reps}", file=sys.stderr, flush=True)
            for n in (1, 10, 100):
                for op in ("get", "set"):
                    record(
                        ("redis-py", op, 1, n), _redis_cell(redis.url, op, 1, n, duration, warmup)
                    )
            for k in (10, 100):
                for op in ("get", "set"):
                    record(
                        ("redis-py", op, k, 100),
                        _redis_cell(redis.url, op, k, 100, duration, warmup),
                    )
            for w in (1, 2):
                echo = Stack("echo", w, "", tmp)
                try:
                    for n in (1, 10, 100):
                        record(("echo", w, n), echo.run("state-get", 1, n, duration, warmup))
                finally:
                    echo.close()
                st = Stack("redis", w, redis.url, tmp)
                try:
                    for op, ww, n in SINGLE:
                        if ww == w:
                            r = st.run(op, 1, n, duration, warmup, redis.proc.pid)
                            record(("redis", op, 1, w, n), r)
                    for op, k, ww in BATCH:
                        if ww == w:
                            r = st.run(op, k, 100, duration, warmup, redis.proc.pid)
                            record(("redis", op, k, w, 100), r)
                finally:
                    st.close()
            emb = Stack("sqlite", 1, "", tmp / f"rep{rep}")
            try:
                for op, _, n in EMBEDDED:
                    record(("sqlite", op, 1, 1, n), emb.run(op, 1, n, duration, warmup))
                for op, k in EMBEDDED_BATCH:
                    record(("sqlite", op, k, 1, 100), emb.run(op, k, 100, duration, warmup))
            finally:
                emb.close()
    finally:
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)

    metrics = ("rps", "p50_ms", "p99_ms", *(f"cpu_{p}_us" for p in CPU_PARTS))
    med = {k: {m: median(x.get(m, math.nan) for x in v) for m in metrics} for k, v in res.items()}
    errors = sum(x["errors"] for v in res.values() for x in v)
    print(
        f"\norg.plantd.State, Redis store, through the broker: medians of {reps} run(s) x "
        f"{duration:g}s, 64-byte values, CURVE off"
    )
    rows = []
    for op, w, n in SINGLE:
        s, e = med["redis", op, 1, w, n], med["echo", w, n]
        rp = med["redis-py", op.removeprefix("state-"), 1, n]
        rows.append(
            [
                f"{op} {w}w {n:>3} in flight",
                s["rps"],
                s["p50_ms"],
                s["p99_ms"],
                e["rps"],
                e["p99_ms"],
                ratio(s["rps"], e["rps"]),
                rp["rps"],
                ratio(s["rps"], rp["rps"]),
            ]
        )
    print(
        table(
            [
                "cell",
                "req/s",
                "p50 ms",
                "p99 ms",
                "echo req/s",
                "echo p99",
                "x echo",
                "redis-py ops/s",
                "x redis-py",
            ],
            rows,
        )
    )
    print("\nbatches (100 in flight): keys/s")
    rows = []
    for op, k, w in BATCH:
        s = med["redis", op, k, w, 100]
        rp = med["redis-py", op.removeprefix("batch-"), k, 100]
        rows.append(
            [
                f"{op} {k:>3} keys {w}w",
                s["rps"],
                s["rps"] * k,
                s["p50_ms"],
                s["p99_ms"],
                rp["rps"] * k,
                ratio(s["rps"] * k, rp["rps"] * k),
            ]
        )
    print(
        table(
            ["cell", "req/s", "keys/s", "p50 ms", "p99 ms", "redis-py M* keys/s", "x redis-py"],
            rows,
        )
    )
    print("\nembedded store (SQLite, synchronous=full), 1 worker")
    rows = []
    for op, _, n in EMBEDDED:
        s, e = med["sqlite", op, 1, 1, n], med["echo", 1, n]
        rows.append(
            [
                f"{op} {n:>3} in flight",
                s["rps"],
                s["p50_ms"],
                s["p99_ms"],
                ratio(s["rps"], e["rps"]),
            ]
        )
    for op, k in EMBEDDED_BATCH:
        s = med["sqlite", op, k, 1, 100]
        rows.append(
            [
                f"{op} {k} keys, 100 in flight (keys/s {s['rps'] * k:,.0f})",
                s["rps"],
                s["p50_ms"],
                s["p99_ms"],
                ratio(s["rps"], med["echo", 1, 100]["rps"]),
            ]
        )
    print(table(["cell", "req/s", "p50 ms", "p99 ms", "x echo"], rows))

    print("\nCPU microseconds per request, 1 worker, 100 in flight (whole box, all processes)")
    rows = []
    for label, key in [
        ("echo (baseline)", ("echo", 1, 100)),
        ("state-get redis", ("redis", "state-get", 1, 1, 100)),
        ("state-set redis", ("redis", "state-set", 1, 1, 100)),
        ("batch-get 10 redis", ("redis", "batch-get", 10, 1, 100)),
        ("batch-set 10 redis", ("redis", "batch-set", 10, 1, 100)),
        ("state-get sqlite", ("sqlite", "state-get", 1, 1, 100)),
        ("state-set sqlite", ("sqlite", "state-set", 1, 1, 100)),
    ]:
        m = med[key]
        parts = [m[f"cpu_{p}_us"] for p in CPU_PARTS]
        rows.append([label, *parts, sum(x for x in parts if not math.isnan(x))])
    print(table(["cell", *CPU_PARTS, "total"], rows))

    def best(op: str) -> tuple[float, float]:
        """(ratio to echo, p99) of op at 100 in flight, best worker count."""
        cands = [
            (
                ratio(med["redis", op, 1, w, 100]["rps"], med["echo", w, 100]["rps"]),
                med["redis", op, 1, w, 100]["p99_ms"],
            )
            for w in (1, 2)
        ]
        return max(cands)

    echo_p99 = min(med["echo", w, 100]["p99_ms"] for w in (1, 2))
    get_r, get_p99 = best("state-get")
    set_r, set_p99 = best("state-set")
    read10 = max(med["redis", "batch-get", 10, w, 100]["rps"] * 10 for w in (1, 2))
    write10 = max(med["redis", "batch-set", 10, w, 100]["rps"] * 10 for w in (1, 2))
    checks = [
        ("state-get >= 0.7 x echo (100 in flight)", get_r >= 0.7, f"{get_r:.2f}"),
        ("state-set >= 0.7 x echo (100 in flight)", set_r >= 0.7, f"{set_r:.2f}"),
        ("10-key batch-get >= 100,000 keys/s", read10 >= 100_000, f"{read10:,.0f}"),
        ("10-key batch-set >= 50,000 keys/s", write10 >= 50_000, f"{write10:,.0f}"),
        (
            "p99 < 10 ms at 100 in flight (get/set)",
            max(get_p99, set_p99) < 10,
            f"{get_p99:.2f} / {set_p99:.2f} ms (the echo bus alone: {echo_p99:.2f} ms)",
        ),
    ]
    print("\ntargets")
    for name, ok, value in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {name}: {value}")
    summary = {
        "bench": "state",
        "reps": reps,
        "duration_s": duration,
        "get_1w_100_rps": round(med["redis", "state-get", 1, 1, 100]["rps"]),
        "set_1w_100_rps": round(med["redis", "state-set", 1, 1, 100]["rps"]),
        "echo_1w_100_rps": round(med["echo", 1, 100]["rps"]),
        "echo_1w_100_p99_ms": round(med["echo", 1, 100]["p99_ms"], 3),
        "get_1w_100_p99_ms": round(med["redis", "state-get", 1, 1, 100]["p99_ms"], 3),
        "set_1w_100_p99_ms": round(med["redis", "state-set", 1, 1, 100]["p99_ms"], 3),
        "get_vs_echo": round(get_r, 3),
        "set_vs_echo": round(set_r, 3),
        "batch_get_10_keys_s": round(read10),
        "batch_set_10_keys_s": round(write10),
        "sqlite_get_1w_100_rps": round(med["sqlite", "state-get", 1, 1, 100]["rps"]),
        "sqlite_set_1w_100_rps": round(med["sqlite", "state-set", 1, 1, 100]["rps"]),
        "errors": errors,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(summary))
    return 0 if errors == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.state",
        description="org.plantd.State requests/s, keys/s and latency through the broker (Redis "
        "and embedded stores), with the broker's echo rate and direct redis-py as baselines "
        "measured in the same run. Needs redis-server on PATH.",
    )
    ap.add_argument("--quick", action="store_true", help="one short repetition per cell")
    ap.add_argument("--reps", type=int, help="repetitions per cell (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds measured per cell (default 1.5)")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--service", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--op", help=argparse.SUPPRESS)
    ap.add_argument("--keys", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--inflight", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=float, default=0.5, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role == "broker":
        role_broker(a.endpoint)
    elif a.role == "echo":
        role_echo(a.endpoint)
    elif a.role == "load":
        role_load(a.endpoint, a.service.encode(), a.op, a.keys, a.inflight, a.duration, a.warmup)
    elif a.role == "redis-load":
        role_redis_load(a.url, a.op, a.keys, a.inflight, a.duration, a.warmup)
    elif a.role:
        raise SystemExit(f"unknown role {a.role}")
    else:
        return orchestrate(a.quick, a.reps, a.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
