"""``/v1/ws`` against the real e2e stack (broker, ``plantd state --auth identity``, ``plantd
gateway``, CURVE on) with aiohttp's WebSocket client: one socket authenticates once, then
runs calls and two watches side by side, each answer and event carrying its command's id;
unsubscribing stops a watch's events; bad commands are answered and the socket stays open;
permissions still apply per command; a bad token is refused at authentication."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from tests.integration.gateway.test_gateway_e2e import SCOPE, Stack, stack  # noqa: F401

pytestmark = pytest.mark.integration

WATCH = "plantd.v1.StateService/WatchEntries"
SET = "plantd.v1.StateService/SetEntry"
GET = "plantd.v1.StateService/GetEntry"


def url(stack: Stack) -> str:  # noqa: F811 - the fixture's name
    return f"http://127.0.0.1:{stack.rest_port}/v1/ws"


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.receive_str(timeout=5))
    return frame


async def until(ws: aiohttp.ClientWebSocketResponse, want: Any) -> list[dict[str, Any]]:
    """Frames up to and including the first one ``want`` accepts."""
    seen: list[dict[str, Any]] = []
    while True:
        seen.append(await receive(ws))
        if want(seen[-1]):
            return seen


async def gather(ws: aiohttp.ClientWebSocketResponse, done: Any) -> list[dict[str, Any]]:
    """Frames until ``done`` accepts all of them so far."""
    seen: list[dict[str, Any]] = []
    while not done(seen):
        seen.append(await receive(ws))
    return seen


async def test_one_socket_carries_calls_and_two_watches(stack: Stack) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as http, http.ws_connect(url(stack)) as ws:
        assert await receive(ws) == {"type": "auth_required"}
        await ws.send_json({"type": "auth", "access_token": stack.tokens["writer"]})
        assert await receive(ws) == {"type": "auth_ok"}
        await ws.send_json(
            {"id": 1, "type": "call", "method": SET,
             "request": {"scope": SCOPE, "key": "mx/start", "value": "0", "createScope": True}}
        )  # fmt: skip
        assert (await receive(ws))["success"] is True
        for sub_id, prefix in ((2, "mx/a"), (3, "mx/b")):
            await ws.send_json(
                {"id": sub_id, "type": "subscribe", "method": WATCH,
                 "request": {"scope": SCOPE, "keyPrefix": prefix}}
            )  # fmt: skip
            assert await receive(ws) == {"id": sub_id, "type": "result", "success": True}
            created = await receive(ws)
            assert created["id"] == sub_id and created.get("event", {}).get("created"), created
        await ws.send_json(
            {"id": 4, "type": "call", "method": SET,
             "request": {"scope": SCOPE, "key": "mx/a1", "value": "one"}}
        )  # fmt: skip
        # The call's answer and the watch's event race (the bus is faster at times): both come.
        frames = await gather(
            ws,
            lambda fs: (
                any(f.get("id") == 4 for f in fs)
                and any(f.get("id") == 2 and f["type"] == "event" for f in fs)
            ),
        )
        answer = next(f for f in frames if f.get("id") == 4)
        assert answer["success"] is True and answer["result"]["entry"]["value"] == "one"
        event = next(f for f in frames if f.get("id") == 2 and f["type"] == "event")
        change = event["event"]["changes"][0]
        assert (
            change["entry"]["key"] == "mx/a1" and change["revision"] == answer["result"]["revision"]
        )
        assert not [f for f in frames if f.get("id") == 3], "mx/b's watch saw an mx/a change"

        # Unsubscribe 2: a change under mx/a reaches nobody, one under mx/b reaches 3.
        await ws.send_json({"id": 5, "type": "unsubscribe", "subscription": 2})
        await until(ws, lambda f: f.get("id") == 5)
        for n, key in ((6, "mx/a2"), (7, "mx/b1")):
            await ws.send_json(
                {"id": n, "type": "call", "method": SET,
                 "request": {"scope": SCOPE, "key": key, "value": "x"}}
            )  # fmt: skip
        frames = await gather(
            ws, lambda fs: any(f.get("id") == 3 and f["type"] == "event" for f in fs)
        )
        assert [f["event"]["changes"][0]["entry"]["key"] for f in frames if f.get("id") == 3] == [
            "mx/b1"
        ]
        assert not [f for f in frames if f.get("id") == 2], "an unsubscribed watch sent more"

        await ws.send_json({"id": 8, "type": "call", "method": GET,
                            "request": {"scope": SCOPE, "key": "mx/a2"}})  # fmt: skip
        got = await until(ws, lambda f: f.get("id") == 8)
        assert got[-1]["result"]["entry"]["value"] == "x"
        await ws.send_json({"id": 9, "type": "ping"})
        assert (await until(ws, lambda f: f.get("id") == 9))[-1]["type"] == "pong"


async def test_bad_commands_are_answered_and_the_socket_stays(stack: Stack) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {stack.tokens['reader']}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(url(stack), headers=headers) as ws:
        assert await receive(ws) == {"type": "auth_ok"}  # the header authenticated it

        async def error_of(command: object) -> dict[str, Any]:
            await ws.send_str(command if isinstance(command, str) else json.dumps(command))
            frame = await receive(ws)
            assert frame["type"] == "result" and frame["success"] is False, frame
            error: dict[str, Any] = frame["error"]
            return error

        assert (await error_of("{not json"))["status"] == "INVALID_ARGUMENT"
        unknown = await error_of({"id": 1, "type": "call", "method": "plantd.v1.Nope/Nope"})
        assert unknown["details"][0]["reason"] == "UNKNOWN_ROUTE"
        wrong_kind = await error_of({"id": 2, "type": "call", "method": WATCH, "request": {}})
        assert "subscribe" in wrong_kind["message"]
        bad_request = await error_of(
            {"id": 3, "type": "call", "method": GET, "request": {"scope": 5, "nope": 1}}
        )
        assert bad_request["status"] == "INVALID_ARGUMENT"
        reused = await error_of({"id": 3, "type": "ping"})
        assert "not above" in reused["message"]
        # The reader may read, not write: the state service's answer, as for any call.
        denied = await error_of(
            {"id": 4, "type": "call", "method": SET,
             "request": {"scope": SCOPE, "key": "mx/r", "value": "no"}}
        )  # fmt: skip
        assert denied["status"] == "PERMISSION_DENIED"
        gone = await error_of({"id": 5, "type": "unsubscribe", "subscription": 99})
        assert "no open subscription" in gone["message"]
        await ws.send_json({"id": 6, "type": "ping"})
        assert await receive(ws) == {"id": 6, "type": "pong"}, "the socket still serves"


async def test_a_bad_token_is_refused_at_authentication(stack: Stack) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as http, http.ws_connect(url(stack)) as ws:
        await receive(ws)  # auth_required
        await ws.send_json({"type": "auth", "access_token": "garbage"})
        refused = await receive(ws)
        assert refused["type"] == "auth_invalid" and refused["message"]
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
    async with aiohttp.ClientSession() as http, http.get(url(stack)) as plain:
        # Not an upgrade: a clear 400.
        assert plain.status == 400 and "WebSocket" in (await plain.json())["error"]["message"]


async def test_a_socket_holds_at_most_64_subscriptions(stack: Stack) -> None:  # noqa: F811
    from plantd.gateway.rest.multiplex import MAX_SUBSCRIPTIONS

    headers = {"Authorization": f"Bearer {stack.tokens['writer']}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(url(stack), headers=headers) as ws:
        assert await receive(ws) == {"type": "auth_ok"}
        await ws.send_json(
            {"id": 1, "type": "call", "method": SET,
             "request": {"scope": SCOPE, "key": "mx/cap", "value": "0", "createScope": True}}
        )  # fmt: skip
        await until(ws, lambda f: f.get("id") == 1)
        for n in range(2, MAX_SUBSCRIPTIONS + 2):
            await ws.send_json(
                {"id": n, "type": "subscribe", "method": WATCH, "request": {"scope": SCOPE}}
            )
        await ws.send_json(
            {"id": 100, "type": "subscribe", "method": WATCH, "request": {"scope": SCOPE}}
        )
        frames = await until(ws, lambda f: f.get("id") == 100)
        accepted = {f["id"] for f in frames if f["type"] == "result" and f["success"]}
        assert accepted == set(range(2, MAX_SUBSCRIPTIONS + 2))
        refused = frames[-1]
        assert refused["success"] is False
        assert refused["error"]["details"][0]["reason"] == "TOO_MANY_STREAMS"
        # One freed, one more fits.
        await ws.send_json({"id": 101, "type": "unsubscribe", "subscription": 2})
        await until(ws, lambda f: f.get("id") == 101)
        await ws.send_json(
            {"id": 102, "type": "subscribe", "method": WATCH, "request": {"scope": SCOPE}}
        )
        last = (await until(ws, lambda f: f.get("id") == 102 and f["type"] == "result"))[-1]
        assert last["success"] is True
