"""The PlantdCluster API as the real API server enforces it: schema, defaults, CEL rules."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from k8skit import TestEnv, pdc

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]


def rejected(env: TestEnv, obj: dict[str, Any]) -> str:
    proc = env.kubectl(
        "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False
    )
    assert proc.returncode != 0, f"accepted but should be rejected: {obj['spec']}"
    return proc.stderr


EXTERNAL = {"mode": "external", "external": {"address": "redis.db:6379"}}


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ({"state": {"redis": {"mode": "external"}}}, "needs state.redis.external.address"),
        (
            {"state": {"redis": {"mode": "managed", "external": {"address": "r:1"}}}},
            "only used with mode: external",
        ),
        (
            {"state": {"redis": {"mode": "external", "external": {"address": "no-port"}}}},
            "address must be host:port",
        ),
        ({"state": {"redis": {"mode": "elsewhere"}}}, "Unsupported value"),
        ({"broker": {"replicas": 0}}, "should be greater than or equal to 1"),
        ({"mesh": {"istio": {"mtlsMode": "DISABLE"}}}, "Unsupported value"),
        ({"version": "1.0.0", "image": "x/y:1"}, "either version"),
        ({"version": "latest"}, "spec.version"),
        (
            {"broker": {"pod": {"annotations": {"plantd.io/config-hash": "x"}}}},
            "set by the operator",
        ),
        ({"state": {"redis": {"managed": {"storage": {"size": "lots"}}}}}, "storage.size"),
        ({"state": {"redis": {"managed": {"replicas": 2}}}}, "must be 1 or at least 3"),
        (
            {"state": {"redis": {"managed": {"replicas": 3}, "waitReplicas": 3}}},
            "waitReplicas must be below",
        ),
        (
            {
                "state": {
                    "redis": {
                        **EXTERNAL,
                        "external": {
                            "address": "r:6379",
                            "sentinel": {"addresses": ["s:26379"], "masterName": "m"},
                        },
                    }
                }
            },
            "exactly one of address",
        ),
        (
            {
                "state": {
                    "redis": {
                        **EXTERNAL,
                        "external": {"sentinel": {"addresses": ["s"], "masterName": "m"}},
                    }
                }
            },
            "every sentinel address must be host:port",
        ),
        (
            {
                "state": {
                    "redis": {
                        **EXTERNAL,
                        "external": {"address": "r:6379", "tls": {"caSecretRef": {"name": "ca"}}},
                    }
                }
            },
            "caSecretRef needs tls.enabled",
        ),
    ],
)
def test_invalid_specs_are_rejected_with_useful_messages(
    testenv: TestEnv, namespace: str, spec: dict[str, Any], expect: str
) -> None:
    assert expect in rejected(testenv, pdc("bad", spec, namespace=namespace))


def test_name_rules(testenv: TestEnv, namespace: str) -> None:
    assert "at most 40 characters" in rejected(testenv, pdc("x" * 41, namespace=namespace))


def test_defaults_are_filled_by_the_api_server(testenv: TestEnv, namespace: str) -> None:
    testenv.apply(pdc("defaults", namespace=namespace))
    obj = testenv.get("pdc", "defaults", namespace)
    assert obj is not None
    spec = obj["spec"]
    assert spec["broker"]["replicas"] == 1
    assert spec["broker"]["heartbeat"] == {"intervalMs": 2500, "liveness": 3}
    assert spec["state"]["redis"]["mode"] == "managed"
    assert spec["state"]["redis"]["managed"]["storage"]["size"] == "1Gi"
    assert spec["security"]["curve"]["enabled"] is True
    assert spec["mesh"]["istio"]["mtlsMode"] == "STRICT"
    assert "external" not in spec["state"]["redis"]
    # The gateway sidecar runs by default; the edge Service only when asked for.
    grpc = spec["sidecars"]["grpc"]
    assert (grpc["enabled"], grpc["port"], grpc["restPort"]) == (True, 50051, 8086)
    assert grpc["edge"] == {"enabled": False, "type": "ClusterIP"}
    # Printer columns and the short name and category work.
    out = testenv.kubectl("get", "pdc", "-n", namespace).stdout
    assert out.split()[:6] == ["NAME", "READY", "PHASE", "BROKER", "VERSION", "AGE"]
    assert "defaults" in testenv.kubectl("get", "plantd", "-n", namespace).stdout


def test_transition_rules_on_update(testenv: TestEnv, namespace: str) -> None:
    testenv.apply(
        pdc(
            "moving",
            {"state": {"redis": {"managed": {"storage": {"size": "2Gi"}}}}},
            namespace=namespace,
        )
    )
    patch = testenv.kubectl(
        "patch",
        "pdc",
        "moving",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"state":{"redis":{"managed":{"storage":{"size":"1Gi"}}}}}}',
        check=False,
    )
    assert patch.returncode != 0 and "can grow but not shrink" in patch.stderr
    patch = testenv.kubectl(
        "patch",
        "pdc",
        "moving",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"state":{"redis":{"mode":"external","external":{"address":"r:6379"}}}}}',
        check=False,
    )
    assert patch.returncode != 0 and "mode cannot change" in patch.stderr
    # One Redis pod can become a primary with replicas and Sentinels, never back.
    to_three = '{"spec":{"state":{"redis":{"managed":{"replicas":3}}}}}'
    assert (
        testenv.kubectl(
            "patch", "pdc", "moving", "-n", namespace, "--type=merge", "-p", to_three
        ).returncode
        == 0
    )
    patch = testenv.kubectl(
        "patch",
        "pdc",
        "moving",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"state":{"redis":{"managed":{"replicas":1}}}}}',
        check=False,
    )
    assert patch.returncode != 0 and "cannot go back from Sentinel" in patch.stderr
    grown = testenv.kubectl(
        "patch",
        "pdc",
        "moving",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"state":{"redis":{"managed":{"storage":{"size":"3Gi"}}}}}}',
    )
    assert grown.returncode == 0
