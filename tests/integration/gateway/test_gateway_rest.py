"""The gateway's REST/JSON edge against real processes (the e2e stack: a broker, ``plantd state
--auth identity``, ``plantd gateway``, CURVE on), driven by real clients: ``curl`` for REST,
aiohttp's WebSocket client, and an SSE reader that reconnects with ``Last-Event-ID``.

Covers: JSON round trips with ETag/If-Match as compare-and-set; AIP-193 errors with the
ErrorInfo reason and the mapped HTTP status (401 without a token, 403 for a reader writing, 404
for a missing key and an unknown route, 405 with Allow, 400 for bad JSON, a token in the URL
refused, 413 for an oversized body); /openapi.json valid OpenAPI 3.1 listing what is served;
a watch as SSE resumed with Last-Event-ID with no gap and no duplicate; a watch as a WebSocket
authenticated by its first message, and refused with a bad token; CORS off by default.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate
from tests.integration.gateway.test_gateway_e2e import SCOPE, Stack, stack  # noqa: F401
from tests.kit import require

pytestmark = pytest.mark.integration


def base(stack: Stack) -> str:  # noqa: F811 - the fixture's name
    return f"http://127.0.0.1:{stack.rest_port}"


def curl(*args: str) -> tuple[int, dict[str, str], Any]:
    """(status, headers lower-cased, JSON body) of one ``curl`` call."""
    require(shutil.which("curl") is not None, "curl is missing: apt-get install curl")
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    head, _, body = out.partition("\n\n")  # text mode: CRLF arrives as LF
    while body.startswith("HTTP/"):  # after "100 Continue" (curl's Expect on large bodies)
        head, _, body = body.partition("\n\n")
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body.strip() else None


def bearer(stack: Stack, role: str = "writer") -> list[str]:  # noqa: F811
    return ["-H", f"authorization: Bearer {stack.tokens[role]}"]


def reason(body: dict[str, Any]) -> str:
    details = body["error"]["details"]
    info = next(d for d in details if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert info["domain"] == "plantd.io"
    result: str = info["reason"]
    return result


def test_put_get_delete_with_etags(stack: Stack) -> None:  # noqa: F811
    url = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries/line/1/speed"  # a key with slashes
    status, headers, put = curl(
        "-X", "PUT", *bearer(stack), "-H", "x-request-id: rest-1", "-d", '{"value": "12.5"}', url
    )
    assert status == 200, put
    version = put["entry"]["version"]  # int64 as a string, proto3 JSON
    assert put["entry"]["key"] == "line/1/speed" and put["entry"]["value"] == "12.5"
    assert headers["etag"] == f'"{version}"' and headers["x-request-id"] == "rest-1"
    status, headers, got = curl(*bearer(stack), url)
    assert status == 200 and got["entry"]["value"] == "12.5"
    assert headers["etag"] == f'"{version}"'
    # If-Match is compare-and-set: a stale version loses with 409, the current one wins.
    stale = f'"{int(version) - 1}"'
    status, _, lost = curl("-X", "PUT", *bearer(stack), "-H", f"If-Match: {stale}",
                           "-d", '{"value": "13"}', url)  # fmt: skip
    assert status == 409 and lost["error"]["status"] == "ABORTED" and reason(lost) == "CONFLICT"
    status, headers, won = curl("-X", "PUT", *bearer(stack), "-H", f'If-Match: "{version}"',
                                "-d", '{"value": "13"}', url)  # fmt: skip
    assert status == 200 and int(won["entry"]["version"]) > int(version)
    status, _, gone = curl("-X", "DELETE", *bearer(stack), url)
    assert status == 200 and gone["found"] is True
    status, _, missing = curl(*bearer(stack), url)
    assert status == 404 and reason(missing) == "KEY_NOT_FOUND"


def test_errors_are_aip193_with_the_mapped_status(stack: Stack) -> None:  # noqa: F811
    entry = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries/k"
    status, headers, body = curl(entry)
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED", body
    assert body["error"]["code"] == 401 and reason(body).startswith("TOKEN_")
    status, _, body = curl("-X", "PUT", *bearer(stack, "reader"), "-d", '{"value":"1"}', entry)
    assert status == 403 and reason(body) == "PERMISSION_DENIED", body  # state's decision
    status, _, body = curl(*bearer(stack), f"{base(stack)}/v1/nothing/here")
    assert status == 404 and reason(body) == "UNKNOWN_ROUTE"
    status, headers, body = curl("-X", "PATCH", *bearer(stack), entry)
    assert status == 405 and reason(body) == "METHOD_NOT_ALLOWED"
    assert headers["allow"] == "DELETE, GET, PUT"
    status, _, body = curl("-X", "PUT", *bearer(stack), "-d", "{not json", entry)
    assert status == 400 and reason(body) == "INVALID_ARGUMENT"
    status, _, body = curl("-X", "PUT", *bearer(stack), "-d", '{"value": 5, "nope": 1}', entry)
    assert status == 400 and reason(body) == "INVALID_ARGUMENT"
    status, _, body = curl(f"{entry}?access_token={stack.tokens['writer']}")
    assert status == 400 and "Authorization" in body["error"]["message"]
    status, _, body = curl("-X", "PUT", *bearer(stack), "-H", "grpc-timeout: soon", entry)
    assert status == 400 and "grpc-timeout" in body["error"]["message"]


def test_oversized_body_is_413(stack: Stack, tmp_path: Any) -> None:  # noqa: F811
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"value": "x" * (5 * 1024 * 1024)}))  # over the 4 MiB default
    entry = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries/big"
    status, _, body = curl("-X", "PUT", *bearer(stack), "--data-binary", f"@{big}", entry)
    assert status == 413 and reason(body) == "MESSAGE_TOO_LARGE", body


def test_openapi_is_valid_and_lists_the_served_routes(stack: Stack) -> None:  # noqa: F811
    status, headers, doc = curl(f"{base(stack)}/openapi.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert "get" in doc["paths"]["/v1/state/scopes/{scope}/entries/{key}"]
    assert "/v1/state/scopes/{scope}/entries:watch" in doc["paths"]
    assert "access-control-allow-origin" not in headers  # CORS is off by default


def test_cors_preflight_is_refused_by_default(stack: Stack) -> None:  # noqa: F811
    status, headers, _ = curl(
        "-X", "OPTIONS",
        "-H", "Origin: https://evil.example",
        "-H", "Access-Control-Request-Method: PUT",
        f"{base(stack)}/v1/state/scopes/{SCOPE}/entries/k",
    )  # fmt: skip
    assert status == 403 and "access-control-allow-origin" not in headers


async def sse_events(
    response: aiohttp.ClientResponse,
) -> AsyncIterator[tuple[str | None, str | None, dict[str, Any]]]:
    """(id, event, data) of each event of an SSE response (comments skipped)."""
    event_id: str | None = None
    event: str | None = None
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield event_id, event, json.loads("\n".join(data))
            event_id, event, data = None, None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(": ")
            if name == "id":
                event_id = value
            elif name == "event":
                event = value
            elif name == "data":
                data.append(value)


async def test_sse_watch_resumes_from_last_event_id_without_gap_or_duplicate(
    stack: Stack,  # noqa: F811
) -> None:
    scope_url = f"{base(stack)}/v1/state/scopes/{SCOPE}"
    headers = {"Authorization": f"Bearer {stack.tokens['writer']}"}
    seen: list[tuple[int, str]] = []  # (revision, key) of every change received
    async with aiohttp.ClientSession(headers=headers) as http:

        async def put(key: str, value: str) -> int:
            async with http.put(f"{scope_url}/entries/{key}", json={"value": value}) as r:
                assert r.status == 200, await r.text()
                return int((await r.json())["revision"])

        watch = f"{scope_url}/entries:watch?keyPrefix=sse/"
        last_id: str | None = None
        async with http.get(watch, timeout=aiohttp.ClientTimeout(sock_read=10)) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
            events = sse_events(r)
            _, _, first = await asyncio.wait_for(anext(events), 10)
            assert first.get("created") is True
            for i in range(3):
                await put(f"sse/{i}", str(i))
            while len(seen) < 3:
                event_id, kind, data = await asyncio.wait_for(anext(events), 10)
                assert kind is None, data
                for change in data.get("changes", ()):
                    seen.append((int(change["revision"]), change["entry"]["key"]))
                last_id = event_id
                assert event_id == data["revision"]  # the id is the revision reached
        # Disconnected: writes happen that this client has not seen.
        missed = [await put(f"sse/m{i}", "x") for i in range(3)]
        assert last_id is not None
        async with http.get(
            watch, headers={"Last-Event-ID": last_id}, timeout=aiohttp.ClientTimeout(sock_read=10)
        ) as r:
            assert r.status == 200
            events = sse_events(r)
            resumed: list[tuple[int, str]] = []
            while len(resumed) < 3:
                _, _, data = await asyncio.wait_for(anext(events), 10)
                for change in data.get("changes", ()):
                    resumed.append((int(change["revision"]), change["entry"]["key"]))
    assert [key for _, key in seen] == ["sse/0", "sse/1", "sse/2"]
    assert [rev for rev, _ in resumed] == missed  # exactly the missed ones, in order
    assert [key for _, key in resumed] == ["sse/m0", "sse/m1", "sse/m2"]


async def test_sse_watch_without_token_is_a_401_status(stack: Stack) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as http:
        url = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries:watch"
        async with http.get(url) as r:
            assert r.status == 401
            body = await r.json()
            assert reason(body).startswith("TOKEN_")


async def test_websocket_watch_authenticates_with_its_first_message(
    stack: Stack,  # noqa: F811
) -> None:
    url = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries:watch?keyPrefix=ws/"
    token = stack.tokens["writer"]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:  # a browser: no Authorization header
            assert json.loads(await ws.receive_str(timeout=5)) == {"type": "auth_required"}
            await ws.send_str(json.dumps({"type": "auth", "access_token": token}))
            created = json.loads(await ws.receive_str(timeout=5))
            assert created["type"] == "event" and created["data"]["created"] is True
            put_url = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries/ws/a"
            async with http.put(
                put_url, json={"value": "1"}, headers={"Authorization": f"Bearer {token}"}
            ) as r:
                assert r.status == 200
                revision = (await r.json())["revision"]
            while True:
                frame = json.loads(await ws.receive_str(timeout=5))
                changes = frame["data"].get("changes", [])
                if changes:
                    break
            assert changes[0]["entry"]["key"] == "ws/a" and frame["id"] == revision
        async with http.ws_connect(url) as ws:
            await ws.receive_str(timeout=5)  # auth_required
            await ws.send_str(json.dumps({"type": "auth", "access_token": "garbage"}))
            error = json.loads(await ws.receive_str(timeout=5))
            assert error["type"] == "error" and error["error"]["status"] == "UNAUTHENTICATED"
            closing = await ws.receive(timeout=5)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008


async def test_websocket_watch_sees_a_run_of_writes_in_order_once_each(
    stack: Stack,  # noqa: F811
) -> None:
    """Live events go straight from the fan-out to the socket while the stream's task is idle
    and through the task otherwise (a burst, a gap): either way in order, none twice."""
    url = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries:watch?keyPrefix=seq/"
    auth = {"Authorization": f"Bearer {stack.tokens['writer']}"}
    async with aiohttp.ClientSession() as http:
        put = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries/seq/start"
        async with http.put(put, json={"value": "0"}, headers=auth) as r:  # the scope exists
            assert r.status == 200, await r.text()
        async with http.ws_connect(url, headers=auth) as ws:
            first = json.loads(await ws.receive_str(timeout=5))
            assert first.get("data", {}).get("created") is True, first

            async def write(n: int) -> int:
                put = f"{base(stack)}/v1/state/scopes/{SCOPE}/entries/seq/{n % 7}"
                async with http.put(put, json={"value": str(n)}, headers=auth) as r:
                    assert r.status == 200, await r.text()
                    return int((await r.json())["revision"])

            written: list[int] = []
            for start in range(0, 120, 8):  # runs of 8 in flight: bursts and single events
                written += await asyncio.gather(*(write(n) for n in range(start, start + 8)))
            seen: list[int] = []
            async with asyncio.timeout(20):
                while len(seen) < len(written):
                    frame = json.loads(await ws.receive_str())
                    seen += [int(c["revision"]) for c in frame["data"].get("changes", [])]
    assert seen == sorted(written)
