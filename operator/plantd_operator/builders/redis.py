"""The managed Redis: a one-pod StatefulSet with AOF on a volume, and its Services."""

from __future__ import annotations

from typing import Any

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.builders import pods
from plantd_operator.context import ClusterContext

REDIS_UID = 999  # the official image's redis user
ACL_DIR = "/etc/redis-auth"
DATA_DIR = "/data"


def statefulset(ctx: ClusterContext) -> dict[str, Any]:
    managed = ctx.spec.state.redis.managed
    name = naming.child(ctx.name, naming.REDIS)
    # The password lives in an ACL file from the Secret, never on the command line.
    args = [
        "--port",
        str(contract.REDIS_PORT),
        "--dir",
        DATA_DIR,
        "--appendonly",
        "yes" if managed.persistence else "no",
        "--appendfsync",
        "everysec",
        "--aclfile",
        f"{ACL_DIR}/users.acl",
        "--protected-mode",
        "no",
    ]
    tcp = {"tcpSocket": {"port": "tcp-redis"}}
    container = {
        "name": naming.REDIS,
        "image": ctx.redis_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["redis-server"],
        "args": args,
        "ports": [{"name": "tcp-redis", "containerPort": contract.REDIS_PORT, "protocol": "TCP"}],
        "resources": pods.resources(naming.REDIS, managed.resources),
        "securityContext": pods.container_security(REDIS_UID),
        "livenessProbe": {**tcp, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**tcp, "periodSeconds": 5, "failureThreshold": 2},
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "auth", "mountPath": ACL_DIR, "readOnly": True},
            pods.tmp_mount(),
        ],
    }
    volumes: list[dict[str, Any]] = [
        {
            "name": "auth",
            "secret": {
                "secretName": name,
                "defaultMode": 0o440,
                "items": [{"key": "users.acl", "path": "users.acl"}],
            },
        },
        pods.tmp_volume(),
    ]
    if not managed.persistence:
        volumes.append({"name": "data", "emptyDir": {}})
    digest = pods.config_hash(args, ctx.redis_image, ctx.secret_digests.get("redis:auth", ""))
    template = pods.pod_template(
        ctx, naming.REDIS, [container], volumes, config_digest=digest, uid=REDIS_UID
    )
    spec: dict[str, Any] = {
        "replicas": 1,
        "serviceName": naming.headless(ctx.name, naming.REDIS),
        "podManagementPolicy": "OrderedReady",
        "selector": {"matchLabels": naming.selector_labels(ctx.name, naming.REDIS)},
        "template": template,
    }
    if managed.persistence:
        claim: dict[str, Any] = {
            "metadata": {"name": "data", "labels": naming.selector_labels(ctx.name, naming.REDIS)},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": str(managed.storage.size)}},
            },
        }
        if managed.storage.storage_class_name:
            claim["spec"]["storageClassName"] = managed.storage.storage_class_name
        spec["volumeClaimTemplates"] = [claim]
        # Keep the data when the StatefulSet is scaled or replaced; delete it with the cluster.
        spec["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": "Delete",
            "whenScaled": "Retain",
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": ctx.metadata(name, naming.REDIS),
        "spec": spec,
    }


def services(ctx: ClusterContext) -> list[dict[str, Any]]:
    port = {
        "name": "tcp-redis",
        "port": contract.REDIS_PORT,
        "targetPort": contract.REDIS_PORT,
        "protocol": "TCP",
        "appProtocol": "tcp",
    }
    sel = naming.selector_labels(ctx.name, naming.REDIS)
    main = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(naming.child(ctx.name, naming.REDIS), naming.REDIS),
        "spec": {"type": "ClusterIP", "selector": sel, "ports": [port]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(naming.headless(ctx.name, naming.REDIS), naming.REDIS),
        "spec": {"clusterIP": "None", "selector": sel, "ports": [port]},
    }
    return [main, headless]
