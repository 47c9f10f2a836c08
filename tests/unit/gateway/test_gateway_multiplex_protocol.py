"""The /v1/ws command parser: what it accepts, and the error (with the command's id when it
had a usable one) for each kind of hostile or malformed frame."""

from __future__ import annotations

import json

import pytest

from plantd.gateway.rest import multiplex_protocol as proto

pytestmark = pytest.mark.unit


def test_commands_parse() -> None:
    call = proto.parse_command(
        json.dumps({"id": 3, "type": "call", "method": "plantd.v1.StateService/GetEntry",
                    "request": {"scope": "s", "key": "k"}}),
        last_id=2,
    )  # fmt: skip
    assert (call.id, call.type, call.method, call.request) == (
        3,
        "call",
        "plantd.v1.StateService/GetEntry",
        {"scope": "s", "key": "k"},
    )
    sub = proto.parse_command('{"id": 4, "type": "subscribe", "method": "a.B/C"}', 3)
    assert sub.type == "subscribe" and sub.request == {}
    assert (
        proto.parse_command('{"id": 5, "type": "unsubscribe", "subscription": 4}', 4).subscription
        == 4
    )
    assert proto.parse_command('{"id": 6, "type": "ping"}', 5).type == "ping"


@pytest.mark.parametrize(
    ("frame", "last", "field", "id_"),
    [
        ("not json", 0, "message", 0),
        ("[1, 2]", 0, "message", 0),
        ('{"type": "ping"}', 0, "id", 0),
        ('{"id": "1", "type": "ping"}', 0, "id", 0),
        ('{"id": true, "type": "ping"}', 0, "id", 0),
        ('{"id": -1, "type": "ping"}', 0, "id", 0),
        (json.dumps({"id": 2**53, "type": "ping"}), 0, "id", 0),
        ('{"id": 2, "type": "ping"}', 2, "id", 2),  # not above the last id: reuse refused
        ('{"id": 3, "type": "launch"}', 2, "type", 3),
        ('{"id": 3, "type": "call"}', 2, "method", 3),
        ('{"id": 3, "type": "call", "method": "NoSlash"}', 2, "method", 3),
        ('{"id": 3, "type": "call", "method": "a.B/C", "request": [1]}', 2, "request", 3),
        ('{"id": 3, "type": "unsubscribe"}', 2, "subscription", 3),
        ('{"id": 3, "type": "unsubscribe", "subscription": false}', 2, "subscription", 3),
    ],
)
def test_bad_commands_name_the_field(frame: str, last: int, field: str, id_: int) -> None:
    with pytest.raises(proto.CommandError) as err:
        proto.parse_command(frame, last)
    assert err.value.id == id_
    assert err.value.failure.code == "INVALID_ARGUMENT"
    assert err.value.failure.metadata == {"field": field}


def test_frames() -> None:
    assert json.loads(proto.result(1)) == {"id": 1, "type": "result", "success": True}
    assert json.loads(proto.result(1, {"a": 1}))["result"] == {"a": 1}
    assert json.loads(proto.failed(2, {"code": 404}))["success"] is False
    assert json.loads(proto.event(3, '{"revision":"7"}')) == {
        "id": 3,
        "type": "event",
        "event": {"revision": "7"},
    }
    assert json.loads(proto.finished(3)) == {"id": 3, "type": "end"}
    assert json.loads(proto.pong(4)) == {"id": 4, "type": "pong"}
