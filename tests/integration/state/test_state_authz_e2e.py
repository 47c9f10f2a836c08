"""The state service enforcing identity, with real processes over real sockets (CURVE on):
a broker, a real ``plantd identity`` (signing key, bootstrap admin), two state workers with
``--auth identity`` (JWKS fetched from identity over MDP, not_before followed on the event bus,
a machine registry for key identities), and the event bus tapped for audit events.

Covers: allow and deny per permission per scope with tokens identity issued (the RBAC matrix);
no token refused with a message that says how to log in; a revoked token refused by both state
workers within 1 s of logout; a registered module key authorized by its registry permissions
(the broker's caller frame); an audit event for every denial.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from statekit import Broker, StateProc, client_curve, wait_for
from tests.integration.identity.identitykit import (
    ADMIN,
    ADMIN_PASSWORD,
    BusTap,
    Identity,
    identity_process,
    write_bootstrap,
)
from tests.kit import ServiceProcess, make_keys

from plantd.common import contract
from plantd.common.keys import load_client
from plantd.identity.keys import generate
from plantd.mdp import Client, Dialect

pytestmark = pytest.mark.integration

PASSWORD = "a sufficiently long passphrase for tests"
MODULE = "line1-plc"


def _ip() -> str:
    """A fresh source per login: identity's per-source bucket never throttles the test."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250}"


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.keys = make_keys(
            workdir / "curve", (contract.STATE, contract.IDENTITY, contract.CLIENT, MODULE)
        )
        (workdir / "broker").mkdir()
        self.broker = Broker(workdir / "broker", self.keys)
        self.registry = self._write_registry(workdir / "registry")
        self.identity: ServiceProcess | None = None
        self.states: list[StateProc] = []

    def _write_registry(self, directory: Path) -> Path:
        directory.mkdir(mode=0o700)
        key = load_client(self.keys, MODULE).public.decode()
        doc = {
            "version": 1,
            "identities": [
                {
                    "name": MODULE,
                    "kind": "module",
                    "public_key": key,
                    "services": [],
                    "publish": {},
                    "permissions": ["state:data:write:line1", "state:data:read:line1"],
                }
            ],
        }
        path = directory / "registry.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        return path

    def start(self) -> None:
        self.broker.start()
        jwt_dir = self.workdir / "jwt"
        generate(jwt_dir)
        self.identity = identity_process(
            self.workdir,
            self.broker,
            jwt_dir=jwt_dir,
            data_dir=self.workdir / "identity-data",
            extra=["--bootstrap-file", str(write_bootstrap(self.workdir / "bootstrap.json"))],
        )
        self.identity.start().wait_ready()
        pub, sub = self.broker.bus("event")
        for i in range(2):
            self.states.append(
                StateProc(
                    f"state-authz-{i}",
                    self.workdir,
                    self.broker,
                    extra=[
                        "--auth", "identity",
                        "--event-bus-endpoint", pub,
                        "--event-sub-endpoint", sub,
                        "--registry", str(self.registry),
                        "--jwks-refresh-s", "30",
                    ],
                ).start()
            )  # fmt: skip

    def stop(self) -> None:
        for s in self.states:
            s.proc.stop()
        if self.identity is not None:
            self.identity.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("authz"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def idc(stack: Stack) -> Iterator[Identity]:
    c = Identity(stack.broker)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def admin_token(idc: Identity) -> str:
    doc = idc.login(ADMIN, ADMIN_PASSWORD, ip_address=_ip())
    assert doc["success"], doc
    return str(doc["access_token"])


@pytest.fixture(scope="module")
def tap(stack: Stack) -> Iterator[BusTap]:
    t = BusTap(stack.broker.bus("event")[1], stack.keys, (b"audit",))
    try:
        yield t
    finally:
        t.close()


class State:
    """Blocking state calls as ``name`` (a CURVE key in the stack's directory)."""

    def __init__(self, stack: Stack, name: str = contract.CLIENT) -> None:
        curve = client_curve(stack.keys) if name == contract.CLIENT else None
        if curve is None:
            curve = load_client(stack.keys, name)
        self.client = Client(stack.broker.endpoint, timeout=10.0, retries=0, curve=curve)

    def call(self, op: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        doc = dict(body)
        if token is not None:
            doc["token"] = token
        reply = self.client.request(contract.SERVICE_STATE, op, json.dumps(doc))
        out: dict[str, Any] = json.loads(reply[0])
        return out

    def code(self, op: str, body: dict[str, Any], token: str | None = None) -> str:
        """ "ok" or the error code; SCOPE_NOT_FOUND counts as "ok": authorization passed and
        the store answered (each worker has its own SQLite, so a scope written through one
        may be missing on the other)."""
        doc = self.call(op, body, token)
        code = "ok" if doc.get("success") else str(doc.get("code"))
        return "ok" if code == "SCOPE_NOT_FOUND" else code

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def state(stack: Stack) -> Iterator[State]:
    s = State(stack)
    try:
        yield s
    finally:
        s.close()


def user_with(idc: Identity, admin_token: str, permissions: list[str]) -> tuple[str, str]:
    """A new user holding exactly ``permissions`` (through a role): (user id, access token)."""
    tag = uuid.uuid4().hex[:8]
    user = idc.ok(
        "user",
        "create",
        {
            "token": admin_token,
            "username": f"u{tag}",
            "email": f"u{tag}@plant.example",
            "password": PASSWORD,
        },
    )["user"]
    if permissions:
        role = f"state-r{tag}"
        idc.ok("role", "create", {"token": admin_token, "name": role, "permissions": permissions})
        idc.ok("user", "assign_role", {"token": admin_token, "user_id": user["id"], "role": role})
    doc = idc.login(f"u{tag}", PASSWORD, ip_address=_ip())
    assert doc["success"], doc
    return str(user["id"]), str(doc["access_token"])


def test_both_workers_are_ready_only_with_the_identity_jwks(stack: Stack) -> None:
    for s in stack.states:
        assert s.ready(), s.proc.log()
        assert s.metric("plantd_state_auth_jwks_keys") >= 1


def test_no_token_is_refused_with_how_to_log_in_and_audited(
    stack: Stack, state: State, tap: BusTap
) -> None:
    doc = state.call("state-get", {"service": "line1", "key": "k"})
    assert doc["success"] is False and doc["code"] == "UNAUTHENTICATED", doc
    assert "plant auth login" in doc["error"]

    def audited() -> list[dict[str, Any]]:
        # a fresh denial each try: the tap may have joined the bus after the first one
        state.call("state-get", {"service": "line1", "key": "k"})
        return [
            e
            for _, e in list(tap.messages)
            if e.get("action") == "state.state-get" and e.get("reason") == "NO_CREDENTIALS"
        ]

    event = wait_for(audited, 10, "a NO_CREDENTIALS audit event from state", interval=0.2)[-1]
    assert event["decision"] == "deny" and event["target"] == "line1"
    assert event["producer"].startswith("state@") and len(event["hash"]) == 64
    assert event["source"] == client_curve(stack.keys).public.decode()


# (permissions held, [(operation, body, expected)]) — the RBAC matrix through real processes.
LINE1 = {"service": "line1", "key": "k", "value": "v"}
LINE2 = {"service": "line2", "key": "k", "value": "v"}
MATRIX: list[tuple[list[str], list[tuple[str, dict[str, Any], str]]]] = [
    (
        ["state:scope:line1:read"],
        [
            ("state-get", LINE1, "ok"),
            ("batch-get", {"service": "line1", "keys": ["k", "j"]}, "ok"),
            ("list-keys", {"service": "line1"}, "ok"),
            ("snapshot", {"service": "line1"}, "ok"),
            ("changes-since", {"service": "line1", "revision": 0}, "ok"),
            ("state-get", LINE2, "PERMISSION_DENIED"),
            ("state-set", LINE1, "PERMISSION_DENIED"),
            ("delete", LINE1, "PERMISSION_DENIED"),
            ("list-scopes", {}, "PERMISSION_DENIED"),
        ],
    ),
    (
        ["state:scope:line1:write"],
        [
            ("state-set", LINE1, "ok"),
            ("batch-set", {"service": "line1", "values": {"a": "1", "b": "2"}}, "ok"),
            ("state-get", LINE1, "ok"),
            ("state-set", LINE2, "PERMISSION_DENIED"),
            ("delete", LINE1, "PERMISSION_DENIED"),
            ("batch-delete", {"service": "line1", "keys": ["a"]}, "PERMISSION_DENIED"),
            ("create-scope", {"service": "line9"}, "PERMISSION_DENIED"),
        ],
    ),
    (
        ["state:data:delete"],
        [
            ("delete", LINE2, "ok"),
            ("batch-delete", {"service": "line1", "keys": ["a"]}, "ok"),
            ("state-set", LINE1, "PERMISSION_DENIED"),
        ],
    ),
    (
        ["state:scope:create", "state:scope:list", "state:health:read"],
        [
            ("create-scope", {"service": f"made-{uuid.uuid4().hex[:6]}"}, "ok"),
            ("list-scopes", {}, "ok"),
            ("health", {}, "ok"),
            ("delete-scope", {"service": "line2"}, "PERMISSION_DENIED"),
            ("state-get", LINE1, "PERMISSION_DENIED"),
        ],
    ),
    (
        ["state:admin:full"],
        [
            ("state-set", LINE2, "ok"),
            ("delete-scope", {"service": "line2"}, "ok"),
            ("list-scopes", {}, "ok"),
        ],
    ),
    ([], [("state-get", LINE1, "PERMISSION_DENIED"), ("health", {}, "PERMISSION_DENIED")]),
]


@pytest.mark.parametrize(("held", "cases"), MATRIX, ids=[",".join(h) or "none" for h, _ in MATRIX])
def test_rbac_matrix_per_permission_per_scope(
    state: State, idc: Identity, admin_token: str, held: list[str], cases: Any
) -> None:
    _, token = user_with(idc, admin_token, held)
    # Both workers serve the same requests (the broker spreads them); SQLite per worker, so
    # line2 may exist on one only: a deny must come before the store, either way.
    for op, body, want in cases:
        doc = state.call(op, body, token)
        got = "ok" if doc.get("success") else doc.get("code")
        if got == "SCOPE_NOT_FOUND":
            got = "ok"  # allowed, then the store spoke (see State.code)
        assert got == want, f"{held} {op} {body}: {doc}"
        if want == "PERMISSION_DENIED":
            assert "state:" in doc["error"] and "ask an administrator" in doc["error"]


def test_a_token_for_another_audience_is_refused(state: State, idc: Identity) -> None:
    doc = idc.login(ADMIN, ADMIN_PASSWORD, ip_address=_ip(), audience=contract.SERVICE_IDENTITY)
    assert doc["success"], doc
    out = state.call("state-get", LINE1, doc["access_token"])
    assert out["code"] == "UNAUTHENTICATED" and "TOKEN_WRONG_AUDIENCE" in out["error"]


def test_logout_is_enforced_by_both_workers_within_one_second(
    stack: Stack, state: State, idc: Identity, admin_token: str, tap: BusTap
) -> None:
    # Warm up: the first not_before bump proves both workers' subscriptions are live (slow
    # joiner), so the measured one is not a subscription start-up delay.
    warm_id, warm = user_with(idc, admin_token, ["state:data:read"])
    assert state.code("state-get", LINE1, warm) == "ok"
    idc.ok("auth", "logout", {"access_token": warm})
    wait_for(
        lambda: all(state.code("state-get", LINE1, warm) == "UNAUTHENTICATED" for _ in range(6)),
        15,
        f"the warm-up logout (user {warm_id}) to reach both state workers",
        interval=0.1,
    )

    _, token = user_with(idc, admin_token, ["state:data:read"])
    ok = 'operation="state-get",result="ok"'
    refused = 'operation="state-get",result="UNAUTHENTICATED"'

    def both_grew(labels: str, before: list[float], want: str) -> bool:
        # one more request (the broker rotates workers between wake-ups), then both counters
        got = state.call("state-get", LINE1, token)
        assert ("ok" if got.get("success") else got.get("code")) == want, got
        return all(
            s.metric("plantd_state_operations_total", labels) > b
            for s, b in zip(stack.states, before, strict=True)
        )

    before = [s.metric("plantd_state_operations_total", ok) for s in stack.states]
    wait_for(lambda: both_grew(ok, before, "ok"), 10, "both workers serving the token")

    denied_before = [s.metric("plantd_state_operations_total", refused) for s in stack.states]
    idc.ok("auth", "logout", {"access_token": token})
    t0 = time.monotonic()
    seen: list[float] = []

    def refused_by_both() -> bool:
        # Every request refused, and each worker refused at least one since the logout; the
        # time is that of the last refused reply (before reading /metrics).
        if not all(state.code("state-get", LINE1, token) == "UNAUTHENTICATED" for _ in range(4)):
            return False
        seen.append(time.monotonic())
        return all(
            s.metric("plantd_state_operations_total", refused) > b
            for s, b in zip(stack.states, denied_before, strict=True)
        )

    wait_for(refused_by_both, 3.0, "both workers refusing the logged-out token", interval=0.01)
    elapsed = seen[-1] - t0
    assert elapsed < 1.0, f"the logout took {elapsed:.3f} s to reach both state workers"
    doc = state.call("state-get", LINE1, token)
    assert doc["code"] == "UNAUTHENTICATED" and "TOKEN_REVOKED" in doc["error"], doc


def test_a_registered_module_key_needs_no_token(stack: Stack, tap: BusTap) -> None:
    module = State(stack, MODULE)
    try:
        assert module.code("state-set", LINE1) == "ok"
        assert module.code("state-get", LINE1) == "ok"
        doc = module.call("state-set", {"service": "line3", "key": "k", "value": "v"})
        assert doc["code"] == "PERMISSION_DENIED" and MODULE in doc["error"], doc
        assert module.code("delete", LINE1) == "PERMISSION_DENIED"
        key = load_client(stack.keys, MODULE).public.decode()

        def audited() -> dict[str, dict[str, Any]] | None:
            # Both denials (the set on line3, the delete on line1) reach the bus; their
            # order on the audit bus is not the order of the calls, so key them by target.
            # Repeat both each poll: a denial published before the tap joined is lost.
            module.call("state-set", {"service": "line3", "key": "k", "value": "v"})
            module.call("delete", LINE1)
            by_target = {
                e.get("target"): e
                for _, e in list(tap.messages)
                if e.get("source") == key and e.get("actor") == f"key:{MODULE}"
            }
            return by_target if {"line3", "line1"} <= by_target.keys() else None

        events = wait_for(audited, 10, "the module's two denials audited", interval=0.2)
        assert events["line3"]["reason"] == "PERMISSION_DENIED", events
        assert events["line1"]["reason"] == "PERMISSION_DENIED", events
    finally:
        module.close()


def test_the_client_key_alone_is_not_enough(state: State) -> None:
    """The shared CLI key is not in the registry: without a token it gets nothing."""
    assert state.code("state-set", LINE1) == "UNAUTHENTICATED"
    assert state.code("list-scopes", {}) == "UNAUTHENTICATED"


# ---- `plant state` carries the token ------------------------------------------------------------


def plant(stack: Stack, tmp_path: Path, *args: str, token: str = "") -> Any:
    from click.testing import CliRunner

    from plantd.cli.plant import cli

    env = {
        "PLANTD_CONFIG": str(tmp_path / "absent.yaml"),
        "XDG_STATE_HOME": str(tmp_path / "xdg"),  # no stored login from the developer's HOME
        "PLANTD_CLIENT_TOKEN": token,
    }
    common = ["--endpoint", stack.broker.endpoint, "--curve-keys", str(stack.keys)]
    return CliRunner().invoke(cli, [*common, "--timeout", "10", *args], env=env)


def test_plant_state_without_a_login_says_how_to_log_in(stack: Stack, tmp_path: Path) -> None:
    r = plant(stack, tmp_path, "state", "get", "k", "--service", "line1")
    assert r.exit_code == 1, r.output
    assert "plant auth login" in r.output, r.output


def test_plant_state_sends_the_token(
    stack: Stack, tmp_path: Path, idc: Identity, admin_token: str
) -> None:
    _, token = user_with(idc, admin_token, ["state:scope:cli:write"])
    r = plant(stack, tmp_path, "state", "set", "k", "42", "--service", "cli", token=token)
    assert r.exit_code == 0, r.output
    # Allowed: the value, or (each worker has its own SQLite) the other worker's store saying
    # the scope is not there; never a refusal.
    r = plant(stack, tmp_path, "--json", "state", "get", "k", "--service", "cli", token=token)
    doc = json.loads(r.output)  # the data, or the error document (on stderr)
    assert doc.get("value") == "42" or doc.get("code") == "SCOPE_NOT_FOUND", r.output
    r = plant(stack, tmp_path, "state", "set", "k", "1", "--service", "other", token=token)
    assert r.exit_code == 1 and "state:data:write" in r.output, r.output


def test_the_original_go_client_logs_in_then_sets_and_gets_state(stack: Stack) -> None:
    """The original `plant auth login` + `plant state set/get`: its dialect, its exact bodies
    (identity `[auth, login, {header, identifier, password, ip_address}]`, state
    `[state-set, {service, key, value, token}]`), the token identity issued."""
    curve = load_client(stack.keys, contract.CLIENT)
    header = {"request_id": "", "timestamp": int(time.time())}
    with Client(
        stack.broker.endpoint, timeout=10, retries=0, dialect=Dialect.LEGACY, curve=curve
    ) as c:
        body = {"header": header, "identifier": "root@plant.example", "password": ADMIN_PASSWORD}
        login = json.loads(
            c.request(contract.SERVICE_IDENTITY, "auth", "login", json.dumps(body))[0]
        )
        assert login["header"]["success"] is True, login
        token = login["access_token"]
        scope = f"orig-{uuid.uuid4().hex[:6]}"
        value = uuid.uuid4().hex

        def state(op: str, **fields: str) -> dict[str, Any]:
            doc = {"service": scope, **fields, "token": token}
            out: dict[str, Any] = json.loads(
                c.request(contract.SERVICE_STATE, op, json.dumps(doc))[0]
            )
            return out

        def set_then_get() -> bool:
            # Two state workers with one SQLite file each: write, then read until a read
            # lands on a worker that has the value (each pass writes through one more).
            created = state("create-scope")
            assert created.get("success") or created.get("code") == "SCOPE_EXISTS", created
            done = state("state-set", key="k", value=value)
            assert done["success"] is True and done["data"]["status"] == "set", done
            got = state("state-get", key="k")
            assert got["success"] is True, got
            return bool(got["data"]["value"] == value)

        wait_for(set_then_get, 10, "the original client's state-get to return its value")
        refused = json.loads(
            c.request(
                contract.SERVICE_STATE, "state-get", json.dumps({"service": scope, "key": "k"})
            )[0]
        )
        assert refused["success"] is False and "plant auth login" in refused["error"], refused
