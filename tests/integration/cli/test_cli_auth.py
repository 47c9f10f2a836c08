"""`plant auth|user|role|org|audit` as real processes against a real broker (CURVE) and a real
identity process with a bootstrap admin, each user in a fresh HOME."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import Plant, wait_for
from tests.integration.identity.identitykit import (
    ADMIN,
    ADMIN_PASSWORD,
    bootstrapped_identity,
    curve_broker,
)
from tests.kit import BrokerProcess, ServiceProcess

from plantd.identity.keys import generate

pytestmark = pytest.mark.integration

ALICE_PASSWORD = "river otter sings at dawn, twice"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-auth")


@pytest.fixture(scope="module")
def broker(workdir: Path) -> Iterator[BrokerProcess]:
    with curve_broker(workdir) as b:
        yield b


@pytest.fixture(scope="module")
def identity(workdir: Path, broker: BrokerProcess) -> Iterator[ServiceProcess]:
    jwt_dir = workdir / "jwt"
    generate(jwt_dir)
    # Many denied logins below (the audit test): no source bucket may run dry.
    loose = ["--login-source-burst", "200", "--login-source-rate", "50"]
    with bootstrapped_identity(workdir, broker, jwt_dir=jwt_dir, extra=loose) as proc:
        yield proc


@pytest.mark.timeout(300)
def test_login_whoami_refresh_logout(
    workdir: Path, broker: BrokerProcess, identity: ServiceProcess
) -> None:
    admin = Plant(workdir / "home-admin", broker)
    r = admin("auth", "whoami")
    assert r.returncode == 4 and "not logged in (profile 'default')" in r.stderr
    assert "plant auth login" in r.stderr

    bad = admin("auth", "login", "-u", ADMIN, "--password-stdin", stdin="wrong password\n")
    assert bad.returncode == 1, bad.stderr
    assert "login failed: invalid credentials (LOGIN_FAILED)" in bad.stderr
    assert not admin.credentials.exists()

    ok = admin("auth", "login", "-u", ADMIN, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    assert f"logged in as {ADMIN}" in ok.stdout
    assert ADMIN_PASSWORD not in ok.stdout + ok.stderr
    mode = os.stat(admin.credentials).st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(admin.credentials.parent).st_mode) == 0o700
    first = admin.stored()
    assert first["refresh_token"].startswith("pld_rt_") and first["username"] == ADMIN
    assert ADMIN_PASSWORD not in admin.credentials.read_text()

    again = admin("auth", "login", "-u", ADMIN, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert again.returncode == 0 and "already logged in" in again.stdout

    st = admin.json("auth", "status")
    assert (st["status"], st["username"], st["refresh_token"]) == ("valid", ADMIN, True)

    me = admin.json("auth", "whoami")
    assert me["valid"] is True and me["username"] == ADMIN
    assert "system:admin" in me["permissions"] and "admin" in me["roles"]

    r = admin("auth", "refresh")
    assert r.returncode == 0, r.stderr
    second = admin.stored()
    assert second["refresh_token"] != first["refresh_token"]

    # Near expiry, any command refreshes by itself before it sends the token.
    second["expires_at"] = time.time() + 10
    admin.credentials.write_text(json.dumps(second))
    assert admin.json("auth", "whoami")["username"] == ADMIN
    third = admin.stored()
    assert third["refresh_token"] != second["refresh_token"]
    assert third["expires_at"] > time.time() + 600

    old_token = third["access_token"]
    out = admin("auth", "logout")
    assert out.returncode == 0, out.stderr
    assert "every session of the user was revoked" in out.stdout
    assert not admin.credentials.exists()
    r = admin("auth", "whoami")
    assert r.returncode == 4 and "not logged in" in r.stderr
    # The token itself is refused by identity now (revoked, not just forgotten here).
    r = admin("--token", old_token, "auth", "whoami")
    assert r.returncode == 1, r.stderr
    assert "identity refused the token" in r.stderr and "TOKEN_REVOKED" in r.stderr


@pytest.mark.timeout(300)
def test_a_user_created_and_given_a_role(
    workdir: Path, broker: BrokerProcess, identity: ServiceProcess
) -> None:
    admin = Plant(workdir / "home-admin2", broker)
    r = admin("auth", "login", "-u", ADMIN, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr

    created = admin.json(
        "user", "create", "alice", "--email", "alice@plant.example", "--password-stdin",
        stdin=ALICE_PASSWORD + "\n",
    )  # fmt: skip
    assert created["user"]["username"] == "alice"
    role = admin.json(
        "role", "create", "line1-reader", "-p", "state:data:read", "--scope", "global"
    )
    assert role["role"]["permission_list"] == ["state:data:read"]
    r = admin("user", "assign-role", "alice", "line1-reader")
    assert r.returncode == 0, r.stderr
    got = admin.json("user", "get", "alice")
    assert [x["name"] for x in got["user"]["roles"]] == ["line1-reader"]
    listed = admin("user", "list")
    assert listed.returncode == 0 and "alice" in listed.stdout
    org = admin.json("org", "create", "Line One")
    assert org["organization"]["slug"] == "line-one"
    assert "line-one" in admin("org", "list").stdout

    alice = Plant(workdir / "home-alice", broker)
    r = alice("auth", "login", "-u", "alice", "--password-stdin", stdin=ALICE_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    yes = alice("auth", "check", "state:data:read", "--scope", "line1")
    assert yes.returncode == 0 and yes.stdout.startswith("allowed")
    no = alice("auth", "check", "state:data:write", "--scope", "line1")
    assert no.returncode == 1 and no.stdout.startswith("denied")
    refused = alice("user", "list")
    assert refused.returncode == 1
    assert "PERMISSION_DENIED" in refused.stderr and "assign-role" in refused.stderr

    r = admin("user", "unassign-role", "alice", "line1-reader")
    assert r.returncode == 0, r.stderr
    # Removing the role ended alice's sessions: her stored login no longer works.
    after = alice("auth", "whoami")
    assert after.returncode == 1 and "TOKEN_REVOKED" in after.stderr
    r = admin("user", "delete", "alice", "--yes")
    assert r.returncode == 0, r.stderr
    assert admin("user", "get", "alice").returncode == 1


@pytest.mark.timeout(300)
def test_audit_tail_shows_a_denied_login(
    workdir: Path, broker: BrokerProcess, identity: ServiceProcess
) -> None:
    watcher = Plant(workdir / "home-audit", broker)
    sub = broker.bus("event")[1]
    tail = subprocess.Popen(
        [sys.executable, "-m", "plantd.cli.plant", *watcher.base, "--json", "audit", "tail",
         "--follow", "--decision", "deny", "--action", "auth.login", "--count", "1",
         "--bus-endpoint", sub],
        env=watcher.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    tried: list[str] = []
    try:
        # The bus keeps no history: deny logins until the subscription has reached identity's
        # publisher and tail has printed one (then it exits: --count 1).
        def denied_login_seen() -> bool:
            name = f"ghost-{len(tried)}"
            tried.append(name)
            r = watcher("auth", "login", "-u", name, "--password-stdin", stdin="not it at all\n")
            assert r.returncode == 1 and "LOGIN_FAILED" in r.stderr, r.stderr
            return tail.poll() is not None

        wait_for(denied_login_seen, 60, "plant audit tail to print a denied login", 0.1)
        out, err = tail.communicate(timeout=10)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    assert tail.returncode == 0, err
    event = json.loads(out.splitlines()[0])
    assert (event["action"], event["decision"], event["reason"]) == (
        "auth.login",
        "deny",
        "UNKNOWN_USER",
    )
    assert event["target"] in tried and "chain_problem" not in event
