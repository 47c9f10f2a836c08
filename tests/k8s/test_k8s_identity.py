"""Identity and the operator's confused-deputy guards, against the real API server (kwok makes
pods Ready) with the chart's RBAC and the real Istio CRDs.

The operator here runs with an image allow-list, as an administrator would set it in the chart
(imageAllowList): the default plantd image and the default managed Redis image only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8skit import Lease, OperatorProcess, TestEnv, b64, condition, delete_clusters, pdc, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]
ALLOWED = "plantd/plantd:*,redis:7.4*"
TLS: dict[str, Any] = {
    "mode": "external",
    "external": {"address": "redis.example:6380", "tls": {"enabled": True}},
}


@pytest.fixture(scope="module")
def operator(
    testenv: TestEnv,
    namespace: str,
    operator_kubeconfig: Path,
    lease: Lease,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(
        operator_kubeconfig, namespace, log, lease=lease, extra_args=["--allowed-images", ALLOWED]
    )
    try:
        op.wait_ready()
        yield op
    finally:
        try:
            delete_clusters(testenv, namespace)
        finally:
            op.stop()
            print(f"operator log: {log}")


def reason_is(env: TestEnv, ns: str, name: str, kind: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        c = condition(env.get("pdc", name, ns), kind)
        return c if c and c["reason"] == reason else None

    return wait_for(check, f"pdc/{name} {kind} reason {reason}", timeout=90)


def ready(env: TestEnv, ns: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = env.get("pdc", name, ns)
        c = condition(obj, "Ready")
        gen = (obj or {}).get("metadata", {}).get("generation")
        if c and c["status"] == "True" and obj and obj["status"].get("observedGeneration") == gen:
            return obj
        return None

    return wait_for(check, f"pdc/{name} Ready=True", timeout=90)


def jwt_kids(secret: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"next": [], "active": [], "retired": []}
    for name in secret.get("data") or {}:
        state, _, rest = name.partition(".")
        if state in out and rest.endswith(".pem"):
            out[state].append(rest.removesuffix(".pem"))
    return out


def config_hash(env: TestEnv, ns: str, name: str) -> str:
    dep = env.get("deployment", name, ns)
    assert dep is not None
    return str(dep["spec"]["template"]["metadata"]["annotations"]["plantd.io/config-hash"])


def test_identity_runs_from_its_signing_key_secret_and_rotates(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(pdc("idt", {"state": {"redis": TLS}}, namespace=ns))
    ready(testenv, ns, "idt")
    secret = testenv.get("secret", "idt-jwt", ns)
    assert secret is not None
    before = jwt_kids(secret)
    assert len(before["active"]) == 1 and len(before["next"]) == 1, before
    config = testenv.get("configmap", "idt-config", ns)
    assert config is not None
    assert config["data"]["PLANTD_IDENTITY_JWT_KEYS_DIR"] == "/etc/plantd/jwt"
    dep = testenv.get("deployment", "idt-identity", ns)
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["plantd", "identity"]
    assert [c["name"] for c in pod["containers"]] == ["identity"]  # no unshipped gateway
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["jwt-keys"]["secret"]["secretName"] == "idt-jwt"
    hash_before = config_hash(testenv, ns, "idt-identity")

    testenv.kubectl("annotate", "pdc", "idt", "-n", ns, "plantd.io/rotate-signing-key=r1")

    def rotated() -> dict[str, list[str]] | None:
        s = testenv.get("secret", "idt-jwt", ns) or {}
        done = (s.get("metadata", {}).get("annotations") or {}).get("plantd.io/rotated-for")
        return jwt_kids(s) if done == "r1" else None

    after = wait_for(rotated, "the signing keys rotated once for r1")
    assert after["active"] == before["next"] and after["retired"] == before["active"]
    assert len(after["next"]) == 1 and after["next"] != before["next"]
    wait_for(
        lambda: config_hash(testenv, ns, "idt-identity") != hash_before,
        "the identity pods roll onto the new keys",
    )
    ready(testenv, ns, "idt")
    # The same annotation value again is a no-op: the Secret remembers it.
    testenv.kubectl("label", "pdc", "idt", "-n", ns, "touch=1")
    ready(testenv, ns, "idt")
    assert jwt_kids(testenv.get("secret", "idt-jwt", ns) or {}) == after


def test_plaintext_external_redis_is_refused_until_opted_in(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    plain = {"mode": "external", "external": {"address": "redis.example:6379"}}
    testenv.apply(pdc("plain", {"state": {"redis": plain}}, namespace=ns))
    c = reason_is(testenv, ns, "plain", "Ready", "RedisTLSRequired")
    assert c["status"] == "False" and "tls.enabled: true" in c["message"]
    # Refused means nothing of it is applied: no pod would carry anything anywhere.
    assert testenv.get("deployment", "plain-state", ns) is None
    assert testenv.get("configmap", "plain-config", ns) is None
    testenv.kubectl(
        "patch",
        "pdc",
        "plain",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"state":{"redis":{"external":{"allowPlaintext":true}}}}}',
    )
    obj = ready(testenv, ns, "plain")
    degraded = condition(obj, "Degraded")
    assert degraded and degraded["status"] == "True" and degraded["reason"] == "PlaintextRedis"


def test_a_secret_not_labelled_for_the_cluster_never_reaches_a_pod(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "victim", "namespace": ns},
            "data": {"password": b64("s3cret"), "aws-root-credentials": b64("x")},
        }
    )
    external = {
        "address": "redis.example:6380",
        "tls": {"enabled": True},
        "secretRef": {"name": "victim"},
    }
    spec = {"state": {"redis": {"mode": "external", "external": external}}}
    testenv.apply(pdc("deputy", spec, namespace=ns))
    c = reason_is(testenv, ns, "deputy", "Ready", "RedisSecretNotFound")
    assert "plantd.io/secret-for=deputy" in c["message"]
    status = json.dumps(testenv.get("pdc", "deputy", ns))
    assert "aws-root-credentials" not in status, "status must not list other Secrets' keys"

    def state_volumes() -> list[dict[str, Any]]:
        dep = testenv.get("deployment", "deputy-state", ns)
        assert dep is not None
        return list(dep["spec"]["template"]["spec"]["volumes"])

    vols = wait_for(state_volumes, "the state Deployment (rendered without the Secret)")
    assert not any(v.get("secret", {}).get("secretName") == "victim" for v in vols)

    testenv.kubectl("label", "secret", "victim", "-n", ns, "plantd.io/secret-for=deputy")
    ready(testenv, ns, "deputy")
    mounted = [v["secret"] for v in state_volumes() if "secret" in v]
    assert {
        "secretName": "victim",
        "defaultMode": 0o400,
        "items": [{"key": "password", "path": "password"}],
    } in mounted


def test_an_image_outside_the_allow_list_gets_nothing_applied(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(
        pdc("img", {"image": "evil.example/plantd:1", "state": {"redis": TLS}}, namespace=ns)
    )
    c = reason_is(testenv, ns, "img", "Ready", "ImageNotAllowed")
    assert "evil.example/plantd:1" in c["message"]
    obj = testenv.get("pdc", "img", ns)
    assert obj is not None and obj["status"]["phase"] == "Failed"
    for kind in ("deployment", "configmap", "secret"):
        assert not testenv.list(kind, ns, "plantd.io/cluster=img"), kind


def test_request_authentication_with_inline_jwks_is_accepted_by_istio_crds(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(
        pdc("mesh", {"state": {"redis": TLS}, "mesh": {"istio": {"enabled": True}}}, namespace=ns)
    )
    ready(testenv, ns, "mesh")

    def ra() -> dict[str, Any] | None:
        return testenv.get("requestauthentications.security.istio.io", "mesh-state-jwt", ns)

    obj = wait_for(ra, "RequestAuthentication mesh-state-jwt")
    (rule,) = obj["spec"]["jwtRules"]
    assert rule["forwardOriginalToken"] is True
    assert rule["audiences"] == ["org.plantd.State", "org.plantd.Identity"]
    kids = {k["kid"] for k in json.loads(rule["jwks"])["keys"]}
    secret = jwt_kids(testenv.get("secret", "mesh-jwt", ns) or {})
    assert kids == set(secret["active"] + secret["next"])
    assert all("d" not in k for k in json.loads(rule["jwks"])["keys"])
