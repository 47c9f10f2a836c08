"""What the gateway's integration tests share: a signing key with its JWKS file, tokens minted
by plantd.identity's own Issuer, and the ErrorInfo of a failed call."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

ISSUER = "plantd-identity"


class Minter:
    """A fresh ES256 key in ``jwt_dir``; ``jwks`` is the file a gateway trusts."""

    def __init__(self, jwt_dir: Path) -> None:
        from plantd.identity.keys import KeyRing, generate
        from plantd.identity.tokens import Issuer

        generate(jwt_dir)
        ring = KeyRing.from_dir(jwt_dir)
        self.jwks = jwt_dir / "jwks.json"
        self.jwks.write_text(json.dumps(ring.jwks()))
        self.issuer = Issuer(ring, issuer=ISSUER, access_ttl_s=3600)

    def token(self, permissions: list[str], audience: str, subject: str = "7") -> str:
        return self.issuer.access(
            subject=subject,
            audience=[audience],
            now=time.time(),
            claims={"permissions": permissions},
        ).token


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo in the status details trailer (the first detail, always present)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"no google.rpc.Status in {err!r}"
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info), status
    assert info.domain == "plantd.io"
    return info


def gateway_args(
    broker_endpoint: str, keys: Path, grpc_port: int, http_port: int, jwks: Path, *extra: str
) -> list[str]:
    """``plantd gateway`` flags every test passes: its broker, CURVE keys, gRPC and health
    ports (no REST edge), the JWKS file; then the test's own ``extra``."""
    return [
        "--broker-endpoint", broker_endpoint,
        "--curve-keys", str(keys),
        "--grpc-port", str(grpc_port),
        "--rest-port", "0",
        "--http-port", str(http_port),
        "--jwks-file", str(jwks),
        *extra,
    ]  # fmt: skip
