"""Several brokers (docs/ha.md): round trips/s, p99 and broker CPU per round trip with 1, 2 and
3 active-active brokers on this machine.

    python -m bench.ha            # 3 repetitions per cell (medians), about a minute
    python -m bench.ha --quick    # one short repetition

Each cell: N brokers (bench.broker's ``broker-ours``), one worker process registered with every
broker (``WorkerFleet``, credit 100 split across them, a batch echo handler), and one load
process keeping 100 requests outstanding on a DEALER connected to all N brokers (libzmq's round
robin, as ``plantd.mdp.Client`` does with a broker set). One broker is the baseline, measured in
the same run and interleaved with the others, so load from elsewhere hits every cell alike.

A second table prices the state service's write acknowledgement (``--redis-wait-replicas``):
state-set through the broker to a Redis primary with one replica, acknowledged on the primary
(the baseline, same run) or only once the replica confirmed it (``WAIT 1``), at 1 and 100 in
flight.

On two cores more brokers cannot add throughput (brokers, worker and load already share both);
what scales is the broker CPU per round trip, printed per broker, from which the capacity on a
machine with more cores is projected: one broker saturates at 1e6 / (its CPU us per round trip)
round trips/s, and N brokers at N times that, when workers and clients have cores of their own.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._procs import free_endpoint, stop
from bench._stats import median, ratio, table
from bench.broker import SERVICE, _run_level, _spawn, _wait_ready
from bench.state import RedisServer, Stack

PY = sys.executable
INFLIGHT = 100
BROKERS = (1, 2, 3)


def role_worker_fleet(brokers: str) -> None:
    import asyncio

    from plantd.mdp import AsyncWorker
    from plantd.mdp.fleet import WorkerFleet

    async def echo(batch: list[list[bytes]]) -> list[list[bytes]]:
        return batch

    async def main() -> None:
        fleet = WorkerFleet(
            brokers,
            lambda ep, credit: AsyncWorker(ep, SERVICE, batch_handler=echo, credit=credit),
            credit=INFLIGHT,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(fleet.stop(0.2)))
        await fleet.run()

    asyncio.run(main())


def run_cell(brokers: int, duration: float, warmup: float) -> dict[str, Any]:
    endpoints = [free_endpoint() for _ in range(brokers)]
    procs = [_spawn("broker-ours", "--endpoint", ep) for ep in endpoints]
    try:
        fleet = subprocess.Popen(
            [PY, "-m", "bench.ha", "--role", "worker-fleet", "--endpoint", ",".join(endpoints)],
            text=True,
        )
        procs.append(fleet)
        for ep in endpoints:  # the worker is registered with every broker
            _wait_ready(ep, "ours")
        cpu = {"broker": [p.pid for p in procs[:brokers]], "worker": [fleet.pid]}
        return _run_level(",".join(endpoints), "ours", INFLIGHT, 1, duration, warmup, cpu)
    finally:
        stop(procs[brokers:])  # the worker first: it says DISCONNECT to brokers still there
        stop(procs[:brokers])


def wait_cost(reps: int, duration: float, warmup: float) -> dict[tuple[int, int], dict[str, float]]:
    """state-set req/s and p99 with WAIT 0 / 1 at 1 and 100 in flight: medians by (wait, n)."""
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        work = Path(tmp)
        (work / "primary").mkdir()
        (work / "replica").mkdir()
        primary = RedisServer(work / "primary")
        replica = RedisServer(work / "replica", replica_of=primary.port)
        stacks: dict[int, Stack] = {}
        try:
            _wait_online_replica(primary.port)
            for wait in (0, 1):
                flags = ["--redis-wait-replicas", str(wait), "--redis-wait-timeout-ms", "1000"]
                stacks[wait] = Stack("redis", 1, primary.url, work, extra=flags)
            cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
            for _ in range(reps):
                for n in (1, INFLIGHT):
                    for wait, stack in stacks.items():  # interleaved: noise hits both alike
                        r = stack.run("state-set", 1, n, duration, warmup, primary.proc.pid)
                        cells.setdefault((wait, n), []).append(r)
        finally:
            for stack in stacks.values():
                stack.close()
            replica.close()
            primary.close()
    metrics = ("rps", "p50_ms", "p99_ms", "errors")
    return {k: {m: median(x[m] for x in v) for m in metrics} for k, v in cells.items()}


def _wait_online_replica(port: int, timeout: float = 20.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    with redis.Redis(port=port, socket_timeout=2) as r:
        while time.monotonic() < deadline:
            info = r.info("replication")
            if any(isinstance(v, dict) and v.get("state") == "online" for v in info.values()):
                return
            time.sleep(0.05)
    raise SystemExit("the Redis replica did not come in sync")


def orchestrate(reps: int, duration: float) -> int:
    warmup = 0.3
    results: dict[int, list[dict[str, Any]]] = {}
    t0 = time.monotonic()
    for rep in range(reps):
        for n in BROKERS:
            r = run_cell(n, duration, warmup)
            results.setdefault(n, []).append(r)
            print(
                f"  rep {rep + 1}/{reps} brokers={n}: {r['rps']:8.0f} req/s  "
                f"p99 {r['p99_ms']:.2f} ms  broker CPU {r['cpu_broker_us']:.1f} us/trip",
                file=sys.stderr,
                flush=True,
            )
    metrics = ("rps", "p50_ms", "p99_ms", "cpu_broker_us", "cpu_worker_us", "cpu_load_us")
    med = {n: {m: median(x[m] for x in v) for m in metrics} for n, v in results.items()}
    base = med[1]
    rows = []
    for n in BROKERS:
        m = med[n]
        # Each round trip crosses exactly one broker: the brokers' summed CPU per round trip
        # is what one broker spends on one, whatever N is.
        per_broker_capacity = 1e6 / m["cpu_broker_us"] if m["cpu_broker_us"] else float("nan")
        rows.append(
            [
                f"{n} broker{'s' if n > 1 else ''}",
                m["rps"],
                m["p50_ms"],
                m["p99_ms"],
                ratio(m["rps"], base["rps"]),
                m["cpu_broker_us"],
                m["cpu_worker_us"],
                m["cpu_load_us"],
                n * per_broker_capacity,
            ]
        )
    print(
        f"\nActive-active brokers, {INFLIGHT} in flight, medians of {reps} run(s) x "
        f"{duration:g}s; one worker process on every broker"
    )
    print(
        table(
            [
                "cell",
                "req/s",
                "p50 ms",
                "p99 ms",
                "vs 1 broker",
                "broker CPU us/trip",
                "worker us/trip",
                "load us/trip",
                "projected req/s*",
            ],
            rows,
        )
    )
    print(
        "* N x 1e6 / broker CPU per round trip: the brokers' ceiling when each has a core and "
        "workers and clients have cores of their own (not reachable on this 2-core machine)."
    )
    waits = wait_cost(reps, duration, warmup)
    rows = []
    for n in (1, INFLIGHT):
        for wait in (0, 1):
            m = waits[wait, n]
            rows.append(
                [
                    f"{'WAIT 1' if wait else 'primary only'}, {n} in flight",
                    m["rps"],
                    m["p50_ms"],
                    m["p99_ms"],
                    ratio(m["rps"], waits[0, n]["rps"]),
                ]
            )
    print("\nstate-set acknowledgement, Redis primary + 1 replica, 1 state worker")
    print(table(["cell", "req/s", "p50 ms", "p99 ms", "vs primary only"], rows))
    summary = {
        "bench": "ha",
        "reps": reps,
        "duration_s": duration,
        **{f"brokers_{n}_rps": round(med[n]["rps"]) for n in BROKERS},
        **{f"brokers_{n}_p99_ms": round(med[n]["p99_ms"], 3) for n in BROKERS},
        **{f"brokers_{n}_vs_1": round(ratio(med[n]["rps"], base["rps"]), 3) for n in BROKERS},
        **{f"brokers_{n}_broker_cpu_us": round(med[n]["cpu_broker_us"], 2) for n in BROKERS},
        **{
            f"state_set_wait{w}_{n}_rps": round(waits[w, n]["rps"])
            for w in (0, 1)
            for n in (1, INFLIGHT)
        },
        "state_set_wait1_vs_0_at_100": round(
            ratio(waits[1, INFLIGHT]["rps"], waits[0, INFLIGHT]["rps"]), 3
        ),
        "errors": sum(x["errors"] for v in results.values() for x in v)
        + sum(int(m["errors"]) for m in waits.values()),
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.ha",
        description="Round trips/s, p99 and broker CPU per round trip with 1, 2 and 3 "
        "active-active brokers (one worker registered with each), in one run.",
    )
    ap.add_argument("--quick", action="store_true", help="one short repetition per cell")
    ap.add_argument("--reps", type=int, help="repetitions per cell (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds measured per cell (default 2)")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role == "worker-fleet":
        role_worker_fleet(a.endpoint)
        return 0
    reps = a.reps or (1 if a.quick else 3)
    return orchestrate(reps, a.duration or (1.0 if a.quick else 2.0))


if __name__ == "__main__":
    sys.exit(main())
