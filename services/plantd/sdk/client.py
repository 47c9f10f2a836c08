"""One channel to a gateway and the three plantd.v1 stubs on it, blocking or asyncio.

Plaintext by default, as for a gateway on loopback or behind a mesh that carries mTLS; pass
``credentials=grpc.ssl_channel_credentials(...)`` whenever the network in between is not
trusted. Message size limits match the gateway's defaults (``grpc_max_message_bytes``).
"""

from __future__ import annotations

from types import TracebackType
from typing import Final

import grpc

from plantd.sdk.auth import AsyncBearerStream, AsyncBearerUnary, BearerInterceptor, Token
from plantd.v1 import bus_pb2_grpc, identity_pb2, identity_pb2_grpc, state_pb2_grpc

DEFAULT_ADDRESS: Final = "127.0.0.1:50051"
_OPTIONS: Final = [
    # The gateway refuses messages above 4 MiB by default; so does the client, symmetrically.
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]


class Client:
    """The blocking face: ``with Client(address) as c: c.login(...); c.state.GetEntry(...)``."""

    def __init__(
        self, address: str = DEFAULT_ADDRESS, *, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self._token = Token()
        raw = (
            grpc.secure_channel(address, credentials, options=_OPTIONS)
            if credentials is not None
            else grpc.insecure_channel(address, options=_OPTIONS)
        )
        self._raw = raw
        channel = grpc.intercept_channel(raw, BearerInterceptor(self._token))
        self.bus = bus_pb2_grpc.BusServiceStub(channel)
        self.state = state_pb2_grpc.StateServiceStub(channel)
        self.identity = identity_pb2_grpc.IdentityServiceStub(channel)

    def login(
        self,
        identifier: str,
        password: str,
        *,
        totp: str = "",
        timeout: float | None = 30.0,
    ) -> identity_pb2.LoginResponse:
        """Exchanges a username (or email) and password (and the one-time code, for a user who
        turned codes on) for tokens; later calls carry the token."""
        response: identity_pb2.LoginResponse = self.identity.Login(
            identity_pb2.LoginRequest(identifier=identifier, password=password, totp=totp),
            timeout=timeout,
        )
        self.set_token(response.access_token)
        return response

    def set_token(self, token: str) -> None:
        """Makes later calls carry this access token ("" sends none)."""
        self._token.value = token

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio face: ``async with AsyncClient(address) as c: await c.login(...)``."""

    def __init__(
        self, address: str = DEFAULT_ADDRESS, *, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self._token = Token()
        interceptors = [AsyncBearerUnary(self._token), AsyncBearerStream(self._token)]
        self._channel = (
            grpc.aio.secure_channel(
                address, credentials, options=_OPTIONS, interceptors=interceptors
            )
            if credentials is not None
            else grpc.aio.insecure_channel(address, options=_OPTIONS, interceptors=interceptors)
        )
        self.bus = bus_pb2_grpc.BusServiceStub(self._channel)
        self.state = state_pb2_grpc.StateServiceStub(self._channel)
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._channel)

    async def login(
        self,
        identifier: str,
        password: str,
        *,
        totp: str = "",
        timeout: float | None = 30.0,  # noqa: ASYNC109 - the gRPC deadline, sent to the gateway
    ) -> identity_pb2.LoginResponse:
        """Exchanges a username (or email) and password (and the one-time code, for a user who
        turned codes on) for tokens; later calls carry the token."""
        response: identity_pb2.LoginResponse = await self.identity.Login(
            identity_pb2.LoginRequest(identifier=identifier, password=password, totp=totp),
            timeout=timeout,
        )
        self.set_token(response.access_token)
        return response

    def set_token(self, token: str) -> None:
        """Makes later calls carry this access token ("" sends none)."""
        self._token.value = token

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()
