"""``plantd gateway`` throughput and latency, with baselines measured in the same run (issue 9).

    python -m bench.gateway            # ~1 minute
    python -m bench.gateway --quick    # shorter cells

Real processes over real sockets, CURVE on, auth on: a broker, ``plantd state --auth identity``
(embedded SQLite store) and ``plantd gateway`` trusting the same JWKS file; tokens minted with
plantd.identity's own Issuer. The client is one grpc.aio channel in this process with N calls in
flight; the baseline for the unary figure is a bare grpc.aio server (in its own process, same
event loop kind) answering GetEntry with a canned entry, driven by the same client code.

Cells: unary GetEntry gateway vs bare echo (target >= 0.6 x); BatchGetEntries of 10 keys in
keys/s vs the unary rate (target >= 5 x); one WatchEntries stream's events/s while writers
batch-set straight on the bus (target >= 50K); the gateway's added p50 latency over a direct MDP
call for the same read; REST ``GET`` of the entry vs a bare aiohttp handler (own process, uvloop)
returning the same JSON (target >= 0.5 x); N WebSocket watchers (``--ws-watchers``, default
5,000) each receiving ``--ws-updates`` updates, p99 from each write (target < 100 ms).
Missed targets print MISSED; only errors exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from bench._procs import cpu_seconds, free_port, memory_kb
from bench._stats import median, percentile, ratio, table

SCOPE = "bench"
NKEYS = 100
WRITERS = 4  # batch-set requests in flight while a watch is measured (one state worker)
INFLIGHT = 32


def mint(jwt_dir: Path) -> tuple[Path, str]:
    """(JWKS file, an admin token of the bench scope for org.plantd.State)."""
    from plantd.common import contract
    from plantd.identity.keys import KeyRing, generate
    from plantd.identity.tokens import Issuer

    generate(jwt_dir)
    ring = KeyRing.from_dir(jwt_dir)
    jwks = jwt_dir / "jwks.json"
    jwks.write_text(json.dumps(ring.jwks()))
    perms = [f"state:scope:{SCOPE}:admin", "state:scope:create", "state:scope:list"]
    token = (
        Issuer(ring, issuer="plantd-identity", access_ttl_s=3600)
        .access(
            subject="1",
            audience=[contract.SERVICE_STATE],
            now=time.time(),
            claims={"permissions": perms},
        )
        .token
    )
    return jwks, token


# ---- the bare baseline server --------------------------------------------------------------


def role_echo(port: int) -> int:
    """A bare grpc.aio StateService answering GetEntry with a canned entry (the baseline)."""
    import grpc

    from plantd.v1 import state_pb2 as pb
    from plantd.v1 import state_pb2_grpc

    canned = pb.GetEntryResponse(entry=pb.Entry(scope=SCOPE, key="k0", value="0", version=1))

    class Echo(state_pb2_grpc.StateServiceServicer):
        async def GetEntry(self, request: Any, context: Any) -> Any:
            return canned

    async def serve() -> None:
        server = grpc.aio.server()
        state_pb2_grpc.add_StateServiceServicer_to_server(Echo(), server)  # type: ignore[abstract]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())
    return 0


def role_rest_echo(port: int) -> int:
    """A bare aiohttp handler answering the entry route with the same JSON (the REST baseline)."""
    from aiohttp import web

    body = json.dumps(
        {"entry": {"scope": SCOPE, "key": "k0", "value": "0", "version": "1"}},
        separators=(",", ":"),
    )

    async def entry(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/state/scopes/{scope}/entries/{key:.*}", entry)
    try:
        import uvloop

        web.run_app(app, host="127.0.0.1", port=port, print=None, loop=uvloop.new_event_loop())
    except ImportError:
        web.run_app(app, host="127.0.0.1", port=port, print=None)
    return 0


# ---- load --------------------------------------------------------------------------------


async def closed_loop(
    call: Callable[[int], Awaitable[object]],
    inflight: int,
    duration: float,
    warmup: float,
    cpu: dict[str, float] | None = None,
    pids: Mapping[str, int] | None = None,
) -> tuple[float, list[float]]:
    """``inflight`` workers calling ``call`` back to back: (calls/s, latencies in ms).

    With ``cpu`` and ``pids``, ``cpu`` gets each process's CPU per measured call in µs
    (``client``: this process, its grpc threads included)."""
    lat: list[float] = []
    done = 0
    measuring = False
    stop_at = time.monotonic() + warmup + duration

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            await call(i)
            if measuring:
                lat.append((time.perf_counter() - t) * 1000)
                done += 1
            i += inflight

    tasks = [asyncio.create_task(worker(w)) for w in range(inflight)]
    await asyncio.sleep(warmup)
    measuring = True
    t0 = time.monotonic()
    before = {n: cpu_seconds(p) for n, p in (pids or {}).items()}
    client0 = time.process_time()
    await asyncio.gather(*tasks)
    if cpu is not None and done:
        cpu["client"] = (time.process_time() - client0) / done * 1e6
        for name, pid in (pids or {}).items():
            cpu[name] = (cpu_seconds(pid) - before[name]) / done * 1e6
    return done / (time.monotonic() - t0), lat


class Stack:
    """Broker + state (SQLite, auth identity) + gateway, CURVE on; all real processes."""

    def __init__(self, work: Path, gateway_args: list[str]) -> None:
        from tests.integration.state.statekit import Broker, StateProc
        from tests.kit import ServiceProcess, make_keys

        from plantd.common import contract

        self.keys = make_keys(work / "curve", (contract.STATE, contract.CLIENT, contract.GATEWAY))
        (work / "broker").mkdir()
        self.broker = Broker(work / "broker", self.keys).start()
        self.jwks, self.token = mint(work / "jwt")
        pub, sub = self.broker.bus("event")
        self.state = StateProc(
            "state-bench", work, self.broker,
            extra=["--auth", "identity", "--jwks-file", str(self.jwks),
                   "--event-bus-endpoint", pub, "--event-sub-endpoint", sub,
                   "--log-level", "error"],
        ).start()  # fmt: skip
        self.grpc_port, http_port, self.rest_port = free_port(), free_port(), free_port()
        self.gateway = ServiceProcess(
            "plantd.gateway",
            [
                "--broker-endpoint", self.broker.endpoint,
                "--curve-keys", str(self.keys),
                "--grpc-port", str(self.grpc_port),
                "--rest-port", str(self.rest_port),
                "--http-port", str(http_port),
                "--jwks-file", str(self.jwks),
                # One subject drives every cell: the limits are not what is measured here.
                "--no-rate-limits",
                "--max-streams-per-subject", "100000",
                *gateway_args,
                "--event-sub-endpoint", sub,
                "--state-sub-endpoint", self.broker.state_sub,
                "--log-level", "error",
            ],
            work / "gateway.log",
            http_port=http_port,
            name="gateway",
        )  # fmt: skip
        self.gateway.start().wait_ready()

    def close(self) -> None:
        self.gateway.stop()
        self.state.proc.stop()
        self.broker.stop()


async def measure(
    stack: Stack,
    echo_port: int,
    echo_pid: int,
    rest_echo_port: int,
    rest_echo_pid: int,
    duration: float,
    warmup: float,
    reps: int,
    watchers: int,
    ws_updates: int,
) -> int:
    import aiohttp
    import grpc
    from tests.integration.state.statekit import client_curve

    from plantd.bus import AsyncSubscriber
    from plantd.common import contract
    from plantd.mdp import AsyncClient
    from plantd.v1 import state_pb2 as pb
    from plantd.v1 import state_pb2_grpc

    md = (("authorization", f"Bearer {stack.token}"),)
    bus = AsyncClient(
        stack.broker.endpoint, timeout=5.0, retries=0, curve=client_curve(stack.keys),
        max_sockets=INFLIGHT,
    )  # fmt: skip
    gw_ch = grpc.aio.insecure_channel(f"127.0.0.1:{stack.grpc_port}")
    echo_ch = grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}")
    gw = state_pb2_grpc.StateServiceStub(gw_ch)
    echo = state_pb2_grpc.StateServiceStub(echo_ch)
    rows: list[list[object]] = []
    sessions: list[aiohttp.ClientSession] = []
    try:
        writes = [pb.EntryWrite(key=f"k{i}", value=str(i)) for i in range(NKEYS)]
        await gw.BatchSetEntries(
            pb.BatchSetEntriesRequest(scope=SCOPE, writes=writes, create_scope=True), metadata=md
        )
        gets = [pb.GetEntryRequest(scope=SCOPE, key=f"k{i}") for i in range(NKEYS)]
        batch = pb.BatchGetEntriesRequest(scope=SCOPE, keys=[f"k{i}" for i in range(10)])

        async def via_gw(i: int) -> object:
            return await gw.GetEntry(gets[i % NKEYS], metadata=md)

        async def via_echo(i: int) -> object:
            return await echo.GetEntry(gets[i % NKEYS], metadata=md)

        async def via_batch(i: int) -> object:
            return await gw.BatchGetEntries(batch, metadata=md)

        bodies = [
            json.dumps({"service": SCOPE, "key": f"k{i}", "token": stack.token})
            for i in range(NKEYS)
        ]

        async def via_mdp(i: int) -> object:
            reply = await bus.request(contract.SERVICE_STATE, "state-get", bodies[i % NKEYS])
            if not json.loads(reply[0]).get("success"):
                raise SystemExit(f"direct state-get failed: {reply[0]!r}")
            return reply

        auth = {"Authorization": f"Bearer {stack.token}"}
        connector = aiohttp.TCPConnector(limit=INFLIGHT)
        http = aiohttp.ClientSession(connector=connector)
        sessions.append(http)

        def rest_get(port: int) -> Callable[[int], Awaitable[object]]:
            base = f"http://127.0.0.1:{port}/v1/state/scopes/{SCOPE}/entries/"

            async def get(i: int) -> object:
                async with http.get(f"{base}k{i % NKEYS}", headers=auth) as r:
                    if r.status != 200:
                        raise SystemExit(f"REST GET {port}: {r.status} {await r.text()}")
                    return await r.read()

            return get

        got: dict[str, list[tuple[float, list[float]]]] = {}
        # Where the CPU of one call goes, per process: the unary cells' explanation.
        stack_pids = {
            "gateway": stack.gateway.pid,
            "state": stack.state.proc.pid,
            "broker": stack.broker.pid,
        }
        cpu_pids: dict[str, Mapping[str, int]] = {
            "gateway": stack_pids,
            "echo": {"echo": echo_pid},
            "rest": stack_pids,
            "rest_bare": {"aiohttp": rest_echo_pid},
        }
        cpu_got: dict[str, list[dict[str, float]]] = {}
        cells = [
            ("gateway", via_gw),
            ("echo", via_echo),
            ("batch", via_batch),
            ("rest", rest_get(stack.rest_port)),
            ("rest_bare", rest_get(rest_echo_port)),
        ]
        for rep in range(reps):  # interleaved so the shared machine's drift hits all alike
            for name, fn in cells:
                cpu: dict[str, float] = {}
                got.setdefault(name, []).append(
                    await closed_loop(fn, INFLIGHT, duration, warmup, cpu, cpu_pids.get(name))
                )
                cpu_got.setdefault(name, []).append(cpu)
                print(f"  rep {rep + 1} {name}: {got[name][-1][0]:,.0f}/s", flush=True)
            # Latency cells: one call at a time, so p50 is the path's cost, not queueing.
            for name, fn in (("gw1", via_gw), ("mdp1", via_mdp)):
                got.setdefault(name, []).append(await closed_loop(fn, 1, duration, warmup))
                print(f"  rep {rep + 1} {name}: {got[name][-1][0]:,.0f}/s", flush=True)

        def rate(name: str) -> float:
            return median(r[0] for r in got[name])

        def p50(name: str) -> float:
            return median(percentile(r[1], 50) for r in got[name])

        unary, bare, keys_s = rate("gateway"), rate("echo"), rate("batch") * 10
        u_ratio, b_ratio = ratio(unary, bare), ratio(keys_s, unary)
        added = p50("gw1") - p50("mdp1")
        rows.append(["GetEntry via gateway (calls/s)", unary, "", ""])
        rows.append(["GetEntry bare grpc.aio echo (calls/s)", bare, "", ""])
        rows.append(["  gateway / echo", u_ratio, ">= 0.6", verdict(u_ratio >= 0.6)])

        def cpu_row(name: str, label: str) -> None:
            per = {k: median(c[k] for c in cpu_got[name]) for k in cpu_got[name][0]}
            text = ", ".join(f"{k} {v:,.0f}" for k, v in per.items())
            rows.append([f"  CPU per call {label} (us)", text, "", ""])

        cpu_row("gateway", "via gateway")
        cpu_row("echo", "via echo")
        rows.append(["BatchGetEntries x10 (keys/s)", keys_s, "", ""])
        rows.append(["  batch keys/s / unary calls/s", b_ratio, ">= 5", verdict(b_ratio >= 5)])
        rest, rest_bare = rate("rest"), rate("rest_bare")
        r_ratio = ratio(rest, rest_bare)
        rows.append(["REST GET entry via gateway (req/s)", rest, "", ""])
        rows.append(["REST GET bare aiohttp, same JSON (req/s)", rest_bare, "", ""])
        rows.append(["  REST gateway / bare aiohttp", r_ratio, ">= 0.5", verdict(r_ratio >= 0.5)])
        cpu_row("rest", "REST via gateway")
        cpu_row("rest_bare", "REST bare aiohttp")
        rows.append(["GetEntry p50 via gateway, 1 in flight (ms)", p50("gw1"), "", ""])
        rows.append(["state-get p50 direct MDP, 1 in flight (ms)", p50("mdp1"), "", ""])
        rows.append(["  gateway added p50 (ms)", added, "", ""])
        sub = AsyncSubscriber(stack.broker.state_sub, (SCOPE,), curve=client_curve(stack.keys))
        try:
            ev, bare_ev, cu = await watch_rate(
                gw, bus, stack.token, md, 20 if reps == 1 else 50, sub
            )
        finally:
            sub.close()
        rows.append(
            ["WatchEntries live events/s (one stream)", ev, ">= 50,000", verdict(ev >= 5e4)]
        )
        rows.append(["  bare state-bus SUB, same writes (events/s)", bare_ev, "", ""])
        rows.append(["  watch / bare SUB", ratio(ev, bare_ev), "", ""])
        rows.append(["WatchEntries catch-up events/s", cu, ">= 50,000", verdict(cu >= 5e4)])
        if watchers:
            p99, connected_s, rss, lost = await ws_fanout(stack, http, watchers, ws_updates)
            rows.append([f"WebSocket watchers connected ({watchers})", connected_s, "s", ""])
            rows.append(
                [f"  an update to {watchers} watchers, p99 (ms)", p99, "< 100", verdict(p99 < 100)]
            )
            rows.append(["  watchers without the update", lost, "0", verdict(lost == 0)])
            rows.append(["  gateway RSS with them open (MiB)", rss, "", ""])
        rows.append(["gateway RSS after run (MiB)", memory_kb(stack.gateway.pid)[0] / 1024, "", ""])
    finally:
        for session in sessions:
            await session.close()
        await gw_ch.close()
        await echo_ch.close()
        await bus.close()
    print(
        f"\nplantd gateway (auth on, CURVE on, SQLite state; {INFLIGHT} in flight; {reps} rep(s)"
        f" x {duration}s, medians)"
    )
    print(table(["cell", "value", "target", ""], rows))
    return 0


async def ws_fanout(
    stack: Stack, http: Any, watchers: int, rounds: int
) -> tuple[float, float, float, int]:
    """``watchers`` WebSockets watching one key of the scope, held by a process of their own
    (bench/_ws_watchers.py); ``rounds`` writes, each once the last reached every watcher; each
    watcher's delay from sending a write to its event: (p99 ms over all rounds, seconds to
    connect them all, gateway RSS MiB with them open, watchers that did not get every event)."""
    url = f"http://127.0.0.1:{stack.rest_port}/v1/state/scopes/{SCOPE}/entries:watch?keyPrefix=ws"
    auth = {"Authorization": f"Bearer {stack.token}"}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._ws_watchers",
        url,
        str(watchers),
        str(rounds),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        limit=64 * 1024 * 1024,  # the result line: every arrival time of every round
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(f"{stack.token}\n".encode())
    await child.stdin.drain()
    child.stdin.close()

    async def line(prefix: str) -> str:
        async with asyncio.timeout(120):
            while True:
                text = (await child.stdout.readline()).decode()
                if not text:
                    raise SystemExit(f"the watchers' process ended (rc {await child.wait()})")
                if text.startswith(prefix):
                    return text[len(prefix) :].strip()

    try:
        connected_s = float(await line("connected "))
        print(f"  {watchers} watchers connected in {connected_s:.1f} s", flush=True)
        rss = memory_kb(stack.gateway.pid)[0] / 1024
        sent: list[float] = []
        pids = (stack.gateway.pid, child.pid)
        cpu_before = [cpu_seconds(pid) for pid in pids]
        for n in range(rounds):
            sent.append(time.perf_counter())
            async with http.put(
                f"http://127.0.0.1:{stack.rest_port}/v1/state/scopes/{SCOPE}/entries/ws1",
                json={"value": str(n)},
                headers=auth,
            ) as r:
                if r.status != 200:
                    raise SystemExit(f"PUT for the fan-out: {r.status} {await r.text()}")
            if await line("round ") != str(n + 1):  # the next once this one reached all
                break
        # CPU per watcher per update, gateway and watchers: which side bounds the p99.
        gateway_us, client_us = (
            (cpu_seconds(pid) - before) / (rounds * watchers) * 1e6
            for pid, before in zip(pids, cpu_before, strict=True)
        )
        print(
            f"  CPU per watcher per update: gateway {gateway_us:.0f} us, "
            f"watchers {client_us:.0f} us",
            flush=True,
        )
        result = json.loads(await line("result "))
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    lost: list[str] = result["lost"]
    if lost:
        print(f"  watchers without every event: {lost}", flush=True)
    arrivals: list[list[float]] = result["arrivals"]
    missing = max((watchers - len(times) for times in arrivals), default=watchers)
    per_round = [[(t - sent[n]) * 1000 for t in times] for n, times in enumerate(arrivals)]
    for n, round_delays in enumerate(per_round):
        if round_delays:
            p50, p99 = percentile(round_delays, 50), percentile(round_delays, 99)
            print(f"  update {n + 1}: p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)
    delays = [d for round_delays in per_round for d in round_delays]
    return percentile(delays, 99) if delays else float("inf"), connected_s, rss, missing


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


async def watch_rate(
    gw: Any, bus: Any, token: str, md: Any, batches: int, sub: Any
) -> tuple[float, float, float]:
    """Events/s one WatchEntries stream delivers while batch-set writes of 100 keys go straight
    on the bus, first to last event received; the baseline is a bare SUB socket on the state
    bus (``sub``) counting the same events in the same run, which bounds what any watch can
    see (the writers' and the state service's rate); then the same changes replayed from
    history by a second stream (start_revision, catch-up pages):
    (live events/s, bare SUB events/s, catch-up events/s)."""
    from plantd.common import contract
    from plantd.v1 import state_pb2 as pb

    call = gw.WatchEntries(pb.WatchEntriesRequest(scope=SCOPE, key_prefix="w"), metadata=md)
    first = await call.read()  # the created response: the watch is live
    assert first.created, first
    want = batches * 100
    seen = 0
    t_first = t_last = 0.0

    async def reader() -> None:
        nonlocal seen, t_first, t_last
        import grpc

        while True:
            msg = await call.read()  # read(), not async for: the first read() fixed the style
            if msg is grpc.aio.EOF:
                return
            if msg.changes and not t_first:
                t_first = time.perf_counter()
            seen += len(msg.changes)
            t_last = time.perf_counter()
            if seen >= want:
                return

    async def write(prefix: str) -> None:
        async def writer(first: int) -> None:  # WRITERS of these, each its batches in turn
            for b in range(first, batches, WRITERS):
                items = [{"key": f"{prefix}{b}-{i}", "value": str(i)} for i in range(100)]
                body = json.dumps({"service": SCOPE, "items": items, "token": token})
                reply = await bus.request(contract.SERVICE_STATE, "batch-set", body)
                if not json.loads(reply[0]).get("success"):
                    raise SystemExit(f"batch-set failed: {reply[0]!r}")

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))

    # The baseline first, on its own (keys "r..."; the watch's prefix is "w"): a bare SUB.
    raw: list[float] = []

    async def raw_reader() -> None:
        while len(raw) < want:
            msg = await sub.recv()
            if msg.topic == SCOPE.encode():
                raw.append(time.perf_counter())

    raw_task = asyncio.create_task(raw_reader())
    await write("r")
    try:
        await asyncio.wait_for(raw_task, 30)
    except TimeoutError:
        raise SystemExit(f"bare SUB: {len(raw)} of {want} events within 30 s") from None
    bare = ratio(len(raw) - 1, raw[-1] - raw[0])
    print(f"  bare SUB: {len(raw)} events in {(raw[-1] - raw[0]) * 1000:.0f} ms", flush=True)

    task = asyncio.create_task(reader())
    await write("w")
    try:
        await asyncio.wait_for(task, 30)
    except TimeoutError:
        raise SystemExit(f"watch: {seen} of {want} events within 30 s") from None
    finally:
        call.cancel()
    print(f"  watch live: {seen} events in {(t_last - t_first) * 1000:.0f} ms", flush=True)
    live = ratio(seen - 1, t_last - t_first)
    # Catch-up: the same changes replayed from history (start_revision), in batched pages.
    import grpc

    req = pb.WatchEntriesRequest(scope=SCOPE, key_prefix="w", start_revision=first.revision)
    again = gw.WatchEntries(req, metadata=md)
    t0, n = time.perf_counter(), 0
    while n < want:
        msg = await again.read()
        if msg is grpc.aio.EOF:
            raise SystemExit(f"watch catch-up ended after {n} of {want} events")
        n += len(msg.changes)
    catchup = ratio(n, time.perf_counter() - t0)
    again.cancel()
    return live, bare, catchup


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one short repetition per cell")
    ap.add_argument("--reps", type=int, help="repetitions per cell (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds measured per cell (default 2)")
    ap.add_argument(
        "--ws-watchers", type=int, default=5000, help="WebSocket watchers for the fan-out cell"
    )
    ap.add_argument(
        "--ws-updates", type=int, help="updates sent to the watchers (default 5, quick 2)"
    )
    ap.add_argument(
        "--gateway-args",
        default="",
        help="extra plantd gateway options, e.g. '--watch-resync-ms 600000'",
    )
    ap.add_argument("--role", choices=("echo", "rest-echo"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role == "echo":
        return role_echo(a.port)
    if a.role == "rest-echo":
        return role_rest_echo(a.port)
    reps = a.reps or (1 if a.quick else 3)
    duration = a.duration or (1.0 if a.quick else 2.0)
    warmup = 0.3 if a.quick else 0.5
    t0 = time.monotonic()
    print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        echo_port = free_port()
        cmd = [sys.executable, "-m", "bench.gateway", "--role", "echo", "--port", str(echo_port)]
        echo = subprocess.Popen(cmd)
        rest_echo_port = free_port()
        rest_cmd = [*cmd[:3], "--role", "rest-echo", "--port", str(rest_echo_port)]
        rest_echo = subprocess.Popen(rest_cmd)
        stack = Stack(Path(tmp), shlex.split(a.gateway_args))
        try:
            rc = asyncio.run(
                measure(
                    stack,
                    echo_port,
                    echo.pid,
                    rest_echo_port,
                    rest_echo.pid,
                    duration,
                    warmup,
                    reps,
                    a.ws_watchers,
                    a.ws_updates or (2 if a.quick else 5),
                )
            )
        finally:
            stack.close()
            for proc in (echo, rest_echo):
                proc.terminate()
                proc.wait(10)
    print(f"loadavg after: {Path('/proc/loadavg').read_text().strip()}")
    print(f"({time.monotonic() - t0:.0f} s)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
