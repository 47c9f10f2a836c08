"""Answers of the broker's own service, ``org.plantd.Broker``, from live broker data. Pure.

Request frames are ``[type, json1, json2, ...]`` as in the original plantd; each JSON body part
gets one JSON reply part. The original answered with placeholders (``{"svc": {}}`` and
``{"services": []}``) and sent no reply at all to a request without a body; here:

- ``service`` with ``{"service": "org.plantd.State"}`` ->
  ``{"org.plantd.State": {"workers": 2, "idle": 1, "queued": 0, "in_flight": 1}}``
  (the original's shape, keyed by the service name), or ``{"error": ..., "code": "not_found"}``.
- ``services`` with ``{}`` -> ``{"services": [{"name": ..., "workers": ..., ...}, ...]}``.
- ``broker`` with ``{}`` -> endpoints, uptime, draining, service and worker counts, and
  ``registry``: where the service rights come from (mode, file, identities; with
  ``identity_registry`` the state of the fetches from identity), or null without CURVE.
- A request with only the type frame is treated as having one ``{}`` body.
- Anything else -> ``{"error": "...", "code": "bad_request"}``; the reply always has as many parts
  as the request had bodies, so a client is never left waiting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from plantd.mdp.stats import BrokerSnapshot, ServiceInfo

Snapshot = Callable[[], BrokerSnapshot]
RegistryStatus = Callable[[], dict[str, Any] | None]

REQUEST_TYPES = ("service", "services", "broker")


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": message, "code": code}


def _service_fields(info: ServiceInfo) -> dict[str, Any]:
    return {
        "workers": info.workers,
        "idle": info.idle,
        "queued": info.queued,
        "in_flight": info.in_flight,
    }


def answer_one(
    kind: str, body: bytes, snapshot: Snapshot, registry: RegistryStatus | None = None
) -> dict[str, Any]:
    """The reply object for one body part of a ``kind`` request."""
    try:
        params = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(f"body is not JSON: {exc}", "bad_request")
    if not isinstance(params, dict):
        return _error("body must be a JSON object", "bad_request")
    if kind == "service":
        name = params.get("service")
        if not isinstance(name, str) or not name:
            return _error("service required for service request", "bad_request")
        for info in snapshot().services:
            if info.name == name:
                return {name: _service_fields(info)}
        return _error(f"service {name!r} is not known to the broker", "not_found")
    if kind == "services":
        return {"services": [{"name": s.name, **_service_fields(s)} for s in snapshot().services]}
    if kind == "broker":
        snap = snapshot()
        return {
            "endpoints": list(snap.endpoints),
            "uptime_s": round(snap.uptime_s, 3),
            "draining": snap.draining,
            "services": len(snap.services),
            "workers": [asdict(w) for w in snap.workers],
            "registry": registry() if registry is not None else None,
        }
    return _error(
        f"unknown request type {kind!r}; expected one of {', '.join(REQUEST_TYPES)}",
        "bad_request",
    )


def handle(
    frames: list[bytes], snapshot: Snapshot, registry: RegistryStatus | None = None
) -> list[bytes]:
    """Reply frames for a request to ``org.plantd.Broker``."""
    if not frames:
        return [json.dumps(_error("empty request: send [type, json...]", "bad_request")).encode()]
    kind = frames[0].decode("utf-8", errors="replace")
    bodies = frames[1:] or [b"{}"]
    return [json.dumps(answer_one(kind, body, snapshot, registry)).encode() for body in bodies]
