"""`plantd up` is the secured stack: identity with a first admin, state refusing strangers.

Real processes throughout: `plantd up` as a subprocess with a fresh HOME and a port offset, the
real `plant` CLI logging in with the credentials file exactly as the banner says.
"""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

import pytest
from clikit import Stack, clean_env, free_port_offset, require, run_cli
from tests.kit import wait_for

from plantd.common.keys import load_client
from plantd.mdp import Client, Worker

pytestmark = pytest.mark.integration

SCOPE = "demo"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _password(stack: Stack) -> str:
    return (stack.state_dir / "admin-credentials").read_text().splitlines()[0]


def _secret_files(state_dir: Path) -> list[Path]:
    jwt = sorted((state_dir / "jwt").glob("*.pem"))
    assert len(jwt) == 1, jwt  # one signing key, created on the first run
    return [
        state_dir / "admin-credentials",
        state_dir / "identity" / "bootstrap.json",
        state_dir / "identity" / "identity.db",
        *jwt,
    ]


def test_login_then_state_and_a_second_run_keeps_the_admin(home: Path) -> None:
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    first = Stack(home, "--without", "echo")
    first.start()
    try:
        first.wait_ready()
        assert {"broker", "identity", "state"} <= set(first.children())
        out = first.output()
        login_cmd = "auth login -u admin --password-stdin < ~/.local/state/plantd/admin-credentials"
        assert login_cmd in out, out  # in the banner and in the ready line

        # (a) No login: refused, and the message says how to log in.
        anon = first.plant("state", "get", "--service", SCOPE, "key")
        assert anon.returncode != 0, anon.stdout
        assert "plant auth login" in anon.stderr, anon.stderr
        anon_set = first.plant("state", "set", "--service", SCOPE, "key", "1")
        assert anon_set.returncode != 0 and "plant auth login" in anon_set.stderr

        # (b) The banner's login command, then set/get round-trips.
        login = first.login_admin()
        assert login.returncode == 0, login.stderr
        assert "logged in as admin" in login.stdout
        put = first.plant("state", "set", "--service", SCOPE, "key", "1")
        assert put.returncode == 0, put.stderr
        got = first.plant("state", "get", "--service", SCOPE, "key")
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == "1"

        # (c) Secrets 0600 in 0700 directories; the password never reaches the terminal.
        state_dir = first.state_dir
        for path in _secret_files(state_dir):
            assert _mode(path) == 0o600, f"{path} has mode {oct(_mode(path))}"
        for d in (state_dir, state_dir / "identity", state_dir / "jwt", state_dir / "keys"):
            assert _mode(d) == 0o700, f"{d} has mode {oct(_mode(d))}"
        password = _password(first)
        assert len(password) >= 24
        assert first.stop(signal.SIGINT) == 0, first.output()
        assert password not in first.output()
    finally:
        first.kill_all()

    # (d) The same state directory again: the same password still logs in, the data is there.
    second = Stack(home, "--without", "echo")
    second.start()
    try:
        second.wait_ready()
        assert _password(second) == password
        assert "created the first admin" not in second.output()
        again = second.login_admin()  # another port offset: another endpoint, a new login
        assert again.returncode == 0, again.stderr
        got = second.plant("state", "get", "--service", SCOPE, "key")
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == "1"
        assert second.stop(signal.SIGTERM) == 0, second.output()
        assert password not in second.output()
        assert len(list((second.state_dir / "jwt").glob("*.pem"))) == 1  # the key was kept
    finally:
        second.kill_all()


def test_without_curve_tokens_still_decide(home: Path) -> None:
    # Without CURVE no caller has a key identity: the token alone decides, so a stranger is
    # refused with the login hint and the admin's token works.
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    s = Stack(home, "--no-curve", "--without", "echo")
    s.start()
    try:
        s.wait_ready()
        anon = s.plant("--no-curve", "state", "get", "--service", SCOPE, "key")
        assert anon.returncode != 0 and "plant auth login" in anon.stderr, anon.stderr
        login = s.login_admin("--no-curve")
        assert login.returncode == 0, login.stderr
        put = s.plant("--no-curve", "state", "set", "--service", SCOPE, "key", "2")
        assert put.returncode == 0, put.stderr
        assert s.stop() == 0, s.output()
    finally:
        s.kill_all()


def test_without_identity_state_runs_unsecured_with_a_warning(home: Path) -> None:
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    s = Stack(home, "--without", "identity", "--without", "echo")
    s.start()
    try:
        s.wait_ready()
        assert "state authorization is off (identity is not running)" in s.output()
        assert not (s.state_dir / "admin-credentials").exists()
        put = s.plant("state", "set", "--service", SCOPE, "key", "3")
        assert put.returncode == 0, put.stderr
        assert s.stop() == 0, s.output()
    finally:
        s.kill_all()


def test_auth_identity_without_identity_is_a_usage_error(home: Path) -> None:
    env = clean_env(home)
    args = ["up", "--port-offset", str(free_port_offset()), "--auth", "identity"]
    r = run_cli("plantd", [*args, "--without", "identity"], env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--auth identity needs the identity service" in r.stderr
    assert "plantd up" not in r.stdout  # nothing was started


def test_unreadable_admin_credentials_stop_plantd_up(home: Path) -> None:
    env = clean_env(home)
    state_dir = home / ".local" / "state" / "plantd"
    state_dir.mkdir(parents=True, mode=0o700)
    creds = state_dir / "admin-credentials"
    creds.write_text("a-password-others-could-read\n")
    creds.chmod(0o644)
    r = run_cli("plantd", ["up", "--port-offset", str(free_port_offset())], env)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "accessible by other users" in r.stderr and f"chmod 600 {creds}" in r.stderr
    assert "a-password-others-could-read" not in r.stdout + r.stderr


def test_an_enrolled_module_connects_serves_and_writes_state_with_its_key_alone(
    home: Path, tmp_path: Path
) -> None:
    """The whole machine-identity path of the local stack: `plantd keys generate` a module key
    outside the stack's key directory, `plant module enroll` it (services, permissions), and
    the module — with no key file on the broker and no user token — connects, serves its own
    service (never another), and writes state on its scope only."""
    stack = Stack(home, "--without", "echo")
    stack.start()
    try:
        stack.wait_ready()
        assert stack.login_admin().returncode == 0
        mod_dir = tmp_path / "module-keys"
        made = run_cli(
            "plantd", ["keys", "generate", "--dir", str(mod_dir), "--name", "press"], stack.env
        )
        assert made.returncode == 0, made.stderr
        (mod_dir / "broker.key").write_bytes((stack.state_dir / "keys" / "broker.key").read_bytes())
        enrol = stack.plant(
            "module", "enroll", "press", "--key-file", str(mod_dir / "press.key"),
            "--service", "acme.Press", "--permission", "state:data:write:line1",
        )  # fmt: skip
        assert enrol.returncode == 0, enrol.stderr
        curve = load_client(mod_dir, "press")

        def set_value(scope: str) -> dict[str, object]:
            body = json.dumps({"service": scope, "key": "speed", "value": "42"})
            with Client(stack.endpoint, timeout=5, retries=0, curve=curve) as c:
                doc: dict[str, object] = json.loads(
                    c.request("org.plantd.State", "state-set", body)[0]
                )
            return doc

        def written() -> bool:
            try:
                return set_value("line1").get("success") is True
            except Exception:  # not admitted yet (the broker polls identity): ask again
                return False

        wait_for(written, 30, "the enrolled module's state-set")
        other = set_value("line2")
        assert other["success"] is False and other["code"] == "PERMISSION_DENIED", other
        assert "press" in str(other["error"])
        worker = Worker(stack.endpoint, "acme.Press", lambda f: [b"pressed", *f], curve=curve)
        worker.start()
        try:

            def served() -> bool:
                try:
                    with Client(stack.endpoint, timeout=5, retries=0, curve=curve) as c:
                        return c.request("acme.Press", b"x") == [b"pressed", b"x"]
                except Exception:  # not registered yet: SERVICE_UNAVAILABLE
                    return False

            wait_for(served, 30, "the module serving its own service")
        finally:
            worker.stop()
        got = stack.plant("state", "get", "--service", "line1", "speed")
        assert got.returncode == 0 and got.stdout.strip() == "42", got.stderr
    finally:
        stack.kill_all()
