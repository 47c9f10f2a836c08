"""Size and count limits: exceeding one gives a coded error (``VALUE_TOO_LARGE`` for a request,
``REPLY_TOO_LARGE`` for a reply), never a hang."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits every request is checked against before it reaches the store."""

    max_scope_bytes: int = 256
    max_key_bytes: int = 1024
    max_value_bytes: int = 1024 * 1024
    max_batch_keys: int = 1000
    max_request_bytes: int = 8 * 1024 * 1024
    max_reply_bytes: int = 16 * 1024 * 1024
    # What the embedded store reads for all the replies of one worker batch together: the
    # worker returns a batch's replies at once, so each one's budget alone would allow
    # credit x max_reply_bytes (200 x 16 MiB) in memory.
    max_batch_reply_bytes: int = 64 * 1024 * 1024
    max_list_keys: int = 10_000  # list-keys / snapshot page
    max_changes: int = 1000  # changes-since page
    max_ttl_ms: int = 10 * 365 * 24 * 3600 * 1000
    history_len: int = 10_000  # changes kept per scope for changes-since


DEFAULT_LIMITS = Limits()
