"""Everything a builder needs to render one PlantdCluster's children, as plain data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from plantd.common import contract
from plantd.common.endpoints import DNS_PREFIX
from plantd_operator import naming, shipped
from plantd_operator.models import PlantdClusterSpec, PodOverrides

_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Capabilities:
    """Optional APIs found in the cluster (discovery); absent ones are skipped, not failed."""

    istio: bool = False
    service_monitor: bool = False
    prometheus_rule: bool = False


@dataclass(frozen=True)
class ClusterContext:
    name: str
    namespace: str
    uid: str
    spec: PlantdClusterSpec
    default_repository: str = "plantd/plantd"
    default_version: str = "0.1.0"
    default_redis_image: str = shipped.DEFAULT_REDIS_IMAGE
    runbook_url: str = "https://plantd.dev/docs/operator"
    capabilities: Capabilities = field(default_factory=Capabilities)
    # Digests of Secret contents a component reads, so a rotation rolls exactly its pods.
    secret_digests: dict[str, str] = field(default_factory=dict)
    # Public JWKS of the signing-key Secret (compact JSON), inlined into Istio's
    # RequestAuthentication; empty until the Secret has been read.
    jwks: str = ""
    # Public CURVE keys (Z85) of the components, by component name, from the CURVE Secret: the
    # machine registry the broker and state read is built from them; empty until it was read.
    curve_public_keys: dict[str, str] = field(default_factory=dict)
    issuer: str = contract.DEFAULT_ISSUER
    # Value of the plantd.io/rotate-signing-key annotation ("" = none).
    rotate_signing_key: str = ""

    @property
    def identity_store(self) -> str:
        """Where identity keeps users and refresh tokens: the cluster's Redis (managed or
        external, under identity's own key prefix) when the state store is Redis, which every
        state.redis mode is; else its SQLite file in the pod."""
        return "redis" if self.spec.state.redis.mode in ("managed", "external") else "sqlite"

    @property
    def identity_replicas(self) -> int:
        """Identity pods run: as asked on Redis (replicas are stateless); one on SQLite, a
        file per pod (several pods would each hold different users and refresh tokens)."""
        if self.identity_store == "redis":
            return self.spec.identity.replicas
        return min(self.spec.identity.replicas, shipped.IDENTITY_MAX_REPLICAS)

    @property
    def state_auth(self) -> bool:
        return self.spec.state.auth == "identity"

    @property
    def gateway_rendered(self) -> bool:
        """The gateway sidecar (``plantd gateway``) runs in the state and identity pods."""
        return self.spec.sidecars.grpc.enabled

    @property
    def gateway_ports(self) -> list[int]:
        """The sidecar's client ports (gRPC, and REST when on); none without a sidecar."""
        if not self.gateway_rendered:
            return []
        grpc = self.spec.sidecars.grpc
        return [grpc.port, grpc.rest_port] if grpc.rest else [grpc.port]

    @property
    def image(self) -> str:
        if self.spec.image:
            return self.spec.image
        return f"{self.default_repository}:{self.spec.version or self.default_version}"

    @property
    def redis_image(self) -> str:
        """The managed Redis image: the cluster's own, else the operator's default."""
        return self.spec.state.redis.managed.image or self.default_redis_image

    @property
    def version(self) -> str:
        """Version shown in labels and status: the tag, or 'custom' for a digest."""
        if self.spec.image is None:
            return self.spec.version or self.default_version
        ref = self.spec.image.split("@", 1)[0]
        tail = ref.rsplit("/", 1)[-1]
        tag = tail.split(":", 1)[1] if ":" in tail else "custom"
        return _LABEL_VALUE.sub("-", tag)[:63].strip("-_.") or "custom"

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
            "kind": "PlantdCluster",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(
        self,
        name: str,
        component: str | None = None,
        *,
        annotations: dict[str, str] | None = None,
        extra_labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {**(extra_labels or {}), **naming.labels(self.name, component)},
            "ownerReferences": [self.owner_reference()],
        }
        if annotations:
            meta["annotations"] = annotations
        return meta

    def service_account(self, component: str) -> str:
        return naming.child(self.name, component)

    def host(self, component: str) -> str:
        return naming.service_host(self.name, component, self.namespace)

    @property
    def broker_endpoint(self) -> str:
        return f"tcp://{self.host(naming.BROKER)}:{contract.MDP_PORT}"

    def bus_endpoint(self, bus: str, side: str) -> str:
        front, back = contract.BUS_PORTS[bus]
        return f"tcp://{self.host(naming.BROKER)}:{front if side == 'pub' else back}"

    def _every_broker(self, port: int) -> str:
        """Every ready broker pod: the headless Service's addresses, followed as they change."""
        host = f"{naming.headless(self.name, naming.BROKER)}.{self.namespace}.svc"
        return f"{DNS_PREFIX}tcp://{host}:{port}"

    @property
    def worker_brokers(self) -> str:
        """Where the services' workers register (docs/ha.md): with every broker pod, or a
        client that reached another broker would not find the service. The same for one
        replica or five, so scaling the brokers is not a config change (no worker restarts)."""
        return self._every_broker(contract.MDP_PORT)

    def publish_endpoint(self, bus: str) -> str:
        """Where publishers send: every broker, so a subscriber on any one of them hears each
        message once. Subscribers use :meth:`bus_endpoint` (one broker through the Service:
        on two they would hear everything twice)."""
        return self._every_broker(contract.BUS_PORTS[bus][0])

    @property
    def redis_replicas(self) -> int:
        """Managed Redis pods (0 with an external Redis)."""
        redis = self.spec.state.redis
        return redis.managed.replicas if redis.mode == "managed" else 0

    @property
    def managed_sentinel(self) -> bool:
        """A managed primary with replicas and a Sentinel beside each pod."""
        return self.redis_replicas >= 3

    def redis_pod_host(self, ordinal: int) -> str:
        """The stable DNS name of managed Redis pod ``ordinal`` (its headless Service's)."""
        headless = naming.headless(self.name, naming.REDIS)
        return f"{naming.child(self.name, naming.REDIS)}-{ordinal}.{headless}.{self.namespace}.svc"

    @property
    def sentinels(self) -> tuple[list[str], str] | None:
        """The Sentinels (host:port) and the master name they watch, when there are any."""
        redis = self.spec.state.redis
        if self.managed_sentinel:
            hosts = [
                f"{self.redis_pod_host(i)}:{contract.SENTINEL_PORT}"
                for i in range(self.redis_replicas)
            ]
            return hosts, contract.SENTINEL_MASTER
        if redis.mode == "external" and redis.external is not None and redis.external.sentinel:
            return list(redis.external.sentinel.addresses), redis.external.sentinel.master_name
        return None

    @property
    def redis_address(self) -> str:
        """Where the store is, as status and messages show it (no credentials)."""
        redis = self.spec.state.redis
        sentinels = self.sentinels
        if sentinels is not None:
            hosts, master = sentinels
            return f"sentinel {','.join(hosts)} master {master}"
        if redis.mode == "external" and redis.external is not None and redis.external.address:
            return redis.external.address
        return f"{self.host(naming.REDIS)}:{contract.REDIS_PORT}"

    def pod_overrides(self, component: str) -> PodOverrides:
        """Cluster-wide pod settings, replaced field by field by the component's own."""
        own: PodOverrides | None = {
            naming.BROKER: self.spec.broker.pod,
            naming.STATE: self.spec.state.pod,
            naming.IDENTITY: self.spec.identity.pod,
        }.get(component)
        base = self.spec.pod
        if own is None:
            return base
        chosen = {
            f: getattr(own, f) if f in own.model_fields_set else getattr(base, f)
            for f in PodOverrides.model_fields
        }
        return PodOverrides(**chosen)
