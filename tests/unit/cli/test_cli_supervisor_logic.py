"""Pure parts of `plantd up`: restart backoff, exit descriptions, child environments."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantd.cli import stack
from plantd.cli.supervisor import Backoff, describe_exit
from plantd.cli.up import redact_url, split_password, try_hint
from plantd.common import contract

pytestmark = pytest.mark.unit


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff(initial=0.5, factor=2, maximum=4, reset_after=30)
    assert [b.delay(ran_for=1) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert b.delay(ran_for=31) == 0.5  # it had been healthy: start over
    assert b.delay(ran_for=1) == 1


def test_describe_exit() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"


def _plan(**kw: object) -> stack.StackPlan:
    return stack.StackPlan(state_dir=Path("/s"), **kw)  # type: ignore[arg-type]


def test_child_env_wires_every_component() -> None:
    plan = _plan(port_offset=100, redis_url="redis://h:1/0", heartbeat_ms=300)
    base = {"PATH": "/bin", "PLANTD_ECHO_HTTP_PORT": "1", "PLANTD_STATE_LOG_LEVEL": "debug"}
    broker = stack.child_env(plan, contract.BROKER, base)
    assert broker["PLANTD_BROKER_ENDPOINT"] == "tcp://127.0.0.1:9897"
    assert broker["PLANTD_BROKER_BUSES"] == "state=11100:11101,event=12100:12101,metric=13100:13101"
    assert broker["PLANTD_BROKER_CURVE_KEYS"] == "/s/keys"
    assert broker["PLANTD_BROKER_HEARTBEAT_MS"] == "300"
    assert broker["PATH"] == "/bin"
    echo = stack.child_env(plan, contract.ECHO, base)
    assert echo["PLANTD_ECHO_BROKER_ENDPOINT"] == "tcp://127.0.0.1:9897"
    assert echo["PLANTD_ECHO_HTTP_PORT"] == str(contract.HTTP_PORTS["echo"] + 100)  # wiring wins
    state = stack.child_env(plan, contract.STATE, base)
    assert state["PLANTD_STATE_STORE"] == "redis"
    assert state["PLANTD_STATE_REDIS_URL"] == "redis://h:1/0"
    assert state["PLANTD_STATE_LOG_LEVEL"] == "debug"  # the user's choice is kept
    assert state["PLANTD_STATE_BUS_ENDPOINT"] == "tcp://127.0.0.1:11100"
    plain = stack.child_env(_plan(curve=False), contract.STATE, {})
    assert plain["PLANTD_STATE_CURVE"] == "false" and plain["PLANTD_STATE_STORE"] == "sqlite"
    assert plain["PLANTD_STATE_DATA_DIR"] == "/s/state"


def test_listen_everywhere_binds_star_but_connects_loopback() -> None:
    plan = _plan(listen="0.0.0.0")
    env = stack.child_env(plan, contract.BROKER, {})
    assert env["PLANTD_BROKER_ENDPOINT"] == "tcp://*:9797"
    assert env["PLANTD_BROKER_BUS_BIND"] == "*"
    assert plan.mdp_endpoint == "tcp://127.0.0.1:9797"


def test_all_ports_distinct() -> None:
    ports = _plan().all_ports()
    assert len(ports) == len(set(ports))


def test_redact_url() -> None:
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://user:pw@h/1") == "redis://user:***@h/1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_split_password() -> None:
    assert split_password("redis://:p%40ss@h:1/0") == ("redis://h:1/0", "p@ss")
    assert split_password("rediss://u:pw@h/2") == ("rediss://u@h/2", "pw")
    assert split_password("redis://h:1/0") == ("redis://h:1/0", None)


def test_try_hint_adds_only_needed_flags() -> None:
    default_dir = Path(contract.DEFAULT_CURVE_KEYS_DIR).expanduser().parent
    echo_only = [contract.BROKER, contract.ECHO]
    assert try_hint(stack.StackPlan(state_dir=default_dir), echo_only) == "`plant echo hello`"
    hint = try_hint(stack.StackPlan(state_dir=Path("/x"), port_offset=5), echo_only)
    assert "--endpoint tcp://127.0.0.1:9802" in hint and "--curve-keys /x/keys" in hint
    plain = stack.StackPlan(state_dir=Path("/x"), curve=False)
    assert "--no-curve" in try_hint(plain, echo_only)
    assert try_hint(plain, [contract.BROKER]) == ""
