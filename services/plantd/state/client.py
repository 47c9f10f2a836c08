"""Client helpers for ``org.plantd.State``: build requests, unwrap envelopes, typed calls.

``StateClient`` wraps a blocking :class:`plantd.mdp.Client`, ``AsyncStateClient`` an
:class:`plantd.mdp.AsyncClient`. Each method returns the reply's ``data`` object, or raises
:class:`StateReplyError` carrying the service's stable error ``code``. Transport failures
(timeouts, broker errors) pass through as the MDP library's exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from plantd.common import contract

Json = dict[str, Any]


class StateReplyError(Exception):
    """The state service answered ``success: false``."""

    def __init__(
        self, code: str, message: str, field: str | None = None, details: Any = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.details = details


def encode(operation: str, body: Mapping[str, Any] | None = None) -> list[bytes]:
    """The MDP body of a state request: ``[operation, json]``."""
    return [operation.encode(), json.dumps(dict(body or {}), separators=(",", ":")).encode()]


def parse_reply(frames: Sequence[bytes]) -> Json:
    """The ``data`` of a success envelope; raises :class:`StateReplyError` otherwise."""
    if not frames:
        raise StateReplyError("INVALID_REPLY", "the state service sent an empty reply")
    try:
        doc = json.loads(frames[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateReplyError("INVALID_REPLY", f"reply is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StateReplyError("INVALID_REPLY", "reply is not a JSON object")
    if doc.get("success") is True:
        data = doc.get("data")
        return data if isinstance(data, dict) else {}
    code = doc.get("code") or "ERROR"  # the original's replies carry no code
    raise StateReplyError(
        str(code), str(doc.get("error", "unknown error")), doc.get("field"), doc.get("details")
    )


# An access token, or a function returning the current one (re-read per call: it may be
# refreshed while a long `watch` runs). Sent as the original's body field ``token``.
TokenSource = str | Callable[[], str | None] | None


def with_token(body: Mapping[str, Any] | None, token: TokenSource) -> Mapping[str, Any] | None:
    value = token() if callable(token) else token
    if not value:
        return body
    return {**(body or {}), "token": value}


def _clean(**fields: Any) -> Json:
    return {k: v for k, v in fields.items() if v is not None}


class _Requester(Protocol):
    def request(self, service: bytes | str, *body: bytes | str) -> list[bytes]: ...


class StateClient:
    """Blocking state client over an MDP ``Client``."""

    def __init__(
        self, mdp: _Requester, service: str = contract.SERVICE_STATE, token: TokenSource = None
    ) -> None:
        self.mdp = mdp
        self.service = service
        self.token = token

    def call(self, operation: str, body: Mapping[str, Any] | None = None) -> Json:
        body = with_token(body, self.token)
        return parse_reply(self.mdp.request(self.service, *encode(operation, body)))

    def create_scope(self, scope: str) -> Json:
        return self.call("create-scope", {"service": scope})

    def delete_scope(self, scope: str) -> Json:
        return self.call("delete-scope", {"service": scope})

    def list_scopes(self) -> list[str]:
        return list(self.call("list-scopes")["scopes"])

    def get(self, scope: str, key: str) -> Json:
        return self.call("state-get", {"service": scope, "key": key})

    def set(
        self,
        scope: str,
        key: str,
        value: str,
        *,
        ttl_ms: int | None = None,
        if_version: int | None = None,
        create: bool | None = None,
    ) -> Json:
        return self.call(
            "state-set",
            _clean(
                service=scope,
                key=key,
                value=value,
                ttl_ms=ttl_ms,
                if_version=if_version,
                create=create,
            ),
        )

    def delete(self, scope: str, key: str, *, if_version: int | None = None) -> Json:
        return self.call("delete", _clean(service=scope, key=key, if_version=if_version))

    def list_keys(
        self, scope: str, *, prefix: str | None = None, limit: int | None = None,
        cursor: str | None = None,
    ) -> Json:  # fmt: skip
        return self.call(
            "list-keys", _clean(service=scope, prefix=prefix, limit=limit, cursor=cursor)
        )

    def batch_get(self, scope: str, keys: Sequence[str]) -> Json:
        return self.call("batch-get", {"service": scope, "keys": list(keys)})

    def batch_set(
        self, scope: str, items: Sequence[Mapping[str, Any]], *, create: bool | None = None
    ) -> Json:
        return self.call(
            "batch-set", _clean(service=scope, items=[dict(i) for i in items], create=create)
        )

    def snapshot(self, scope: str, *, limit: int | None = None) -> Json:
        return self.call("snapshot", _clean(service=scope, limit=limit))

    def changes_since(self, scope: str, revision: int, *, limit: int | None = None) -> Json:
        return self.call("changes-since", _clean(service=scope, revision=revision, limit=limit))

    def health(self, scope: str | None = None) -> Json:
        return self.call("health", _clean(service=scope))


class _AsyncRequester(Protocol):
    async def request(self, service: bytes | str, *body: bytes | str) -> list[bytes]: ...


class AsyncStateClient:
    """asyncio state client over an MDP ``AsyncClient`` (many calls may be in flight)."""

    def __init__(
        self, mdp: _AsyncRequester, service: str = contract.SERVICE_STATE, token: TokenSource = None
    ) -> None:
        self.mdp = mdp
        self.service = service
        self.token = token

    async def call(self, operation: str, body: Mapping[str, Any] | None = None) -> Json:
        body = with_token(body, self.token)
        return parse_reply(await self.mdp.request(self.service, *encode(operation, body)))

    async def get(self, scope: str, key: str) -> Json:
        return await self.call("state-get", {"service": scope, "key": key})

    async def set(self, scope: str, key: str, value: str, **opts: Any) -> Json:
        return await self.call("state-set", _clean(service=scope, key=key, value=value, **opts))

    async def batch_get(self, scope: str, keys: Sequence[str]) -> Json:
        return await self.call("batch-get", {"service": scope, "keys": list(keys)})

    async def batch_set(self, scope: str, items: Sequence[Mapping[str, Any]]) -> Json:
        return await self.call("batch-set", {"service": scope, "items": [dict(i) for i in items]})

    async def changes_since(self, scope: str, revision: int) -> Json:
        return await self.call("changes-since", {"service": scope, "revision": revision})

    async def snapshot(self, scope: str) -> Json:
        return await self.call("snapshot", {"service": scope})
