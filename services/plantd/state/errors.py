"""Error codes of ``org.plantd.State`` and the exception that carries them.

Every error reply is ``{"success": false, "error": "<human message>", "code": "<CODE>"}``
(plus ``field`` when one request field is at fault, and ``details`` for CAS conflicts). The codes
are stable: clients and the gRPC gateway switch on them, so never rename one; add new ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from plantd.state.model import Change


class Code:
    """Stable error codes (documented in docs/state.md)."""

    INVALID_REQUEST: Final = "INVALID_REQUEST"  # malformed JSON, missing or mistyped field
    UNKNOWN_OPERATION: Final = "UNKNOWN_OPERATION"  # operation name we do not serve
    VALUE_TOO_LARGE: Final = "VALUE_TOO_LARGE"  # key, value, batch or reply above a limit
    REPLY_TOO_LARGE: Final = "REPLY_TOO_LARGE"  # the reply would pass max_reply_bytes; page it
    SCOPE_NOT_FOUND: Final = "SCOPE_NOT_FOUND"
    SCOPE_EXISTS: Final = "SCOPE_EXISTS"  # create-scope of an existing scope
    CONFLICT: Final = "CONFLICT"  # if_version did not match (compare-and-set lost)
    STORE_UNAVAILABLE: Final = "STORE_UNAVAILABLE"  # the store is down; retry later
    NOT_REPLICATED: Final = "NOT_REPLICATED"  # applied on the primary, too few replicas yet
    UNAUTHENTICATED: Final = "UNAUTHENTICATED"  # reserved for the identity issue
    PERMISSION_DENIED: Final = "PERMISSION_DENIED"  # reserved for the identity issue
    INTERNAL: Final = "INTERNAL"  # a bug: the message says what broke

    ALL: Final = (
        INVALID_REQUEST,
        UNKNOWN_OPERATION,
        VALUE_TOO_LARGE,
        REPLY_TOO_LARGE,
        SCOPE_NOT_FOUND,
        SCOPE_EXISTS,
        CONFLICT,
        STORE_UNAVAILABLE,
        NOT_REPLICATED,
        UNAUTHENTICATED,
        PERMISSION_DENIED,
        INTERNAL,
    )


class StateError(Exception):
    """A request that cannot be served; becomes one error reply, never a crash.

    ``changes`` is empty but for an error that still changed the store (``NOT_REPLICATED``:
    the primary applied the write), so watchers hear of it like any other change.
    """

    __slots__ = ("changes", "code", "details", "field", "message")

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: dict[str, Any] | None = None,
        changes: tuple[Change, ...] = (),
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.details = details
        self.changes = changes

    def envelope(self) -> dict[str, Any]:
        """The reply document for this error."""
        doc: dict[str, Any] = {"success": False, "error": self.message, "code": self.code}
        if self.field is not None:
            doc["field"] = self.field
        if self.details:
            doc["details"] = self.details
        return doc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateError) and (
            self.code,
            self.message,
            self.field,
            self.details,
        ) == (other.code, other.message, other.field, other.details)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


class StoreUnavailable(Exception):
    """The store cannot be reached; the whole batch fails with ``STORE_UNAVAILABLE``."""


def scope_not_found(scope: str) -> StateError:
    return StateError(
        Code.SCOPE_NOT_FOUND,
        f"Scope '{scope}' does not exist; create it with create-scope "
        "(or state-set, which creates it)",
        field="service",
    )


def scope_exists(scope: str) -> StateError:
    return StateError(Code.SCOPE_EXISTS, f"Scope '{scope}' already exists", field="service")


def conflict(scope: str, conflicts: list[tuple[str, int, int]]) -> StateError:
    """CAS lost: ``conflicts`` holds ``(key, expected, actual)``; 0 means "absent"."""
    shown = ", ".join(f"'{k}' is at version {a}, not {e}" for k, e, a in conflicts[:5])
    more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
    return StateError(
        Code.CONFLICT,
        f"version mismatch in scope '{scope}': {shown}{more}; re-read and retry",
        field="if_version",
        details={"conflicts": [{"key": k, "expected": e, "actual": a} for k, e, a in conflicts]},
    )


def store_unavailable(detail: str) -> StateError:
    return StateError(
        Code.STORE_UNAVAILABLE,
        f"the state store is unavailable ({detail}); the request was not acknowledged, "
        "retry shortly (a write whose reply is lost may still have been applied: re-read)",
    )


def not_replicated(
    replicas: int, wanted: int, timeout_ms: int, changes: tuple[Change, ...]
) -> StateError:
    """A write the primary applied but only ``replicas`` of ``wanted`` confirmed in time."""
    return StateError(
        Code.NOT_REPLICATED,
        f"the write was applied on the Redis primary but only {replicas} of the {wanted} "
        f"replicas required confirmed it within {timeout_ms} ms; it is not acknowledged and "
        "a failover now could lose it: re-read, and write again if it is gone",
        details={"replicas": replicas, "wanted": wanted},
        changes=changes,
    )


SNAPSHOT_ADVICE: Final = (
    "the scope holds more than one reply can carry: read it with list-keys (cursor) and "
    "batch-get, or ask for a smaller 'limit'"
)


def reply_too_large(what: str, size: int, budget: int, advice: str) -> StateError:
    """Refused while building: the reply to ``what`` reached ``size`` bytes of ``budget``."""
    return StateError(
        Code.REPLY_TOO_LARGE,
        f"the reply to {what} would pass max_reply_bytes ({budget} bytes; {size} bytes "
        f"before the rest); {advice}",
    )
