"""The multiplexed WebSocket's messages (``/v1/ws``): parsing and building, no I/O.

Modelled on Home Assistant's WebSocket API: one socket, many commands, each with a client
``id``; answers and events carry that ``id``. Any plantd.v1 RPC is addressed by its gRPC name
(``plantd.v1.StateService/GetEntry``) with its proto3 JSON request, so the socket needs no
command list of its own: the route table (``plantd.gateway.rest.routes``) is the one authority.

Client -> server (after authentication)::

    {"id": 1, "type": "call", "method": "plantd.v1.StateService/GetEntry",
     "request": {"scope": "line1", "key": "speed"}}
    {"id": 2, "type": "subscribe", "method": "plantd.v1.StateService/WatchEntries",
     "request": {"scope": "line1"}}
    {"id": 3, "type": "unsubscribe", "subscription": 2}
    {"id": 4, "type": "ping"}

Server -> client::

    {"id": 1, "type": "result", "success": true, "result": {...the response...}}
    {"id": 1, "type": "result", "success": false, "error": {...AIP-193 error...}}
    {"id": 2, "type": "result", "success": true}        (subscribed: events follow)
    {"id": 2, "type": "event", "event": {...one stream message...}}
    {"id": 2, "type": "error", "error": {...}}   (the subscription ended with an error)
    {"id": 2, "type": "end"}                     (the stream ended without one)
    {"id": 4, "type": "pong"}

Ids are positive integers, each larger than the last the client used on this socket (as Home
Assistant requires), so an answer can never be mistaken for an older command's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from plantd.api.errors import GatewayCode, Origin
from plantd.gateway.rest import render
from plantd.gateway.state_map import RpcFailure

CommandType = Literal["call", "subscribe", "unsubscribe", "ping"]
COMMAND_TYPES: Final = ("call", "subscribe", "unsubscribe", "ping")
MAX_ID: Final = 2**53 - 1  # what a JavaScript client can count to exactly


@dataclass(frozen=True, slots=True)
class Command:
    """One client command, checked."""

    id: int
    type: CommandType
    method: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    subscription: int = 0


class CommandError(Exception):
    """A command that cannot be run: answered with this error, the socket stays open.
    ``id`` is the command's when it had a usable one (else 0)."""

    def __init__(self, id_: int, failure: RpcFailure) -> None:
        super().__init__(failure.message)
        self.id = id_
        self.failure = failure


def _invalid(id_: int, field_name: str, message: str) -> CommandError:
    return CommandError(
        id_,
        RpcFailure(Origin.GATEWAY, GatewayCode.INVALID_ARGUMENT, message, {"field": field_name}),
    )


def parse_command(text: str, last_id: int) -> Command:
    """The command in one text frame; :class:`CommandError` naming what is wrong."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _invalid(0, "message", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid(0, "message", "a command is a JSON object")
    raw_id = doc.get("id")
    if not isinstance(raw_id, int) or isinstance(raw_id, bool) or not 0 < raw_id <= MAX_ID:
        raise _invalid(0, "id", "id must be a positive integer")
    if raw_id <= last_id:
        raise _invalid(raw_id, "id", f"id {raw_id} is not above the last one used ({last_id})")
    kind = doc.get("type")
    if kind not in COMMAND_TYPES:
        raise _invalid(raw_id, "type", f"type must be one of {', '.join(COMMAND_TYPES)}")
    if kind == "ping":
        return Command(raw_id, "ping")
    if kind == "unsubscribe":
        sub = doc.get("subscription")
        if not isinstance(sub, int) or isinstance(sub, bool) or sub <= 0:
            raise _invalid(raw_id, "subscription", "subscription must be a subscribe command's id")
        return Command(raw_id, "unsubscribe", subscription=sub)
    method = doc.get("method")
    if not isinstance(method, str) or "/" not in method:
        raise _invalid(raw_id, "method", 'method must be "package.Service/Method"')
    request = doc.get("request", {})
    if not isinstance(request, dict):
        raise _invalid(raw_id, "request", "request must be a JSON object (proto3 JSON)")
    return Command(raw_id, kind, method=method, request=request)


def result(id_: int, response: dict[str, Any] | None = None) -> str:
    out: dict[str, Any] = {"id": id_, "type": "result", "success": True}
    if response is not None:
        out["result"] = response
    return render.dumps(out)


def failed(id_: int, error: dict[str, Any]) -> str:
    """A command's failure (``error`` is an AIP-193 error body's ``error`` object)."""
    return render.dumps({"id": id_, "type": "result", "success": False, "error": error})


def ended(id_: int, error: dict[str, Any]) -> str:
    """A subscription that ended with an error after it was accepted."""
    return render.dumps({"id": id_, "type": "error", "error": error})


def finished(id_: int) -> str:
    """A subscription the server ended without an error (a finite stream, or shutdown)."""
    return render.dumps({"id": id_, "type": "end"})


def event(id_: int, payload: str) -> str:
    """A subscription's event; ``payload`` is the stream message's JSON, rendered once."""
    return f'{{"id":{id_},"type":"event","event":{payload}}}'


def pong(id_: int) -> str:
    return render.dumps({"id": id_, "type": "pong"})
