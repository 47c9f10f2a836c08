"""The broker, state and identity Deployments and their Services."""

from __future__ import annotations

from typing import Any

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.builders import config, pods, trust
from plantd_operator.context import ClusterContext
from plantd_operator.models import Resources

REDIS_AUTH_VOLUME = "redis-auth"
BOOTSTRAP_VOLUME = "bootstrap"
# Digests of the Redis credentials (secret_digests keys) every Redis user's pods depend on.
REDIS_DIGESTS = frozenset({"state:password", "state:ca", "state:redis"})
# The first-admin Secret passed the label check (secret_digests key). Not in the config hash:
# identity reads it only while the store has no user, so a roll on a later change would
# restart every identity pod for nothing; before the bootstrap a crash-looping pod rereads
# the file kubelet refreshes anyway.
BOOTSTRAP_DIGEST = "identity:bootstrap"
UNHASHED_DIGESTS = frozenset({BOOTSTRAP_DIGEST})


def broker_container_ports() -> list[dict[str, Any]]:
    ports = [
        {"name": contract.PORT_NAME_ZMTP, "containerPort": contract.MDP_PORT, "protocol": "TCP"}
    ]
    for bus, (front, back) in contract.BUS_PORTS.items():
        for side, port in zip(contract.BUS_SIDES, (front, back), strict=True):
            ports.append(
                {
                    "name": contract.bus_container_port_name(bus, side),
                    "containerPort": port,
                    "protocol": "TCP",
                }
            )
    ports.append(
        {
            "name": contract.PORT_NAME_METRICS,
            "containerPort": contract.HTTP_PORTS[naming.BROKER],
            "protocol": "TCP",
        }
    )
    return ports


def broker_service_ports() -> list[dict[str, Any]]:
    """Service ports: names say the protocol (Istio reads the tcp-/grpc/http- prefix)."""
    ports = [
        {
            "name": contract.PORT_NAME_ZMTP,
            "port": contract.MDP_PORT,
            "targetPort": contract.MDP_PORT,
            "protocol": "TCP",
            "appProtocol": "tcp",
        }
    ]
    for bus, (front, back) in contract.BUS_PORTS.items():
        for side, port in zip(contract.BUS_SIDES, (front, back), strict=True):
            ports.append(
                {
                    "name": contract.bus_port_name(bus, side),
                    "port": port,
                    "targetPort": port,
                    "protocol": "TCP",
                    "appProtocol": "tcp",
                }
            )
    ports.append(_metrics_port(naming.BROKER))
    return ports


def _metrics_port(component: str, name: str = contract.PORT_NAME_METRICS) -> dict[str, Any]:
    port = contract.HTTP_PORTS[component]
    return {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}


def _component_spec(ctx: ClusterContext, component: str) -> tuple[int, Resources]:
    if component == naming.BROKER:
        return ctx.spec.broker.replicas, ctx.spec.broker.resources
    if component == naming.STATE:
        return ctx.spec.state.replicas, ctx.spec.state.resources
    return ctx.identity_replicas, ctx.spec.identity.resources


def _uses_redis(ctx: ClusterContext, component: str) -> bool:
    return component == naming.STATE or (
        component == naming.IDENTITY and ctx.identity_store == "redis"
    )


def _digest(ctx: ClusterContext, component: str) -> str:
    """Config hash of a component's pods: its settings, its sidecar's, its Secrets, and the
    trust ConfigMaps (registry, JWKS) it mounts."""
    readers = [component]
    if component != naming.BROKER and ctx.gateway_rendered:
        readers.append(naming.GATEWAY)
    secrets = {
        k: v
        for k, v in ctx.secret_digests.items()
        if k not in UNHASHED_DIGESTS
        and (k.split(":", 1)[0] in readers or (k in REDIS_DIGESTS and _uses_redis(ctx, component)))
    }
    if ctx.spec.security.curve.enabled:
        secrets["curve"] = ctx.secret_digests.get("curve", "")
    secrets.update(trust.digests(ctx, component))
    return pods.config_hash(config.settings_for(ctx, *readers), secrets)


def deployment(ctx: ClusterContext, component: str) -> dict[str, Any]:
    replicas, res = _component_spec(ctx, component)
    volumes = [pods.tmp_volume()]
    curve = pods.curve_volume(ctx, component)
    if curve:
        volumes.append(curve)
    mounts: list[dict[str, Any]] = []
    if component == naming.BROKER:
        ports = broker_container_ports()
    else:
        ports = [
            {
                "name": contract.PORT_NAME_METRICS,
                "containerPort": contract.HTTP_PORTS[component],
                "protocol": "TCP",
            }
        ]
    redis_mounts: list[dict[str, Any]] = []
    if _uses_redis(ctx, component):
        vols, redis_mounts = redis_wiring(ctx)
        volumes += vols
        mounts += redis_mounts
    if component == naming.IDENTITY:
        vols, more = _identity_wiring(ctx)
        volumes += vols
        mounts += more
    vols, more = trust.wiring(ctx, component)
    volumes += vols
    mounts += more
    containers = [pods.plantd_container(ctx, component, res, ports=ports, extra_mounts=mounts)]
    if component != naming.BROKER and ctx.gateway_rendered:
        sidecar = pods.gateway_sidecar(ctx)
        if curve:
            # The sidecar is its own bus client with its own key pair.
            sidecar["volumeMounts"][1] = {
                "name": f"{pods.CURVE_VOLUME}-gw",
                "mountPath": contract.CONTAINER_CURVE_KEYS_DIR,
                "readOnly": True,
            }
            gw = pods.curve_volume(ctx, naming.GATEWAY)
            assert gw is not None
            volumes.append({**gw, "name": f"{pods.CURVE_VOLUME}-gw"})
        if trust.jwks_enabled(ctx):
            sidecar["volumeMounts"].append(trust.jwks_mount())
        # Its rate limits live in the same Redis as the pod's service (config.gateway_settings).
        sidecar["volumeMounts"] += redis_mounts
        containers.append(sidecar)
    # The broker drains for shutdown_grace_seconds; state and identity finish the batch in
    # hand and say DISCONNECT within the runner's 10 s.
    drain_s = ctx.spec.broker.shutdown_grace_seconds if component == naming.BROKER else 10
    template = pods.pod_template(
        ctx,
        component,
        containers,
        volumes,
        config_digest=_digest(ctx, component),
        termination_grace=pods.termination_grace_s(drain_s),
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ctx.metadata(naming.child(ctx.name, component), component),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": naming.selector_labels(ctx.name, component)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": template,
        },
    }


def _identity_wiring(ctx: ClusterContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The signing-key Secret (every STATE.KID.pem in it, so a rotation needs no new render)
    and a data volume: the one-time setup token, and the SQLite store when there is no Redis;
    the first-admin Secret (spec.identity.bootstrapSecretRef) once it passed the label check."""
    volumes: list[dict[str, Any]] = [
        {
            "name": pods.JWT_VOLUME,
            # 0400: the identity service refuses a private key others can read.
            "secret": {"secretName": naming.child(ctx.name, "jwt"), "defaultMode": 0o400},
        },
        # An emptyDir survives container restarts, not a new pod (docs/operator.md "Identity").
        {"name": "identity-data", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": pods.JWT_VOLUME, "mountPath": contract.CONTAINER_JWT_DIR, "readOnly": True},
        # The store's directory is a child of the mount: the service creates it 0700 and
        # chmods it, which it cannot do to the emptyDir itself (owned by root).
        {"name": "identity-data", "mountPath": contract.CONTAINER_DATA_DIR},
    ]
    ref = ctx.spec.identity.bootstrap_secret_ref
    # Only once labelled for this cluster (as redis_wiring): never a Secret it was not given.
    if ref is not None and BOOTSTRAP_DIGEST in ctx.secret_digests:
        volumes.append(
            {
                "name": BOOTSTRAP_VOLUME,
                "secret": {
                    "secretName": ref.name,
                    # 0400 + the pod's fsGroup: kubelet makes it 0440 root:fsGroup, which
                    # identity's bootstrap reader accepts (group read, nothing for others).
                    "defaultMode": 0o400,
                    "items": [{"key": ref.key, "path": contract.BOOTSTRAP_FILE_NAME}],
                    # Deleting the Secret after the bootstrap must not stop new pods mounting.
                    "optional": True,
                },
            }
        )
        mounts.append(
            {
                "name": BOOTSTRAP_VOLUME,
                "mountPath": contract.CONTAINER_BOOTSTRAP_DIR,
                "readOnly": True,
            }
        )
    return volumes, mounts


def redis_wiring(ctx: ClusterContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts that connect a component (state, and identity on Redis) to the
    cluster's Redis; config.redis_settings names the same files.

    A Secret the user names is mounted only once the operator has checked it is labelled for
    this cluster (its digest is then known): a PlantdCluster cannot make the state or
    identity pod carry an arbitrary Secret of the namespace to an address of its choosing.
    """
    redis = ctx.spec.state.redis
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    password: tuple[str, str] | None = None
    if redis.mode == "managed":
        password = (naming.child(ctx.name, "redis"), "password")
    elif redis.external is not None:
        ref = redis.external.secret_ref
        if ref is not None and "state:password" in ctx.secret_digests:
            password = (ref.name, ref.key)
        ca = redis.external.tls.ca_secret_ref
        if redis.external.tls.enabled and ca is not None and "state:ca" in ctx.secret_digests:
            volumes.append(
                {
                    "name": pods.REDIS_TLS_VOLUME,
                    "secret": {
                        "secretName": ca.name,
                        "defaultMode": 0o444,
                        "items": [{"key": ca.key, "path": "ca.crt"}],
                    },
                }
            )
            mounts.append(
                {
                    "name": pods.REDIS_TLS_VOLUME,
                    "mountPath": contract.CONTAINER_REDIS_TLS_DIR,
                    "readOnly": True,
                }
            )
    if password is not None:
        volumes.append(
            {
                "name": REDIS_AUTH_VOLUME,
                "secret": {
                    "secretName": password[0],
                    "defaultMode": 0o400,
                    "items": [{"key": password[1], "path": "password"}],
                },
            }
        )
        mounts.append(
            {"name": REDIS_AUTH_VOLUME, "mountPath": config.REDIS_AUTH_DIR, "readOnly": True}
        )
    return volumes, mounts


def services(ctx: ClusterContext) -> list[dict[str, Any]]:
    """ClusterIP + headless Service for the broker; ClusterIP for state and identity."""
    out: list[dict[str, Any]] = []
    broker_ports = broker_service_ports()
    sel = naming.selector_labels(ctx.name, naming.BROKER)
    out.append(_service(ctx, naming.child(ctx.name, naming.BROKER), naming.BROKER, broker_ports))
    headless = _service(ctx, naming.headless(ctx.name, naming.BROKER), naming.BROKER, broker_ports)
    headless["spec"]["clusterIP"] = "None"
    # Workers and publishers find a new broker through this name BEFORE it is ready: its
    # readiness waits for their workers (ready_services), and clients use the other Service.
    headless["spec"]["publishNotReadyAddresses"] = True
    headless["spec"]["selector"] = sel
    out.append(headless)
    for component in (naming.STATE, naming.IDENTITY):
        ports = [_metrics_port(component)]
        if ctx.gateway_rendered:
            ports[:0] = gateway_service_ports(ctx)
            ports.append(_metrics_port(naming.GATEWAY, pods.GATEWAY_METRICS_PORT_NAME))
        out.append(_service(ctx, naming.child(ctx.name, component), component, ports))
    edge = ctx.spec.sidecars.grpc.edge
    if ctx.gateway_rendered and edge.enabled:
        svc = _service(ctx, naming.child(ctx.name, naming.EDGE), naming.GATEWAY, [])
        svc["spec"]["ports"] = gateway_service_ports(ctx)
        # Every pod with a gateway sidecar (state and identity) serves the whole API.
        svc["spec"]["selector"] = naming.gateway_selector(ctx.name)
        svc["spec"]["type"] = edge.type
        svc["metadata"]["labels"].pop("plantd.io/metrics", None)
        if edge.annotations:
            svc["metadata"]["annotations"] = dict(edge.annotations)
        out.append(svc)
    return out


def gateway_service_ports(ctx: ClusterContext) -> list[dict[str, Any]]:
    """The sidecar's client ports, named and typed for Istio's protocol selection."""
    grpc = ctx.spec.sidecars.grpc
    ports = [
        {
            "name": contract.PORT_NAME_GRPC,
            "port": grpc.port,
            "targetPort": grpc.port,
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]
    if grpc.rest:
        ports.append(
            {
                "name": contract.PORT_NAME_REST,
                "port": grpc.rest_port,
                "targetPort": grpc.rest_port,
                "protocol": "TCP",
                "appProtocol": "http",
            }
        )
    return ports


def _service(
    ctx: ClusterContext, name: str, component: str, ports: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(name, component, extra_labels={"plantd.io/metrics": "true"}),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(ctx.name, component),
            "ports": ports,
        },
    }
