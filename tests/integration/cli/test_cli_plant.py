"""`plant` against a real stack (`plantd up` with CURVE): echo, services, request, errors."""

from __future__ import annotations

import json
import time

import pytest
from clikit import Stack, clean_env, require, run_cli

pytestmark = pytest.mark.integration


def test_echo_prints_each_frame(stack: Stack) -> None:
    r = stack.plant("echo", "hello", "wide world")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hello", "wide world"]
    assert r.stderr == ""
    verbose = stack.plant("-v", "echo", "v")
    assert verbose.stdout == "v\n"
    assert f"plant: {stack.endpoint} (profile default, CURVE keys" in verbose.stderr
    assert "done in" in verbose.stderr


def test_echo_json(stack: Stack) -> None:
    r = stack.plant("--json", "echo", "x")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["service"] == "org.plantd.module.Echo"
    assert doc["reply"] == ["x"]
    assert doc["elapsed_ms"] > 0


def test_echo_with_the_original_envelope(stack: Stack) -> None:
    # The original `plant echo` sent {"service": "org.plantd.Client", "message": MSG}; the module
    # echoes it verbatim and the CLI prints the message, not the JSON.
    r = stack.plant("echo", "--envelope", "hello", "you")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hello", "you"]
    doc = json.loads(stack.plant("--json", "echo", "--envelope", "hi").stdout)
    assert [json.loads(f) for f in doc["reply"]] == [
        {"service": "org.plantd.Client", "message": "hi"}
    ]
    # Without --envelope a JSON-looking MSG is echoed exactly as typed.
    raw = stack.plant("echo", '{"message": "x"}')
    assert raw.stdout.splitlines() == ['{"message": "x"}']


def test_services_lists_echo_and_broker(stack: Stack) -> None:
    table = stack.plant("services")
    assert table.returncode == 0, table.stderr
    assert "org.plantd.module.Echo" in table.stdout
    doc = json.loads(stack.plant("--json", "services").stdout)
    by_name = {row["service"]: row for row in doc["services"]}
    assert by_name["org.plantd.module.Echo"]["workers"] >= 1
    assert "org.plantd.Broker" in by_name


def test_request_raw_frames(stack: Stack) -> None:
    r = stack.plant("request", "org.plantd.module.Echo", "echo", "a", "b")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["a", "b"]
    j = stack.plant("--json", "request", "mmi.service", "org.plantd.module.Echo")
    assert json.loads(j.stdout)["frames"] == ["200"]


def test_request_stream_marks_final(stack: Stack) -> None:
    r = stack.plant("--json", "request", "--stream", "org.plantd.module.Echo", "echo", "s")
    assert r.returncode == 0, r.stderr
    parts = [json.loads(line) for line in r.stdout.splitlines()]
    assert parts[-1] == {"final": True, "frames": ["s"]}
    assert all(not p["final"] for p in parts[:-1])


def test_unknown_service_is_a_clear_error(stack: Stack) -> None:
    start = time.monotonic()
    r = stack.plant("--timeout", "1", "request", "org.plantd.NoSuchThing", "x")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "org.plantd.NoSuchThing" in r.stderr and "not registered" in r.stderr
    assert "plant services" in r.stderr
    assert time.monotonic() - start < 10
    j = stack.plant("--json", "--timeout", "1", "request", "org.plantd.NoSuchThing", "x")
    err = json.loads(j.stderr)
    assert err["exit_code"] == 3 and err["service"] == "org.plantd.NoSuchThing"


def test_wrong_keys_are_refused(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    # A client key the broker does not know: CURVE refuses the handshake, we time out.
    other = tmp_path_factory.mktemp("otherkeys")
    gen = run_cli("plantd", ["keys", "generate", "--dir", str(other)], stack.env)
    assert gen.returncode == 0, gen.stderr
    r = stack.plant("--timeout", "1", "--curve-keys", str(other), "echo", "x")
    assert r.returncode == 3
    assert "no reply from" in r.stderr and "public key" in r.stderr


def test_second_stack_on_busy_ports_fails_fast(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = clean_env(tmp_path_factory.mktemp("home2"))
    r = run_cli("plantd", ["up", "--port-offset", str(stack.offset)], env, timeout=30)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "already in use" in r.stderr and "--port-offset" in r.stderr


def test_state_group_is_registered_and_connects(stack: Stack) -> None:
    # `plant state` comes from plantd.state.cli; it must use the same endpoint and keys.
    if "state" not in stack.children():
        require(False, "this installation has no state service (plantd up skipped it)")
    scope = "org.plantd.CliTest"
    login = stack.login_admin()  # the stack's state refuses callers without a token
    assert login.returncode == 0, login.stderr
    created = stack.plant("state", "create-scope", "--service", scope, timeout=30)
    assert created.returncode == 0, created.stderr
    put = stack.plant("state", "set", "--service", scope, "k", "v1")
    assert put.returncode == 0, put.stderr
    got = stack.plant("--json", "state", "get", "--service", scope, "k")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["value"] == "v1"
