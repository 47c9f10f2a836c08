"""The managed Redis: a StatefulSet with AOF on a volume per pod, and its Services.

One replica is one pod, restarted in place. Three or more are a primary, its replicas and a
Redis Sentinel beside each pod (quorum: a majority): when the primary is lost the Sentinels
promote a replica, and plantd's components follow, because their Redis URL names the
Sentinels (``redis+sentinel://``), not a server. Each pod's start script asks the other
Sentinels who the primary is and starts as its replica (pod 0 is the first primary when no
Sentinel knows one yet); a pod that stops while primary first hands the role over
(``SENTINEL FAILOVER`` in its preStop hook), so a rolling update costs a switchover, not a
failure detection. Every name is a pod's stable DNS name, which Redis announces
(``replica-announce-ip``, ``announce-hostnames``), so a pod that comes back with a new IP is
the same member.
"""

from __future__ import annotations

from typing import Any

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.builders import pods
from plantd_operator.context import ClusterContext

REDIS_UID = 999  # the official image's redis user
ACL_DIR = "/etc/redis-auth"
DATA_DIR = "/data"
SENTINEL_CONTAINER = "sentinel"

# Shared by the scripts below: the password from the Secret file (never an argument:
# redis-cli reads REDISCLI_AUTH), this pod's stable name, and ask_sentinels, which sets
# `primary` to what the first other Sentinel answering says (empty when none answers).
# Everything they need comes in through env (_sentinel_env), so the scripts are constants and
# the config hash covers the env.
_PRELUDE = r"""set -eu
umask 077
REDISCLI_AUTH=$(cat /etc/redis-auth/password)
export REDISCLI_AUTH
ME="$POD_NAME.$HEADLESS"
ask() { timeout 2 redis-cli --no-auth-warning "$@" 2>/dev/null; }
ask_sentinels() {
  primary=""
  for s in $SENTINEL_HOSTS; do
    [ "$s" = "$ME" ] && continue
    a=$(ask -h "$s" -p 26379 SENTINEL get-master-addr-by-name "$MASTER" | head -n 1) || a=""
    case "$a" in "" | *ERR* | *NOAUTH* | *WRONGPASS*) continue ;; esac
    primary=$a
    return 0
  done
  return 0
}
"""

# The data node: a replica of whatever primary the Sentinels name; pod 0 is the first
# primary when none is known (a new cluster, or every pod restarted at once). A data node
# that restarts while the Sentinels still name it the primary (it crashed, and came back
# before they noticed) waits for them to promote a replica first: with appendfsync everysec
# its AOF may lack the last second of writes that a replica has (and WAIT acknowledged);
# starting as the primary would make the replicas resync from it and drop those writes. It
# starts as the primary after all if none is promoted within FAILOVER_WAIT_S.
REDIS_START = (
    _PRELUDE
    + r"""ask_sentinels
if [ "$primary" = "$ME" ]; then
  echo "the Sentinels still name this pod the primary: waiting for them to promote a replica"
  i=0
  while [ "$i" -lt "$FAILOVER_WAIT_S" ] && [ "$primary" = "$ME" ]; do
    sleep 1
    i=$((i + 1))
    ask_sentinels
  done
fi
[ -n "$primary" ] || primary="$FIRST_PRIMARY"
cat > /tmp/redis.conf <<EOF
port 6379
dir /data
appendonly $APPENDONLY
appendfsync everysec
aclfile /etc/redis-auth/users.acl
protected-mode no
masterauth $REDISCLI_AUTH
replica-announce-ip $ME
EOF
if [ "$primary" = "$ME" ]; then
  echo "starting as the primary"
else
  echo "replicaof $primary 6379" >> /tmp/redis.conf
  echo "starting as a replica of $primary"
fi
exec redis-server /tmp/redis.conf
"""
)

# The Sentinel beside it. It rewrites its own file, so the file is in the pod's /tmp; it
# refuses a hostname it cannot resolve, so it waits (bounded) for the primary's DNS record.
SENTINEL_START = (
    _PRELUDE
    + r"""ask_sentinels
[ -n "$primary" ] || primary="$FIRST_PRIMARY"
i=0
until getent hosts "$primary" > /dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 120 ]; then
    echo "cannot resolve the primary $primary" >&2
    exit 1
  fi
  sleep 1
done
mkdir -p /tmp/sentinel
cat > /tmp/sentinel/sentinel.conf <<EOF
port 26379
dir /tmp/sentinel
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $ME
requirepass $REDISCLI_AUTH
sentinel sentinel-pass $REDISCLI_AUTH
sentinel monitor $MASTER $primary 6379 $QUORUM
sentinel auth-pass $MASTER $REDISCLI_AUTH
sentinel down-after-milliseconds $MASTER $DOWN_AFTER_MS
sentinel failover-timeout $MASTER $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $MASTER 1
EOF
echo "watching $MASTER at $primary (quorum $QUORUM)"
exec redis-server /tmp/sentinel/sentinel.conf --sentinel
"""
)

# preStop of the data node: a primary asks another Sentinel to fail over to a replica and
# waits (at most 10 s) to be demoted, so clients move before it stops taking writes.
REDIS_PRE_STOP = (
    _PRELUDE
    + r"""role=$(ask ROLE | head -n 1) || role=""
[ "$role" = master ] || exit 0
for s in $SENTINEL_HOSTS; do
  [ "$s" = "$ME" ] && continue
  if ask -h "$s" -p 26379 SENTINEL FAILOVER "$MASTER" | grep -q OK; then break; fi
done
i=0
while [ "$i" -lt 20 ]; do
  role=$(ask ROLE | head -n 1) || role=""
  [ "$role" = master ] || exit 0
  i=$((i + 1))
  sleep 0.5
done
"""
)

# Ready: a primary that answers, or a replica whose link to its primary is up (a replica
# still loading the primary's copy would serve stale reads and is no failover target).
REDIS_READY = r"""REDISCLI_AUTH=$(cat /etc/redis-auth/password)
export REDISCLI_AUTH
out=$(timeout 2 redis-cli --no-auth-warning INFO replication) || exit 1
case "$out" in
  *role:master*) exit 0 ;;
  *master_link_status:up*) exit 0 ;;
esac
exit 1
"""


def quorum(replicas: int) -> int:
    """Sentinels that must agree the primary is down: a majority, so one pod lost still
    leaves enough to promote a replica, and a minority cut off cannot."""
    return replicas // 2 + 1


def failover_wait_s(ctx: ClusterContext) -> int:
    """How long a restarted primary waits for the Sentinels to promote a replica: twice
    their down-after (they must agree it is down) plus 10 s for the election."""
    return 2 * ctx.spec.state.redis.managed.sentinel.down_after_milliseconds // 1000 + 10


def _sentinel_env(ctx: ClusterContext) -> list[dict[str, Any]]:
    sentinel = ctx.spec.state.redis.managed.sentinel
    headless = f"{naming.headless(ctx.name, naming.REDIS)}.{ctx.namespace}.svc"
    hosts = " ".join(ctx.redis_pod_host(i) for i in range(ctx.redis_replicas))
    values = {
        "HEADLESS": headless,
        "SENTINEL_HOSTS": hosts,
        "FIRST_PRIMARY": ctx.redis_pod_host(0),
        "MASTER": contract.SENTINEL_MASTER,
        "QUORUM": str(quorum(ctx.redis_replicas)),
        "DOWN_AFTER_MS": str(sentinel.down_after_milliseconds),
        "FAILOVER_TIMEOUT_MS": str(sentinel.failover_timeout_milliseconds),
        "FAILOVER_WAIT_S": str(failover_wait_s(ctx)),
        "APPENDONLY": "yes" if ctx.spec.state.redis.managed.persistence else "no",
    }
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    return [pod_name, *({"name": k, "value": v} for k, v in values.items())]


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
    if ctx.managed_sentinel:
        return _replicated(ctx)
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
    return _statefulset(ctx, template)


def _statefulset(ctx: ClusterContext, template: dict[str, Any]) -> dict[str, Any]:
    """The StatefulSet around either pod template: one place for the fields the API server
    will not let change (podManagementPolicy, serviceName, selector, volumeClaimTemplates),
    so a cluster can grow from one pod to Sentinels."""
    managed = ctx.spec.state.redis.managed
    spec: dict[str, Any] = {
        # One pod unless it is the Sentinel form (2, refused by the CRD, is never two primaries).
        "replicas": managed.replicas if ctx.managed_sentinel else 1,
        "serviceName": naming.headless(ctx.name, naming.REDIS),
        # OrderedReady: pod 0 comes up (the first primary) before pod 1 replicates from it; a
        # recreated pod waits for the lower ordinals to be ready.
        "podManagementPolicy": "OrderedReady",
        "selector": {"matchLabels": naming.selector_labels(ctx.name, naming.REDIS)},
        "template": template,
    }
    if managed.persistence:
        spec["volumeClaimTemplates"] = [_claim(ctx)]
        # Keep the data when the StatefulSet is scaled or replaced; delete it with the cluster.
        spec["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": "Delete",
            "whenScaled": "Retain",
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": ctx.metadata(naming.child(ctx.name, naming.REDIS), naming.REDIS),
        "spec": spec,
    }


def _auth_volume(name: str) -> dict[str, Any]:
    # The ACL file for redis-server, the password for the scripts (masterauth, the Sentinels).
    return {
        "name": "auth",
        "secret": {
            "secretName": name,
            "defaultMode": 0o440,
            "items": [
                {"key": "users.acl", "path": "users.acl"},
                {"key": "password", "path": "password"},
            ],
        },
    }


def _replicated(ctx: ClusterContext) -> dict[str, Any]:
    """A primary, replicas and a Sentinel beside each (module docstring)."""
    managed = ctx.spec.state.redis.managed
    name = naming.child(ctx.name, naming.REDIS)
    env = _sentinel_env(ctx)
    mounts = [
        {"name": "auth", "mountPath": ACL_DIR, "readOnly": True},
        pods.tmp_mount(),
    ]
    redis = {
        "name": naming.REDIS,
        "image": ctx.redis_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", REDIS_START],
        "env": env,
        "ports": [{"name": "tcp-redis", "containerPort": contract.REDIS_PORT, "protocol": "TCP"}],
        "resources": pods.resources(naming.REDIS, managed.resources),
        "securityContext": pods.container_security(REDIS_UID),
        # Liveness starts once Redis listens: a restarted primary may wait FAILOVER_WAIT_S.
        "startupProbe": {
            "tcpSocket": {"port": "tcp-redis"},
            "periodSeconds": 5,
            "failureThreshold": (failover_wait_s(ctx) + 60) // 5,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "tcp-redis"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", REDIS_READY]},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", REDIS_PRE_STOP]}}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, *mounts],
    }
    sentinel = {
        "name": SENTINEL_CONTAINER,
        "image": ctx.redis_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", SENTINEL_START],
        "env": env,
        "ports": [
            {"name": "tcp-sentinel", "containerPort": contract.SENTINEL_PORT, "protocol": "TCP"}
        ],
        # A Sentinel is a small process: a tenth of the data node's share.
        "resources": {
            "requests": {"cpu": "20m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"},
        },
        "securityContext": pods.container_security(REDIS_UID),
        "livenessProbe": {
            "tcpSocket": {"port": "tcp-sentinel"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "tcpSocket": {"port": "tcp-sentinel"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "volumeMounts": mounts,
    }
    volumes: list[dict[str, Any]] = [_auth_volume(name), pods.tmp_volume()]
    if not managed.persistence:
        volumes.append({"name": "data", "emptyDir": {}})
    digest = pods.config_hash(
        REDIS_START,
        SENTINEL_START,
        REDIS_PRE_STOP,
        REDIS_READY,
        env,
        ctx.redis_image,
        ctx.secret_digests.get("redis:auth", ""),
    )
    template = pods.pod_template(
        ctx, naming.REDIS, [redis, sentinel], volumes, config_digest=digest, uid=REDIS_UID
    )
    # Spread the pods over nodes where the scheduler can: a node lost should cost one member.
    template["spec"].setdefault(
        "affinity",
        {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": naming.selector_labels(ctx.name, naming.REDIS)
                            },
                        },
                    }
                ]
            }
        },
    )
    return _statefulset(ctx, template)


def _claim(ctx: ClusterContext) -> dict[str, Any]:
    storage = ctx.spec.state.redis.managed.storage
    claim: dict[str, Any] = {
        "metadata": {"name": "data", "labels": naming.selector_labels(ctx.name, naming.REDIS)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": str(storage.size)}},
        },
    }
    if storage.storage_class_name:
        claim["spec"]["storageClassName"] = storage.storage_class_name
    return claim


def services(ctx: ClusterContext) -> list[dict[str, Any]]:
    def port(name: str, number: int) -> dict[str, Any]:
        return {
            "name": name,
            "port": number,
            "targetPort": number,
            "protocol": "TCP",
            "appProtocol": "tcp",
        }

    sel = naming.selector_labels(ctx.name, naming.REDIS)
    redis_port = port("tcp-redis", contract.REDIS_PORT)
    sentinel_port = port("tcp-sentinel", contract.SENTINEL_PORT)
    # With Sentinels the Service is theirs: a ClusterIP in front of the data nodes would send
    # writes to replicas. Ask a Sentinel for the primary (docs/ha.md).
    main_ports = [sentinel_port] if ctx.managed_sentinel else [redis_port]
    main = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(naming.child(ctx.name, naming.REDIS), naming.REDIS),
        "spec": {"type": "ClusterIP", "selector": sel, "ports": main_ports},
    }
    headless_spec: dict[str, Any] = {"clusterIP": "None", "selector": sel, "ports": [redis_port]}
    if ctx.managed_sentinel:
        # Members must resolve each other before they are ready: a replica syncs from the
        # primary, and a Sentinel watches it, while neither is ready yet.
        headless_spec["ports"] = [redis_port, sentinel_port]
        headless_spec["publishNotReadyAddresses"] = True
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(naming.headless(ctx.name, naming.REDIS), naming.REDIS),
        "spec": headless_spec,
    }
    return [main, headless]
