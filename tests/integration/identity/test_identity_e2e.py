"""org.plantd.Identity as a real process behind a real broker (CURVE on), over real sockets.

Covers the issue's conformance cases in identity's scope: the original's frames and envelopes,
refresh rotation and replay (family revoked), brute-force backoff and buckets, enumeration
timing, revocation reaching an offline verifier over the event bus within 1 s, an audit event
on the event bus for every denial, admin operations needing a token and a permission.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from identitykit import ADMIN, ADMIN_PASSWORD, BusTap, Identity, identity_process
from tests.kit import BrokerProcess, ServiceProcess, http_get, metric_value, wait_for

from plantd.common import contract
from plantd.common.auth import NOT_BEFORE_TOPIC, NotBeforeMap, Reason, TokenError, Verifier, follow
from plantd.common.keys import load_client
from plantd.mdp import Client
from plantd.mdp.codec import Dialect

pytestmark = pytest.mark.integration

AUDIT = b"audit"
PASSWORD = "a sufficiently long passphrase for tests"
WRONG = "not the password at all"


def _ip() -> str:
    """A fresh source per call: the per-source bucket of one test never throttles another."""
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


@pytest.fixture(scope="module")
def tap(broker: BrokerProcess, identity: ServiceProcess) -> Iterator[BusTap]:
    assert broker.keys_dir is not None
    t = BusTap(broker.bus("event")[1], broker.keys_dir, (AUDIT, NOT_BEFORE_TOPIC))
    probe = Identity(broker)
    try:
        # Slow joiner: audited denials until one reaches the tap proves the subscription is up.
        def seen() -> bool:
            probe.login(f"probe-{uuid.uuid4().hex[:8]}", "x", ip_address=_ip())
            return bool(t.events(AUDIT))

        wait_for(seen, 20, "the first audit event on the event bus", interval=0.2)
        yield t
    finally:
        probe.close()
        t.close()


@pytest.fixture(scope="module")
def admin_token(broker: BrokerProcess, identity: ServiceProcess) -> str:
    c = Identity(broker)
    try:
        doc = c.login(ADMIN, ADMIN_PASSWORD, ip_address=_ip())
        assert doc["success"], doc
        return str(doc["access_token"])
    finally:
        c.close()


def _user(idc: Identity, admin_token: str, name: str = "") -> dict[str, Any]:
    name = name or f"u{uuid.uuid4().hex[:10]}"
    data = idc.ok(
        "user",
        "create",
        {
            "token": admin_token,
            "username": name,
            "email": f"{name}@plant.example",
            "password": PASSWORD,
        },
    )
    return dict(data["user"])


def _denials(tap: BusTap, action: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in tap.events(AUDIT)
        if e["action"] == action and e["decision"] == "deny" and e["reason"] == reason
    ]


def _wait_denial(tap: BusTap, action: str, reason: str) -> dict[str, Any]:
    found = wait_for(
        lambda: _denials(tap, action, reason), 5, f"audit deny {action} {reason}", interval=0.05
    )
    return found[-1]


# ---- the original's frames and envelopes --------------------------------------------------------


def test_login_reply_has_both_envelopes_and_validate_answers_whoami(
    idc: Identity, admin_token: str
) -> None:
    doc = idc.login(ADMIN, ADMIN_PASSWORD, ip_address=_ip())
    # The original Go client reads these at the top level and header.success ...
    assert doc["header"]["success"] is True
    assert doc["access_token"].count(".") == 2
    assert doc["refresh_token"].startswith("pld_rt_")
    assert doc["expires_at"] > time.time() + 800
    # ... plantd clients read success/data.
    assert doc["success"] is True and doc["data"]["access_token"] == doc["access_token"]
    who = idc.ok("auth", "validate", {"token": doc["access_token"]})
    assert who["valid"] is True and who["username"] == ADMIN
    assert "system:admin" in who["permissions"] and who["roles"] == ["admin"]
    # The shapes the original Go client's structs decode (a wrong JSON type fails its whole
    # json.Unmarshal): uint ids, RFC 3339 times, role objects whose permissions are a string.
    user = doc["user"]
    assert isinstance(user["id"], int) and user["id"] > 0
    assert isinstance(who["user_id"], int) and who["user_id"] == user["id"]
    assert isinstance(who["expires_at"], int) and isinstance(doc["expires_at"], int)
    assert user["created_at"].endswith("Z") and user["last_login_at"].endswith("Z")
    assert "password_hash" not in user and "hashed_password" not in user
    (role,) = user["roles"]
    assert role["name"] == "admin" and isinstance(role["id"], int)
    assert json.loads(role["permissions"]) == ["system:admin"]
    health = idc.ok("health", "check")
    assert health["status"] == "healthy" and health["db_status"] == "connected"
    # An unknown category is a health check, as in the original.
    assert idc.call("nope", "check")["status"] == "healthy"


def test_metrics_count_requests_by_operation_and_result(
    idc: Identity, identity: ServiceProcess
) -> None:
    idc.login("nobody-metrics", "x", ip_address=_ip())
    status, text = http_get(identity.url + "/metrics")
    assert status == 200
    labels = {"operation": "auth.login", "result": "LOGIN_FAILED"}
    assert metric_value(text, "plantd_identity_requests_total", labels) >= 1
    assert metric_value(text, "plantd_identity_audit_denials") >= 1


def test_the_original_go_client_flow_in_the_legacy_dialect(
    broker: BrokerProcess, idc: Identity, admin_token: str
) -> None:
    """`plant auth login|whoami|refresh|logout` of the original: its exact bodies, its dialect."""
    assert broker.keys_dir is not None
    email = _user(idc, admin_token)["email"]  # logout ends every session of its user
    curve = load_client(broker.keys_dir, contract.CLIENT)
    svc = contract.SERVICE_IDENTITY
    with Client(broker.endpoint, timeout=10, retries=0, dialect=Dialect.LEGACY, curve=curve) as c:

        def call(category: str, op: str, body: dict[str, Any]) -> Any:
            body = {"header": {"request_id": "", "timestamp": int(time.time())}, **body}
            reply = c.request(svc, category, op, json.dumps(body))
            assert len(reply) == 1
            doc = json.loads(reply[0])
            assert doc["header"]["success"] is True, doc  # what the Go client checks
            return doc

        creds = {"identifier": email, "password": PASSWORD, "ip_address": _ip()}
        login = call("auth", "login", creds)
        assert login["access_token"] and login["refresh_token"] and login["expires_at"]
        who = call("auth", "validate", {"token": login["access_token"]})
        assert who["valid"] is True and who["email"] == email
        fresh = call("auth", "refresh", {"refresh_token": login["refresh_token"]})
        assert fresh["access_token"] != login["access_token"]
        call("auth", "logout", {"access_token": fresh["access_token"]})
        gone = call("auth", "validate", {"token": fresh["access_token"]})
        assert gone["valid"] is False  # still success: true, as in the original
        health = call("health", "check", {})
        assert isinstance(health["uptime"], int) and health["services"]


def test_one_bad_request_fails_alone(idc: Identity, tap: BusTap) -> None:
    c = idc.client
    svc = contract.SERVICE_IDENTITY
    bad_json = json.loads(c.request(svc, "auth", "login", "{not json")[0])
    huge_int = json.loads(c.request(svc, "auth", "login", '{"a": ' + "9" * 5000 + "}")[0])
    too_big = json.loads(c.request(svc, "auth", "login", "x" * (65 * 1024))[0])
    four = json.loads(c.request(svc, "auth", "login", "{}", "extra")[0])
    unknown = idc.call("auth", "frobnicate")
    assert bad_json["code"] == huge_int["code"] == too_big["code"] == "INVALID_REQUEST"
    assert "over" in too_big["error"]
    assert four["code"] == "INVALID_MESSAGE"
    assert unknown["code"] == "UNKNOWN_OPERATION"
    assert idc.ok("health", "check")["status"] == "healthy"
    # malformed requests are refusals too: each one is an audit event
    _wait_denial(tap, "invalid", "INVALID_MESSAGE")
    _wait_denial(tap, "invalid", "INVALID_REQUEST")
    _wait_denial(tap, "auth.frobnicate", "UNKNOWN_OPERATION")


# ---- refresh ------------------------------------------------------------------------------------


def test_refresh_rotates_and_replay_revokes_the_family(
    idc: Identity, admin_token: str, tap: BusTap
) -> None:
    user = _user(idc, admin_token)
    first = idc.login(user["username"], PASSWORD, ip_address=_ip())
    second = idc.ok("auth", "refresh", {"refresh_token": first["refresh_token"]})
    assert second["refresh_token"] != first["refresh_token"]
    assert idc.ok("auth", "validate", {"token": second["access_token"]})["valid"] is True
    # Replay of the rotated token: refused, the family is revoked, every session ends.
    replay = idc.call("auth", "refresh", {"refresh_token": first["refresh_token"]})
    assert replay["success"] is False and replay["code"] == "REFRESH_FAILED"
    assert "already used" in replay["error"]
    after = idc.call("auth", "refresh", {"refresh_token": second["refresh_token"]})
    assert after["success"] is False, "the newest token of a replayed family must be dead too"
    revoked = idc.ok("auth", "validate", {"token": second["access_token"]})
    assert revoked == revoked | {"valid": False, "reason": Reason.REVOKED.value}
    event = _wait_denial(tap, "auth.refresh", "REFRESH_REUSE")
    assert event["target"] == str(user["id"])
    bad = idc.call("auth", "refresh", {"refresh_token": "pld_rt_" + "A" * 43})
    assert bad["code"] == "REFRESH_FAILED"
    _wait_denial(tap, "auth.refresh", "REFRESH_UNKNOWN")


# ---- brute force --------------------------------------------------------------------------------


def test_backoff_after_failures_is_the_same_for_unknown_and_known_users(
    idc: Identity, admin_token: str, tap: BusTap
) -> None:
    user = _user(idc, admin_token)
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    for ident in (user["username"], ghost):
        for _ in range(3):  # --backoff-free-failures 3
            doc = idc.login(ident, "wrong password entirely", ip_address=_ip())
            assert (doc["code"], doc["error"]) == ("LOGIN_FAILED", "invalid credentials")
        doc = idc.login(ident, "wrong password entirely", ip_address=_ip())
        assert doc["code"] == "LOGIN_FAILED" and "retry in" in doc["error"], doc
        assert doc["detail"]["retry_after"] > 0
    # While backing off, even the right password waits (the guesser learns nothing).
    doc = idc.login(user["username"], PASSWORD, ip_address=_ip())
    assert "retry in" in doc["error"]
    assert _wait_denial(tap, "auth.login", "BACKOFF")
    assert _denials(tap, "auth.login", "UNKNOWN_USER") and _denials(
        tap, "auth.login", "BAD_PASSWORD"
    )


def test_per_source_bucket_throttles_one_source_only(idc: Identity, tap: BusTap) -> None:
    ip = _ip()
    codes = [
        idc.login(f"nobody-{uuid.uuid4().hex[:8]}", "x", ip_address=ip)["code"] for _ in range(7)
    ]
    assert codes[:5] == ["LOGIN_FAILED"] * 5  # --login-source-burst 5
    assert codes[5:] == ["RATE_LIMITED"] * 2
    limited = idc.login("nobody", "x", ip_address=ip)
    assert limited["detail"]["retry_after"] > 0 and "retry in" in limited["error"]
    other = idc.login(f"nobody-{uuid.uuid4().hex[:8]}", "x", ip_address=_ip())
    assert other["code"] == "LOGIN_FAILED", "another source must not be throttled"
    assert _wait_denial(tap, "auth.login", "RATE_LIMITED_SOURCE")["source"] == ip


def test_unknown_user_timing_is_close_to_known_user_timing(idc: Identity, admin_token: str) -> None:
    users = [_user(idc, admin_token)["username"] for _ in range(6)]

    def timed(ident: str, password: str = WRONG) -> float:
        t0 = time.perf_counter()
        doc = idc.login(ident, password, ip_address=_ip())
        elapsed = time.perf_counter() - t0
        assert doc["code"] in ("LOGIN_FAILED", "INVALID_REQUEST"), doc
        return elapsed

    known: list[float] = []
    unknown: list[float] = []
    baseline: list[float] = []
    for i in range(12):  # interleaved, so load on the shared box hits both alike
        known.append(timed(users[i % 6]))  # 2 attempts per user: below the backoff
        unknown.append(timed(f"nobody-{uuid.uuid4().hex[:10]}"))
        baseline.append(timed("x", ""))  # refused before any hashing
    k, u, b = statistics.median(known), statistics.median(unknown), statistics.median(baseline)
    # The test means something only if the hash dominates a login (it does: argon2id at OWASP
    # parameters, ~16 ms here, against a ~2-5 ms round trip).
    assert k > 1.5 * b, f"known {k * 1000:.1f} ms vs no-hash {b * 1000:.1f} ms"
    assert 0.5 < u / k < 2.0, f"unknown {u * 1000:.1f} ms vs known {k * 1000:.1f} ms"


# ---- admin operations ---------------------------------------------------------------------------


def test_admin_operations_need_a_token_and_the_permission(
    idc: Identity, admin_token: str, tap: BusTap
) -> None:
    body = {"username": "mallory", "email": "m@plant.example", "password": PASSWORD}
    anon = idc.call("user", "create", body)
    assert anon["code"] == "UNAUTHENTICATED" and "plant auth login" in anon["error"]
    _wait_denial(tap, "user.create", "NO_TOKEN")
    plain = _user(idc, admin_token)
    token = idc.login(plain["username"], PASSWORD, ip_address=_ip())["access_token"]
    denied = idc.call("user", "create", {**body, "token": token})
    assert denied["code"] == "PERMISSION_DENIED" and "user:create" in denied["error"]
    assert _wait_denial(tap, "user.create", "PERMISSION_DENIED")["actor"] == str(plain["id"])
    weak = idc.call("user", "create", {**body, "password": "password123", "token": admin_token})
    assert weak["code"] == "PASSWORD_REJECTED"


def test_roles_assignment_check_permission_and_escalation_guard(
    idc: Identity, admin_token: str, tap: BusTap
) -> None:
    name = f"state-dev-{uuid.uuid4().hex[:6]}"
    perms = ["state:scope:line1:write", "state:health:read", "role:assign", "user:read"]
    idc.ok("role", "create", {"token": admin_token, "name": name, "permissions": perms})
    dev = _user(idc, admin_token)
    idc.ok("user", "assign_role", {"token": admin_token, "user_id": dev["id"], "role": name})
    token = idc.login(dev["username"], PASSWORD, ip_address=_ip())["access_token"]

    def check(permission: str, scope: str | None) -> bool:
        body = {"token": token, "permission": permission, "scope": scope}
        return bool(idc.ok("role", "check_permission", body)["allowed"])

    assert check("state:data:write", "line1") and check("state:data:read", "line1")
    assert not check("state:data:delete", "line1")
    assert not check("state:data:write", "line2")
    assert not check("state:data:read", None)
    # dev holds role:assign but may not hand out the admin role (system:admin).
    grab = idc.call("user", "assign_role", {"token": token, "user_id": dev["id"], "role": "admin"})
    assert grab["code"] == "PERMISSION_DENIED" and "do not hold" in grab["error"]
    _wait_denial(tap, "user.assign_role", "ESCALATION")


# ---- revocation over the event bus --------------------------------------------------------------


async def test_logout_revokes_in_an_offline_verifier_within_one_second(
    broker: BrokerProcess, idc: Identity, admin_token: str
) -> None:
    assert broker.keys_dir is not None
    jwks = await asyncio.to_thread(idc.ok, "auth", "jwks")
    nbmap = NotBeforeMap()
    verifier = Verifier(
        issuer="plantd-identity", audience=contract.SERVICE_STATE, jwks=jwks, not_before=nbmap
    )
    curve = load_client(broker.keys_dir, contract.CLIENT)
    task = asyncio.create_task(follow(broker.bus("event")[1], nbmap, curve=curve))
    try:
        user = await asyncio.to_thread(_user, idc, admin_token)
        # Prove the subscription is live first (slow joiner): identity re-publishes recent
        # bumps every 0.5 s, so a throwaway logout shows up in the map.
        warm = await asyncio.to_thread(_user, idc, admin_token)
        w = await asyncio.to_thread(idc.login, warm["username"], PASSWORD, ip_address=_ip())
        await asyncio.to_thread(idc.ok, "auth", "logout", {"access_token": w["access_token"]})
        deadline = time.monotonic() + 10
        while nbmap.get(str(warm["id"])) == 0.0:
            assert time.monotonic() < deadline, "no not_before event reached the verifier"
            await asyncio.sleep(0.02)

        doc = await asyncio.to_thread(idc.login, user["username"], PASSWORD, ip_address=_ip())
        token = doc["access_token"]
        assert verifier.verify(token).subject == str(user["id"])
        assert verifier.verify(token).subject == str(user["id"]) and verifier.hits >= 1  # cached
        t0 = time.monotonic()
        await asyncio.to_thread(idc.ok, "auth", "logout", {"access_token": token})
        while True:
            try:
                verifier.verify(token)
            except TokenError as exc:
                assert exc.reason is Reason.REVOKED
                break
            assert time.monotonic() - t0 < 1.0, "revocation did not arrive within 1 s"
            await asyncio.sleep(0.005)
        lag = time.monotonic() - t0
        assert lag < 1.0, lag
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---- startup ------------------------------------------------------------------------------------


def test_refuses_to_start_without_a_signing_key(workdir: Path, broker: BrokerProcess) -> None:
    empty = workdir / "no-keys"
    empty.mkdir()
    proc = identity_process(
        workdir, broker, jwt_dir=empty, data_dir=workdir / "nokey-data", name="nokey"
    )
    proc.start()
    code = proc.wait_exit(60)
    assert code == 4, proc.log()  # a configuration error (EXIT_CONFIG)
    text = proc.text()
    assert "refuses to start without a signing key" in text
    assert "python -m plantd.identity.keygen" in text
