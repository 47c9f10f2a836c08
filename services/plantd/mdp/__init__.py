"""plantd.mdp: the Majordomo protocol (MDP/0.2 native, MDP/0.1 and legacy plantd) with CURVE.

Public API::

    Broker(endpoints, *, heartbeat_ms, liveness, request_timeout, max_queue, ..., curve, context)
    Client(endpoint, *, timeout, retries, dialect, curve, context).request(service, *body)
        .stream(service, *body) -> parts; .stream_parts(service, *body) -> StreamPart(frames, final)
    AsyncClient(endpoint, *, ..., max_sockets).request(service, *body) (same stream methods)
    Worker(endpoint, service, handler, *, credit, dialect, ...).run() / .start() / .stop()
    AsyncWorker(endpoint, service, handler | batch_handler=..., *, credit, ...).run() / .stop()
    WorkerFleet(brokers, factory, *, credit).run() / .stop(): an AsyncWorker on every broker
    A client's or a blocking Worker's ``endpoint`` may be a broker set, ``tcp://a,tcp://b``
    or ``dns:tcp://NAME:PORT`` (every address of NAME): docs/ha.md.
    A handler streams by returning an iterator: items go out as PARTIALs, FinalPart(frames)
    (or a sync generator's ``return frames``) is the FINAL.

A malformed endpoint raises :class:`EndpointError` (a ValueError) when the client or worker
is created; ``check_endpoint(endpoint)`` runs the same check alone.

See docs/protocol.md for the wire format, error codes and limits.
"""

from plantd.common.curve import CurveClient, CurveServer
from plantd.mdp.broker import Broker
from plantd.mdp.client import AsyncClient, Client, StreamPart, check_endpoint
from plantd.mdp.codec import Dialect
from plantd.mdp.errors import (
    BrokerError,
    ClientClosed,
    EndpointError,
    ErrorCode,
    MDPError,
    ProtocolError,
    RequestTimeout,
)
from plantd.mdp.fleet import WorkerFleet
from plantd.mdp.stats import BrokerSnapshot, BrokerStats
from plantd.mdp.worker import AsyncWorker, FinalPart, Worker

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
    "EndpointError",
    "ErrorCode",
    "FinalPart",
    "MDPError",
    "ProtocolError",
    "RequestTimeout",
    "StreamPart",
    "Worker",
    "WorkerFleet",
    "check_endpoint",
]
