"""The broker's limits and budgets, in one validated value (docs/protocol.md, "Limits and budgets").

Every budget that protects memory is in bytes as well as counts: a count alone lets one peer
park gigabytes in a few messages, bytes alone let it park millions of tiny objects.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one broker accepts. Defaults are the documented ones; see docs/protocol.md."""

    # One message.
    max_frame_size: int = 16 * MiB  # ZMQ_MAXMSGSIZE: libzmq drops the connection past it
    max_message_size: int = 64 * MiB  # all frames together -> MESSAGE_TOO_LARGE
    max_frames: int = 4096  # frames in one message -> MESSAGE_TOO_LARGE
    # One service.
    max_queue: int = 10_000  # queued requests -> QUEUE_FULL (0: never queue)
    max_queue_bytes: int = 128 * MiB  # queued request bytes -> QUEUE_FULL
    # One client (routing id, and its CURVE key when CURVE is on).
    max_client_requests: int = 1_000  # queued or at a worker -> TOO_MANY_REQUESTS
    # Bytes of those requests plus replies held for it unread -> TOO_MANY_REQUESTS. A client
    # with nothing outstanding may still send one request up to max_message_size.
    max_client_bytes: int = 16 * MiB
    # The whole broker.
    max_queued_bytes: int = 256 * MiB  # queued requests + held replies, all -> OVERLOADED
    # A client with nothing outstanding may always queue one request this small, so a flood
    # that fills a queue or the broker budget cannot lock a newcomer out (a probe, a health
    # check). What that lets past the byte budgets is bounded by connections x this.
    newcomer_bytes: int = 4096
    # The service table.
    max_services: int = 10_000  # names in the table -> QUEUE_FULL / DISCONNECT
    max_workers: int = 50_000  # registered workers -> DISCONNECT
    max_names_per_peer: int = 64  # distinct names one worker peer holds -> DISCONNECT
    service_ttl: float = 10.0  # s a service with no worker and no queue is kept
    # Exported metrics: services by traffic get their own label, the rest share "other".
    metrics_top_services: int = 100

    def __post_init__(self) -> None:
        positive = (
            "max_frame_size",
            "max_message_size",
            "max_frames",
            "max_queue_bytes",
            "max_client_requests",
            "max_client_bytes",
            "max_queued_bytes",
            "max_services",
            "max_workers",
            "max_names_per_peer",
            "metrics_top_services",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"broker limit {name} must be positive, got {getattr(self, name)}")
        if self.max_message_size < self.max_frame_size:
            raise ValueError("need max_frame_size <= max_message_size")
        if self.max_queue < 0 or self.newcomer_bytes < 0 or self.service_ttl < 0:
            raise ValueError("max_queue, newcomer_bytes and service_ttl must not be negative")
