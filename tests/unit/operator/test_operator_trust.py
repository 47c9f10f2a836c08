"""The secured plant as the operator renders it: identity on the cluster's Redis, the broker's
machine registry, and state authorization against a mounted JWKS (issue 8 §9)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plantd.common import contract
from plantd.common.config import BrokerSettings
from plantd.common.registry import OWN_GRANTS, Registry, plantd_registry
from plantd.identity.settings import IdentitySettings
from plantd.state.config import StateSettings
from plantd_operator import admission, secrets, shipped, status
from plantd_operator.builders import render_children
from plantd_operator.context import ClusterContext

pytestmark = pytest.mark.unit
Factory = Callable[..., ClusterContext]
EXTERNAL = {
    "mode": "external",
    "external": {
        "address": "r.db:6380",
        "secretRef": {"name": "pw", "key": "password"},
        "tls": {"enabled": True, "caSecretRef": {"name": "ca", "key": "ca.crt"}},
    },
}
VERIFIED = {"state:password": "p1", "state:ca": "c1"}


def by_name(children: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in children if c["kind"] == kind}


def pod(children: list[dict[str, Any]], component: str) -> dict[str, Any]:
    spec: dict[str, Any] = by_name(children, "Deployment")[f"demo-{component}"]["spec"]
    return spec


def mounts(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in pod_spec["template"]["spec"]["containers"][0]["volumeMounts"]}


def volumes(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec["template"]["spec"]["volumes"]}


def config_hash(children: list[dict[str, Any]], component: str) -> str:
    return str(
        pod(children, component)["template"]["metadata"]["annotations"]["plantd.io/config-hash"]
    )


def settings(children: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = by_name(children, "ConfigMap")["demo-config"]["data"]
    return data


def curve_keys() -> dict[str, str]:
    """Public keys as the reconcile reads them from a freshly generated CURVE Secret."""
    components = ["broker", "state", "identity"]
    data = secrets.encode(secrets.curve_entries(components))
    return secrets.curve_public_keys(data, components)


# ----------------------------------------------------------------------------- identity


@pytest.mark.parametrize("redis", [{}, EXTERNAL], ids=["managed", "external"])
def test_identity_uses_the_state_stores_redis_with_the_same_wiring(
    ctx_factory: Factory, redis: dict[str, Any]
) -> None:
    ctx = ctx_factory({"state": {"redis": redis}}, secret_digests=VERIFIED)
    assert ctx.identity_store == "redis"
    children = render_children(ctx)
    data = settings(children)
    assert data["PLANTD_IDENTITY_STORE"] == "redis"
    for key in ("REDIS_URL", "REDIS_PASSWORD_FILE", "REDIS_CA_FILE"):
        assert data.get(f"PLANTD_IDENTITY_{key}") == data.get(f"PLANTD_STATE_{key}"), key
    assert data["PLANTD_IDENTITY_REDIS_PASSWORD_FILE"] == "/etc/plantd/redis-auth/password"
    assert "PLANTD_IDENTITY_REDIS_PREFIX" not in data, "identity keeps its own default prefix"
    state, identity = pod(children, "state"), pod(children, "identity")
    for name in ("redis-auth", "redis-tls") if redis else ("redis-auth",):
        assert volumes(identity)[name] == volumes(state)[name], name
        assert mounts(identity)[name] == mounts(state)[name], name
        assert mounts(identity)[name]["readOnly"] is True


def test_the_identity_service_accepts_what_is_rendered(ctx_factory: Factory) -> None:
    data = settings(render_children(ctx_factory({"state": {"redis": EXTERNAL}})))
    env = {k: v for k, v in data.items() if k.startswith("PLANTD_IDENTITY_")}
    s = IdentitySettings.load(environ=env)
    assert s.store == "redis" and s.redis_url == "rediss://r.db:6380/0"
    assert str(s.redis_password_file) == "/etc/plantd/redis-auth/password"
    assert str(s.redis_ca_file) == "/etc/plantd/redis-tls/ca.crt"


def test_identity_replicas_are_honoured_on_redis(ctx_factory: Factory) -> None:
    ctx = ctx_factory({"identity": {"replicas": 3}})
    assert ctx.identity_replicas == 3
    assert "IdentityReplicasCapped" not in {p.reason for p in admission.check(ctx, ())}
    assert pod(render_children(ctx), "identity")["replicas"] == 3
    stanza = status.build(
        ctx, status.Observation(generation=1, applied_generation=1, paused=False), {}, "t"
    )
    assert stanza["components"]["identity"]["desired"] == 3


def test_identity_rolls_when_the_redis_password_changes(ctx_factory: Factory) -> None:
    def hashes(digest: str) -> tuple[str, str]:
        children = render_children(ctx_factory(secret_digests={"state:redis": digest}))
        return config_hash(children, "identity"), config_hash(children, "broker")

    (id_a, broker_a), (id_b, broker_b) = hashes("a"), hashes("b")
    assert id_a != id_b
    assert broker_a == broker_b, "the broker does not read Redis"


def test_identity_may_reach_redis_through_policy(ctx_factory: Factory) -> None:
    children = render_children(
        ctx_factory({"networkPolicy": {"enabled": True}, "mesh": {"istio": {"enabled": True}}})
    )
    nps = by_name(children, "NetworkPolicy")
    egress = nps["demo-identity"]["spec"]["egress"]
    assert {"protocol": "TCP", "port": contract.REDIS_PORT} in [
        p for rule in egress for p in rule["ports"]
    ]
    peers = nps["demo-redis"]["spec"]["ingress"][0]["from"]
    components = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers}
    assert components == {"state", "identity"}
    redis_ap = by_name(children, "AuthorizationPolicy")["demo-redis-allow"]
    principals = redis_ap["spec"]["rules"][0]["from"][0]["source"]["principals"]
    assert principals == [
        "cluster.local/ns/plant/sa/demo-identity",
        "cluster.local/ns/plant/sa/demo-state",
    ]


# ----------------------------------------------------------------------------- registry


def test_curve_public_keys_are_read_from_the_secret() -> None:
    entries = secrets.curve_entries(["broker", "state"])
    keys = secrets.curve_public_keys(secrets.encode(entries), ["broker", "state", "identity"])
    assert set(keys) == {"broker", "state"}, "a component without a pair is left out"
    for name, key in keys.items():
        assert f'public-key = "{key}"' in entries[f"{name}.key"]
    broken = secrets.encode({"state.key": 'public-key = "not a z85 key at all, forty chars!"'})
    assert secrets.curve_public_keys(broken, ["state"]) == {}
    assert secrets.curve_public_keys({"state.key": "%%% not base64"}, ["state"]) == {}


def test_registry_config_map_holds_the_components_own_identities(ctx_factory: Factory) -> None:
    keys = curve_keys()
    children = render_children(ctx_factory(curve_public_keys=keys))
    cm = by_name(children, "ConfigMap")["demo-registry"]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    text = cm["data"]["registry.json"]
    # One authority for the grants: exactly what plantd.common.registry says.
    assert text == plantd_registry({k: n for n, k in keys.items()}).to_json().decode()
    reg = Registry.from_dict(json.loads(text))
    for name, key in keys.items():
        ident = reg.by_key(key)
        assert ident is not None and ident.name == name and ident.kind == "plantd"
        assert ident.services == OWN_GRANTS[name][0]
    assert reg.may_serve(keys["state"], contract.SERVICE_STATE)
    assert not reg.may_serve(keys["identity"], contract.SERVICE_STATE)
    assert "secret" not in text, "public keys only"


def test_the_mounted_registry_is_accepted_by_the_broker(
    ctx_factory: Factory, tmp_path: Path
) -> None:
    children = render_children(ctx_factory(curve_public_keys=curve_keys()))
    broker = pod(children, "broker")
    vol = volumes(broker)["registry"]
    assert vol["configMap"]["name"] == "demo-registry"
    assert mounts(broker)["registry"]["readOnly"] is True
    data = settings(children)
    path = data["PLANTD_BROKER_REGISTRY"]
    assert path.startswith(mounts(broker)["registry"]["mountPath"] + "/")
    assert path.rsplit("/", 1)[1] == vol["configMap"]["items"][0]["path"]
    # As kubelet writes it (defaultMode), the broker's loader takes it.
    directory = tmp_path / "registry"
    directory.mkdir(mode=0o755)
    target = directory / vol["configMap"]["items"][0]["path"]
    target.write_text(by_name(children, "ConfigMap")["demo-registry"]["data"]["registry.json"])
    target.chmod(vol["configMap"]["defaultMode"])
    assert len(Registry.load(target)) == 3
    broker_env = {k: v for k, v in data.items() if k.startswith("PLANTD_BROKER_")}
    assert str(BrokerSettings.load(environ=broker_env).registry) == path
    if shipped.BROKER_IDENTITY_REGISTRY:
        assert data["PLANTD_BROKER_IDENTITY_REGISTRY"] == "true"
    else:
        assert "PLANTD_BROKER_IDENTITY_REGISTRY" not in data
    # State reads the same registry (caller-key permissions); identity does not mount it.
    assert data["PLANTD_STATE_REGISTRY"] == path
    assert volumes(pod(children, "state"))["registry"] == vol
    assert "registry" not in volumes(pod(children, "identity"))


def test_registry_waits_for_the_keys_and_needs_curve(ctx_factory: Factory) -> None:
    before = render_children(ctx_factory())
    assert "demo-registry" not in by_name(before, "ConfigMap"), "no empty registry: deny-all"
    # The setting depends on the spec only, so the env ConfigMap is the same before and after.
    assert settings(before) == settings(
        render_children(ctx_factory(curve_public_keys=curve_keys()))
    )
    off = render_children(
        ctx_factory({"security": {"curve": {"enabled": False}}}, curve_public_keys=curve_keys())
    )
    assert "demo-registry" not in by_name(off, "ConfigMap")
    assert not any(k.endswith("_REGISTRY") for k in settings(off))
    assert "registry" not in volumes(pod(off, "broker"))


def test_a_key_rotation_rolls_the_broker_and_state(ctx_factory: Factory) -> None:
    one, two = curve_keys(), curve_keys()
    a = render_children(ctx_factory(curve_public_keys=one))
    b = render_children(ctx_factory(curve_public_keys=two))
    assert config_hash(a, "broker") != config_hash(b, "broker")
    assert config_hash(a, "state") != config_hash(b, "state")
    assert config_hash(a, "identity") == config_hash(b, "identity"), "identity reads no registry"


# ----------------------------------------------------------------------------- state auth

JWKS = '{"keys":[{"kty":"EC","crv":"P-256","x":"x","y":"y","kid":"k1"}]}'


def test_state_authorization_is_on_by_default(ctx_factory: Factory) -> None:
    ctx = ctx_factory(jwks=JWKS, curve_public_keys=curve_keys())
    children = render_children(ctx)
    data = settings(children)
    assert data["PLANTD_STATE_AUTH"] == "identity"
    assert data["PLANTD_STATE_AUTH_ISSUER"] == ctx.issuer == "plantd-identity"
    assert data["PLANTD_STATE_AUTH_AUDIENCE"] == "org.plantd.State"
    assert (
        data["PLANTD_STATE_EVENT_BUS_ENDPOINT"] == "dns:tcp://demo-broker-headless.plant.svc:12000"
    )
    assert data["PLANTD_STATE_EVENT_SUB_ENDPOINT"] == "tcp://demo-broker.plant.svc:12001"
    cm = by_name(children, "ConfigMap")["demo-jwks"]
    assert json.loads(cm["data"]["jwks.json"]) == json.loads(JWKS)
    state = pod(children, "state")
    vol = volumes(state)["jwks"]
    assert vol["configMap"]["name"] == "demo-jwks"
    mount = mounts(state)["jwks"]
    assert mount["readOnly"] is True
    assert data["PLANTD_STATE_JWKS_FILE"] == (
        f"{mount['mountPath']}/{vol['configMap']['items'][0]['path']}"
    )
    # What `plantd state` reads from the rendered environment.
    s = StateSettings.load(environ={k: v for k, v in data.items() if k.startswith("PLANTD_STATE_")})
    assert s.auth == "identity" and str(s.jwks_file) == data["PLANTD_STATE_JWKS_FILE"]
    assert str(s.registry) == data["PLANTD_STATE_REGISTRY"]


def test_state_rolls_with_the_jwks_and_nothing_else_does(ctx_factory: Factory) -> None:
    a = render_children(ctx_factory(jwks=JWKS))
    b = render_children(ctx_factory(jwks=JWKS.replace("k1", "k2")))
    assert config_hash(a, "state") != config_hash(b, "state")
    assert config_hash(a, "broker") == config_hash(b, "broker")
    assert "demo-jwks" not in by_name(render_children(ctx_factory()), "ConfigMap")


def test_state_auth_off(ctx_factory: Factory) -> None:
    children = render_children(ctx_factory({"state": {"auth": "off"}}, jwks=JWKS))
    data = settings(children)
    assert data["PLANTD_STATE_AUTH"] == "off"
    assert not any(k.startswith(("PLANTD_STATE_AUTH_", "PLANTD_STATE_JWKS")) for k in data)
    assert "demo-jwks" not in by_name(children, "ConfigMap")
    assert "jwks" not in volumes(pod(children, "state"))


def test_secret_derived_config_maps_are_applied_with_the_workloads(ctx_factory: Factory) -> None:
    """The reconcile sends the first render's ServiceAccounts, ConfigMap and Services before
    the Secrets are read; the registry and JWKS ConfigMaps exist only in the final render."""
    base = ctx_factory()
    final = replace(base, jwks=JWKS, curve_public_keys=curve_keys())
    first = {(c["kind"], c["metadata"]["name"]): c for c in render_children(base)}
    new = {
        (c["kind"], c["metadata"]["name"])
        for c in render_children(final)
        if first.get((c["kind"], c["metadata"]["name"])) != c
    }
    assert {k for k in new if k[0] == "ConfigMap"} == {
        ("ConfigMap", "demo-registry"),
        ("ConfigMap", "demo-jwks"),
    }
