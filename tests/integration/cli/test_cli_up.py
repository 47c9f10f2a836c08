"""`plantd up` end to end: ready, `plant echo` with its keys, crash restart, clean stop."""

from __future__ import annotations

import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
import redis
from clikit import Redis, Stack, free_port_offset, pid_alive, require, run_cli, wait_for

pytestmark = pytest.mark.integration


def test_up_echo_restart_and_clean_stop(home: Path) -> None:
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    s = Stack(home)
    s.start()
    try:
        s.wait_ready()
        out = s.output()
        assert "plantd up" in out and s.endpoint in out, out  # the endpoint banner

        # Keys were generated on first run, secrets 0600, and `plant` finds them by default
        # (no --curve-keys): HOME/.local/state/plantd/keys.
        keys = home / ".local" / "state" / "plantd" / "keys"
        for name in ("broker", "echo", "client"):
            mode = stat.S_IMODE((keys / f"{name}.key_secret").stat().st_mode)
            assert mode == 0o600, f"{name}.key_secret has mode {oct(mode)}"
        reply = s.plant("echo", "hello")
        assert reply.returncode == 0, reply.stderr
        assert reply.stdout.splitlines() == ["hello"]

        children = s.children()
        assert {"broker", "echo"} <= set(children), children
        echo_pid = children["echo"]
        os.kill(echo_pid, signal.SIGKILL)

        wait_for(lambda: s.has_line("echo was killed by SIGKILL"), 10, "the crash report")
        wait_for(lambda: s.has_line("restarting echo in"), 10, "the restart notice")
        wait_for(lambda: s.children().get("echo") not in (None, echo_pid), 15, "a new echo process")
        wait_for(lambda: s.has_line("echo is ready again"), 20, "echo to be ready again")
        # Until the broker notices the dead worker (heartbeat expiry), a request may still be
        # routed to it and fail with WORKER_LOST (exit 3); poll until the new worker answers.
        answers: list[str] = []

        def echo_answers() -> bool:
            again = s.plant("--timeout", "5", "echo", "hello", "again")
            assert again.returncode in (0, 3), again.stderr
            answers[:] = again.stdout.splitlines()
            return again.returncode == 0

        wait_for(echo_answers, 30, "echo to answer after the restart", interval=0.2)
        assert answers == ["hello", "again"]

        pids = set(s.children().values()) | s.known_pids
        code = s.stop(signal.SIGINT, timeout=30)
        assert code == 0, s.output()
        assert s.has_line("plantd up: stopped")
        alive = [p for p in pids if pid_alive(p)]
        assert not alive, f"children left running: {alive}"
    finally:
        s.kill_all()


def test_up_sigterm_stops_cleanly_without_curve(home: Path) -> None:
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    s = Stack(home, "--no-curve", "--without", "state")
    s.start()
    try:
        s.wait_ready()
        assert not (home / ".local" / "state" / "plantd" / "keys").exists()
        reply = s.plant("--no-curve", "echo", "plain")
        assert reply.returncode == 0, reply.stderr
        assert reply.stdout.strip() == "plain"
        pids = set(s.children().values())
        assert s.stop(signal.SIGTERM) == 0, s.output()
        assert not [p for p in pids if pid_alive(p)]
    finally:
        s.kill_all()


def test_up_with_redis_store_never_prints_the_password(home: Path, tmp_path: Path) -> None:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    password = "s3cret-Pw-123"
    server = Redis(tmp_path, password=password)
    server.start()
    s = Stack(home, "--redis", server.url, "--without", "echo")
    try:
        s.start()
        s.wait_ready()
        scope = "org.plantd.RedisCli"
        login = s.login_admin()  # state runs with --auth identity
        assert login.returncode == 0, login.stderr
        assert s.plant("state", "create-scope", "--service", scope).returncode == 0
        put = s.plant("state", "set", "--service", scope, "k", "in-redis")
        assert put.returncode == 0, put.stderr
        client = redis.Redis.from_url(server.url)
        try:
            stored = " ".join(str(k) for k in client.keys("*"))
        finally:
            client.close()
        assert scope in stored  # the value went to Redis, not to SQLite
        state_dir = home / ".local" / "state" / "plantd"
        assert not (state_dir / "state").exists()
        # The password reaches the state service in a 0600 file, not in its environment.
        secret = state_dir / "redis-password"
        assert secret.read_text() == password
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        environ = Path(f"/proc/{s.children()['state']}/environ").read_bytes()
        assert password.encode() not in environ
        assert s.stop() == 0
        assert password not in s.output()
    finally:
        s.kill_all()
        server.stop()


def test_children_die_with_a_killed_supervisor(home: Path) -> None:
    # SIGKILL cannot be handled: the children must still not outlive `plantd up` (PDEATHSIG).
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    s = Stack(home, "--no-curve", "--without", "state", "--without", "identity")
    s.start()
    try:
        s.wait_ready()
        pids = set(s.children().values())
        assert len(pids) == 2
        assert s.proc is not None
        s.proc.kill()
        s.proc.wait(timeout=10)
        wait_for(lambda: not any(pid_alive(p) for p in pids), 10, "the orphans to exit")
    finally:
        s.kill_all()


@pytest.mark.parametrize("damage", ["corrupt", "world-readable", "corrupt-no-public"])
def test_up_refuses_unusable_keys_before_starting_anything(
    home: Path, env: dict[str, str], damage: str
) -> None:
    keys = home / ".local" / "state" / "plantd" / "keys"
    gen = run_cli("plantd", ["keys", "generate", "--dir", str(keys)], env)
    assert gen.returncode == 0, gen.stderr
    victim = keys / ("broker.key_secret" if damage == "world-readable" else "echo.key_secret")
    if damage == "world-readable":
        victim.chmod(0o644)
    else:
        victim.write_text("not a certificate\n")
        if damage == "corrupt-no-public":
            (keys / "echo.key").unlink()
    offset = free_port_offset()
    r = run_cli("plantd", ["up", "--port-offset", str(offset), "--without", "state"], env)
    assert r.returncode == 4, r.stdout + r.stderr
    assert victim.name in r.stderr, r.stderr
    assert "plantd keys generate" in r.stderr and "Traceback" not in r.stderr
    assert "plantd up" not in r.stdout  # no banner: nothing was started


def test_up_with_an_unusable_state_dir_says_so(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = run_cli(
        "plantd",
        ["up", "--port-offset", str(free_port_offset()), "--state-dir", str(blocker / "state")],
        env,
    )
    assert r.returncode == 4, r.stdout + r.stderr
    assert "cannot prepare the state directory" in r.stderr and "--state-dir" in r.stderr
    assert "Traceback" not in r.stderr
