"""Identity benchmark: logins/s (argon2-bound) and offline token verifications/s.

    python -m bench.identity            # ~40 s
    python -m bench.identity --quick    # ~15 s

Measured in one process (no broker: these are the costs the identity worker and every
verifying service pay per request; the MDP round trip is bench.broker's subject):

  argon2id hashes/s      the raw cost at the configured parameters (printed), 1 thread
  logins/s               IdentityService.handle(auth/login) on the embedded SQLite store,
                         N concurrent logins, the hash pool at --hash-workers threads
  verify (no cache)      Verifier.verify(token, use_cache=False): header, ES256/EdDSA
                         signature, claims; over 1,000 distinct tokens
  verify (cache hit)     the same tokens again through the verified-claims cache
  ratio                  cache / no cache (the reason the cache exists: a state service
                         checks every request offline)

Then, unless --skip-state, the state service's throughput with ``--auth identity`` vs
``--auth off`` in the same run (``bench.state_authz``: real brokers and state workers, target
on/off >= 0.9 for single keys and 10-key batches at 100 in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from bench._stats import fmt, ratio, table
from plantd.common.auth import Verifier
from plantd.identity.bootstrap import ensure_admin
from plantd.identity.keys import KeyRing, generate
from plantd.identity.model import User
from plantd.identity.passwords import Hasher
from plantd.identity.service import Config, IdentityService
from plantd.identity.sqlite_store import SqliteStore
from plantd.identity.throttle import Bucket
from plantd.identity.tokens import Issuer

PASSWORD = "benchmark passphrase that is long enough"


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def bench_hash(hasher: Hasher, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        hasher.verify_sync(None, PASSWORD)
        n += 1
    return _rate(n, time.perf_counter() - t0)


async def bench_logins(tmp: Path, hasher: Hasher, seconds: float, in_flight: int) -> float:
    generate(tmp / "jwt")
    store = SqliteStore(tmp / "data")
    await store.open()
    boot = tmp / "boot.json"
    boot.write_text(
        json.dumps(
            {"username": "bench", "email": "b@bench.example", "password": PASSWORD,
             "must_change_password": False}
        )
    )  # fmt: skip
    os.chmod(boot, 0o600)
    await ensure_admin(store, hasher, store.data_dir, bootstrap_file=boot)
    # One account per login in flight: the per-account backoff counts an attempt before its
    # verify (so parallel guesses cannot beat it), and more than backoff_free_failures
    # concurrent logins of ONE account are slowed by design. This measures the login path.
    now = time.time()
    password_hash = await hasher.hash(PASSWORD)
    for i in range(in_flight):
        user = User(0, f"bench{i}", f"b{i}@bench.example", password_hash, created_at=now,
                    updated_at=now)  # fmt: skip
        await store.create_user(user)
    # Buckets wide open: this measures the login path, not the limiter refusing it.
    cfg = Config(source_bucket=Bucket(1e9, 1e9), global_bucket=Bucket(1e9, 1e9))
    svc = IdentityService(store, KeyRing.from_dir(tmp / "jwt"), hasher, config=cfg)
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        nonlocal done
        body = json.dumps({"identifier": f"bench{i}", "password": PASSWORD}).encode()
        while time.perf_counter() < deadline:
            reply = await svc.handle([b"auth", b"login", body])
            assert b'"success":true' in reply[0], reply
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(in_flight)))
    elapsed = time.perf_counter() - t0
    await store.close()
    return _rate(done, elapsed)


def bench_verify(tmp: Path, alg: str, seconds: float) -> tuple[float, float]:
    generate(tmp / f"jwt-{alg}", alg=alg)
    ring = KeyRing.from_dir(tmp / f"jwt-{alg}")
    issuer = Issuer(ring, issuer="plantd-identity", access_ttl_s=900)
    now = time.time()
    claims = {"permissions": ["state:data:read", "state:scope:line1:write"], "roles": ["dev"]}
    tokens = [
        issuer.access(subject=f"u{i}", audience=["org.plantd.State"], now=now, claims=claims).token
        for i in range(1000)
    ]
    v = Verifier(issuer="plantd-identity", audience="org.plantd.State", jwks=ring.jwks())
    rates = []
    for use_cache in (False, True):
        if use_cache:
            for t in tokens:
                v.verify(t)  # fill the cache
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for t in tokens:
                v.verify(t, use_cache=use_cache)
            n += len(tokens)
        rates.append(_rate(n, time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter cells")
    ap.add_argument("--hash-workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--in-flight", type=int, default=8)
    ap.add_argument(
        "--skip-state", action="store_true", help="leave out state with authorization on vs off"
    )
    args = ap.parse_args()
    cell = 2.0 if args.quick else 6.0
    hasher = Hasher(workers=args.hash_workers)
    p = hasher.params
    print(
        f"argon2id m={p['m_kib']} KiB t={p['t']} p={p['p']} (OWASP); "
        f"hash pool {args.hash_workers} threads; {args.in_flight} logins in flight; "
        f"{os.cpu_count()} CPUs"
    )
    rows: list[list[object]] = []
    rows.append(["argon2id verify, 1 thread", fmt(bench_hash(hasher, cell), 1), "/s"])
    with tempfile.TemporaryDirectory(prefix="bench-identity-") as d:
        tmp = Path(d)
        logins = asyncio.run(bench_logins(tmp, hasher, cell, args.in_flight))
        rows.append(["auth/login (SQLite store)", fmt(logins, 1), "/s"])
        for alg in ("ES256", "EdDSA"):
            cold, warm = bench_verify(tmp, alg, cell / 2)
            rows.append([f"verify {alg}, no cache", fmt(cold, 0), "/s"])
            rows.append([f"verify {alg}, claims cache hit", fmt(warm, 0), "/s"])
            rows.append([f"  ratio cache / no cache ({alg})", fmt(ratio(warm, cold), 1), "x"])
    hasher.close()
    print(table(["measurement", "value", "unit"], rows))
    if not args.skip_state:
        import bench.state_authz

        print()
        code = bench.state_authz.main(["--quick"] if args.quick else [])
        if code:
            raise SystemExit(code)


if __name__ == "__main__":
    main()
