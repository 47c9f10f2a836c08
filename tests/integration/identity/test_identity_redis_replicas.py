"""Two identity replicas on one real redis-server behind a real broker (CURVE on).

Stateless replicas: sessions rotate across both, a replayed refresh token revokes its family
whichever replica sees it; enrolment of machine identities (admin and one-time join token) lands
in the registry file (0600) and in ``modules/registry`` in interface 1's shape; break-glass
tokens minted offline by ``python -m plantd.identity.breakglass`` are accepted and audited
loudly, and a token from another key is not.
"""

from __future__ import annotations

import json
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from identitykit import ADMIN, ADMIN_PASSWORD, BusTap, Identity, identity_process, write_bootstrap
from tests.kit import PYTHON, BrokerProcess, RedisServer, ServiceProcess, require_redis, wait_for

from plantd.identity import breakglass

pytestmark = pytest.mark.integration

AUDIT = b"audit"
KEY_A = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
KEY_B = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"


def _ip() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


@pytest.fixture(scope="module")
def redis(workdir: Path) -> Iterator[RedisServer]:
    require_redis()
    server = RedisServer(workdir / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bg_dir(workdir: Path) -> Path:
    breakglass.generate(workdir / "bg")
    return workdir / "bg"


@pytest.fixture(scope="module")
def registry_file(workdir: Path) -> Path:
    d = workdir / "reg"
    d.mkdir(mode=0o700)
    return d / "registry.json"


@pytest.fixture(scope="module")
def replicas(
    workdir: Path,
    broker: BrokerProcess,
    jwt_dir: Path,
    redis: RedisServer,
    bg_dir: Path,
    registry_file: Path,
) -> Iterator[list[ServiceProcess]]:
    boot = write_bootstrap(workdir / "bootstrap.json")
    procs = []
    try:
        for i in range(2):
            p = identity_process(
                workdir,
                broker,
                jwt_dir=jwt_dir,
                data_dir=workdir / f"data{i}",
                name=f"identity{i}",
                extra=[
                    "--store", "redis",
                    "--redis-url", redis.url,
                    "--bootstrap-file", str(boot),
                    "--registry-file", str(registry_file),
                    "--break-glass-key-file", str(bg_dir / breakglass.PUBLIC_NAME),
                    "--login-source-burst", "1000",
                ],
            )  # fmt: skip
            procs.append(p)
            p.start().wait_ready()
        yield procs
    finally:
        for p in procs:
            code = p.stop()
            assert code == 0, f"{p.name} exited {code}:\n{p.log()}"


@pytest.fixture(scope="module")
def idc(broker: BrokerProcess, replicas: list[ServiceProcess]) -> Iterator[Identity]:
    c = Identity(broker)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def admin(idc: Identity) -> str:
    doc = idc.login(ADMIN, ADMIN_PASSWORD, ip_address=_ip())
    assert doc["success"], doc
    return str(doc["access_token"])


@pytest.fixture(scope="module")
def tap(broker: BrokerProcess, idc: Identity) -> Iterator[BusTap]:
    assert broker.keys_dir is not None
    t = BusTap(broker.bus("event")[1], broker.keys_dir, (AUDIT,))
    try:

        def seen() -> bool:
            idc.login(f"probe-{uuid.uuid4().hex[:8]}", "x", ip_address=_ip())
            return bool(t.events(AUDIT))

        wait_for(seen, 20, "the first audit event on the event bus", interval=0.2)
        yield t
    finally:
        t.close()


def test_sessions_rotate_across_replicas_and_replay_revokes_the_family(
    idc: Identity, replicas: list[ServiceProcess]
) -> None:
    login = idc.login(ADMIN, ADMIN_PASSWORD, ip_address=_ip())
    first = refresh = login["refresh_token"]
    for _ in range(6):  # credit-based dispatch spreads these over both workers
        doc = idc.call("auth", "refresh", {"refresh_token": refresh})
        assert doc["success"], doc
        refresh = doc["refresh_token"]
    replay = idc.call("auth", "refresh", {"refresh_token": first})
    assert replay["code"] == "REFRESH_FAILED"
    latest = idc.call("auth", "refresh", {"refresh_token": refresh})
    assert latest["code"] == "REFRESH_FAILED", "the replay revoked the whole family"
    assert idc.call("auth", "validate", {"token": login["access_token"]})["valid"] is False
    assert all(p.alive() for p in replicas)


def test_enrolment_by_admin_and_join_token_writes_the_registry(
    idc: Identity, admin: str, registry_file: Path, tap: BusTap, broker: BrokerProcess
) -> None:
    grant = {
        "name": "line1-plc",
        "kind": "module",
        "public_key": KEY_A,
        "services": ["org.example.line1.*"],
        "publish": {"event": ["line1."]},
        "permissions": ["state:data:read"],
    }
    hijack = idc.call(
        "modules", "enroll", {**grant, "services": ["org.plantd.State"], "token": admin}
    )
    assert hijack["code"] == "INVALID_REQUEST" and "reserved" in hijack["error"]
    anon = idc.call("modules", "enroll", grant)
    assert anon["code"] == "UNAUTHENTICATED"
    enrolled = idc.ok("modules", "enroll", {**grant, "token": admin})
    assert enrolled["module"]["public_key"] == KEY_A
    again = idc.call("modules", "enroll", {**grant, "name": "other", "token": admin})
    assert again["code"] == "CONFLICT", "one key, one identity"

    joined = idc.ok(
        "modules", "join-token",
        {"token": admin, "name": "press-7", "services": ["org.example.press7"], "ttl_s": 600},
    )  # fmt: skip
    jt = joined["join_token"]
    assert jt.startswith("pld_jt_")
    widened = {"join_token": jt, "public_key": KEY_B, "ip_address": _ip()}
    redeemed = idc.ok("modules", "enroll", widened)
    assert redeemed["module"]["services"] == ["org.example.press7"]
    assert redeemed["module"]["enrolled_by"].startswith("join:")
    twice = idc.call("modules", "enroll", {**widened, "public_key": KEY_A})
    assert twice["code"] == "UNAUTHENTICATED", "a join token enrols once"

    doc = idc.ok("modules", "registry", {"token": admin})
    names = [e["name"] for e in doc["identities"]]
    assert doc["version"] == 1 and names == ["line1-plc", "press-7"]
    assert set(doc["identities"][0]) == {
        "name", "kind", "public_key", "services", "publish", "permissions"
    }  # fmt: skip

    def on_disk() -> Any:
        return json.loads(registry_file.read_text()) if registry_file.exists() else None

    wait_for(lambda: on_disk() == doc, 10, "the registry file to match modules/registry")
    assert stat.S_IMODE(registry_file.stat().st_mode) == 0o600

    assert idc.ok("modules", "revoke", {"token": admin, "name": "press-7"})["revoked"]
    wait_for(
        lambda: [e["name"] for e in on_disk()["identities"]] == ["line1-plc"],
        10,
        "the revoked identity to leave the registry file",
    )
    assert idc.call("modules", "get", {"token": admin, "name": "press-7"})["code"] == "NOT_FOUND"
    listed = idc.ok("modules", "list", {"token": admin})
    assert listed["total"] == 1

    def audited() -> list[dict[str, Any]]:
        return [e for e in tap.events(AUDIT) if e["action"] == "modules.enroll"]

    wait_for(
        lambda: (
            {e["detail"].get("via") for e in audited() if e["decision"] == "allow"}
            == {"admin", "join_token"}
        ),
        10,
        "enrolments audited",
    )
    reasons = {e["reason"] for e in audited() if e["decision"] == "deny"}
    assert {"JOIN_TOKEN_INVALID", "NO_TOKEN"} <= reasons, reasons


def test_break_glass_token_is_accepted_and_audited_loudly(
    idc: Identity, bg_dir: Path, tap: BusTap, workdir: Path, replicas: list[ServiceProcess]
) -> None:
    out = subprocess.run(
        [PYTHON, "-m", "plantd.identity.breakglass", "mint",
         "--key", str(bg_dir / breakglass.PRIVATE_NAME),
         "--subject", "oncall", "--reason", "identity store lost", "--ttl", "600"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    token = out.stdout.strip()
    listed = idc.call("user", "list", {"token": token})
    assert listed["success"], listed
    too_long = subprocess.run(
        [PYTHON, "-m", "plantd.identity.breakglass", "mint",
         "--key", str(bg_dir / breakglass.PRIVATE_NAME),
         "--subject", "oncall", "--reason", "x", "--ttl", "7200"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert too_long.returncode == 2 and "3600" in too_long.stderr

    breakglass.generate(workdir / "rogue")
    rogue = breakglass.mint(
        breakglass.load_private(workdir / "rogue" / breakglass.PRIVATE_NAME),
        subject="mallory",
        reason="x",
    )
    refused = idc.call("user", "list", {"token": rogue})
    assert refused["code"] == "UNAUTHENTICATED"

    def loud() -> list[dict[str, Any]]:
        return [e for e in tap.events(AUDIT) if e.get("break_glass")]

    events = wait_for(loud, 10, "a break_glass audit event on the bus")
    assert events[0]["actor"] == "breakglass:oncall" and events[0]["target"] == "user.list"
    assert events[0]["detail"]["why"] == "identity store lost"

    def warned() -> list[dict[str, Any]]:
        return [
            line
            for p in replicas
            for line in p.json_lines()
            if line.get("level") == "warning"
            and (line.get("break_glass") is True or line.get("audit", {}).get("break_glass"))
        ]

    wait_for(warned, 10, "the break-glass use logged at warning level")
