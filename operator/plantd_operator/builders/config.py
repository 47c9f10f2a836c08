"""The ConfigMap of plantd settings (PLANTD_<COMPONENT>_<KEY>) and the ServiceAccounts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plantd.common import contract
from plantd_operator import naming, shipped
from plantd_operator.builders import trust
from plantd_operator.context import ClusterContext

REDIS_AUTH_DIR = "/etc/plantd/redis-auth"
REDIS_PASSWORD_FILE = f"{REDIS_AUTH_DIR}/password"
IDENTITY_DATA_DIR = f"{contract.CONTAINER_DATA_DIR}/identity"
BOOTSTRAP_FILE = f"{contract.CONTAINER_BOOTSTRAP_DIR}/{contract.BOOTSTRAP_FILE_NAME}"
# How long a broker of several holds requests for a service whose workers left it (docs/ha.md).
ORPHAN_WAIT_MS = 250
# One audience per service a token may be issued for (the identity service's own list).
AUDIENCES = contract.TOKEN_AUDIENCES


def _flag(value: bool) -> str:
    return "true" if value else "false"


def settings(ctx: ClusterContext) -> dict[str, str]:
    """Every non-secret setting, keyed by its environment variable name."""
    spec = ctx.spec
    curve = _flag(spec.security.curve.enabled)
    hb = spec.broker.heartbeat
    out: dict[str, str] = {}

    def put(component: str, key: str, value: str | int) -> None:
        out[contract.env_key(component, key)] = str(value)

    components = [naming.BROKER, naming.STATE, naming.IDENTITY]
    if ctx.gateway_rendered:
        components.append(naming.GATEWAY)
    for c in components:
        put(c, contract.KEY_HTTP_PORT, contract.HTTP_PORTS[c])
        # Components bind loopback unless told otherwise: in a pod they must listen on all.
        put(c, contract.KEY_HTTP_HOST, contract.CONTAINER_HTTP_HOST)
        put(c, contract.KEY_CURVE, curve)
        put(c, contract.KEY_CURVE_KEYS, contract.CONTAINER_CURVE_KEYS_DIR)
        put(c, contract.KEY_LOG_LEVEL, spec.log_level)
        put(c, contract.KEY_LOG_FORMAT, contract.DEFAULT_LOG_FORMAT)
        put(c, contract.KEY_HEARTBEAT_MS, hb.interval_ms)
        if c in (naming.STATE, naming.IDENTITY):
            put(c, contract.KEY_BROKER_ENDPOINT, ctx.worker_brokers)  # register with each
        elif c != naming.BROKER:
            put(c, contract.KEY_BROKER_ENDPOINT, ctx.broker_endpoint)  # a client: any one

    put(naming.BROKER, contract.KEY_ENDPOINT, contract.CONTAINER_BROKER_BIND)
    put(naming.BROKER, contract.KEY_BUS_BIND, contract.CONTAINER_BIND_HOST)
    put(naming.BROKER, contract.KEY_HEARTBEAT_LIVENESS, hb.liveness)
    put(naming.BROKER, contract.KEY_SHUTDOWN_GRACE_MS, spec.broker.shutdown_grace_seconds * 1000)
    # A broker cut off from a service's workers (they are registered with the others)
    # refuses its requests unrun within 250 ms instead of holding them for the whole request
    # timeout; plantd's clients send them again, reaching another broker (or this one once a
    # restarted worker is back). Set for one broker too: scaling is not a config change.
    put(naming.BROKER, contract.KEY_ORPHAN_WAIT_MS, ORPHAN_WAIT_MS)
    # A new broker takes clients only once plantd's workers found it (plantd.broker.ready_gate),
    # so a rolling update moves on to the next broker only then.
    put(
        naming.BROKER,
        contract.KEY_READY_SERVICES,
        ",".join((contract.SERVICE_STATE, contract.SERVICE_IDENTITY)),
    )

    redis_users = [naming.STATE]
    if ctx.identity_store == "redis":
        redis_users.append(naming.IDENTITY)
    for c in redis_users:
        for key, value in redis_settings(ctx).items():
            put(c, key, value)
    if spec.state.redis.wait_replicas:
        put(naming.STATE, contract.KEY_STATE_REDIS_WAIT_REPLICAS, spec.state.redis.wait_replicas)
        put(
            naming.STATE, contract.KEY_STATE_REDIS_WAIT_TIMEOUT_MS, spec.state.redis.wait_timeout_ms
        )
    put(naming.STATE, contract.KEY_STATE_BUS_ENDPOINT, ctx.publish_endpoint("state"))
    put(naming.STATE, contract.KEY_EVENT_BUS_ENDPOINT, ctx.publish_endpoint("event"))
    put(naming.STATE, contract.KEY_EVENT_SUB_ENDPOINT, ctx.bus_endpoint("event", "sub"))
    # Authorization: tokens of this cluster's issuer for org.plantd.State, verified against
    # the JWKS the operator renders from the signing-key Secret (no identity round trip at
    # start); revocations (identity.not_before) and denials (audit) on the event bus.
    put(naming.STATE, contract.KEY_AUTH, spec.state.auth)
    if ctx.state_auth:
        put(naming.STATE, contract.KEY_AUTH_ISSUER, ctx.issuer)
        put(naming.STATE, contract.KEY_AUTH_AUDIENCE, contract.SERVICE_STATE)
        put(naming.STATE, contract.KEY_JWKS_FILE, trust.JWKS_PATH)
    if trust.registry_enabled(ctx):
        put(naming.BROKER, contract.KEY_REGISTRY, trust.REGISTRY_PATH)
        put(naming.STATE, contract.KEY_REGISTRY, trust.REGISTRY_PATH)
        if shipped.BROKER_IDENTITY_REGISTRY:
            # Modules enrolled with org.plantd.Identity are fetched over the bus and merged.
            put(naming.BROKER, contract.KEY_IDENTITY_REGISTRY, "true")

    if ctx.gateway_rendered:
        gateway_settings(ctx, put)
    # Identity: the signing keys from the Secret (next + active + retired, so rotation is a
    # rename), its store in Redis (above; its data volume keeps only the setup token, or the
    # SQLite file without Redis), revocations and audit on the event bus, and
    # the issuer/audiences Istio's RequestAuthentication checks spelled out, not defaulted.
    put(naming.IDENTITY, contract.KEY_JWT_KEYS_DIR, contract.CONTAINER_JWT_DIR)
    put(naming.IDENTITY, contract.KEY_DATA_DIR, IDENTITY_DATA_DIR)
    put(naming.IDENTITY, contract.KEY_BUS_ENDPOINT, ctx.publish_endpoint("event"))
    put(naming.IDENTITY, contract.KEY_ISSUER, ctx.issuer)
    put(naming.IDENTITY, contract.KEY_AUDIENCES, ",".join(AUDIENCES))
    if spec.identity.bootstrap_secret_ref is not None:
        # Set even while the Secret is not mounted yet (not labelled, or not created yet by
        # a GitOps tool): identity on an empty store then fails to start, and does not fall
        # back to a setup-token admin that would make the Secret useless for good.
        put(naming.IDENTITY, contract.KEY_BOOTSTRAP_FILE, BOOTSTRAP_FILE)
    return out


def gateway_settings(ctx: ClusterContext, put: Callable[[str, str, str | int], None]) -> None:
    """The gateway sidecar: binds on all interfaces, the buses it relays, offline token
    checks against the JWKS the operator renders (fetched from identity over the bus when
    state's auth is off and no JWKS is mounted), and rate limits in the cluster's Redis. Its
    auth is never off: a gateway without it would open generic bus calls to anyone who can
    reach the pod. Every state.redis mode is Redis, so both pods with a sidecar mount the
    Redis files (workloads.deployment)."""
    grpc = ctx.spec.sidecars.grpc
    gw = naming.GATEWAY
    put(gw, contract.KEY_GRPC_HOST, contract.CONTAINER_HTTP_HOST)
    put(gw, contract.KEY_GRPC_PORT, grpc.port)
    put(gw, contract.KEY_REST, _flag(grpc.rest))
    put(gw, contract.KEY_REST_HOST, contract.CONTAINER_HTTP_HOST)
    put(gw, contract.KEY_REST_PORT, grpc.rest_port)
    put(gw, contract.KEY_STATE_SUB_ENDPOINT, ctx.bus_endpoint("state", "sub"))
    put(gw, contract.KEY_METRIC_SUB_ENDPOINT, ctx.bus_endpoint("metric", "sub"))
    put(gw, contract.KEY_EVENT_PUB_ENDPOINT, ctx.publish_endpoint("event"))
    put(gw, contract.KEY_METRIC_PUB_ENDPOINT, ctx.publish_endpoint("metric"))
    put(gw, contract.KEY_EVENT_SUB_ENDPOINT, ctx.bus_endpoint("event", "sub"))
    put(gw, contract.KEY_AUTH, "identity")
    put(gw, contract.KEY_AUTH_ISSUER, ctx.issuer)
    if trust.jwks_enabled(ctx):
        put(gw, contract.KEY_JWKS_FILE, trust.JWKS_PATH)
    # Rate limits shared by every sidecar through the cluster's Redis (its own key prefix),
    # with the same password and CA files state reads (mounted into the sidecar too).
    redis = redis_settings(ctx)
    put(gw, contract.KEY_RATE_LIMIT_REDIS_URL, redis[contract.KEY_STATE_REDIS_URL])
    if contract.KEY_STATE_REDIS_PASSWORD_FILE in redis:
        put(
            gw,
            contract.KEY_RATE_LIMIT_REDIS_PASSWORD_FILE,
            redis[contract.KEY_STATE_REDIS_PASSWORD_FILE],
        )
    if contract.KEY_STATE_REDIS_CA_FILE in redis:
        put(gw, contract.KEY_RATE_LIMIT_REDIS_CA_FILE, redis[contract.KEY_STATE_REDIS_CA_FILE])


def redis_settings(ctx: ClusterContext) -> dict[str, str]:
    """Keys (not env names) that connect a component to the cluster's Redis: the same for
    state and identity, each under its own key prefix (their defaults differ)."""
    redis = ctx.spec.state.redis
    out: dict[str, str] = {contract.KEY_STATE_STORE: "redis"}
    scheme = "redis"
    database = 0
    if redis.mode == "external" and redis.external is not None:
        database = redis.external.database
        if redis.external.tls.enabled:
            scheme = "rediss"
            if redis.external.tls.ca_secret_ref is not None:
                out[contract.KEY_STATE_REDIS_CA_FILE] = f"{contract.CONTAINER_REDIS_TLS_DIR}/ca.crt"
    if redis.mode == "managed" or (redis.external is not None and redis.external.secret_ref):
        # A file from the Secret (no password variable is read): never in env.
        out[contract.KEY_STATE_REDIS_PASSWORD_FILE] = REDIS_PASSWORD_FILE
    sentinels = ctx.sentinels
    if sentinels is None:
        out[contract.KEY_STATE_REDIS_URL] = f"{scheme}://{ctx.redis_address}/{database}"
        return out
    # Every new connection asks a Sentinel for the primary (plantd.common.redis_conn), so
    # the components follow a failover without a restart or a config change.
    hosts, master = sentinels
    url = f"{scheme}+sentinel://{','.join(hosts)}/{master}/{database}"
    external = redis.external.sentinel if redis.external is not None else None
    if external is not None and not external.auth:
        url += "?sentinel_auth=no"
    out[contract.KEY_STATE_REDIS_URL] = url
    return out


def settings_for(ctx: ClusterContext, *components: str) -> dict[str, str]:
    """The settings the given components read (what their pods' config hash covers)."""
    prefixes = tuple(contract.env_key(c, "") for c in components)
    return {k: v for k, v in settings(ctx).items() if k.startswith(prefixes)}


def config_map(ctx: ClusterContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ctx.metadata(naming.child(ctx.name, "config")),
        "data": settings(ctx),
    }


def service_accounts(ctx: ClusterContext) -> list[dict[str, Any]]:
    """One per component, so mesh policies and RBAC can tell them apart; no API token."""
    components = [naming.BROKER, naming.STATE, naming.IDENTITY]
    if ctx.spec.state.redis.mode == "managed":
        components.append(naming.REDIS)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": ctx.metadata(ctx.service_account(c), c),
            "automountServiceAccountToken": False,
        }
        for c in components
    ]
