"""Settings added or changed by issue 7: defaults users rely on, the echo dialect, and the
config <-> logging import cycle staying cut."""

from __future__ import annotations

import subprocess
import sys

import pytest

from plantd.bus.proxy import BusLimits
from plantd.common import contract
from plantd.common.config import BrokerSettings, ConfigError, EchoSettings

pytestmark = pytest.mark.unit


def test_logging_does_not_import_config() -> None:
    """The log-level types live in plantd.common.logging (their user); config imports them."""
    code = (
        "import sys, plantd.common.logging as l; "
        "assert 'plantd.common.config' not in sys.modules, 'cycle'; "
        "import plantd.common.config as c; assert c.LogLevel is l.LogLevel"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_broker_defaults_match_the_docs() -> None:
    s = BrokerSettings.load(environ={})
    assert s.request_timeout_ms == 5_000  # docs/protocol.md, README, the library's Broker
    # The settings' defaults are the bus module's own (one authority each, checked here).
    limits = BusLimits()
    assert (
        (s.bus_max_message_bytes, s.bus_max_frames, s.bus_hwm)
        == (
            limits.max_message_bytes,
            limits.max_frames,
            limits.hwm,
        )
        == (1024 * 1024, 8, 1000)
    )
    assert s.endpoint == contract.DEFAULT_BROKER_BIND == "tcp://127.0.0.1:9797"


def test_bus_limits_come_from_env_and_are_validated() -> None:
    env = {"PLANTD_BROKER_BUS_MAX_MESSAGE_BYTES": "65536", "PLANTD_BROKER_BUS_HWM": "10"}
    s = BrokerSettings.load(environ=env)
    assert (s.bus_max_message_bytes, s.bus_hwm) == (65536, 10)
    with pytest.raises(ConfigError, match="bus_hwm"):
        BrokerSettings.load(environ={"PLANTD_BROKER_BUS_HWM": "0"})


def test_echo_dialect() -> None:
    assert EchoSettings.load(environ={}).dialect == "mdp02"
    assert EchoSettings.load(environ={"PLANTD_ECHO_DIALECT": " LEGACY "}).dialect == "legacy"
    assert EchoSettings.load(flags={"dialect": "mdp01"}, environ={}).dialect == "mdp01"
    with pytest.raises(ConfigError, match="dialect"):
        EchoSettings.load(environ={"PLANTD_ECHO_DIALECT": "mdp03"})
