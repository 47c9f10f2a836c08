"""The interface both stores implement (Redis in a cluster, SQLite embedded).

A store executes a *batch* of operations in one round trip: the worker hands it everything the
broker delivered at once (that, not per-request calls, is what makes the service fast). Each
operation is atomic on its own; operations in one batch are independent (one failing does not
affect the others). A store acknowledges only after its backend has: a result means committed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from plantd.state.errors import StateError
from plantd.state.limits import DEFAULT_LIMITS, Limits
from plantd.state.model import Change, Op, Result


class Store(ABC):
    """A scoped key/value store with versions, TTLs and a bounded change history."""

    kind: str = "store"

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    @abstractmethod
    async def open(self) -> None:
        """Connect / open files. Raises ``StoreUnavailable`` if the backend cannot be reached."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and files; idempotent."""

    @abstractmethod
    async def execute(self, ops: Sequence[Op]) -> list[Result | StateError]:
        """Run ``ops``; one result (or error) per op, in order.

        Raises ``StoreUnavailable`` when the backend cannot be reached: then no result of
        this batch is known, and the caller answers every request ``STORE_UNAVAILABLE``.
        """

    @abstractmethod
    async def sweep_expired(self, max_keys: int = 1000) -> list[Change]:
        """Delete keys whose TTL has passed; return their ``expire`` changes (to publish)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the backend answers now."""

    @property
    @abstractmethod
    def available(self) -> bool:
        """The last known reachability (cheap; no I/O)."""

    def describe(self) -> str:
        """Where the data lives, for logs (no secrets)."""
        return self.kind
