"""A thin Kubernetes API layer over the official client: server-side apply and raw calls.

The generated client has no generic apply, so this builds paths from a small kind table and
sends ``application/apply-patch+yaml`` (JSON is YAML) with our field manager and ``force``.
Calls are blocking; the async wrappers run them in the default executor.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import urllib3
from kubernetes import client, config

from plantd_operator import naming

log = logging.getLogger(__name__)

# (apiVersion, kind) -> plural; namespaced kinds only.
PLURALS: Final[dict[tuple[str, str], str]] = {
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Service"): "services",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("security.istio.io/v1", "PeerAuthentication"): "peerauthentications",
    ("security.istio.io/v1", "AuthorizationPolicy"): "authorizationpolicies",
    ("security.istio.io/v1", "RequestAuthentication"): "requestauthentications",
    ("networking.istio.io/v1", "DestinationRule"): "destinationrules",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules",
    ("plantd.io/v1alpha1", "PlantdCluster"): "plantdclusters",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}
# What a call raises when the API server cannot be reached or does not answer in time.
TRANSPORT_ERRORS: Final = (OSError, urllib3.exceptions.HTTPError)


@dataclass
class ApiError(Exception):
    """A non-2xx answer, with what the API server said."""

    status: int
    reason: str
    message: str
    what: str = ""

    def __str__(self) -> str:
        return f"{self.what}: HTTP {self.status} {self.reason}: {self.message}"


def path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = PLURALS.get((api_version, kind))
    if plural is None:
        raise KeyError(f"no API path known for {api_version} {kind}")
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    out = f"{root}/namespaces/{namespace}/{plural}"
    return f"{out}/{name}" if name else out


def load_config() -> None:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class Kube:
    """Blocking calls (thread-safe: one urllib3 pool) plus async wrappers.

    ``fence`` is called before every write and may raise to refuse it (leader election: a
    replica that no longer holds the Lease must not change anything).
    """

    def __init__(
        self,
        api: client.ApiClient | None = None,
        timeout: float = 10.0,
        *,
        pool_size: int = 32,
        fence: Callable[[], None] | None = None,
    ) -> None:
        if api is None:
            cfg = client.Configuration.get_default_copy()
            # The stock pool keeps 4 connections: a burst of applies would open and drop
            # sockets (a TLS handshake each) instead of reusing them.
            cfg.connection_pool_maxsize = pool_size
            api = client.ApiClient(cfg)
        self.api = api
        self.timeout = timeout
        self.fence = fence

    def request(
        self,
        method: str,
        url: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        what: str = "",
    ) -> dict[str, Any] | None:
        """One call; returns the decoded body, None on 404 for GET, raises ApiError otherwise."""
        if method != "GET" and self.fence is not None:
            self.fence()
        params = self.api.param_serialize(
            method=method,
            resource_path=url,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*params, _request_timeout=self.timeout)
        data: bytes = resp.read()  # type: ignore[no-untyped-call]
        if resp.status == 404 and method == "GET":
            return None
        if resp.status >= 400:
            try:
                detail = json.loads(data)
                reason, message = detail.get("reason", ""), detail.get("message", "")
            except ValueError:
                reason, message = "", data.decode(errors="replace")[:500]
            raise ApiError(resp.status, reason, message, what or f"{method} {url}")
        return json.loads(data) if data else {}

    # ------------------------------------------------------------------ typed helpers
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under our field manager; creates or updates, never drops others'."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        out = self.request(
            "PATCH",
            url,
            query={"fieldManager": naming.MANAGER, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
            what=f"apply {obj['kind']} {meta['namespace']}/{meta['name']}",
        )
        assert out is not None
        return out

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.request(
            "GET", path(api_version, kind, namespace, name), what=f"get {kind} {namespace}/{name}"
        )

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        out = self.request(
            "POST",
            path(obj["apiVersion"], obj["kind"], meta["namespace"]),
            query={"fieldManager": naming.MANAGER},
            body=obj,
            what=f"create {obj['kind']} {meta['namespace']}/{meta['name']}",
        )
        assert out is not None
        return out

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT: optimistic concurrency on ``metadata.resourceVersion`` (409 if it moved)."""
        meta = obj["metadata"]
        out = self.request(
            "PUT",
            path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
            query={"fieldManager": naming.MANAGER},
            body=obj,
            what=f"replace {obj['kind']} {meta['namespace']}/{meta['name']}",
        )
        assert out is not None
        return out

    def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        url = path(api_version, kind, namespace, name)
        if subresource:
            url = f"{url}/{subresource}"
        out = self.request(
            "PATCH",
            url,
            query={"fieldManager": naming.MANAGER},
            body=body,
            content_type="application/merge-patch+json",
            what=f"patch {kind} {namespace}/{name}{'/' + subresource if subresource else ''}",
        )
        assert out is not None
        return out

    def has_resource(self, group_version: str, plural: str) -> bool:
        """Discovery: is ``plural`` served under ``group_version`` (i.e. is the CRD there)?"""
        try:
            doc = self.request("GET", f"/apis/{group_version}", what=f"discover {group_version}")
        except ApiError as exc:
            if exc.status in (403, 404, 503):
                return False
            raise
        if doc is None:
            return False
        return any(r.get("name") == plural for r in doc.get("resources", []))

    async def awarm(self, connections: int) -> None:
        """Open ``connections`` pooled connections now, so the first burst of applies does not
        pay TLS handshakes (a new cluster is latency-sensitive; start-up is not)."""
        await asyncio.gather(
            *(
                asyncio.to_thread(self.request, "GET", "/version", what="warm-up")
                for _ in range(connections)
            ),
            return_exceptions=True,
        )

    # ------------------------------------------------------------------ async wrappers
    async def aapply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.apply, obj)

    async def aget(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.get, api_version, kind, namespace, name)

    async def acreate(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.create, obj)

    async def amerge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return await asyncio.to_thread(
            self.merge_patch, api_version, kind, namespace, name, body, subresource
        )

    async def ahas_resource(self, group_version: str, plural: str) -> bool:
        return await asyncio.to_thread(self.has_resource, group_version, plural)
