"""``plant state ...`` against a real broker and state service, and ``watch`` in another process."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from statekit import PYTHON, Broker, StateProc, base_env, stop_process

from plantd.cli.plant import cli
from plantd.mdp import Client
from plantd.state.client import StateClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sqlite_state(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[StateProc]:
    proc = StateProc("state-cli", tmp_path_factory.mktemp("state-cli"), broker).start()
    try:
        yield proc
    finally:
        proc.proc.stop()


def global_args(broker: Broker) -> list[str]:
    return ["--endpoint", broker.endpoint, "--curve-keys", str(broker.keys_dir), "--timeout", "5"]


def plant(broker: Broker, tmp_path: Path, *args: str, stdin: str | None = None) -> Result:
    env = {"PLANTD_CONFIG": str(tmp_path / "absent.yaml")}
    return CliRunner().invoke(cli, [*global_args(broker), *args], input=stdin, env=env)


def plant_json(broker: Broker, tmp_path: Path, *args: str, stdin: str | None = None) -> Any:
    r = plant(broker, tmp_path, "--json", *args, stdin=stdin)
    assert r.exit_code == 0, (r.output, r.stderr if r.stderr_bytes else "")
    return json.loads(r.stdout)


def test_cli_round_trip(sqlite_state: StateProc, broker: Broker, tmp_path: Path) -> None:
    s = f"cli.{uuid.uuid4().hex[:6]}"
    r = plant(broker, tmp_path, "state", "set", "temp", "21.5", "--service", s)
    assert r.exit_code == 0 and f"{s} temp = 21.5" in r.stdout
    assert plant(broker, tmp_path, "state", "get", "temp", "--service", s).stdout == "21.5\n"
    data = plant_json(broker, tmp_path, "state", "get", "temp", "--service", s)
    assert data["value"] == "21.5" and data["found"] is True
    version = data["version"]
    stale = plant(broker, tmp_path, "state", "set", "temp", "0", "-s", s, "--if-version", "1")
    assert stale.exit_code == 1 and "version mismatch" in stale.stderr
    fresh = plant_json(
        broker, tmp_path, "state", "set", "temp", "22", "-s", s, "--if-version", str(version)
    )
    assert fresh["version"] > version
    missing = plant(broker, tmp_path, "state", "get", "nope", "--service", s)
    assert missing.exit_code == 1 and "not set" in missing.stderr
    assert plant(broker, tmp_path, "state", "list", "--service", s).stdout == "temp\n"
    assert s in plant(broker, tmp_path, "state", "list-scopes").stdout
    out = plant(broker, tmp_path, "state", "delete", "temp", "--service", s)
    assert out.exit_code == 0 and "deleted" in out.stdout
    assert plant(broker, tmp_path, "state", "delete-scope", "--service", s).exit_code == 0
    gone = plant(broker, tmp_path, "--json", "state", "list", "--service", s)
    assert gone.exit_code == 1
    assert json.loads(gone.stderr)["code"] == "SCOPE_NOT_FOUND"
    assert plant(broker, tmp_path, "state", "create-scope", "--service", s).exit_code == 0
    h = plant_json(broker, tmp_path, "state", "health", "--service", s)
    assert h["status"] == "healthy" and h["scope_exists"] is True


def test_cli_batches_from_stdin_and_file(
    sqlite_state: StateProc, broker: Broker, tmp_path: Path
) -> None:
    s = f"cli.{uuid.uuid4().hex[:6]}"
    doc = plant_json(
        broker, tmp_path, "state", "batch-set", "--service", s, stdin='{"a": "1", "b": "2"}'
    )
    assert doc["count"] == 2
    items = tmp_path / "items.json"
    items.write_text(json.dumps([{"key": "c", "value": "3", "ttl_ms": 60000}]))
    assert (
        plant_json(broker, tmp_path, "state", "batch-set", "-s", s, "--file", str(items))["count"]
        == 1
    )
    keys = tmp_path / "keys.json"
    keys.write_text('["b", "c"]')
    got = plant_json(
        broker, tmp_path, "state", "batch-get", "a", "zz", "-s", s, "--file", str(keys)
    )
    assert [(i["key"], i["value"], i["found"]) for i in got["items"]] == [
        ("a", "1", True),
        ("zz", "", False),
        ("b", "2", True),
        ("c", "3", True),
    ]
    bad = plant(broker, tmp_path, "state", "batch-set", "-s", s, stdin="{nope")
    assert bad.exit_code == 2 and "not valid JSON" in bad.stderr
    hist = plant(broker, tmp_path, "state", "history", "-s", s, "--since", "1")
    assert hist.stdout.splitlines() == ["2 set a = 1", "3 set b = 2", "4 set c = 3"]


def test_watch_in_another_process_sees_every_change_in_order(
    sqlite_state: StateProc, broker: Broker, client: Client, tmp_path: Path
) -> None:
    sc = StateClient(client)
    s = f"watch.{uuid.uuid4().hex[:6]}"
    sc.create_scope(s)
    start = sc.changes_since(s, 0)["revision"]
    n_writes = 120
    watcher = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "plantd.cli.plant",
            *global_args(broker),
            "--json",
            "state",
            "watch",
            "--service",
            s,
            "--bus-endpoint",
            broker.state_sub,
            "--from-revision",
            str(start),
            "--count",
            str(n_writes),
            "--idle-timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base_env(), "PLANTD_CONFIG": str(tmp_path / "absent.yaml")},
    )
    try:
        expected: list[tuple[str, str, str]] = []
        for i in range(100):
            key = f"k{i % 7}"
            sc.set(s, key, f"v{i}")
            expected.append(("set", key, f"v{i}"))
        sc.delete(s, "k0")
        expected.append(("delete", "k0", ""))
        sc.batch_set(s, [{"key": f"b{i}", "value": str(i)} for i in range(19)])
        expected += [("set", f"b{i}", str(i)) for i in range(19)]
        assert len(expected) == n_writes
        out, err = watcher.communicate(timeout=60)
    finally:
        stop_process(watcher)
    assert watcher.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert all(e["kind"] == "change" for e in events), events[:3]
    assert [e["revision"] for e in events] == list(range(start + 1, start + n_writes + 1))
    assert [(e["op"], e["key"], e["value"]) for e in events] == expected


def test_watch_snapshot_then_live(
    sqlite_state: StateProc, broker: Broker, client: Client, tmp_path: Path
) -> None:
    sc = StateClient(client)
    s = f"watch.{uuid.uuid4().hex[:6]}"
    sc.batch_set(s, [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "plantd.cli.plant",
            *global_args(broker),
            "state",
            "watch",
            "--service",
            s,
            "--bus-endpoint",
            broker.state_sub,
            "--snapshot",
            "--count",
            "1",
            "--idle-timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base_env(), "PLANTD_CONFIG": str(tmp_path / "absent.yaml")},
    )
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline().decode().strip() for _ in range(2)]
        assert first == ["3 snapshot a = 1", "3 snapshot b = 2"]
        sc.set(s, "a", "new")
        out, err = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["4 set a = new"]
