"""The PlantdCluster API (plantd.io/v1alpha1) as pydantic models.

These models are the single source of truth for the CRD: ``plantd_operator.crd`` turns them
into the structural OpenAPI schema in ``crds/`` (descriptions, defaults, enums, bounds and CEL
rules all come from here), and the operator parses each object's spec with them, so the schema
and the code cannot disagree. Evolve additively only: kopf has no conversion webhooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from plantd.common import contract


def cel(rule: str, message: str, **extra: str) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    return {"rule": rule, "message": message, **extra}


M = TypeVar("M", bound=BaseModel)


def _new(cls: type[M]) -> Callable[[], M]:
    """A default factory that builds a sub-model from its own field defaults."""
    return lambda: cls.model_validate({})


class _Model(BaseModel):
    # camelCase on the wire; unknown fields ignored so an older operator reads a newer CRD.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


# A Kubernetes quantity ("500m", "1Gi", 2): int-or-string, checked by CEL where it matters.
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
            r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        }
    ),
]

# Free-form Kubernetes objects we pass through untouched (affinity terms, label selectors).
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class Resources(_Model):
    """Compute resources of a container (as in a Pod's resources.requests/limits)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Minimum resources the scheduler reserves, e.g. {cpu: 100m, memory: 64Mi}.",
        json_schema_extra={"maxProperties": 8},
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Hard caps enforced at run time, e.g. {memory: 256Mi}.",
        json_schema_extra={"maxProperties": 8},
    )


class Toleration(_Model):
    """A toleration, as in a Pod spec."""

    key: str | None = Field(None, description="Taint key to tolerate; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (the Kubernetes default is Equal)."
    )
    value: str | None = Field(None, description="Taint value to match with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None, description="For NoExecute: how long the pod stays bound after the taint appears."
    )


class PodOverrides(_Model):
    """Narrow, supported changes to the rendered pods (not a full pod template)."""

    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the pods must match.",
        json_schema_extra={"maxProperties": 32},
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Taints the pods tolerate.",
        json_schema_extra={"maxItems": 32},
    )
    affinity: FreeForm | None = Field(
        None, description="Pod affinity, anti-affinity and node affinity, as in a Pod spec."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Extra annotations on the pods (e.g. for log shippers). Keys under "
        "plantd.io/ are reserved.",
        json_schema_extra={
            "maxProperties": 64,
            "x-kubernetes-validations": [
                cel(
                    "self.all(k, !k.startsWith('plantd.io/'))",
                    "annotations under plantd.io/ are set by the operator",
                )
            ],
        },
    )


class HeartbeatSpec(_Model):
    """MDP heartbeating between the broker and its workers."""

    interval_ms: int = Field(
        contract.HEARTBEAT_MS,
        ge=100,
        le=60000,
        description="Heartbeat interval in milliseconds, used by the broker and every worker.",
    )
    liveness: int = Field(
        contract.HEARTBEAT_LIVENESS,
        ge=1,
        le=100,
        description="Missed heartbeats before a peer is considered dead.",
    )


class BrokerSpec(_Model):
    """The MDP broker and its pub/sub buses."""

    replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="Broker pods, active-active: a client reaches one through the broker "
        "Service; the state and identity workers register with every broker and publishers "
        "send to every broker (found through the headless Service). Modules must do the same "
        "(docs/ha.md).",
    )
    resources: Resources = Field(
        default_factory=_new(Resources), description="Resources of the broker container."
    )
    heartbeat: HeartbeatSpec = Field(
        default_factory=_new(HeartbeatSpec), description="Heartbeat settings for the bus."
    )
    shutdown_grace_seconds: int = Field(
        5,
        ge=0,
        le=600,
        description="On termination a broker refuses new requests (clients move to another "
        "broker) and lets the requests its workers hold finish for this long; the pod's "
        "terminationGracePeriodSeconds covers it (docs/ha.md).",
    )
    pod: PodOverrides = Field(
        default_factory=_new(PodOverrides), description="Scheduling and annotations of broker pods."
    )


class StorageSpec(_Model):
    """A PersistentVolumeClaim template for the managed Redis."""

    size: Quantity = Field(
        "1Gi",
        description="Volume size. Can grow, never shrink.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "isQuantity(string(self)) && quantity(string(self)).isGreaterThan("
                    "quantity('0'))",
                    "size must be a positive quantity such as 1Gi",
                ),
                cel(
                    "quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0",
                    "managed Redis storage can grow but not shrink",
                ),
            ]
        },
    )
    storage_class_name: str | None = Field(
        None, description="StorageClass of the volume; empty uses the cluster default."
    )


class SentinelSpec(_Model):
    """How the Sentinels beside a replicated managed Redis judge the primary lost."""

    down_after_milliseconds: int = Field(
        5000,
        ge=1000,
        le=60000,
        description="A primary that answers no Sentinel PING for this long is down; a majority "
        "of Sentinels agreeing starts a failover. Lower fails over sooner and risks a failover "
        "on a pause (a long fork for the AOF rewrite, a slow node).",
    )
    failover_timeout_milliseconds: int = Field(
        30000,
        ge=5000,
        le=600000,
        description="How long one failover may take before another Sentinel retries it.",
    )


class ManagedRedisSpec(_Model):
    """Redis run by the operator: a StatefulSet with a volume and append-only file per pod;
    with replicas 3 or more, a primary, its replicas and a Sentinel beside each pod."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.replicas) || self.replicas != 2",
                    "managed Redis replicas must be 1 or at least 3: with 2, losing either pod "
                    "leaves one Sentinel of two, no majority to promote a replica",
                ),
                cel(
                    "!has(oldSelf.replicas) || oldSelf.replicas == 1 || "
                    "(has(self.replicas) && self.replicas != 1)",
                    "managed Redis cannot go back from Sentinel (replicas 3 or more) to one pod: "
                    "the pod kept might be a replica behind the primary",
                ),
            ]
        }
    )

    replicas: int = Field(
        1,
        ge=1,
        le=7,
        description="Redis pods. 1: one pod, restarted in place when it fails. 3 or more: a "
        "primary and replicas with a Sentinel beside each pod; when the primary is lost a "
        "majority of Sentinels promotes a replica and every plantd component follows it "
        "(docs/ha.md). Can grow from 1; not back to 1.",
    )
    sentinel: SentinelSpec = Field(
        default_factory=_new(SentinelSpec),
        description="The Sentinels' timing (replicas 3 or more).",
    )

    image: str | None = Field(
        None,
        min_length=1,
        description="Redis container image. Unset: the operator's default "
        "(--default-redis-image, redis:7.4 unless the chart's defaultImage.redis says otherwise).",
    )
    persistence: bool = Field(
        True,
        description="Keep data on a PersistentVolumeClaim (with AOF). false uses an emptyDir: "
        "data is lost when the pod moves.",
    )
    storage: StorageSpec = Field(
        default_factory=_new(StorageSpec), description="The volume, when persistence is on."
    )
    resources: Resources = Field(
        default_factory=_new(Resources), description="Resources of the Redis container."
    )


class SecretKeyRef(_Model):
    """A key in a Secret in the cluster's namespace."""

    name: str = Field(
        min_length=1, max_length=253, description="Name of the Secret (same namespace)."
    )
    key: str = Field("password", min_length=1, max_length=253, description="Key inside the Secret.")


class RedisTLSSpec(_Model):
    """TLS towards an external Redis."""

    enabled: bool = Field(False, description="Connect with TLS (rediss://).")
    ca_secret_ref: SecretKeyRef | None = Field(
        None,
        description="CA bundle to verify the server, as a Secret key (default key: ca.crt). "
        "Empty trusts the image's system CAs. The Secret must carry the label "
        "plantd.io/secret-for: <cluster name>.",
    )


_HOST_PORT = "^[^:/ ]+:[0-9]{1,5}$"


class ExternalSentinelSpec(_Model):
    """Redis Sentinels that watch an external primary: plantd asks them where it is."""

    addresses: list[str] = Field(
        min_length=1,
        max_length=9,
        description="host:port of each Sentinel (all of them: any one answering is enough).",
        json_schema_extra={
            # Bounded items keep the CEL rule's cost estimate within the API server's budget.
            "items": {"type": "string", "maxLength": 260},
            "x-kubernetes-validations": [
                cel(
                    f"self.all(a, a.matches('{_HOST_PORT}'))",
                    "every sentinel address must be host:port, e.g. sentinel-0.redis:26379",
                )
            ],
        },
    )
    master_name: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="The name the Sentinels monitor the primary under (sentinel monitor NAME).",
    )
    redis_port: int = Field(
        6379,
        ge=1,
        le=65535,
        description="Port of the data nodes the Sentinels name: the NetworkPolicy lets the "
        "state pods reach it (their addresses are whatever the Sentinels say).",
    )
    auth: bool = Field(
        True,
        description="Send the password (secretRef) to the Sentinels too. false: only the data "
        "nodes get it, for Sentinels that take none.",
    )


class ExternalRedisSpec(_Model):
    """A Redis run elsewhere; the operator only wires the state service to it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.address) != has(self.sentinel)",
                    "state.redis.external needs exactly one of address (one server) or "
                    "sentinel (addresses and masterName)",
                )
            ]
        }
    )

    address: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="host:port of the Redis server. Or give sentinel instead.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.matches('{_HOST_PORT}')",
                    "address must be host:port, e.g. redis.example.svc:6379",
                )
            ]
        },
    )
    sentinel: ExternalSentinelSpec | None = Field(
        None,
        description="Follow a Sentinel-managed primary instead of one address: every new "
        "connection asks a Sentinel where the primary is, so plantd follows a failover.",
    )
    database: int = Field(0, ge=0, le=15, description="Redis database number.")
    secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the Redis password; empty means no AUTH. The Secret "
        "must carry the label plantd.io/secret-for: <cluster name>.",
    )
    tls: RedisTLSSpec = Field(default_factory=_new(RedisTLSSpec), description="TLS settings.")
    allow_plaintext: bool = Field(
        False,
        description="Connect without TLS: the password and every value cross the network in "
        "the clear. Refused (RedisTLSRequired) unless set; when set the cluster reports "
        "Degraded, reason PlaintextRedis.",
    )


class RedisSpec(_Model):
    """Where the state service keeps its data."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.mode != 'external' || has(self.external)",
                    "state.redis.mode external needs state.redis.external.address (host:port) "
                    "or state.redis.external.sentinel",
                ),
                cel(
                    "!has(self.waitReplicas) || self.waitReplicas == 0 || self.mode == 'external'"
                    " || self.waitReplicas < self.managed.replicas",
                    "state.redis.waitReplicas must be below state.redis.managed.replicas: the "
                    "primary is one of them",
                ),
                cel(
                    "self.mode != 'managed' || !has(self.external)",
                    "state.redis.external is only used with mode: external; remove it or "
                    "set mode: external",
                ),
                cel(
                    "self.mode == oldSelf.mode",
                    "state.redis.mode cannot change: create a new cluster and migrate the data",
                ),
                cel(
                    "!has(self.external) || !has(self.external.tls) || "
                    "!has(self.external.tls.caSecretRef) || self.external.tls.enabled",
                    "state.redis.external.tls.caSecretRef needs tls.enabled: true",
                ),
            ]
        }
    )

    mode: Literal["managed", "external"] = Field(
        "managed",
        description="managed: the operator runs Redis; external: use an existing server.",
    )
    managed: ManagedRedisSpec = Field(
        default_factory=_new(ManagedRedisSpec), description="Settings of the managed Redis."
    )
    external: ExternalRedisSpec | None = Field(
        None, description="The external Redis (required when mode is external)."
    )
    wait_replicas: int = Field(
        0,
        ge=0,
        le=6,
        description="Acknowledge a state write only once this many Redis replicas have it "
        "(WAIT): a failover then loses no acknowledged write, at the cost of a replication "
        "round trip per write batch (docs/ha.md has the figures). 0: Redis's asynchronous "
        "replication, where a failover can lose the last writes acknowledged.",
    )
    wait_timeout_ms: int = Field(
        500,
        ge=10,
        le=1500,
        description="How long a write waits for waitReplicas before it is answered "
        "NOT_REPLICATED (applied on the primary, not acknowledged).",
    )


class StateSpec(_Model):
    """The state service (org.plantd.State) and its Redis store."""

    replicas: int = Field(1, ge=1, le=16, description="State service pods.")
    resources: Resources = Field(
        default_factory=_new(Resources), description="Resources of the state container."
    )
    redis: RedisSpec = Field(default_factory=_new(RedisSpec), description="The Redis store.")
    auth: Literal["identity", "off"] = Field(
        "identity",
        description="identity: every request needs an access token of this cluster's identity "
        "service (audience org.plantd.State) or a caller key with permissions in the machine "
        "registry; off: any caller that reaches the bus may do everything.",
    )
    pod: PodOverrides = Field(
        default_factory=_new(PodOverrides), description="Scheduling and annotations of state pods."
    )


class BootstrapSecretRef(_Model):
    """A key in a Secret holding identity's first administrator."""

    name: str = Field(
        min_length=1, max_length=253, description="Name of the Secret (same namespace)."
    )
    key: str = Field(
        contract.BOOTSTRAP_FILE_NAME,
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret whose value is the JSON document.",
    )


class IdentitySpec(_Model):
    """The identity service (org.plantd.Identity)."""

    replicas: int = Field(
        1,
        ge=1,
        le=16,
        description="Identity service pods. They share the cluster's Redis (state.redis), so "
        "every replica serves the same users and tokens.",
    )
    resources: Resources = Field(
        default_factory=_new(Resources), description="Resources of the identity container."
    )
    bootstrap_secret_ref: BootstrapSecretRef | None = Field(
        None,
        description="Secret holding the first administrator as JSON {username, email, "
        "password, must_change_password} (default key bootstrap.json), read by identity only "
        "while its store has no user: changing it afterwards does nothing. The Secret must "
        "carry the label plantd.io/secret-for: <cluster name>. Empty: identity creates user "
        "admin with a one-time setup token in the pod that bootstrapped (docs/operator.md, "
        "First administrator).",
    )
    pod: PodOverrides = Field(
        default_factory=_new(PodOverrides),
        description="Scheduling and annotations of identity pods.",
    )


class EdgeServiceSpec(_Model):
    """A Service for clients outside the cluster, in front of every gateway sidecar."""

    enabled: bool = Field(
        False,
        description="Render the Service NAME-edge (gRPC and REST ports) selecting every pod "
        "that runs a gateway sidecar, for HMIs, browsers and scripts outside the cluster.",
    )
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP",
        description="Service type: ClusterIP behind your Ingress or Gateway API route, or "
        "NodePort/LoadBalancer to expose it directly.",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Annotations of the edge Service (e.g. for a cloud load balancer).",
    )


class GrpcSidecarSpec(_Model):
    """The gateway sidecar (plantd gateway): plantd.v1 over gRPC, REST/JSON, SSE, WebSocket."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.port != self.restPort",
                    "sidecars.grpc.port and sidecars.grpc.restPort must differ",
                ),
                cel(
                    f"!(self.port in {sorted(set(contract.HTTP_PORTS.values()))}) && "
                    f"!(self.restPort in {sorted(set(contract.HTTP_PORTS.values()))})",
                    "sidecars.grpc.port and restPort must not be a plantd health/metrics port "
                    f"({', '.join(str(p) for p in sorted(set(contract.HTTP_PORTS.values())))})",
                ),
            ]
        }
    )

    enabled: bool = Field(
        True,
        description="Run `plantd gateway` next to state and identity: each sidecar serves the "
        "whole plantd.v1 API (bus, state, identity) over gRPC and REST, and reaches the "
        "services through the broker.",
    )
    port: int = Field(
        contract.GRPC_PORT, ge=1024, le=65535, description="gRPC port of the sidecar."
    )
    rest: bool = Field(True, description="Serve the REST/JSON, SSE and WebSocket edge on restPort.")
    rest_port: int = Field(
        contract.REST_PORT,
        ge=1024,
        le=65535,
        description="REST/JSON, SSE and WebSocket port of the sidecar.",
    )
    resources: Resources = Field(
        default_factory=_new(Resources), description="Resources of each sidecar container."
    )
    edge: EdgeServiceSpec = Field(
        default_factory=_new(EdgeServiceSpec),
        description="Optional Service for clients outside the cluster.",
    )


class SidecarsSpec(_Model):
    """Sidecar containers added to service pods."""

    grpc: GrpcSidecarSpec = Field(
        default_factory=_new(GrpcSidecarSpec), description="gRPC gateway."
    )


class CurveSpec(_Model):
    """CurveZMQ on the bus."""

    enabled: bool = Field(
        True,
        description="Encrypt and authenticate every bus connection with CurveZMQ (keys are "
        "generated once into a Secret). Turn off only for debugging.",
    )
    client_keys_config_map: str | None = Field(
        None,
        max_length=253,
        description="ConfigMap of extra client public keys (entries NAME.key) the broker "
        "accepts, e.g. for modules outside the cluster.",
    )


class SecuritySpec(_Model):
    """Security settings."""

    curve: CurveSpec = Field(default_factory=_new(CurveSpec), description="CurveZMQ on the bus.")


class IstioSpec(_Model):
    """Istio service-mesh integration."""

    enabled: bool = Field(
        False,
        description="Inject sidecars and render PeerAuthentication, DestinationRules and "
        "AuthorizationPolicies per allowed edge. Needs Istio's CRDs.",
    )
    mtls_mode: Literal["STRICT", "PERMISSIVE"] = Field(
        "STRICT", description="PeerAuthentication mode for the cluster's pods."
    )
    client_principals: list[str] = Field(
        default_factory=list,
        description="Extra SPIFFE principals (cluster.local/ns/NS/sa/SA) allowed to reach the "
        "broker and the gRPC sidecars.",
        json_schema_extra={"maxItems": 64, "items": {"type": "string", "maxLength": 253}},
    )


class MeshSpec(_Model):
    """Service mesh."""

    istio: IstioSpec = Field(default_factory=_new(IstioSpec), description="Istio settings.")


class LabelSelector(_Model):
    """A label selector."""

    match_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels the pods must carry.",
        json_schema_extra={"maxProperties": 16},
    )


class NetworkPolicySpec(_Model):
    """NetworkPolicies for the cluster's pods."""

    enabled: bool = Field(
        False, description="Default-deny for the cluster's pods plus the allowed edges."
    )
    client_selector: LabelSelector = Field(
        default_factory=lambda: LabelSelector.model_validate(
            {"matchLabels": {"plantd.io/client": "true"}}
        ),
        description="Pods in the namespace allowed to reach the broker and the gRPC sidecars.",
    )


class ServiceMonitorSpec(_Model):
    """A Prometheus Operator ServiceMonitor for the cluster's metrics."""

    enabled: bool = Field(False, description="Render a ServiceMonitor (needs its CRD).")
    interval: str = Field(
        "30s", pattern=r"^[0-9]+(ms|s|m|h)$", description="Scrape interval, e.g. 30s."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels, e.g. the release label your Prometheus selects.",
        json_schema_extra={"maxProperties": 16},
    )


class PrometheusRuleSpec(_Model):
    """A Prometheus Operator PrometheusRule with the cluster's alerts."""

    enabled: bool = Field(False, description="Render a PrometheusRule (needs its CRD).")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels, e.g. the label your Prometheus rule selector uses.",
        json_schema_extra={"maxProperties": 16},
    )


class MonitoringSpec(_Model):
    """Prometheus Operator integration."""

    service_monitor: ServiceMonitorSpec = Field(
        default_factory=_new(ServiceMonitorSpec), description="ServiceMonitor settings."
    )
    prometheus_rule: PrometheusRuleSpec = Field(
        default_factory=_new(PrometheusRuleSpec), description="PrometheusRule settings."
    )


class PlantdClusterSpec(_Model):
    """The desired state of a plantd control system."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.image) || !has(self.version)",
                    "set either version (the operator picks the image) or image, not both",
                )
            ]
        }
    )

    version: str | None = Field(
        None,
        max_length=64,
        pattern=r"^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$",
        description="plantd version to run (the image tag). Empty: the operator's default.",
    )
    image: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="Full image reference (overrides version), e.g. registry/plantd@sha256:...",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy of the plantd containers."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        description="Secrets used to pull the images.",
        json_schema_extra={"maxItems": 16, "items": {"type": "string", "maxLength": 253}},
    )
    paused: bool = Field(
        False,
        description="Stop all changes to the children (the plantd.io/paused: 'true' "
        "annotation does the same). Status keeps being reported.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of every plantd process."
    )
    broker: BrokerSpec = Field(default_factory=_new(BrokerSpec), description="The MDP broker.")
    state: StateSpec = Field(default_factory=_new(StateSpec), description="The state service.")
    identity: IdentitySpec = Field(
        default_factory=_new(IdentitySpec), description="The identity service."
    )
    sidecars: SidecarsSpec = Field(default_factory=_new(SidecarsSpec), description="Sidecars.")
    security: SecuritySpec = Field(default_factory=_new(SecuritySpec), description="Security.")
    mesh: MeshSpec = Field(default_factory=_new(MeshSpec), description="Service mesh.")
    network_policy: NetworkPolicySpec = Field(
        default_factory=_new(NetworkPolicySpec), description="NetworkPolicies."
    )
    monitoring: MonitoringSpec = Field(
        default_factory=_new(MonitoringSpec), description="Prometheus Operator objects."
    )
    pod: PodOverrides = Field(
        default_factory=_new(PodOverrides),
        description="Defaults for every pod; a component's own pod settings replace these "
        "field by field.",
    )


# ----------------------------------------------------------------------------- status


class Condition(_Model):
    """A status condition (the metav1.Condition shape)."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase reason for the last transition.")
    message: str = Field("", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        description="When status last changed.", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation this condition was computed for."
    )


class ComponentStatus(_Model):
    """Ready and desired pods of one component."""

    ready: int = Field(0, ge=0, description="Pods ready.")
    desired: int = Field(0, ge=0, description="Pods wanted.")
    replicas: str = Field("0/0", description="ready/desired, for display.")


class Endpoints(_Model):
    """Addresses clients use, inside the cluster."""

    broker: str | None = Field(None, description="MDP broker, tcp://HOST:9797.")
    buses: dict[str, str] = Field(
        default_factory=dict, description="Bus name to tcp://HOST:PUB,SUB addresses."
    )
    state_grpc: str | None = Field(None, description="gRPC address of the state sidecars.")
    identity_grpc: str | None = Field(None, description="gRPC address of the identity sidecars.")
    rest: str | None = Field(
        None, description="REST/JSON, SSE and WebSocket base URL of the state sidecars."
    )
    edge: str | None = Field(
        None, description="In-cluster gRPC address of the edge Service (sidecars.grpc.edge)."
    )
    redis: str | None = Field(
        None,
        description="Redis host:port used by the state service, or its Sentinels and master.",
    )


class FailoverStatus(_Model):
    """The last change of Redis primary the operator saw."""

    from_: str | None = Field(None, alias="from", description="The primary before.")
    to: str | None = Field(None, description="The primary after.")
    time: str | None = Field(
        None, description="When the operator saw it.", json_schema_extra={"format": "date-time"}
    )


class StoreStatus(_Model):
    """A replicated managed Redis as its Sentinels describe it (state.redis.managed.replicas
    3 or more), read by the operator every few seconds."""

    primary: str | None = Field(None, description="The Redis pod that is the primary.")
    replicas_in_sync: int | None = Field(
        None, ge=0, description="Replicas whose link to the primary is up."
    )
    sentinels: int | None = Field(None, ge=0, description="Sentinels that know the primary.")
    last_failover: FailoverStatus | None = Field(
        None, description="The last change of primary the operator saw."
    )


class PlantdClusterStatus(_Model):
    """Observed state, written only by the operator."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation last applied to the children."
    )
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Failed", "Paused"] | None = (
        Field(None, description="One-word summary of the conditions.")
    )
    version: str | None = Field(None, description="plantd image running (from the spec).")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Reconciling, Degraded, BrokerReady, StateReady, StateStoreReady, "
        "IdentityReady, Paused.",
        json_schema_extra={
            "maxItems": 32,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    components: dict[str, ComponentStatus] = Field(
        default_factory=dict, description="broker, state, identity, redis: ready/desired pods."
    )
    broker_replicas: str | None = Field(None, description="Broker ready/desired, for display.")
    endpoints: Endpoints | None = Field(None, description="Addresses clients use.")
    store: StoreStatus | None = Field(
        None, description="The replicated managed Redis (primary, replicas, last failover)."
    )


def parse_spec(spec: dict[str, Any]) -> PlantdClusterSpec:
    """Validate a (schema-defaulted) spec from the API server."""
    return PlantdClusterSpec.model_validate(spec)
