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
from typing import Final, Protocol

from plantd.mdp.stats import ServiceInfo

OK: Final = b"200"
NOT_FOUND: Final = b"404"
NOT_IMPLEMENTED: Final = b"501"

SERVICE: Final = b"mmi.service"
SERVICES: Final = b"mmi.services"
WORKERS: Final = b"mmi.workers"
BROKER: Final = b"mmi.broker"
KNOWN: Final = frozenset({SERVICE, SERVICES, WORKERS, BROKER})

PROTOCOLS: Final = ("MDPC02/MDPW02", "MDPC01/MDPW01", "plantd-legacy")


class BrokerView(Protocol):
    """What MMI reads: the dispatcher's public, read-only view (plantd.mdp.dispatcher)."""

    heartbeat_s: float
    liveness: int

    @property
    def uptime_s(self) -> float: ...

    def service_info(self, name: bytes) -> ServiceInfo | None: ...

    def service_infos(self) -> list[ServiceInfo]: ...

    def live_service_names(self) -> list[bytes]: ...

    def totals(self) -> dict[str, int]: ...


def _replace_last(body: list[bytes], code: bytes) -> list[bytes]:
    return [*body[:-1], code] if body else [code]


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _fields(info: ServiceInfo) -> dict[str, int]:
    return {
        "workers": info.workers,
        "idle": info.idle,
        "busy": info.workers - info.idle,
        "queued": info.queued,
        "in_flight": info.in_flight,
    }


def answer(view: BrokerView, name: bytes, body: list[bytes]) -> list[bytes]:
    """The reply body for an ``mmi.*`` request (called on the broker's loop thread)."""
    if name == SERVICE:
        target = body[-1] if body else b""
        info = view.service_info(target)
        found = target in KNOWN or (info is not None and info.workers > 0)
        return _replace_last(body, OK if found else NOT_FOUND)
    if name == SERVICES:
        return [OK, _dumps([n.decode(errors="replace") for n in view.live_service_names()])]
    if name == WORKERS:
        wanted = body[0] if body and body[0] else None
        if wanted is not None:
            one = view.service_info(wanted)
            infos = [one] if one is not None else []
        else:
            infos = [i for i in view.service_infos() if i.workers]
        return [OK, _dumps({i.name: _fields(i) for i in infos})]
    if name == BROKER:
        from plantd import __version__ as version

        doc: dict[str, object] = {
            "version": version,
            "protocols": list(PROTOCOLS),
            "uptime_s": round(view.uptime_s, 3),
            **view.totals(),
            "heartbeat_ms": int(view.heartbeat_s * 1000),
            "liveness": view.liveness,
        }
        return [OK, _dumps(doc)]
    return _replace_last(body, NOT_IMPLEMENTED)
