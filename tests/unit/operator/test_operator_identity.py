"""Identity in the operator: the signing-key Secret and its rotation, the identity pod's
wiring, Istio's inline JWKS, and the policy checks that keep a PlantdCluster from using the
operator as its deputy."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plantd.identity.keys import KeyRing
from plantd_operator import admission, secrets
from plantd_operator.builders import istio, render_children
from plantd_operator.context import ClusterContext

pytestmark = pytest.mark.unit
Factory = Callable[..., ClusterContext]
EXTERNAL_TLS = {"mode": "external", "external": {"address": "r.db:6380", "tls": {"enabled": True}}}


def b64(entries: dict[str, str]) -> dict[str, str]:
    return secrets.encode(entries)


def apply_patch(data: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    """What the API server does with a JSON merge patch of ``data``."""
    out = dict(data)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def mount(data: dict[str, str], directory: Path) -> Path:
    """The Secret as kubelet mounts it: one file per entry, mode 0400."""
    directory.mkdir(mode=0o700)
    for name, value in data.items():
        path = directory / name
        path.write_bytes(base64.b64decode(value))
        path.chmod(0o400)
    return directory


def test_new_secret_holds_an_active_and_a_next_p256_key() -> None:
    entries = secrets.jwt_entries()
    found = secrets.jwt_keys(entries)
    assert len(found["active"]) == 1 and len(found["next"]) == 1 and not found["retired"]
    for name, pem in entries.items():
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        assert name.split(".")[1] == secrets.kid_of(key.public_key())
    assert secrets.jwt_entries(b64(entries)) == {}, "a complete Secret gets nothing added"


def test_the_identity_service_loads_the_secret_and_publishes_the_same_keys(tmp_path: Path) -> None:
    data = b64(secrets.jwt_entries())
    ring = KeyRing.from_dir(mount(data, tmp_path / "jwt"))
    ours = {k["kid"]: k for k in secrets.jwks(data)["keys"]}
    theirs = {k["kid"]: k for k in ring.jwks()["keys"]}
    assert set(ours) == set(theirs) and len(ours) == 2
    for kid, k in ours.items():
        assert (k["x"], k["y"], k["alg"]) == (theirs[kid]["x"], theirs[kid]["y"], "ES256")
        assert "d" not in k, "the inline JWKS must hold public keys only"
    assert ring.active.kid == secrets.jwt_keys(data)["active"][0].split(".")[1]


def test_a_legacy_signing_key_stays_active_with_the_kid_the_service_gave_it(
    tmp_path: Path,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = secrets._pem(key)
    legacy = tmp_path / "signing-key.pem"
    legacy.write_text(pem)
    legacy.chmod(0o400)
    old_kid = KeyRing.from_file(legacy).active.kid
    added = secrets.jwt_entries(b64({"signing-key.pem": pem, "kid": "0123"}))
    assert f"active.{old_kid}.pem" in added and added[f"active.{old_kid}.pem"] == pem
    assert len(secrets.jwt_keys(added)["next"]) == 1


def kid(name: str) -> str:
    return name.split(".")[1]


def test_rotation_promotes_next_retires_active_and_keeps_old_tokens_valid(
    tmp_path: Path,
) -> None:
    data = b64(secrets.jwt_entries())
    ring = KeyRing.from_dir(mount(data, tmp_path / "before"))
    assert ring.active.private is not None
    token = jwt.encode(
        {"sub": "u", "exp": int(time.time()) + 60},
        ring.active.private,
        algorithm="ES256",
        headers={"kid": ring.active.kid},
    )
    before = secrets.jwt_keys(data)
    rotated = apply_patch(data, secrets.rotate_jwt(data))
    after = secrets.jwt_keys(rotated)
    assert kid(after["active"][0]) == kid(before["next"][0])
    assert kid(after["retired"][0]) == kid(before["active"][0])
    assert kid(after["next"][0]) not in {kid(n) for n in before["active"] + before["next"]}
    new_ring = KeyRing.from_dir(mount(rotated, tmp_path / "after"))
    assert new_ring.active.kid == kid(before["next"][0])
    # A token signed before the rotation verifies against the JWKS published after it.
    published = {k["kid"]: k for k in secrets.jwks(rotated)["keys"]}
    public = jwt.PyJWK(published[ring.active.kid]).key
    assert jwt.decode(token, public, algorithms=["ES256"])["sub"] == "u"
    # The next rotation drops the key retired by this one.
    again = secrets.jwt_keys(apply_patch(rotated, secrets.rotate_jwt(rotated)))
    assert [kid(n) for n in again["retired"]] == [kid(before["next"][0])]


def test_rotation_needs_one_active_and_one_next_key() -> None:
    with pytest.raises(ValueError, match="one active and one next"):
        secrets.rotate_jwt({})


def test_identity_pod_mounts_every_signing_key_and_a_data_volume(ctx_factory: Factory) -> None:
    children = render_children(ctx_factory())
    data = next(c for c in children if c["kind"] == "ConfigMap")["data"]
    assert data["PLANTD_IDENTITY_JWT_KEYS_DIR"] == "/etc/plantd/jwt"
    assert "PLANTD_IDENTITY_JWT_KEY_FILE" not in data
    assert data["PLANTD_IDENTITY_BUS_ENDPOINT"] == "dns:tcp://demo-broker-headless.plant.svc:12000"
    assert data["PLANTD_IDENTITY_ISSUER"] == "plantd-identity"
    assert (
        data["PLANTD_IDENTITY_AUDIENCES"]
        == "org.plantd.State,org.plantd.Identity,org.plantd.Broker"
    )
    dep = next(
        c
        for c in children
        if c["kind"] == "Deployment" and c["metadata"]["name"] == "demo-identity"
    )
    pod = dep["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["jwt-keys"]["secret"] == {"secretName": "demo-jwt", "defaultMode": 0o400}
    assert "items" not in vols["jwt-keys"]["secret"], "a rotation must not need a new render"
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/etc/plantd/jwt"] == "jwt-keys"
    # The service creates its data directory 0700 and chmods it: a child of the mount, which
    # is owned by root, so the directory is the process's own.
    data_dir = data["PLANTD_IDENTITY_DATA_DIR"]
    parent = data_dir.rsplit("/", 1)[0]
    assert mounts[parent] == "identity-data" and "emptyDir" in vols["identity-data"]
    probe = pod["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"path": "/readyz", "port": "http-metrics"}  # /readyz = JWKS served


def test_identity_rolls_when_its_keys_rotate(ctx_factory: Factory) -> None:
    def identity_hash(digest: str) -> str:
        ctx = ctx_factory(secret_digests={"identity:jwt": digest})
        dep = next(
            c
            for c in render_children(ctx)
            if c["kind"] == "Deployment" and c["metadata"]["name"] == "demo-identity"
        )
        return str(dep["spec"]["template"]["metadata"]["annotations"]["plantd.io/config-hash"])

    assert identity_hash("a") != identity_hash("b")


def test_request_authentication_has_the_jwks_inline(ctx_factory: Factory) -> None:
    data = b64(secrets.jwt_entries())
    jwks = json.dumps(secrets.jwks(data), separators=(",", ":"))
    ctx = ctx_factory({"mesh": {"istio": {"enabled": True}}}, jwks=jwks)
    ras = [o for o in istio.objects(ctx) if o["kind"] == "RequestAuthentication"]
    assert {o["metadata"]["name"] for o in ras} == {"demo-state-jwt", "demo-identity-jwt"}
    for ra in ras:
        (rule,) = ra["spec"]["jwtRules"]
        assert rule["issuer"] == ctx.issuer
        assert rule["audiences"] == ["org.plantd.State", "org.plantd.Identity", "org.plantd.Broker"]
        assert rule["forwardOriginalToken"] is True
        assert "jwksUri" not in rule
        kids = {k["kid"] for k in json.loads(rule["jwks"])["keys"]}
        assert kids == {n.split(".")[1] for n in data}
        assert "PRIVATE" not in rule["jwks"] and '"d"' not in rule["jwks"]
    # Not before the Secret was read: an invalid inline JWKS keeps pods from becoming ready.
    assert not istio.request_authentications(ctx_factory({"mesh": {"istio": {"enabled": True}}}))


def test_gateway_ports_admit_peers_and_leave_tokens_to_the_gateway(ctx_factory: Factory) -> None:
    ctx = ctx_factory({"mesh": {"istio": {"enabled": True}}}, jwks='{"keys":[]}')
    aps = {
        o["metadata"]["name"]: o for o in istio.objects(ctx) if o["kind"] == "AuthorizationPolicy"
    }
    for component in ("state", "identity"):
        rule = aps[f"demo-{component}-allow"]["spec"]["rules"][0]
        assert rule["to"][0]["operation"]["ports"] == ["50051", "8086"], component
        source = rule["from"][0]["source"]
        assert source["principals"], "only the cluster's services and listed clients"
        # Every sidecar serves Login too: a token demanded by the mesh would refuse it.
        assert "requestPrincipals" not in source, component
    # Tokens still get checked: RequestAuthentication rejects a forged one at the mesh.
    assert any(o["kind"] == "RequestAuthentication" for o in istio.objects(ctx))


# ----------------------------------------------------------------------------- admission


def reasons(problems: list[Any]) -> dict[str, bool]:
    return {p.reason: p.blocking for p in problems}


def test_images_outside_the_allow_list_are_refused(ctx_factory: Factory) -> None:
    allowed = admission.parse_allowed_images(["registry.example/plantd/*, redis:7.4*"])
    assert allowed == ("registry.example/plantd/*", "redis:7.4*")
    ok = ctx_factory({"image": "registry.example/plantd/plantd@sha256:abc"})
    assert admission.check(ok, allowed) == []
    bad = ctx_factory({"image": "evil.example/plantd:1"})
    (p,) = admission.check(bad, allowed)
    assert p.reason == "ImageNotAllowed" and p.blocking and "evil.example/plantd:1" in p.message
    # The operator's default image and a managed Redis image are checked too.
    assert reasons(admission.check(ctx_factory(), allowed)) == {"ImageNotAllowed": True}
    redis = ctx_factory(
        {
            "image": "registry.example/plantd/plantd:1",
            "state": {"redis": {"managed": {"image": "docker.io/redis:7"}}},
        }
    )
    (p,) = admission.check(redis, allowed)
    assert "spec.state.redis.managed.image" in p.message
    assert admission.check(bad, ()) == [], "an empty list allows any image"


def test_allow_list_is_budgeted() -> None:
    with pytest.raises(ValueError, match="at most 64"):
        admission.parse_allowed_images([",".join(f"r{i}/*" for i in range(65))])
    with pytest.raises(ValueError, match="longer than 512"):
        admission.parse_allowed_images(["x" * 513])


def test_external_redis_needs_tls_or_an_explicit_plaintext_opt_in(ctx_factory: Factory) -> None:
    plain = {"mode": "external", "external": {"address": "r.db:6379"}}
    (p,) = admission.check(ctx_factory({"state": {"redis": plain}}), ())
    assert (p.reason, p.blocking) == ("RedisTLSRequired", True)
    assert "tls.enabled: true" in p.message and "allowPlaintext" in p.message
    opt_in = {"mode": "external", "external": {"address": "r.db:6379", "allowPlaintext": True}}
    (p,) = admission.check(ctx_factory({"state": {"redis": opt_in}}), ())
    assert (p.reason, p.blocking) == ("PlaintextRedis", False)
    assert admission.check(ctx_factory({"state": {"redis": EXTERNAL_TLS}}), ()) == []


def test_identity_replicas_on_redis_are_honoured_and_sidecars_can_be_turned_off(
    ctx_factory: Factory,
) -> None:
    ctx = ctx_factory({"identity": {"replicas": 3}, "sidecars": {"grpc": {"enabled": False}}})
    # Identity's store is the cluster's Redis: its replicas are honoured, nothing is capped.
    assert reasons(admission.check(ctx, ())) == {}
    children = render_children(ctx)
    identity = next(
        c
        for c in children
        if c["kind"] == "Deployment" and c["metadata"]["name"] == "demo-identity"
    )
    assert identity["spec"]["replicas"] == 3
    for c in children:
        if c["kind"] == "Deployment":
            names = [x["name"] for x in c["spec"]["template"]["spec"]["containers"]]
            assert "gateway" not in names
    config = next(c for c in children if c["kind"] == "ConfigMap")
    assert not any("GATEWAY" in k for k in config["data"])


def test_an_unusable_legacy_key_is_replaced_not_fatal() -> None:
    for junk in ({"signing-key.pem": "not base64!"}, b64({"signing-key.pem": "no pem"})):
        added = secrets.jwt_entries(junk)
        assert len(secrets.jwt_keys(added)["active"]) == 1, junk
    with pytest.raises(ValueError):
        secrets.jwks(b64({"active.abc.pem": "broken"}))  # reported as SigningKeyInvalid
