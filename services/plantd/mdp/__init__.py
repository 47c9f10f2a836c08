"""plantd.mdp: the Majordomo protocol (MDP/0.2 native, MDP/0.1 and legacy plantd) with CURVE.

Public API::

    Broker(endpoints, *, heartbeat_ms, liveness, request_timeout, max_queue, ..., curve, context)
    Client(endpoint, *, timeout, retries, dialect, curve, context).request(service, *body)
    AsyncClient(endpoint, *, ..., max_sockets).request(service, *body)
    Worker(endpoint, service, handler, *, credit, dialect, ...).run() / .start() / .stop()
    AsyncWorker(endpoint, service, handler | batch_handler=..., *, credit, ...).run() / .stop()

See docs/protocol.md for the wire format, error codes and limits.
"""

from plantd.common.curve import CurveClient, CurveServer
from plantd.mdp.broker import Broker
from plantd.mdp.client import AsyncClient, Client
from plantd.mdp.codec import Dialect
from plantd.mdp.errors import (
    BrokerError,
    ClientClosed,
    ErrorCode,
    MDPError,
    ProtocolError,
    RequestTimeout,
)
from plantd.mdp.stats import BrokerSnapshot, BrokerStats
from plantd.mdp.worker import AsyncWorker, Worker

__all__ = [
    "AsyncClient",
    "AsyncWorker",
    "Broker",
    "BrokerError",
    "BrokerSnapshot",
    "BrokerStats",
    "Client",
    "ClientClosed",
    "CurveClient",
    "CurveServer",
    "Dialect",
    "ErrorCode",
    "MDPError",
    "ProtocolError",
    "RequestTimeout",
    "Worker",
]
