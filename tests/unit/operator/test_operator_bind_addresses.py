"""Pods must listen on all interfaces, because a component started by hand binds loopback only.

The defaults in ``plantd.common.contract`` are loopback (docs/security.md, "Bind addresses");
the operator renders the container values explicitly. If it stopped doing so, every pod would
bind 127.0.0.1 and nothing in the cluster could reach the broker, its buses or the probes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plantd.common import contract
from plantd.common.config import BrokerSettings, EchoSettings
from plantd_operator.builders import render_children
from plantd_operator.context import ClusterContext

pytestmark = pytest.mark.unit
Factory = Callable[..., ClusterContext]


def _config(children: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = [
        c for c in children if c["kind"] == "ConfigMap" and c["metadata"]["name"] == "demo-config"
    ]
    data: dict[str, str] = cm["data"]
    return data


def test_standalone_defaults_are_loopback() -> None:
    broker = BrokerSettings.load(environ={})
    assert broker.endpoint == "tcp://127.0.0.1:9797"
    assert broker.bus_bind == "127.0.0.1"
    assert broker.http_host == "127.0.0.1"
    assert EchoSettings.load(environ={}).http_host == "127.0.0.1"


def test_pods_bind_every_interface(ctx_factory: Factory) -> None:
    data = _config(render_children(ctx_factory()))
    assert data["PLANTD_BROKER_ENDPOINT"] == "tcp://*:9797"
    assert data["PLANTD_BROKER_BUS_BIND"] == "*"
    for component in (contract.BROKER, contract.STATE, contract.IDENTITY):
        assert data[contract.env_key(component, contract.KEY_HTTP_HOST)] == "0.0.0.0"
    # What a pod's broker would resolve from exactly these variables.
    env = {k: v for k, v in data.items() if k.startswith("PLANTD_BROKER_")}
    broker = BrokerSettings.load(environ=env)
    assert (broker.endpoint, broker.bus_bind, broker.http_host) == ("tcp://*:9797", "*", "0.0.0.0")


def test_image_sets_the_container_bind_addresses() -> None:
    """`docker run IMAGE broker` (no operator) must listen on all interfaces as well."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "Dockerfile").read_text()
    assert f"PLANTD_BROKER_ENDPOINT={contract.CONTAINER_BROKER_BIND}" in text
    assert f"PLANTD_BROKER_BUS_BIND={contract.CONTAINER_BIND_HOST}" in text
    for component in (contract.BROKER, contract.STATE, contract.IDENTITY, contract.ECHO):
        key = contract.env_key(component, contract.KEY_HTTP_HOST)
        assert f"{key}={contract.CONTAINER_HTTP_HOST}" in text
