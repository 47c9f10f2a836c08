"""State authorization (pure): the RBAC matrix per operation and scope, tokens refused with
their reason, key identities from the registry, the caller frame, and audited denials.

Tokens are minted by the identity service's own issuer and checked by the shared verifier; the
caller frame is the broker's wire shape, split by ``plantd.mdp.caller.split_caller``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plantd.common.auth import NotBeforeMap, Verifier
from plantd.common.registry import Registry
from plantd.identity.audit import verify_chain
from plantd.identity.keys import KeyRing, generate
from plantd.identity.tokens import Issuer
from plantd.mdp import caller as caller_frame
from plantd.state.auth import (
    AllowAll,
    Audit,
    IdentityAuthorizer,
    KeyPermissions,
    RequestContext,
    key_permission,
)
from plantd.state.errors import Code
from plantd.state.service import StateService
from plantd.state.sqlite_store import SqliteStore

pytestmark = pytest.mark.unit

ISS = "plantd-identity"
AUD = "org.plantd.State"
KEY_A = "A" * 40  # Z85 public keys are 40 characters
KEY_B = "B" * 40


class Bus:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any]]] = []

    def publish(self, topic: str | bytes, payload: bytes) -> None:
        t = topic.encode() if isinstance(topic, str) else topic
        self.sent.append((t, json.loads(payload)))


@dataclass
class Stack:
    ring: KeyRing
    verifier: Verifier
    authz: IdentityAuthorizer
    bus: Bus

    def token(self, *permissions: str, sub: str = "7", aud: str = AUD, now: float = 0.0) -> str:
        issuer = Issuer(self.ring, issuer=ISS, access_ttl_s=900)
        t = now or time.time()
        return issuer.access(
            subject=sub, audience=[aud], now=t, claims={"permissions": list(permissions)}
        ).token


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    d = tmp_path_factory.mktemp("jwt")
    generate(d)
    return KeyRing.from_dir(d)


def registry() -> Registry:
    return Registry.from_dict(
        {
            "version": 1,
            "identities": [
                {
                    "name": "line1-plc",
                    "kind": "module",
                    "public_key": KEY_A,
                    "services": ["org.example.line1.*"],
                    "publish": {"event": ["line1."]},
                    "permissions": ["state:data:write:line1", "state:data:read:line1"],
                }
            ],
        }
    )


@pytest.fixture
def stack(ring: KeyRing) -> Stack:
    v = Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks(), not_before=NotBeforeMap())
    bus = Bus()
    reg = registry()
    authz = IdentityAuthorizer(v, keys=KeyPermissions(reg.by_key), audit=Audit(bus))
    return Stack(ring, v, authz, bus)


def ctx(op: str, scope: str | None, token: str | None = None, key: str | None = None) -> Any:
    c = caller_frame.Caller(key, None, None) if key else None
    return RequestContext(op, scope, token, c)


# ---- the RBAC matrix --------------------------------------------------------------------------

# (held permissions, operation's permission, scope, allowed?)
MATRIX = [
    # global data permissions, with the original's implications
    (["state:data:read"], "state:data:read", "line1", True),
    (["state:data:read"], "state:data:write", "line1", False),
    (["state:data:read"], "state:data:delete", "line1", False),
    (["state:data:write"], "state:data:write", "any", True),
    (["state:data:write"], "state:data:read", "any", True),  # write => read
    (["state:data:write"], "state:data:delete", "any", False),
    (["state:data:delete"], "state:data:delete", "any", True),
    (["state:data:delete"], "state:data:read", "any", True),  # delete => read
    # scoped templates: on their scope only
    (["state:scope:line1:read"], "state:data:read", "line1", True),
    (["state:scope:line1:read"], "state:data:read", "line2", False),
    (["state:scope:line1:read"], "state:data:write", "line1", False),
    (["state:scope:line1:write"], "state:data:write", "line1", True),
    (["state:scope:line1:write"], "state:data:read", "line1", True),
    (["state:scope:line1:write"], "state:data:write", "line2", False),
    (["state:scope:line1:write"], "state:data:delete", "line1", False),
    (["state:scope:line1:delete"], "state:data:delete", "line1", True),
    (["state:scope:line1:admin"], "state:data:delete", "line1", True),
    (["state:scope:line1:admin"], "state:scope:delete", "line1", True),
    (["state:scope:line1:admin"], "state:data:write", "line2", False),
    # scope management and listing
    (["state:scope:create"], "state:scope:create", "new", True),
    (["state:data:write"], "state:scope:create", "new", False),
    (["state:scope:create"], "state:scope:delete", "new", False),
    (["state:scope:delete"], "state:scope:delete", "old", True),
    (["state:scope:list"], "state:scope:list", None, True),
    (["state:scope:line1:admin"], "state:scope:list", None, False),
    (["state:health:read"], "state:health:read", None, True),
    (["state:data:read"], "state:health:read", None, False),
    # admins and wildcards
    (["state:admin:full"], "state:scope:create", "x", True),
    (["state:admin:full"], "state:data:delete", "x", True),
    (["state:system:admin"], "state:data:write", "x", True),
    (["system:admin"], "state:scope:list", None, True),
    (["state:*"], "state:data:write", "x", True),
    (["state:scope:line1:*"], "state:data:write", "line1", True),
    (["state:scope:line1:*"], "state:data:write", "line2", False),
    (["state:cross-service:line1:state:data:write"], "state:data:write", "line1", True),
    (["state:cross-service:line1:state:data:write"], "state:data:write", "line2", False),
    ([], "state:data:read", "line1", False),
    (["user:create"], "state:data:read", "line1", False),
]


@pytest.mark.parametrize(("held", "permission", "scope", "allowed"), MATRIX)
def test_rbac_matrix_with_tokens(
    stack: Stack, held: list[str], permission: str, scope: str | None, allowed: bool
) -> None:
    err = stack.authz.check(ctx("op", scope, stack.token(*held)), permission)
    if allowed:
        assert err is None
    else:
        assert err is not None and err.code == Code.PERMISSION_DENIED
        assert permission in err.message
        if scope:
            assert f"scope '{scope}'" in err.message


def test_operations_ask_for_the_originals_permissions() -> None:
    from plantd.state import operations
    from plantd.state.limits import DEFAULT_LIMITS

    health = operations.HealthInfo("sqlite", True)
    want = {
        "create-scope": "state:scope:create",
        "delete-scope": "state:scope:delete",
        "list-scopes": "state:scope:list",
        "state-get": "state:data:read",
        "get": "state:data:read",
        "batch-get": "state:data:read",
        "list-keys": "state:data:read",
        "snapshot": "state:data:read",
        "changes-since": "state:data:read",
        "state-set": "state:data:write",
        "set": "state:data:write",
        "batch-set": "state:data:write",
        "delete": "state:data:delete",
        "batch-delete": "state:data:delete",
        "health": "state:health:read",
    }
    body = {
        "service": "s",
        "key": "k",
        "value": "v",
        "keys": ["k"],
        "items": [{"key": "k", "value": "v"}],
        "revision": 0,
    }
    for op, perm in want.items():
        req = operations.decode([op.encode(), json.dumps(body).encode()], DEFAULT_LIMITS, health)
        assert req.permission == perm, op
        assert req.context.scope == (None if op == "list-scopes" else "s"), op


# ---- tokens refused -----------------------------------------------------------------------------


def test_no_credentials_is_unauthenticated_and_says_how_to_log_in(stack: Stack) -> None:
    err = stack.authz.check(ctx("state-get", "s"), "state:data:read")
    assert err is not None and err.code == Code.UNAUTHENTICATED
    assert "plant auth login" in err.message
    assert stack.bus.sent[-1][1]["reason"] == "NO_CREDENTIALS"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: "not-a-token", "TOKEN_MALFORMED"),
        (lambda s: s.token("state:*", aud="org.plantd.Identity"), "TOKEN_WRONG_AUDIENCE"),
        (lambda s: s.token("state:*", now=time.time() - 3600), "TOKEN_EXPIRED"),
        (lambda s: "x" * 9000, "TOKEN_TOO_LARGE"),
    ],
)
def test_bad_tokens_are_unauthenticated_with_their_reason(
    stack: Stack, make: Any, reason: str
) -> None:
    err = stack.authz.check(ctx("state-set", "s", make(stack)), "state:data:write")
    assert err is not None and err.code == Code.UNAUTHENTICATED
    assert reason in err.message and "plant auth login" in err.message
    assert stack.bus.sent[-1][1]["reason"] == reason


def test_alg_none_is_refused(stack: Stack) -> None:
    good = stack.token("state:*")
    _, payload, _ = good.split(".")
    import base64

    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    err = stack.authz.check(ctx("state-get", "s", f"{head}.{payload}."), "state:data:read")
    assert err is not None and err.code == Code.UNAUTHENTICATED
    assert "TOKEN_ALG_NOT_ALLOWED" in err.message


def test_a_revoked_token_is_refused_at_once_even_when_cached(stack: Stack) -> None:
    tok = stack.token("state:data:read", sub="42")
    assert stack.authz.check(ctx("state-get", "s", tok), "state:data:read") is None
    assert stack.authz.check(ctx("state-get", "s", tok), "state:data:read") is None
    assert stack.verifier.hits >= 1  # the second check was a cache hit
    stack.verifier.not_before.bump("42", time.time() + 1)
    err = stack.authz.check(ctx("state-get", "s", tok), "state:data:read")
    assert err is not None and err.code == Code.UNAUTHENTICATED and "TOKEN_REVOKED" in err.message


def test_another_issuers_key_is_not_trusted(stack: Stack, tmp_path: Path) -> None:
    generate(tmp_path)
    other = KeyRing.from_dir(tmp_path)
    forged = Issuer(other, issuer=ISS, access_ttl_s=900).access(
        subject="1", audience=[AUD], now=time.time(), claims={"permissions": ["*"]}
    )
    err = stack.authz.check(ctx("state-set", "s", forged.token), "state:data:write")
    assert err is not None and err.code == Code.UNAUTHENTICATED
    assert "TOKEN_UNKNOWN_KID" in err.message


# ---- key identities -----------------------------------------------------------------------------


def test_registry_data_permissions_are_scoped_templates() -> None:
    assert key_permission("state:data:write:line1") == "state:scope:line1:write"
    assert key_permission("state:data:read:a:b") == "state:scope:a:b:read"
    assert key_permission("state:data:read") == "state:data:read"
    assert key_permission("state:data:read:") == "state:data:read:"
    assert key_permission("state:scope:x:admin") == "state:scope:x:admin"


def test_a_registered_key_gets_its_permissions_and_no_more(stack: Stack) -> None:
    a = stack.authz
    assert a.check(ctx("state-set", "line1", key=KEY_A), "state:data:write") is None
    assert a.check(ctx("state-get", "line1", key=KEY_A), "state:data:read") is None
    err = a.check(ctx("state-set", "line2", key=KEY_A), "state:data:write")
    assert err is not None and err.code == Code.PERMISSION_DENIED and "line1-plc" in err.message
    err = a.check(ctx("delete", "line1", key=KEY_A), "state:data:delete")
    assert err is not None and err.code == Code.PERMISSION_DENIED
    err = a.check(ctx("state-get", "line1", key=KEY_B), "state:data:read")
    assert err is not None and err.code == Code.UNAUTHENTICATED
    assert stack.bus.sent[-1][1]["reason"] == "NO_CREDENTIALS"
    assert "machine registry" in err.message
    assert stack.bus.sent[-1][1]["source"] == KEY_B


def test_the_brokers_permissions_in_the_caller_frame_come_first(stack: Stack) -> None:
    # KEY_B has no entry in state's registry file: a module enrolled in identity, known to
    # the broker only. Its frame's permissions decide; a frame that says nothing falls back.
    a = stack.authz

    def said(perms: tuple[str, ...] | None, key: str = KEY_B) -> Any:
        return caller_frame.Caller(key, "gauge-7", "module", perms)

    write9 = RequestContext("state-set", "line9", None, said(("state:data:write:line9",)))
    assert a.check(write9, "state:data:write") is None
    other = RequestContext("state-set", "line1", None, said(("state:data:write:line9",)))
    err = a.check(other, "state:data:write")
    assert err is not None and err.code == Code.PERMISSION_DENIED and "gauge-7" in err.message
    none = RequestContext("state-get", "line9", None, said(()))  # known, holds nothing
    err = a.check(none, "state:data:read")
    assert err is not None and err.code == Code.PERMISSION_DENIED
    # The broker's word also overrides the file for a key in both (its view is newer).
    revoked = RequestContext("state-get", "line1", None, said((), key=KEY_A))
    assert a.check(revoked, "state:data:read") is not None
    unsaid = RequestContext("state-get", "line1", None, said(None, key=KEY_A))
    assert a.check(unsaid, "state:data:read") is None  # the registry file's grant


def test_a_token_decides_even_for_a_registered_key(stack: Stack) -> None:
    a = stack.authz
    reader = stack.token("state:data:read")
    err = a.check(ctx("state-set", "line1", reader, key=KEY_A), "state:data:write")
    assert err is not None and err.code == Code.PERMISSION_DENIED
    err = a.check(ctx("state-set", "line1", "garbage", key=KEY_A), "state:data:write")
    assert err is not None and err.code == Code.UNAUTHENTICATED


def test_registry_replaced_takes_effect(stack: Stack) -> None:
    a = stack.authz
    assert a.check(ctx("state-get", "line1", key=KEY_A), "state:data:read") is None
    a.keys.replace(Registry.empty().by_key)
    err = a.check(ctx("state-get", "line1", key=KEY_A), "state:data:read")
    assert err is not None and err.code == Code.UNAUTHENTICATED


def test_key_memo_is_bounded() -> None:
    seen: list[str] = []

    def lookup(k: str) -> None:
        seen.append(k)

    kp = KeyPermissions(lookup, max_entries=3)
    for i in range(10):
        kp.get(f"k{i}")
    assert len(kp._memo) <= 3
    kp.get("k9")
    assert seen.count("k9") == 1  # memoised


# ---- audit --------------------------------------------------------------------------------------


def test_every_denial_is_an_audit_event_in_identitys_shape(stack: Stack) -> None:
    tok = stack.token("state:data:read", sub="9")
    stack.authz.check(ctx("state-set", "plant", tok, key=KEY_B), "state:data:write")
    stack.authz.check(ctx("state-get", "plant"), "state:data:read")
    events = [doc for topic, doc in stack.bus.sent if topic == b"audit"]
    assert len(events) == 2
    first = events[0]
    for field in ("id", "time", "producer", "seq", "prev", "hash", "action", "decision",
                  "reason", "actor", "target", "source", "jti", "trace_id", "detail"):  # fmt: skip
        assert field in first, field
    assert first["action"] == "state.state-set" and first["decision"] == "deny"
    assert first["reason"] == "PERMISSION_DENIED" and first["actor"] == "9"
    assert first["target"] == "plant" and first["source"] == KEY_B and first["jti"]
    assert first["detail"] == {"permission": "state:data:write"}
    assert verify_chain(events)  # the identity service's own chain check
    events[1]["reason"] = "tampered"
    assert not verify_chain(events)


def test_allowed_requests_are_not_audited(stack: Stack) -> None:
    stack.authz.check(ctx("state-get", "s", stack.token("state:data:read")), "state:data:read")
    assert stack.bus.sent == []


def test_audit_budget_summarises_a_flood() -> None:
    bus = Bus()
    t = [1000.2]
    audit = Audit(bus, per_second=3, clock=lambda: t[0])
    for _ in range(10):
        audit.deny("state.state-get", "NO_CREDENTIALS")
    assert len(bus.sent) == 3 and audit.suppressed == 7
    t[0] = 1001.1
    audit.flush()
    summary = bus.sent[-1][1]
    assert summary["action"] == "state.audit_suppressed" and summary["reason"] == "AUDIT_BUDGET"
    assert summary["detail"]["suppressed"] == 7
    assert summary["detail"]["by_reason"] == {"NO_CREDENTIALS": 7}
    audit.deny("state.state-get", "NO_CREDENTIALS")  # a new second: audited again
    assert len(bus.sent) == 5
    assert verify_chain([doc for _, doc in bus.sent])


# ---- through the batch handler, with the broker's caller frame ----------------------------------


def body(op: str, doc: dict[str, Any], key: str | None = None) -> list[bytes]:
    frames = [op.encode(), json.dumps(doc).encode()]
    if key is None:
        return frames
    return [caller_frame.MARKER, caller_frame.encode(key, "x", "module"), *frames]


async def test_batch_handler_authorizes_each_request_before_the_store(
    stack: Stack, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "data")
    await store.open()
    try:
        svc = StateService(store, authorizer=stack.authz, split_caller=caller_frame.split_caller)
        writer = stack.token("state:scope:line1:write")
        out = await svc.handle_batch(
            [
                body("state-set", {"service": "line1", "key": "k", "value": "1", "token": writer}),
                body("state-set", {"service": "line2", "key": "k", "value": "2", "token": writer}),
                body("state-set", {"service": "line1", "key": "m", "value": "3"}, key=KEY_A),
                body("state-get", {"service": "line1", "key": "k"}, key=KEY_B),
                body("state-get", {"service": "line1", "key": "k"}),
                body("list-scopes", {"token": writer}),
            ]
        )
        docs = [json.loads(r[0]) for r in out]
        assert [d.get("code", "ok") for d in docs] == [
            "ok",
            "PERMISSION_DENIED",
            "ok",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "PERMISSION_DENIED",
        ]
        # nothing refused reached the store: line2 was never created
        allow = StateService(store)
        scopes = json.loads((await allow.handle_batch([body("list-scopes", {})]))[0][0])
        assert scopes["data"]["scopes"] == ["line1"]
    finally:
        await store.close()


async def test_without_the_option_a_caller_frame_is_not_believed(
    stack: Stack, tmp_path: Path
) -> None:
    """A worker that did not ask for the frame treats one as the client's (unknown op)."""
    store = SqliteStore(tmp_path / "data")
    await store.open()
    try:
        svc = StateService(store, authorizer=stack.authz)
        out = await svc.handle_batch(
            [body("state-set", {"service": "line1", "key": "k", "value": "1"}, key=KEY_A)]
        )
        assert json.loads(out[0][0])["code"] == Code.UNKNOWN_OPERATION
    finally:
        await store.close()


def test_allow_all_is_the_default() -> None:
    assert AllowAll().check(ctx("state-set", "s"), "state:data:write") is None


def test_decision_memo_is_per_token_and_bounded(stack: Stack) -> None:
    a = stack.authz
    a.max_decisions = 5
    writer, reader = stack.token("state:data:write"), stack.token("state:data:read")
    assert a.check(ctx("state-set", "s", writer), "state:data:write") is None
    err = a.check(ctx("state-set", "s", reader), "state:data:write")
    assert err is not None and err.code == Code.PERMISSION_DENIED
    for i in range(20):  # many scopes: the memo is cleared, never grown past its bound
        assert a.check(ctx("state-get", f"s{i}", reader), "state:data:read") is None
        assert len(a._decisions) <= 5
    stack.verifier.not_before.bump("7", time.time() + 1)  # memoised, yet revoked at once
    err = a.check(ctx("state-get", "s19", reader), "state:data:read")
    assert err is not None and err.code == Code.UNAUTHENTICATED


def test_caller_frames_are_decoded_once_per_distinct_frame() -> None:
    from plantd.state.service import CallerFrames

    calls: list[list[bytes]] = []

    def split(b: list[bytes]) -> Any:
        calls.append(b)
        return caller_frame.split_caller(b)

    cf = CallerFrames(split, caller_frame.MARKER, max_entries=2)
    a = body("state-get", {"service": "s", "key": "k"}, key=KEY_A)
    c1, rest = cf(a)
    c2, rest2 = cf(list(a))
    assert c1 is not None and c1.key == KEY_A and c2 is c1 and len(calls) == 1
    assert rest == rest2 == a[2:]
    plain = body("state-get", {"service": "s", "key": "k"})
    assert cf(plain) == (None, plain)
    for k in ("D" * 40, "E" * 40, "F" * 40):
        cf(body("state-get", {}, key=k))
    assert len(cf._memo) <= 2
