"""`plantd up` enrols the stack's own keys in registry.json (plantd.cli.up.enrol_stack) and
points the broker at it (plantd.cli.stack.component_settings)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from plantd.cli import stack
from plantd.cli.errors import CliError
from plantd.cli.up import enrol_stack
from plantd.common.curve import generate_keypair, write_keypair
from plantd.common.registry import Identity, Registry

pytestmark = pytest.mark.unit

NAMES = ["broker", "echo", "state", "client"]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    for n in NAMES:
        write_keypair(d, n, generate_keypair())
    return d


def test_first_run_writes_own_identities_0600(keys: Path) -> None:
    added = enrol_stack(keys, NAMES)
    assert added == sorted(NAMES)
    path = keys / "registry.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reg = Registry.load(path)
    st = reg.by_name("state")
    assert st is not None and st.kind == "plantd" and st.services == ("org.plantd.State",)
    assert reg.may_publish(st.public_key, "state", b"any")
    client = reg.by_name("client")
    assert client is not None and client.kind == "client" and client.services == ()
    echo = reg.by_name("echo")
    assert echo is not None and reg.may_serve(echo.public_key, "org.plantd.module.Echo")
    assert enrol_stack(keys, NAMES) == []  # second run: nothing to add, nothing written


def test_later_runs_keep_other_identities_and_add_missing(keys: Path) -> None:
    enrol_stack(keys, ["broker", "client"])
    path = keys / "registry.json"
    reg = Registry.load(path).with_identity(
        Identity("plc", "module", generate_keypair().public.decode(), ("org.example.*",))
    )
    path.write_bytes(reg.to_json())
    os.chmod(path, 0o600)
    assert enrol_stack(keys, NAMES) == ["echo", "state"]
    names = {i["name"] for i in json.loads(path.read_text())["identities"]}
    assert names == {*NAMES, "plc"}


def test_a_broken_registry_stops_up_with_the_file_named(keys: Path) -> None:
    (keys / "registry.json").write_text("{nope")
    with pytest.raises(CliError) as info:
        enrol_stack(keys, NAMES)
    assert "registry.json" in str(info.value)


def test_the_broker_is_pointed_at_the_registry(tmp_path: Path) -> None:
    plan = stack.StackPlan(tmp_path)
    broker = stack.component_settings(plan, "broker")
    assert broker["registry"] == str(plan.keys_dir / "registry.json")
    assert "registry" not in stack.component_settings(plan, "echo")
    off = stack.StackPlan(tmp_path, curve=False)
    assert "registry" not in stack.component_settings(off, "broker")
    env = stack.child_env(plan, "broker", {})
    assert env["PLANTD_BROKER_REGISTRY"] == str(plan.keys_dir / "registry.json")
