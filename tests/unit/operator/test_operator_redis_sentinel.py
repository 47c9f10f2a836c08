"""A replicated managed Redis (replicas 3+: primary, replicas, Sentinels), an external
Sentinel, and what the operator reports about them: pure builders and status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plantd.common.redis_url import parse_sentinel_url
from plantd_operator import status
from plantd_operator.builders import redis as redis_builder
from plantd_operator.builders import render_children
from plantd_operator.context import ClusterContext
from plantd_operator.sentinel import SentinelView, view_from
from plantd_operator.status import Observation, Workload

pytestmark = pytest.mark.unit
Factory = Callable[..., ClusterContext]

THREE = {"state": {"redis": {"managed": {"replicas": 3}}}}
HOSTS = [f"demo-redis-{i}.demo-redis-headless.plant.svc" for i in range(3)]


def by_kind(children: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in children if c["kind"] == kind}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_three_replicas_are_a_primary_replicas_and_a_sentinel_beside_each(
    ctx_factory: Factory,
) -> None:
    sts = by_kind(render_children(ctx_factory(THREE)), "StatefulSet")["demo-redis"]
    spec = sts["spec"]
    assert spec["replicas"] == 3
    # Immutable in a StatefulSet: growing from the one-pod form must keep it.
    one = by_kind(render_children(ctx_factory()), "StatefulSet")["demo-redis"]["spec"]
    assert spec["podManagementPolicy"] == one["podManagementPolicy"] == "OrderedReady"
    assert spec["volumeClaimTemplates"] == one["volumeClaimTemplates"]
    assert spec["serviceName"] == one["serviceName"] and spec["selector"] == one["selector"]
    pod = spec["template"]["spec"]
    redis, sentinel = pod["containers"]
    assert (redis["name"], sentinel["name"]) == ("redis", "sentinel")
    env = env_of(redis)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SENTINEL_HOSTS"].split() == HOSTS
    assert env["FIRST_PRIMARY"] == HOSTS[0]
    assert (env["QUORUM"], env["MASTER"], env["DOWN_AFTER_MS"]) == ("2", "plantd", "5000")
    assert env["FAILOVER_WAIT_S"] == "20"  # twice the down-after, plus the election
    assert env_of(sentinel) == env
    assert redis["command"] == ["sh", "-c", redis_builder.REDIS_START]
    assert sentinel["command"] == ["sh", "-c", redis_builder.SENTINEL_START]
    # A primary hands over before it stops; a replica is ready only once it has synced.
    assert redis["lifecycle"]["preStop"]["exec"]["command"][-1] == redis_builder.REDIS_PRE_STOP
    assert redis["readinessProbe"]["exec"]["command"][-1] == redis_builder.REDIS_READY
    # The password is read from the Secret file, never passed in env or on a command line.
    auth = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert {"key": "password", "path": "password"} in auth["secret"]["items"]
    assert "/etc/redis-auth/password" in redis_builder.REDIS_START
    for c in (redis, sentinel):
        assert all("secretKeyRef" not in str(e) for e in c["env"])
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # Spread over nodes where possible, one volume per pod.
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_quorum_is_a_majority() -> None:
    assert [redis_builder.quorum(n) for n in (3, 4, 5, 7)] == [2, 3, 3, 4]


def test_the_services_lead_to_sentinels_not_to_a_replica(ctx_factory: Factory) -> None:
    services = by_kind(render_children(ctx_factory(THREE)), "Service")
    main = services["demo-redis"]["spec"]
    assert [p["port"] for p in main["ports"]] == [26379]
    headless = services["demo-redis-headless"]["spec"]
    assert headless["publishNotReadyAddresses"] is True
    assert [p["port"] for p in headless["ports"]] == [6379, 26379]
    one = by_kind(render_children(ctx_factory()), "Service")
    assert [p["port"] for p in one["demo-redis"]["spec"]["ports"]] == [6379]
    assert "publishNotReadyAddresses" not in one["demo-redis-headless"]["spec"]


def test_every_redis_user_follows_the_sentinels(ctx_factory: Factory) -> None:
    spec = {"state": {"redis": {"managed": {"replicas": 3}, "waitReplicas": 1}}}
    data = by_kind(render_children(ctx_factory(spec)), "ConfigMap")["demo-config"]["data"]
    url = data["PLANTD_STATE_REDIS_URL"]
    assert url == "redis+sentinel://" + ",".join(f"{h}:26379" for h in HOSTS) + "/plantd/0"
    parsed = parse_sentinel_url(url)  # what the state service's settings validate with
    assert parsed.master == "plantd" and len(parsed.sentinels) == 3
    assert data["PLANTD_IDENTITY_REDIS_URL"] == url
    assert data["PLANTD_GATEWAY_RATE_LIMIT_REDIS_URL"] == url
    assert data["PLANTD_STATE_REDIS_WAIT_REPLICAS"] == "1"
    assert data["PLANTD_STATE_REDIS_WAIT_TIMEOUT_MS"] == "500"
    plain = by_kind(render_children(ctx_factory()), "ConfigMap")["demo-config"]["data"]
    assert "PLANTD_STATE_REDIS_WAIT_REPLICAS" not in plain


def test_network_policies_open_replication_gossip_and_the_operator_probe(
    ctx_factory: Factory,
) -> None:
    spec = {**THREE, "networkPolicy": {"enabled": True}}
    nps = by_kind(render_children(ctx_factory(spec)), "NetworkPolicy")
    redis = nps["demo-redis"]["spec"]
    assert redis["policyTypes"] == ["Ingress", "Egress"]
    ports = [{"protocol": "TCP", "port": 6379}, {"protocol": "TCP", "port": 26379}]
    clients, peers, operator = redis["ingress"]
    assert clients["ports"] == ports and peers["ports"] == ports
    assert peers["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    assert operator["ports"] == [{"protocol": "TCP", "port": 26379}]
    assert operator["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "plantd-operator"
    }
    assert redis["egress"] == [{"to": peers["from"], "ports": ports}]
    state_egress = nps["demo-state"]["spec"]["egress"]
    assert {"to": peers["from"], "ports": ports} in state_egress


def test_an_external_sentinel(ctx_factory: Factory) -> None:
    spec = {
        "state": {
            "redis": {
                "mode": "external",
                "external": {
                    "sentinel": {
                        "addresses": ["s1.db:26379", "s2.db:26380"],
                        "masterName": "plant-a",
                        "redisPort": 6380,
                        "auth": False,
                    },
                    "database": 2,
                    "secretRef": {"name": "r", "key": "pw"},
                    "tls": {"enabled": True},
                },
            }
        },
        "networkPolicy": {"enabled": True},
    }
    ctx = ctx_factory(spec)
    children = render_children(ctx)
    data = by_kind(children, "ConfigMap")["demo-config"]["data"]
    url = data["PLANTD_STATE_REDIS_URL"]
    assert url == "rediss+sentinel://s1.db:26379,s2.db:26380/plant-a/2?sentinel_auth=no"
    parsed = parse_sentinel_url(url)
    assert parsed.tls and not parsed.sentinel_auth and parsed.db == 2
    assert data["PLANTD_STATE_REDIS_PASSWORD_FILE"] == "/etc/plantd/redis-auth/password"
    egress = by_kind(children, "NetworkPolicy")["demo-state"]["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": p} for p in (6380, 26379, 26380)]} in egress
    assert "StatefulSet" not in {c["kind"] for c in children}
    assert ctx.redis_address == "sentinel s1.db:26379,s2.db:26380 master plant-a"


# ------------------------------------------------------------------ what Sentinel says

MASTER_REPLY = [
    "name", "plantd", "ip", HOSTS[1], "port", "6379", "flags", "master",
    "num-slaves", "2", "num-other-sentinels", "2", "quorum", "2",
]  # fmt: skip
REPLICA_OK = ["name", f"{HOSTS[0]}:6379", "flags", "slave", "master-link-status", "ok"]
REPLICA_DOWN = ["name", f"{HOSTS[2]}:6379", "flags", "s_down,slave", "master-link-status", "err"]


def test_view_from_sentinel_replies() -> None:
    view = view_from(MASTER_REPLY, [REPLICA_OK, REPLICA_DOWN])
    assert view == SentinelView(
        primary=HOSTS[1],
        primary_port=6379,
        replicas=2,
        replicas_in_sync=1,
        sentinels=3,
        quorum=2,
    )
    failing = [*MASTER_REPLY[:7], "master,o_down,failover_in_progress", *MASTER_REPLY[8:]]
    view = view_from(failing, [])
    assert view.failing_over and view.down


def wl(desired: int, ready: int) -> Workload:
    return Workload("StatefulSet", desired, ready, desired, desired, 1, 1)


def store_condition(ctx: ClusterContext, view: SentinelView | None) -> dict[str, str]:
    obs = Observation(generation=1, applied_generation=1, paused=False,
                      workloads={"redis": wl(3, 3)}, sentinel=view)  # fmt: skip
    return {c["type"]: c for c in status.conditions(ctx, obs)}["StateStoreReady"]


def test_store_condition_follows_the_sentinels(ctx_factory: Factory) -> None:
    ctx = ctx_factory(THREE)
    healthy = view_from(MASTER_REPLY, [REPLICA_OK, REPLICA_OK])
    c = store_condition(ctx, healthy)
    assert (c["status"], c["reason"]) == ("True", "SentinelReady")
    assert c["message"] == "primary demo-redis-1, 2/2 replicas in sync, 3/3 Sentinels"
    failing = SentinelView(primary=HOSTS[1], failing_over=True, sentinels=3, quorum=2)
    assert store_condition(ctx, failing)["reason"] == "FailingOver"
    lonely = SentinelView(primary=HOSTS[1], sentinels=1, quorum=2)
    c = store_condition(ctx, lonely)
    assert (c["status"], c["reason"]) == ("False", "NoQuorum")
    c = store_condition(ctx, SentinelView(error="demo-redis-0: Connection refused"))
    assert (c["status"], c["reason"]) == ("False", "SentinelUnreachable")
    assert "Connection refused" in c["message"] and "-c sentinel" in c["message"]
    assert store_condition(ctx, None)["reason"] == "SentinelUnknown"


def test_a_new_primary_is_recorded_as_a_failover() -> None:
    first = status.store_status(SentinelView(primary=HOSTS[0], sentinels=3), {}, "t1")
    assert first == {"primary": "demo-redis-0", "replicasInSync": 0, "sentinels": 3}
    same = status.store_status(SentinelView(primary=HOSTS[0], sentinels=3), first, "t2")
    assert same == first
    moved = status.store_status(
        SentinelView(primary=HOSTS[2], replicas_in_sync=1, sentinels=2), first, "t3"
    )
    assert moved["primary"] == "demo-redis-2"
    assert moved["lastFailover"] == {"from": "demo-redis-0", "to": "demo-redis-2", "time": "t3"}
    # No answer: what was known stays, and so does the last failover.
    unknown = status.store_status(SentinelView(error="timeout"), moved, "t4")
    assert unknown == moved


def test_status_carries_the_store_only_with_sentinels(ctx_factory: Factory) -> None:
    obs = Observation(generation=1, applied_generation=1, paused=False,
                      workloads={"redis": wl(3, 3)},
                      sentinel=view_from(MASTER_REPLY, [REPLICA_OK]))  # fmt: skip
    out = status.build(ctx_factory(THREE), obs, {}, "now")
    assert out["store"]["primary"] == "demo-redis-1"
    assert out["components"]["redis"]["replicas"] == "3/3"
    assert "sentinel demo-redis-0." in out["endpoints"]["redis"]
    assert "store" not in status.build(ctx_factory(), obs, {}, "now")
