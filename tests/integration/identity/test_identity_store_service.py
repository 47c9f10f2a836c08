"""The SQLite store under the service, in-process (real files, real SQLite locking).

Two store instances on one file stand for two replicas: their conditional writes must stay
atomic across connections (refresh rotation, buckets, failure counters).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from plantd.identity import totp
from plantd.identity.bootstrap import SETUP_TOKEN_FILE, BootstrapError, ensure_admin
from plantd.identity.keys import KeyRing, generate
from plantd.identity.model import RefreshRecord, User, new_family
from plantd.identity.passwords import Hasher
from plantd.identity.service import Config, IdentityService
from plantd.identity.sqlite_store import SqliteStore
from plantd.identity.throttle import Backoff, Bucket
from plantd.identity.tokens import new_refresh_token, refresh_hash

pytestmark = pytest.mark.integration

PASSWORD = "a sufficiently long passphrase for tests"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def hasher() -> Hasher:
    return Hasher(memory_kib=8192, time_cost=1, workers=2)


class Svc:
    def __init__(self, service: IdentityService) -> None:
        self.s = service

    async def __call__(self, category: str, op: str, body: dict[str, Any] | None = None) -> Any:
        reply = await self.s.handle(
            [category.encode(), op.encode(), json.dumps(body or {}).encode()]
        )
        return json.loads(reply[0])


async def test_files_are_private_and_wal(store: SqliteStore) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.data_dir.stat().st_mode) == 0o700
    await store.set_meta("k", "v")
    wal = store.path.with_name("identity.db-wal")
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600


async def test_rotation_is_one_atomic_write_across_replicas(tmp_path: Path) -> None:
    a, b = SqliteStore(tmp_path / "data"), SqliteStore(tmp_path / "data")
    await a.open()
    await b.open()
    try:
        for _ in range(10):
            old = new_refresh_token()
            rec = RefreshRecord(refresh_hash(old), new_family(), "1", ("aud",), 0.0, 1e12)
            await a.add_refresh(rec)
            news = [
                RefreshRecord(refresh_hash(new_refresh_token()), "", "", (), 1.0, 1e12)
                for _ in range(2)
            ]
            results = await asyncio.gather(
                a.rotate_refresh(rec.hash, news[0], 1.0), b.rotate_refresh(rec.hash, news[1], 1.0)
            )
            outcomes = sorted(r.outcome for r in results)
            assert outcomes == ["reused", "rotated"], outcomes
            # the winner's new token died with the family
            for n in news:
                again = await a.rotate_refresh(
                    n.hash, RefreshRecord(refresh_hash(new_refresh_token()), "", "", (), 2, 1e12), 2
                )
                assert again.outcome in ("revoked", "unknown")
    finally:
        await a.close()
        await b.close()


async def test_buckets_are_exact_across_replicas(tmp_path: Path) -> None:
    a, b = SqliteStore(tmp_path / "data"), SqliteStore(tmp_path / "data")
    await a.open()
    await b.open()
    try:
        bucket = Bucket(capacity=20, rate=0.001)
        takes = [s.take_token("src:x", bucket, 100.0) for s in (a, b) for _ in range(25)]
        results = await asyncio.gather(*takes)
        assert sum(ok for ok, _ in results) == 20
        fails = [s.record_failure("acct:y", 1.0) for s in (a, b) for _ in range(15)]
        counts = await asyncio.gather(*fails)
        assert sorted(counts) == list(range(1, 31))
    finally:
        await a.close()
        await b.close()


async def test_setup_token_bootstrap_forces_a_password_change(
    store: SqliteStore, hasher: Hasher, tmp_path: Path
) -> None:
    assert await ensure_admin(store, hasher, store.data_dir) == "setup-token"
    assert await ensure_admin(store, hasher, store.data_dir) is None, "only while no user exists"
    token_file = store.data_dir / SETUP_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    setup = token_file.read_text().strip()
    generate(tmp_path / "jwt")
    svc = Svc(IdentityService(store, KeyRing.from_dir(tmp_path / "jwt"), hasher))
    login = await svc("auth", "login", {"identifier": "admin", "password": setup})
    assert login["success"] and login["password_change_required"] is True
    blocked = await svc("user", "list", {"token": login["access_token"]})
    assert blocked["code"] == "PASSWORD_CHANGE_REQUIRED"
    weak = await svc(
        "auth",
        "change_password",
        {"identifier": "admin", "current_password": setup, "new_password": "password1234567"},
    )
    assert weak["code"] == "PASSWORD_REJECTED"
    changed = await svc(
        "auth",
        "change_password",
        {"identifier": "admin", "current_password": setup, "new_password": PASSWORD},
    )
    assert changed["success"], changed
    assert (await svc("auth", "validate", {"token": login["access_token"]}))["valid"] is False
    again = await svc("auth", "login", {"identifier": "admin", "password": PASSWORD})
    listed = await svc("user", "list", {"token": again["access_token"]})
    assert listed["success"] and listed["total"] == 1
    assert (await svc("auth", "login", {"identifier": "admin", "password": setup}))["code"] == (
        "LOGIN_FAILED"
    )


async def test_bootstrap_file_must_be_private(
    store: SqliteStore, hasher: Hasher, tmp_path: Path
) -> None:
    path = tmp_path / "boot.json"
    path.write_text(json.dumps({"username": "boss", "email": "b@x.org", "password": PASSWORD}))
    os.chmod(path, 0o644)
    with pytest.raises(BootstrapError, match="chmod 600"):
        await ensure_admin(store, hasher, store.data_dir, bootstrap_file=path)
    os.chmod(path, 0o600)
    assert await ensure_admin(store, hasher, store.data_dir, bootstrap_file=path) == "file"
    boss = await store.find_login("BOSS")
    assert boss is not None and boss.operator_critical and boss.roles == ["admin"]


async def test_login_rehashes_when_parameters_change(store: SqliteStore, tmp_path: Path) -> None:
    old = Hasher(memory_kib=8192, time_cost=1, workers=1)
    user = await store.create_user(
        User(0, "ops", "ops@x.org", password_hash=old.hash_sync(PASSWORD), created_at=1.0)
    )
    assert user.id > 0
    generate(tmp_path / "jwt")
    new = Hasher(memory_kib=9216, time_cost=2, workers=1)
    svc = Svc(IdentityService(store, KeyRing.from_dir(tmp_path / "jwt"), new))
    assert (await svc("auth", "login", {"identifier": "ops", "password": PASSWORD}))["success"]
    stored = (await store.get_user(user_id=user.id)).password_hash  # type: ignore[union-attr]
    assert stored is not None and "m=9216,t=2" in stored
    assert (await svc("auth", "login", {"identifier": "ops", "password": PASSWORD}))["success"]


async def test_deactivation_and_service_accounts(
    store: SqliteStore, hasher: Hasher, tmp_path: Path
) -> None:
    generate(tmp_path / "jwt")
    service = IdentityService(store, KeyRing.from_dir(tmp_path / "jwt"), hasher)
    svc = Svc(service)
    boot = tmp_path / "boot.json"
    boot.write_text(json.dumps({"username": "boss", "email": "b@x.org", "password": PASSWORD,
                                "must_change_password": False}))  # fmt: skip
    os.chmod(boot, 0o600)
    await ensure_admin(store, hasher, store.data_dir, bootstrap_file=boot)
    admin = (await svc("auth", "login", {"identifier": "boss", "password": PASSWORD}))[
        "access_token"
    ]
    await svc(
        "role", "create", {"token": admin, "name": "module", "permissions": ["state:data:write"]}
    )
    sa = await svc(
        "service_account", "create", {"token": admin, "name": "line-plc", "roles": ["module"]}
    )
    assert sa["success"] and sa["client_secret"].startswith("pld_sa_")
    tok = await svc(
        "auth",
        "token",
        {
            "client_id": "line-plc",
            "client_secret": sa["client_secret"],
            "audience": "org.plantd.State",
        },
    )
    assert tok["success"] and "refresh_token" not in tok
    who = await svc("auth", "validate", {"token": tok["access_token"]})
    assert who["permissions"] == ["state:data:write"] and who["audience"] == ["org.plantd.State"]
    wrong = await svc("auth", "token", {"client_id": "line-plc", "client_secret": "pld_sa_nope"})
    assert (wrong["code"], wrong["error"]) == ("LOGIN_FAILED", "invalid credentials")
    # a service account cannot log in with a password
    assert (
        await svc("auth", "login", {"identifier": "line-plc", "password": sa["client_secret"]})
    )["code"] == "LOGIN_FAILED"
    # deactivation ends its sessions at once and blocks new ones
    sa_id = sa["service_account"]["id"]
    assert (await svc("user", "deactivate", {"token": admin, "user_id": sa_id}))["success"]
    assert (await svc("auth", "validate", {"token": tok["access_token"]}))["valid"] is False
    assert (await store.get_not_before(str(sa_id))) > 0
    again = await svc(
        "auth", "token", {"client_id": "line-plc", "client_secret": sa["client_secret"]}
    )
    assert again["code"] == "LOGIN_FAILED"
    assert service.audit.denials >= 2


async def test_parallel_guesses_on_two_replicas_cannot_beat_the_backoff(
    tmp_path: Path, hasher: Hasher
) -> None:
    generate(tmp_path / "jwt")
    ring = KeyRing.from_dir(tmp_path / "jwt")
    stores = [SqliteStore(tmp_path / "data"), SqliteStore(tmp_path / "data")]
    for s in stores:
        await s.open()
    try:
        await stores[0].create_user(
            User(0, "victim", "v@x.org", password_hash=hasher.hash_sync(PASSWORD), created_at=1.0)
        )
        cfg = Config(source_bucket=Bucket(1e6, 1e6), backoff=Backoff(free_failures=3))
        replicas = [Svc(IdentityService(s, ring, hasher, config=cfg)) for s in stores]
        body = {"identifier": "victim", "password": "a wrong but long guess"}
        replies = await asyncio.gather(*(replicas[i % 2]("auth", "login", body) for i in range(12)))
        errors = sorted(r["error"].split(";")[0] for r in replies)
        guessed = [e for e in errors if e == "invalid credentials"]
        assert len(guessed) == 3, errors  # the free failures, no more, however parallel
        assert all(e.startswith("too many failed attempts") for e in errors if e not in guessed)
    finally:
        for s in stores:
            await s.close()


async def test_totp_second_factor_with_replay_protection(
    store: SqliteStore, hasher: Hasher, tmp_path: Path
) -> None:
    generate(tmp_path / "jwt")
    now = [time.time()]  # the service's clock, so the test never straddles a 30 s step
    service = IdentityService(
        store, KeyRing.from_dir(tmp_path / "jwt"), hasher, clock=lambda: now[0]
    )
    svc = Svc(service)
    await store.create_user(
        User(0, "jane", "j@x.org", password_hash=hasher.hash_sync(PASSWORD), created_at=1.0)
    )
    creds = {"identifier": "jane", "password": PASSWORD}
    token = (await svc("auth", "login", creds))["access_token"]
    enrol = await svc("auth", "totp_enroll", {"token": token})
    secret = enrol["secret"]
    assert enrol["otpauth_uri"].startswith("otpauth://totp/")
    assert (await svc("auth", "login", creds))["success"], "until confirmed no code is needed"
    step = int(now[0] // 30)
    first = totp.code_at(secret, step - 1)
    assert (await svc("auth", "totp_confirm", {"token": token, "code": first}))["success"]
    need = await svc("auth", "login", creds)
    assert need["code"] == "LOGIN_FAILED" and "one-time code is required" in need["error"]
    replay = await svc("auth", "login", {**creds, "totp": first})
    assert replay["code"] == "LOGIN_FAILED", "a code used once must not work again"
    assert (await svc("auth", "login", {**creds, "totp": totp.code_at(secret, step + 5)}))[
        "code"
    ] == "LOGIN_FAILED"
    now[0] += 2  # three failures so far: the backoff wants a second's pause
    fresh = totp.code_at(secret, step)
    assert (await svc("auth", "login", {**creds, "totp": fresh}))["success"]
    again = await svc("auth", "login", {**creds, "totp": fresh})
    assert again["code"] == "LOGIN_FAILED" and "already used" in again["error"]
    assert service.audit.denials >= 4
