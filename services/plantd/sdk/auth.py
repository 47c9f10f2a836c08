"""The access token of a client, added to each call's metadata by a channel interceptor (one
per face: grpc and grpc.aio). The token is read per call, so a login or refresh on one thread
is seen by the next call on any other."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import grpc

AUTHORIZATION = "authorization"


class Token:
    """The current bearer token ("" sends none)."""

    def __init__(self, value: str = "") -> None:
        self.value = value

    def metadata(
        self, existing: Sequence[tuple[str, str | bytes]] | None
    ) -> list[tuple[str, str | bytes]]:
        """``existing`` with this token's authorization entry (a caller's own one wins)."""
        merged = list(existing or ())
        if self.value and not any(key == AUTHORIZATION for key, _ in merged):
            merged.append((AUTHORIZATION, f"Bearer {self.value}"))
        return merged


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """grpc.ClientCallDetails is abstract; this is the usual concrete namedtuple."""


def _with_token(token: Token, details: grpc.ClientCallDetails) -> _CallDetails:
    return _CallDetails(
        details.method,
        details.timeout,
        token.metadata(details.metadata),
        details.credentials,
        details.wait_for_ready,
        details.compression,
    )


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """The blocking face: every unary and server-streaming call carries the token."""

    def __init__(self, token: Token) -> None:
        self._token = token

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(_with_token(self._token, details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(_with_token(self._token, details), request)


def _aio_details(token: Token, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*token.metadata(list(details.metadata or ()))),
        details.credentials,
        details.wait_for_ready,
    )


class AsyncBearerUnary(grpc.aio.UnaryUnaryClientInterceptor):
    """The asyncio face, unary calls."""

    def __init__(self, token: Token) -> None:
        self._token = token

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(self._token, client_call_details), request)


class AsyncBearerStream(grpc.aio.UnaryStreamClientInterceptor):
    """The asyncio face, server-streaming calls."""

    def __init__(self, token: Token) -> None:
        self._token = token

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(self._token, client_call_details), request)
