"""Nothing rendered that does not ship: every command, setting and port the operator puts in a
pod exists in plantd.common.contract and in the installed `plantd <component> --help`.

The renders cover the default cluster and one with every option on, so a setting added to a
builder without a service reading it (as PLANTD_STATE_REDIS_PASSWORD once was: `plantd
state` reads only a password file) fails here.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from plantd.common import contract
from plantd_operator import shipped
from plantd_operator.builders import render_children
from plantd_operator.context import ClusterContext

pytestmark = pytest.mark.unit
Factory = Callable[..., ClusterContext]
PLANTD = [sys.executable, "-c", "from plantd.cli.plantd import main; main()"]
FULL = {
    "state": {
        "redis": {
            "mode": "external",
            "external": {
                "address": "r.db:6380",
                "secretRef": {"name": "pw", "key": "password"},
                "tls": {"enabled": True, "caSecretRef": {"name": "ca", "key": "ca.crt"}},
            },
        }
    },
    "mesh": {"istio": {"enabled": True}},
    "networkPolicy": {"enabled": True},
    "security": {"curve": {"clientKeysConfigMap": "extra"}},
    "identity": {"bootstrapSecretRef": {"name": "first-admin"}},
}
VERIFIED = {
    "state:password": "p",
    "state:ca": "c",
    "identity:jwt": "j",
    "identity:bootstrap": "b",
    "curve": "k",
}


@functools.cache
def help_text(component: str) -> str:
    out = subprocess.run(
        [*PLANTD, component, "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def renders(factory: Factory) -> list[list[dict[str, Any]]]:
    return [
        render_children(factory()),
        render_children(factory(FULL, secret_digests=VERIFIED, jwks='{"keys":[]}')),
    ]


def plantd_containers(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for obj in children
        if obj["kind"] in ("Deployment", "StatefulSet")
        for c in obj["spec"]["template"]["spec"]["containers"]
        if c["command"][0] == "plantd"
    ]


def contract_keys() -> set[str]:
    return {v for k, v in vars(contract).items() if k.startswith("KEY_") and isinstance(v, str)}


def test_the_launcher_used_here_is_the_plantd_command() -> None:
    assert (
        "Run plantd components"
        in subprocess.run(
            [*PLANTD, "--help"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )


def test_the_broker_fetches_enrolments_exactly_when_it_can() -> None:
    listed = bool(re.search(r"\bPLANTD_BROKER_IDENTITY_REGISTRY\b", help_text(contract.BROKER)))
    assert listed == shipped.BROKER_IDENTITY_REGISTRY, (
        "plantd broker --help and shipped.BROKER_IDENTITY_REGISTRY disagree: set it to "
        f"{listed} so the operator renders PLANTD_BROKER_IDENTITY_REGISTRY only when it works"
    )


@pytest.mark.parametrize("component", shipped.RENDERED)
def test_rendered_components_ship(component: str) -> None:
    assert "not available" not in help_text(component).lower(), component


def test_the_gateway_is_rendered_only_when_it_ships() -> None:
    # Rendering needs the command; the command alone (issue 9's first slice: StateService only)
    # does not turn the sidecar on: GATEWAY_SHIPPED flips when the whole sidecar ships.
    text = help_text(contract.GATEWAY).lower()
    if shipped.GATEWAY_SHIPPED:
        assert "not available" not in text, "the operator renders a gateway this image lacks"


def test_every_command_is_a_shipped_component(ctx_factory: Factory) -> None:
    for children in renders(ctx_factory):
        for c in plantd_containers(children):
            assert c["command"] == contract.command_for(c["command"][1])
            assert c["command"][1] in shipped.RENDERED, c["command"]


def test_every_setting_is_in_the_contract_and_in_the_component_help(ctx_factory: Factory) -> None:
    keys = contract_keys()
    for children in renders(ctx_factory):
        config = next(c for c in children if c["kind"] == "ConfigMap")["data"]
        env_names = {e["name"] for c in plantd_containers(children) for e in c.get("env", [])}
        for name in set(config) | env_names:
            m = re.fullmatch(r"PLANTD_([A-Z]+)_([A-Z0-9_]+)", name)
            assert m, name
            component, key = m.group(1).lower(), m.group(2).lower()
            assert component in shipped.RENDERED, f"{name}: {component} does not ship"
            assert key in keys, f"{name}: no KEY_* constant {key!r} in plantd.common.contract"
            assert re.search(rf"\b{name}\b", help_text(component)), (
                f"{name} is rendered but `plantd {component} --help` does not list it"
            )


def test_every_port_is_a_contract_port(ctx_factory: Factory) -> None:
    known = {contract.MDP_PORT, contract.REDIS_PORT, *contract.HTTP_PORTS.values()}
    known |= {p for pair in contract.BUS_PORTS.values() for p in pair}
    for children in renders(ctx_factory):
        for obj in children:
            if obj["kind"] in ("Deployment", "StatefulSet"):
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    for p in c.get("ports", []):
                        assert p["containerPort"] in known, (obj["metadata"]["name"], p)
            if obj["kind"] == "Service":
                for p in obj["spec"]["ports"]:
                    assert p["port"] in known, (obj["metadata"]["name"], p)


def test_settings_the_services_read_match_the_ports_they_serve(ctx_factory: Factory) -> None:
    config = next(c for c in render_children(ctx_factory()) if c["kind"] == "ConfigMap")["data"]
    for component in shipped.RENDERED:
        port = config[contract.env_key(component, contract.KEY_HTTP_PORT)]
        assert port == str(contract.HTTP_PORTS[component])


def test_every_rendered_kind_has_an_api_path(ctx_factory: Factory) -> None:
    from plantd_operator import kube

    for children in renders(ctx_factory):
        for obj in children:
            assert kube.path(obj["apiVersion"], obj["kind"], "ns", "n"), obj["kind"]
