"""Nothing rendered that does not ship: every command, setting and port the operator puts in a
pod exists in plantd.common.contract and in the installed `plantd <component> --help`.

The renders cover the default cluster and one with every option on, so a setting added to a
builder without a service reading it (as PLANTD_STATE_REDIS_PASSWORD once was: `plantd
state` reads only a password file) fails here.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from plantd.common import contract
from plantd.gateway import health
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
    "sidecars": {"grpc": {"edge": {"enabled": True, "type": "LoadBalancer"}}},
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
    known |= {contract.GRPC_PORT, contract.REST_PORT}
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


def test_the_sidecar_as_rendered_is_what_plantd_gateway_reads(
    ctx_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway parses the ConfigMap the operator renders, and the probes, ports and mounts
    of its container are the ones those settings make it serve and read."""
    from plantd.gateway.settings import GatewaySettings

    for children in renders(ctx_factory):
        config = next(c for c in children if c["kind"] == "ConfigMap")["data"]
        for deployment in ("demo-state", "demo-identity"):
            pod = next(
                c
                for c in children
                if c["kind"] == "Deployment" and c["metadata"]["name"] == deployment
            )["spec"]["template"]["spec"]
            (sidecar,) = [c for c in pod["containers"] if c["name"] == contract.GATEWAY]
            for key in [k for k in os.environ if k.startswith("PLANTD_")]:
                monkeypatch.delenv(key)
            for name, value in config.items():
                monkeypatch.setenv(name, value)
            settings = GatewaySettings()
            ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
            assert ports[contract.PORT_NAME_GRPC] == settings.grpc_port
            assert ports[contract.PORT_NAME_REST] == settings.rest_port and settings.rest
            assert ports["http-metrics-gw"] == settings.http_port
            # Reachable from the other pods: every socket binds all interfaces.
            assert settings.grpc_host == settings.rest_host == settings.http_host == "0.0.0.0"
            assert settings.auth == "identity", "a gateway in a cluster never runs open"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert sidecar[probe]["grpc"]["port"] == settings.grpc_port, probe
            assert sidecar["livenessProbe"]["grpc"]["service"] in health.LIVENESS
            assert sidecar["readinessProbe"]["grpc"]["service"] == contract.HEALTH_READINESS
            mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
            volumes = {v["name"] for v in pod["volumes"]}
            assert set(mounts.values()) <= volumes, deployment
            if settings.jwks_file is not None:
                assert str(settings.jwks_file.parent) in mounts, "the JWKS it reads is mounted"
            # Its rate limits share the state store's Redis, with the files mounted.
            state_url = config[contract.env_key(contract.STATE, contract.KEY_STATE_REDIS_URL)]
            assert settings.rate_limit_redis_url == state_url
            for path in (
                settings.rate_limit_redis_password_file,
                settings.rate_limit_redis_ca_file,
            ):
                if path is not None:
                    assert str(path.parent) in mounts, f"{deployment}: {path} not mounted"
            if settings.curve:
                assert str(settings.curve_keys) in mounts
                assert mounts[str(settings.curve_keys)] == "curve-keys-gw", "its own key pair"
            # The bus ports it follows are the broker's: it calls and subscribes through the
            # broker Service (any one broker), publishes to every broker pod (docs/ha.md).
            workers = config[contract.env_key(contract.STATE, contract.KEY_BROKER_ENDPOINT)]
            peers = workers.removeprefix("dns:tcp://").rsplit(":", 1)[0]
            assert workers.startswith("dns:tcp://") and peers.endswith(
                "-broker-headless." + peers.split(".", 1)[1]
            )
            host = settings.broker_endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
            assert host == peers.replace("-broker-headless.", "-broker.", 1)
            for endpoint in (
                settings.state_sub_endpoint,
                settings.event_sub_endpoint,
                settings.metric_sub_endpoint,
            ):
                assert endpoint.startswith(f"tcp://{host}:"), endpoint
            for endpoint in (settings.event_pub_endpoint, settings.metric_pub_endpoint):
                assert endpoint.startswith(f"dns:tcp://{peers}:"), endpoint
