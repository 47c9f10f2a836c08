"""plantd.v1.BusService rules and conversions. Pure: no sockets.

The gateway authorizes bus access itself (the services behind a generic call see the gateway's
CURVE key, not the user's token), so the rules live here, one place:

* a generic call to ``S`` needs ``bus:call:S``; calls to the services with a typed API
  (``org.plantd.State``, ``org.plantd.Identity``) and to ``mmi.*`` are refused
  (``RESERVED_SERVICE``): a raw frame to state would run with the gateway's machine identity
  instead of the caller's token — a confused deputy;
* the directory (GetService, ListServices) needs ``bus:services:read``;
* Subscribe needs ``bus:subscribe:<bus>``, Publish ``bus:publish:<bus>``; publishing goes only to
  topics under :data:`PUBLISH_PREFIX` on the event and metric buses (the gateway's grant in the
  registry), never on the state bus, whose messages only org.plantd.State may send.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from plantd.api.errors import GatewayCode, Origin
from plantd.common import contract
from plantd.gateway.state_map import RpcFailure
from plantd.v1 import bus_pb2 as pb

MAX_SERVICE_CHARS: Final = 255
MAX_TOPIC_BYTES: Final = 255
MAX_CALL_FRAMES: Final = 256  # body frames of one call (the broker keeps far fewer per peer)
MAX_TOPIC_PREFIXES: Final = 64
MAX_SERVICES_PAGE: Final = 1000
DEFAULT_MAX_BATCH: Final = 100
MAX_BATCH: Final = 1000
DEFAULT_MAX_DELAY_S: Final = 0.010
MAX_DELAY_S: Final = 1.0

SERVICES_READ: Final = "bus:services:read"
# What users publish through the gateway starts with this, on the event and metric buses: the
# gateway's registry grant (plantd.common.registry.OWN_GRANTS), so a stolen gateway key cannot
# forge revocations (identity.*) or state changes either.
PUBLISH_PREFIX: Final = "ext."

RESERVED_SERVICES: Final = {
    contract.SERVICE_STATE: "plantd.v1.StateService",
    contract.SERVICE_IDENTITY: "plantd.v1.IdentityService",
}

BUS_NAMES: Final[dict[int, str]] = {
    pb.BUS_STATE: "state",
    pb.BUS_EVENT: "event",
    pb.BUS_METRIC: "metric",
}
PUBLISHABLE: Final = frozenset({"event", "metric"})


def invalid(message: str, field: str) -> RpcFailure:
    return RpcFailure(Origin.GATEWAY, GatewayCode.INVALID_ARGUMENT, message, {"field": field})


def call_permission(service: str) -> str:
    return f"bus:call:{service}"


def subscribe_permission(bus: str) -> str:
    return f"bus:subscribe:{bus}"


def publish_permission(bus: str) -> str:
    return f"bus:publish:{bus}"


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


def check_service(service: str, field: str = "service") -> str:
    """A service name a client may call generically; RpcFailure otherwise."""
    if not service:
        raise invalid(f"{field} is empty: name the MDP service to call", field)
    if len(service) > MAX_SERVICE_CHARS or not _printable(service):
        raise invalid(
            f"{field} must be 1-{MAX_SERVICE_CHARS} printable ASCII characters without spaces",
            field,
        )
    typed = RESERVED_SERVICES.get(service)
    if typed is not None:
        raise RpcFailure(
            Origin.GATEWAY,
            GatewayCode.RESERVED_SERVICE,
            f"{service} is not called generically: use {typed}, which forwards your token",
            {"field": field, "use": typed},
        )
    if service.startswith("mmi."):
        raise RpcFailure(
            Origin.GATEWAY,
            GatewayCode.RESERVED_SERVICE,
            "mmi.* is the broker's management interface: use GetService or ListServices",
            {"field": field, "use": "plantd.v1.BusService"},
        )
    return service


def check_frames(frames: Sequence[bytes], field: str = "frames") -> list[bytes]:
    if len(frames) > MAX_CALL_FRAMES:
        raise invalid(f"{field} has {len(frames)} frames; the most is {MAX_CALL_FRAMES}", field)
    return list(frames)


def bus_name(bus: int) -> str:
    """The bus's name (``state``, ``event``, ``metric``); RpcFailure for unset or unknown."""
    name = BUS_NAMES.get(int(bus))
    if name is None:
        raise invalid("bus must be BUS_STATE, BUS_EVENT or BUS_METRIC", "bus")
    return name


def check_topic_prefixes(prefixes: Sequence[str]) -> tuple[bytes, ...]:
    """The subscription's prefixes as bytes; () means every topic."""
    if len(prefixes) > MAX_TOPIC_PREFIXES:
        raise invalid(
            f"{len(prefixes)} topic prefixes; the most is {MAX_TOPIC_PREFIXES}", "topic_prefixes"
        )
    out = []
    for prefix in prefixes:
        raw = prefix.encode()
        if len(raw) > MAX_TOPIC_BYTES:
            raise invalid(f"a topic prefix is over {MAX_TOPIC_BYTES} bytes", "topic_prefixes")
        out.append(raw)
    return tuple(out) if out else (b"",)


def batching(request: pb.SubscribeRequest) -> tuple[int, float]:
    """(messages per response, seconds a partial batch may wait), defaults and caps applied."""
    if request.max_batch < 0:
        raise invalid("max_batch must not be negative", "max_batch")
    size = min(request.max_batch or DEFAULT_MAX_BATCH, MAX_BATCH)
    if not request.HasField("max_delay"):
        return size, DEFAULT_MAX_DELAY_S
    delay = request.max_delay.ToNanoseconds() / 1e9
    if delay < 0:
        raise invalid("max_delay must not be negative", "max_delay")
    return size, min(delay, MAX_DELAY_S)


def check_publish(bus: str, topic: str, frames: Sequence[bytes]) -> tuple[bytes, bytes]:
    """(topic, payload) to send; RpcFailure when the gateway may not publish it."""
    if bus not in PUBLISHABLE:
        raise RpcFailure(
            Origin.GATEWAY,
            GatewayCode.PERMISSION_DENIED,
            "only org.plantd.State publishes on the state bus: change state with "
            "plantd.v1.StateService",
            {"field": "bus"},
        )
    raw = topic.encode()
    if not topic.startswith(PUBLISH_PREFIX) or len(raw) > MAX_TOPIC_BYTES:
        raise invalid(
            f"topics published through the gateway start with {PUBLISH_PREFIX!r} and are at "
            f"most {MAX_TOPIC_BYTES} bytes (got {topic[:40]!r})",
            "topic",
        )
    if len(frames) != 1:
        raise invalid(
            f"a bus message is a topic and one payload frame; got {len(frames)} frames", "frames"
        )
    return raw, frames[0]


def service_available(reply: Sequence[bytes]) -> bool:
    """``mmi.service``'s answer: its last frame is 200 (workers) or 404."""
    if not reply:
        raise RpcFailure(Origin.GATEWAY, GatewayCode.BAD_REPLY, "mmi.service sent no frames")
    return reply[-1] == b"200"


def service_names(reply: Sequence[bytes]) -> list[str]:
    """``mmi.services``'s answer ``["200", JSON list]``: the names, sorted."""
    if len(reply) != 2 or reply[0] != b"200":
        raise RpcFailure(
            Origin.GATEWAY, GatewayCode.BAD_REPLY, "mmi.services did not answer [200, names]"
        )
    try:
        names = json.loads(reply[1])
    except (ValueError, UnicodeDecodeError):
        raise RpcFailure(
            Origin.GATEWAY, GatewayCode.BAD_REPLY, "mmi.services sent names that are not JSON"
        ) from None
    if not isinstance(names, list):
        raise RpcFailure(Origin.GATEWAY, GatewayCode.BAD_REPLY, "mmi.services sent no list")
    return sorted(str(n) for n in names)


def services_page(names: list[str], request: pb.ListServicesRequest) -> pb.ListServicesResponse:
    """One page of sorted names; the token is the last name of the previous page."""
    if request.page_size < 0:
        raise invalid("page_size must not be negative", "page_size")
    if request.page_token:
        names = [n for n in names if n > request.page_token]
    size = min(request.page_size or MAX_SERVICES_PAGE, MAX_SERVICES_PAGE)
    page = names[:size]
    more = len(names) > size
    return pb.ListServicesResponse(services=page, next_page_token=page[-1] if more else "")
