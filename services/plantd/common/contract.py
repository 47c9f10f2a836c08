"""The image contract: component names, ports, settings keys and defaults.

Single source of truth shared by every service (which read these settings) and by the
operator (which renders Deployments that set them). The operator imports this module and
nothing else from the services, so the two can never drift apart.
"""

from __future__ import annotations

from typing import Final

# Components that `plantd <component>` runs.
BROKER: Final = "broker"
STATE: Final = "state"
IDENTITY: Final = "identity"
ECHO: Final = "echo"
GATEWAY: Final = "gateway"
OPERATOR: Final = "operator"
COMPONENTS: Final = (BROKER, STATE, IDENTITY, ECHO, GATEWAY, OPERATOR)

# Service names on the bus.
SERVICE_STATE: Final = "org.plantd.State"
SERVICE_IDENTITY: Final = "org.plantd.Identity"
SERVICE_BROKER: Final = "org.plantd.Broker"
SERVICE_ECHO: Final = "org.plantd.module.Echo"
# The audiences identity issues tokens for by default, one per service that checks them: state,
# identity, and the bus (the gateway's BusService: generic calls, publish, subscribe).
TOKEN_AUDIENCES: Final = (SERVICE_STATE, SERVICE_IDENTITY, SERVICE_BROKER)
AUDIENCE_BUS: Final = SERVICE_BROKER

# Ports (container and local defaults).
MDP_PORT: Final = 9797
BUS_PORTS: Final[dict[str, tuple[int, int]]] = {
    # bus name: (XSUB frontend for publishers, XPUB backend for subscribers)
    "state": (11000, 11001),
    "event": (12000, 12001),
    "metric": (13000, 13001),
}
GRPC_PORT: Final = 50051
REST_PORT: Final = 8086  # the gateway's REST/JSON, SSE and WebSocket edge
HTTP_PORTS: Final[dict[str, int]] = {
    BROKER: 8081,
    STATE: 8082,
    IDENTITY: 8083,
    ECHO: 8084,
    GATEWAY: 8085,
    OPERATOR: 8080,
}

# Kubernetes port names: the prefix tells Istio the protocol.
PORT_NAME_ZMTP: Final = "tcp-zmtp"
PORT_NAME_GRPC: Final = "grpc"
PORT_NAME_METRICS: Final = "http-metrics"
PORT_NAME_REST: Final = "http-rest"


def bus_port_name(bus: str, side: str) -> str:
    """Kubernetes port name of a bus socket, e.g. ``tcp-bus-state-pub``."""
    return f"tcp-bus-{bus}-{side}"


# Heartbeats (as in the original plantd: 2500 ms, liveness 3).
HEARTBEAT_MS: Final = 2500
HEARTBEAT_LIVENESS: Final = 3

# HTTP paths every process serves.
PATH_HEALTHZ: Final = "/healthz"
PATH_READYZ: Final = "/readyz"
PATH_METRICS: Final = "/metrics"

ENV_PREFIX: Final = "PLANTD_"


def env_key(component: str, key: str) -> str:
    """Environment variable of a setting.

    ``env_key("state", "redis_url")`` -> ``PLANTD_STATE_REDIS_URL``.
    """
    return f"{ENV_PREFIX}{component.upper()}_{key.upper()}"


# Setting keys (lower case; the env var is env_key(component, key)).
KEY_ENDPOINT: Final = "endpoint"  # broker bind address
KEY_BROKER_ENDPOINT: Final = "broker_endpoint"  # where a service connects
KEY_HTTP_PORT: Final = "http_port"
KEY_CURVE: Final = "curve"
KEY_CURVE_KEYS: Final = "curve_keys"
KEY_LOG_LEVEL: Final = "log_level"
KEY_LOG_FORMAT: Final = "log_format"
KEY_HEARTBEAT_MS: Final = "heartbeat_ms"
KEY_BUS_BIND: Final = "bus_bind"
KEY_STATE_STORE: Final = "store"
KEY_STATE_REDIS_URL: Final = "redis_url"
KEY_STATE_DATA_DIR: Final = "data_dir"
KEY_STATE_BUS_ENDPOINT: Final = "bus_endpoint"

# Bind addresses. A component started by hand binds loopback only (what users expect of a
# process on a workstation; with --no-curve anything on the network could use the bus). In a
# container every socket must be reachable from other pods, so the operator and the image set
# the CONTAINER_* values explicitly (docs/security.md, "Bind addresses").
DEFAULT_BIND_HOST: Final = "127.0.0.1"
DEFAULT_HTTP_HOST: Final = "127.0.0.1"
DEFAULT_BROKER_BIND: Final = f"tcp://{DEFAULT_BIND_HOST}:{MDP_PORT}"
CONTAINER_BIND_HOST: Final = "*"
CONTAINER_HTTP_HOST: Final = "0.0.0.0"
CONTAINER_BROKER_BIND: Final = f"tcp://{CONTAINER_BIND_HOST}:{MDP_PORT}"
DEFAULT_BROKER_CONNECT: Final = f"tcp://127.0.0.1:{MDP_PORT}"
DEFAULT_LOG_LEVEL: Final = "info"
DEFAULT_LOG_FORMAT: Final = "json"
DEFAULT_STATE_STORE: Final = "sqlite"
STATE_STORES: Final = ("sqlite", "redis")

# Where CURVE keys live inside a container (mounted from Secrets) and locally.
CONTAINER_CURVE_KEYS_DIR: Final = "/etc/plantd/curve"
LOCAL_STATE_DIR: Final = "~/.local/state/plantd"
DEFAULT_CURVE_KEYS_DIR: Final = f"{LOCAL_STATE_DIR}/keys"
DEFAULT_STATE_DATA_DIR: Final = f"{LOCAL_STATE_DIR}/state"

# Container image: non-root user id the Dockerfile creates.
IMAGE_UID: Final = 10001


def command_for(component: str) -> list[str]:
    """Container command that runs a component from the one image."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")
    return ["plantd", component]


# The `plant` client CLI: settings come from PLANTD_CLIENT_<KEY> (env_key(CLIENT, key)).
CLIENT: Final = "client"
KEY_TIMEOUT: Final = "timeout"
KEY_PROFILE: Final = "profile"
KEY_DIALECT: Final = "dialect"  # MDP dialect of a client or worker: mdp02, mdp01, legacy
KEY_STATE_REDIS_PASSWORD_FILE: Final = "redis_password_file"  # noqa: S105 - a key name


# --- Kubernetes operator additions (appended by the operator; read by services in pods) ---
# Container port names are IANA service names (at most 15 characters), so bus sockets use
# this shorter form in pod specs; Services keep bus_port_name() (DNS labels allow 63).
def bus_container_port_name(bus: str, side: str) -> str:
    """Container port name of a bus socket, e.g. ``tcp-state-pub`` (<= 15 characters)."""
    return f"tcp-{bus}-{side}"


BUS_SIDES: Final = ("pub", "sub")  # pub = XSUB frontend (publishers), sub = XPUB backend
KEY_HEARTBEAT_LIVENESS: Final = "heartbeat_liveness"
KEY_SHUTDOWN_GRACE_MS: Final = "shutdown_grace_ms"
KEY_ORPHAN_WAIT_MS: Final = "orphan_wait_ms"
KEY_READY_SERVICES: Final = "ready_services"
KEY_HTTP_HOST: Final = "http_host"
KEY_STATE_REDIS_PASSWORD: Final = "redis_password"  # noqa: S105 - a settings key, not a secret
KEY_STATE_REDIS_CA_FILE: Final = "redis_ca_file"
KEY_STATE_REDIS_WAIT_REPLICAS: Final = "redis_wait_replicas"
KEY_STATE_REDIS_WAIT_TIMEOUT_MS: Final = "redis_wait_timeout_ms"
KEY_GRPC_PORT: Final = "grpc_port"
KEY_JWT_KEY_FILE: Final = "jwt_key_file"
# Key files in a pod's CURVE directory: NAME.key (public) and NAME.key_secret (pair), where
# NAME is the component; every pod gets broker.key, the broker also gets each client's NAME.key
# (its allow-list).
CURVE_PUBLIC_SUFFIX: Final = ".key"
CURVE_SECRET_SUFFIX: Final = ".key_secret"  # noqa: S105 - a file suffix
CONTAINER_JWT_DIR: Final = "/etc/plantd/jwt"
JWT_KEY_FILE_NAME: Final = "signing-key.pem"
CONTAINER_REDIS_TLS_DIR: Final = "/etc/plantd/redis-tls"
REDIS_PORT: Final = 6379
SENTINEL_PORT: Final = 26379  # the Sentinels beside a replicated managed Redis
SENTINEL_MASTER: Final = "plantd"  # the name they monitor the managed primary under
FIELD_MANAGER: Final = "plantd-operator"
API_GROUP: Final = "plantd.io"
API_VERSION: Final = "v1alpha1"


def curve_certificate(public: str, secret: str | None = None, *, comment: str = "plantd") -> str:
    """A CURVE key file in the ZeroMQ certificate text format (czmq / ``zmq.auth``).

    Part of the image contract: the operator writes these into Secrets and every service reads
    them from its ``curve_keys`` directory, so both sides use this one function. Pass the
    secret only for the key pair file (``NAME.key_secret``).
    """
    lines = [
        f"#   ZeroMQ CURVE {'Private' if secret is not None else 'Public'} Certificate ({comment})",
        "metadata",
        "curve",
        f'    public-key = "{public}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret}"')
    return "\n".join(lines) + "\n"


# --- Identity in a pod (the operator renders these; `plantd identity --help` reads them) ---
KEY_JWT_KEYS_DIR: Final = "jwt_keys_dir"  # directory of STATE.KID.pem signing keys
KEY_ISSUER: Final = "issuer"
KEY_AUDIENCES: Final = "audiences"  # comma-separated
KEY_DATA_DIR: Final = "data_dir"
KEY_BUS_ENDPOINT: Final = "bus_endpoint"
DEFAULT_ISSUER: Final = "plantd-identity"
CONTAINER_DATA_DIR: Final = "/var/lib/plantd"
KEY_BOOTSTRAP_FILE: Final = "bootstrap_file"  # the first admin's JSON, read while no user exists
CONTAINER_BOOTSTRAP_DIR: Final = "/etc/plantd/bootstrap"
BOOTSTRAP_FILE_NAME: Final = "bootstrap.json"

# --- Registry and state authorization in a pod (issue 8 §9; the operator renders these) ---
KEY_REGISTRY: Final = "registry"  # broker and state: the machine registry file
KEY_IDENTITY_REGISTRY: Final = "identity_registry"  # broker: merge enrolments from identity
KEY_AUTH: Final = "auth"  # state: off | identity
KEY_AUTH_ISSUER: Final = "auth_issuer"
KEY_AUTH_AUDIENCE: Final = "auth_audience"
KEY_JWKS_FILE: Final = "jwks_file"
KEY_EVENT_BUS_ENDPOINT: Final = "event_bus_endpoint"  # event bus XSUB (publish)
KEY_EVENT_SUB_ENDPOINT: Final = "event_sub_endpoint"  # event bus XPUB (subscribe)
# The gateway sidecar: its binds and the bus ports it publishes to and follows.
KEY_GRPC_HOST: Final = "grpc_host"
KEY_REST: Final = "rest"
KEY_REST_HOST: Final = "rest_host"
KEY_REST_PORT: Final = "rest_port"
KEY_STATE_SUB_ENDPOINT: Final = "state_sub_endpoint"  # state bus XPUB (WatchEntries)
KEY_METRIC_SUB_ENDPOINT: Final = "metric_sub_endpoint"
KEY_EVENT_PUB_ENDPOINT: Final = "event_pub_endpoint"
KEY_METRIC_PUB_ENDPOINT: Final = "metric_pub_endpoint"
KEY_RATE_LIMIT_REDIS_URL: Final = "rate_limit_redis_url"  # buckets shared by the replicas
KEY_RATE_LIMIT_REDIS_PASSWORD_FILE: Final = "rate_limit_redis_password_file"  # noqa: S105
KEY_RATE_LIMIT_REDIS_CA_FILE: Final = "rate_limit_redis_ca_file"
# The gateway's gRPC health names the pod probes ask (plantd.gateway.health).
HEALTH_LIVENESS: Final = "liveness"
HEALTH_READINESS: Final = "readiness"
CONTAINER_REGISTRY_DIR: Final = "/etc/plantd/registry"
CONTAINER_JWKS_DIR: Final = "/etc/plantd/jwks"
JWKS_FILE_NAME: Final = "jwks.json"
