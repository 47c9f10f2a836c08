"""The Python client of the plantd gateway: the generated plantd.v1 stubs (``plantd.v1``) over
one gRPC channel, with the caller's access token sent on every call (docs/sdk-python.md).

``Client`` is the blocking face, ``AsyncClient`` the asyncio one (grpc.aio); both hold the same
three stubs (``bus``, ``state``, ``identity``) and the same token. ``reason`` and
``retry_after`` read the plantd error code and the back-off hint from a failed call, and
``describe`` says it in one line.
"""

from plantd.sdk.client import AsyncClient, Client
from plantd.sdk.errors import ERROR_DOMAIN, describe, is_reason, reason, retry_after

__all__ = [
    "ERROR_DOMAIN",
    "AsyncClient",
    "Client",
    "describe",
    "is_reason",
    "reason",
    "retry_after",
]
