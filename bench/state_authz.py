"""State throughput with authorization on vs off, in the same run (issue 8 item 4).

    python -m bench.state_authz            # 3 interleaved repetitions per cell (~2 minutes)
    python -m bench.state_authz --quick    # 1 repetition

Two stacks run side by side, each a broker and one ``plantd state`` worker on the same store
kind (Redis when redis-server is installed, else the embedded SQLite store with
``--sqlite-sync normal``): one with ``--auth off``, one with ``--auth identity`` (JWKS from a
file, so no identity process shares the CPU). Every request, to both stacks, carries the same
ES256 access token minted by the identity service's own issuer with the scoped template
``state:scope:bench:write`` (the slower scoped path of the permission check, not ``*``): the
clients are the same, only the service's setting differs (the original CLI always sends its
token). The authorized worker also asks for the broker's caller frame, as in production.
Cells alternate between the stacks (off, on, off, on, ...) so the shared machine's drift hits
both alike; the figure is the ratio of medians, on / off. Target: >= 0.9 for single-key
requests and 10-key batches at 100 in flight. The load generator is bench.state's (one DEALER,
N in flight), fed bodies that carry the token.
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

import bench.state as base
from bench._procs import cpu_seconds, free_port, stop
from bench._stats import median, ratio, table

CELLS = [("state-get", 1), ("state-set", 1), ("batch-get", 10), ("batch-set", 10)]
INFLIGHT = 100
ISSUER = "plantd-identity"
PERMISSION = f"state:scope:{base.SCOPE}:write"  # write => read on the scope


def mint(jwt_dir: Path) -> tuple[Path, str]:
    """(JWKS file, a token for org.plantd.State valid for the run) from a fresh ES256 key."""
    from plantd.identity.keys import KeyRing, generate
    from plantd.identity.tokens import Issuer

    generate(jwt_dir)
    ring = KeyRing.from_dir(jwt_dir)
    jwks = jwt_dir / "jwks.json"
    jwks.write_text(json.dumps(ring.jwks()))
    token = (
        Issuer(ring, issuer=ISSUER, access_ttl_s=3600)
        .access(
            subject="1",
            audience=["org.plantd.State"],
            now=time.time(),
            claims={"permissions": [PERMISSION]},
        )
        .token
    )
    return jwks, token


def role_load(token: str, args: list[str]) -> None:
    """bench.state's load generator, with ``token`` in every request body."""
    plain = base._body

    def body(op: str, slot: int, nkeys: int) -> bytes:
        doc = json.loads(plain(op, slot, nkeys))
        doc["token"] = token
        return json.dumps(doc, separators=(",", ":")).encode()

    base._body = body  # this process is only the load generator: patch its body builder
    a = base.main(["--role", "load", *args])
    raise SystemExit(a)


class StateStack:
    def __init__(self, auth: bool, store: str, redis_url: str, data: Path, jwks: Path) -> None:
        self.auth = auth
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.procs = [base._spawn(base._role("broker", "--endpoint", self.endpoint))]
        cmd = [
            base.PY, "-m", "plantd.state", "--no-curve", "--http-port", "0",
            "--broker-endpoint", self.endpoint, "--log-level", "error",
            "--credit", str(base.CREDIT), "--store", store,
            "--bus-endpoint", f"tcp://127.0.0.1:{free_port()}",
            "--event-bus-endpoint", f"tcp://127.0.0.1:{free_port()}",
            "--event-sub-endpoint", f"tcp://127.0.0.1:{free_port()}",
            "--data-dir", str(data / ("on" if auth else "off")),
            "--sqlite-sync", "normal",
            "--auth", "identity" if auth else "off",
            "--jwks-file", str(jwks),
        ]  # fmt: skip
        if store == "redis":
            cmd += ["--redis-url", redis_url, "--redis-prefix", f"authz{int(auth)}:"]
        self.procs.append(base._spawn(cmd))
        base._wait(self.endpoint, base.STATE)
        base._wait_workers(self.endpoint, base.STATE, 1)

    def run(self, token: str, op: str, nkeys: int, duration: float, warmup: float) -> Any:
        pids = [p.pid for p in self.procs]
        before = [cpu_seconds(p) for p in pids]
        args = [
            "--endpoint", self.endpoint, "--service", base.STATE.decode(), "--op", op,
            "--keys", str(nkeys), "--inflight", str(INFLIGHT),
            "--duration", str(duration), "--warmup", str(warmup),
        ]  # fmt: skip
        cmd = [base.PY, "-m", "bench.state_authz", "--role", "load"]
        cmd += ["--token", token, "--", *args]
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        out, _ = load.communicate(timeout=duration + warmup + 60)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        total = max(1, int(result["total"]))
        used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
        result["cpu_broker_us"] = used[0] / total * 1e6
        result["cpu_worker_us"] = used[1] / total * 1e6
        return result

    def close(self) -> None:
        stop(self.procs[1:])
        stop(self.procs[:1])


def orchestrate(quick: bool, reps: int | None, duration: float | None, store: str) -> int:
    reps = reps or (1 if quick else 3)
    duration = duration or (1.0 if quick else 1.5)
    warmup = 0.3 if quick else 0.5
    signal.signal(signal.SIGTERM, base._interrupt)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-authz-") as tmp:
        work = Path(tmp)
        jwks, token = mint(work / "jwt")
        redis = base.RedisServer(work) if store == "redis" else None
        url = redis.url if redis is not None else ""
        stacks: list[StateStack] = []
        try:
            off = StateStack(False, store, url, work, jwks)
            stacks.append(off)
            on = StateStack(True, store, url, work, jwks)
            stacks.append(on)
            rows = []
            for op, nkeys in CELLS:
                got: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
                for _ in range(reps):
                    for s in (off, on):
                        got[s.auth].append(s.run(token, op, nkeys, duration, warmup))
                bad = [r for rs in got.values() for r in rs if r["errors"]]
                if bad:
                    raise SystemExit(f"{op}: error replies in a cell (token refused?): {bad[0]}")
                unit = 1 if nkeys == 1 else nkeys
                r_off = median(r["rps"] for r in got[False]) * unit
                r_on = median(r["rps"] for r in got[True]) * unit
                w_off = median(r["cpu_worker_us"] for r in got[False])
                w_on = median(r["cpu_worker_us"] for r in got[True])
                rows.append(
                    [
                        f"{op} x{nkeys}",
                        f"{r_off:,.0f}",
                        f"{r_on:,.0f}",
                        f"{ratio(r_on, r_off):.2f}",
                        f"{w_off:.0f} / {w_on:.0f}",
                        f"{median(r['p99_ms'] for r in got[False]):.1f} / "
                        f"{median(r['p99_ms'] for r in got[True]):.1f}",
                    ]
                )
        finally:
            for s in stacks:
                s.close()
            if redis is not None:
                redis.close()
    unit_note = "keys/s for batches, req/s for single keys"
    print(
        f"state authorization on vs off ({store} store, {INFLIGHT} in flight, {reps} rep(s) x "
        f"{duration}s, medians; {unit_note}; target on/off >= 0.90)"
    )
    print(
        table(
            ["cell", "auth off", "auth on", "on/off", "worker CPU us/req off/on", "p99 ms off/on"],
            rows,
        )
    )
    print(f"({time.monotonic() - t0:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["--role", "load"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--role")
        ap.add_argument("--token", default="")
        ap.add_argument("rest", nargs=argparse.REMAINDER)
        a = ap.parse_args(argv)
        rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
        if a.token:
            role_load(a.token, rest)
        return base.main(["--role", "load", *rest])
    ap = argparse.ArgumentParser(
        prog="python -m bench.state_authz",
        description="org.plantd.State throughput with --auth identity vs --auth off, same run",
    )
    ap.add_argument("--quick", action="store_true", help="one short repetition per cell")
    ap.add_argument("--reps", type=int, help="repetitions per cell (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds measured per cell (default 1.5)")
    ap.add_argument("--store", choices=("redis", "sqlite"), help="default: redis if installed")
    a = ap.parse_args(argv)
    import shutil

    store = a.store or ("redis" if shutil.which("redis-server") else "sqlite")
    return orchestrate(a.quick, a.reps, a.duration, store)


if __name__ == "__main__":
    sys.exit(main())
