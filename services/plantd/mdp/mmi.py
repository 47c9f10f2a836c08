"""Majordomo Management Interface (RFC 8), answered by the broker itself.

* ``mmi.service`` [name]  -> the request body with its last frame replaced by ``200`` (the service
  has at least one live worker) or ``404``; as RFC 8 and the original plantd broker.
* ``mmi.services``        -> ``["200", JSON list of service names that have workers]``
* ``mmi.workers`` [name]  -> ``["200", JSON {service: {workers, idle, busy, queued, in_flight}}]``
* ``mmi.broker``          -> ``["200", JSON {version, protocols, uptime_s, services, ...}]``
* any other ``mmi.*``     -> last frame replaced by ``501``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from plantd.mdp.broker import Broker

OK: Final = b"200"
NOT_FOUND: Final = b"404"
NOT_IMPLEMENTED: Final = b"501"

SERVICE: Final = b"mmi.service"
SERVICES: Final = b"mmi.services"
WORKERS: Final = b"mmi.workers"
BROKER: Final = b"mmi.broker"
KNOWN: Final = frozenset({SERVICE, SERVICES, WORKERS, BROKER})

PROTOCOLS: Final = ("MDPC02/MDPW02", "MDPC01/MDPW01", "plantd-legacy")


def _replace_last(body: list[bytes], code: bytes) -> list[bytes]:
    return [*body[:-1], code] if body else [code]


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def answer(broker: Broker, name: bytes, body: list[bytes]) -> list[bytes]:
    """The reply body for an ``mmi.*`` request (called on the broker's loop thread)."""
    services = broker._mmi_services()
    if name == SERVICE:
        target = body[-1] if body else b""
        svc = services.get(target)
        found = target in KNOWN or (svc is not None and bool(svc.workers))
        return _replace_last(body, OK if found else NOT_FOUND)
    if name == SERVICES:
        names = sorted(n.decode(errors="replace") for n, s in services.items() if s.workers)
        return [OK, _dumps(names)]
    if name == WORKERS:
        wanted = body[0] if body and body[0] else None
        out: dict[str, dict[str, int]] = {}
        for n, s in services.items():
            if (wanted is not None and n != wanted) or (wanted is None and not s.workers):
                continue
            loads = [w.load for w in s.workers.values()]
            out[n.decode(errors="replace")] = {
                "workers": len(loads),
                "idle": sum(1 for x in loads if not x),
                "busy": sum(1 for x in loads if x),
                "queued": len(s.queue),
                "in_flight": sum(loads),
            }
        return [OK, _dumps(out)]
    if name == BROKER:
        from plantd import __version__ as version

        live = [s for s in services.values() if s.workers]
        info = {
            "version": version,
            "protocols": list(PROTOCOLS),
            "uptime_s": round(broker.uptime, 3),
            "services": len(live),
            "workers": len(broker._mmi_workers()),
            "queued": sum(len(s.queue) for s in services.values()),
            "requests": sum(sum(s.requests) for s in services.values()),
            "replies": sum(sum(s.replies) for s in services.values()),
            "heartbeat_ms": int(broker.heartbeat_s * 1000),
            "liveness": broker.liveness,
        }
        return [OK, _dumps(info)]
    return _replace_last(body, NOT_IMPLEMENTED)
