"""Settings of ``plantd state`` (env ``PLANTD_STATE_<KEY>``, flags ``--<key>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from plantd.common import contract
from plantd.common.config import (
    DEFAULT_EVENT_SUB,
    REDIS_CLI_HIDDEN,
    AuthCacheEntries,
    AuthIssuer,
    JwksFile,
    JwksRefreshS,
    NotBeforeSubEndpoint,
    RedisCaFile,
    RedisPassword,
    RedisPasswordFile,
    RedisTimeoutMs,
    RedisUrl,
    ServiceSettings,
    check_broker_set,
    check_redis_settings,
)
from plantd.common.redis_url import redact_url
from plantd.state.limits import Limits
from plantd.state.redis_store import DEFAULT_PREFIX

DEFAULT_BUS_ENDPOINT = f"tcp://127.0.0.1:{contract.BUS_PORTS['state'][0]}"
DEFAULT_EVENT_PUB = f"tcp://127.0.0.1:{contract.BUS_PORTS['event'][0]}"
REGISTRY_FILE = "registry.json"


class StateSettings(ServiceSettings):
    """``plantd state``: the org.plantd.State worker and its store."""

    component: ClassVar[str] = contract.STATE
    cli_hidden: ClassVar[frozenset[str]] = REDIS_CLI_HIDDEN

    http_port: int = Field(
        contract.HTTP_PORTS[contract.STATE],
        ge=0,
        le=65535,
        description="port for /healthz, /readyz and /metrics (0 = no HTTP server)",
    )
    store: Literal["sqlite", "redis"] = Field(
        contract.DEFAULT_STATE_STORE,
        description="sqlite (embedded, one machine) or redis (a cluster; needs --redis-url)",
    )
    data_dir: Path = Field(
        Path(contract.DEFAULT_STATE_DATA_DIR),
        description="directory of the embedded store's state.db (created 0700)",
    )
    sqlite_sync: Literal["full", "normal"] = Field(
        "full",
        description="full: every acknowledged write survives power loss (one fsync per batch); "
        "normal: survives a crash of the process but not of the machine",
    )
    redis_url: RedisUrl = ""
    redis_password: RedisPassword = None
    redis_password_file: RedisPasswordFile = None
    redis_ca_file: RedisCaFile = None
    redis_prefix: str = Field(
        DEFAULT_PREFIX,
        min_length=1,
        max_length=64,
        description="prefix of every Redis key, so several clusters can share one Redis",
    )
    redis_timeout_ms: RedisTimeoutMs = 2000
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        le=16,
        description="acknowledge a write only once this many Redis replicas have it (WAIT); "
        "fewer within --redis-wait-timeout-ms answers NOT_REPLICATED. 0 = on the primary only "
        "(a failover can lose the last writes; docs/ha.md)",
    )
    redis_wait_timeout_ms: int = Field(
        500,
        ge=1,
        le=60_000,
        description="how long a write waits for --redis-wait-replicas before NOT_REPLICATED",
    )
    bus_endpoint: str = Field(
        DEFAULT_BUS_ENDPOINT,
        description="state bus publisher port (the broker's XSUB frontend) for change events",
    )
    credit: int = Field(
        200,
        ge=1,
        le=10_000,
        description="requests the broker may hand this worker at once (they become one batch)",
    )
    sweep_interval_ms: int = Field(
        500, ge=10, le=600_000, description="how often expired keys are deleted and announced"
    )
    history_len: int = Field(
        10_000, ge=1, le=10_000_000, description="changes kept per scope for changes-since/watch"
    )
    max_value_bytes: int = Field(
        1024 * 1024, ge=1, le=64 * 1024 * 1024, description="largest value accepted"
    )
    max_batch_keys: int = Field(
        1000, ge=1, le=100_000, description="most keys in one batch-get/batch-set"
    )
    max_reply_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="largest reply: a batch-get or snapshot that would pass it is refused with "
        "REPLY_TOO_LARGE while it is read (changes-since pages at it)",
    )
    max_batch_reply_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        le=4 * 1024 * 1024 * 1024,
        description="most bytes the embedded store reads for the replies of one worker batch "
        "together; a read past it gets REPLY_TOO_LARGE (retry) and changes-since a shorter page",
    )

    # ---- authorization (issue 8; docs/state.md "Authorization") ----
    auth: Literal["off", "identity"] = Field(
        "off",
        description="off: every caller may do everything (CURVE guards the bus); identity: "
        "every request needs a valid access token (the 'token' field) or a caller key with "
        "permissions in the machine registry, default deny",
    )
    auth_issuer: AuthIssuer = contract.DEFAULT_ISSUER
    auth_audience: str = Field(
        contract.SERVICE_STATE,
        min_length=1,
        description="aud every accepted token must include (log in for this service)",
    )
    jwks_file: JwksFile = None
    jwks_refresh_s: JwksRefreshS = 60.0
    event_bus_endpoint: str = Field(
        DEFAULT_EVENT_PUB,
        description="event bus publisher port (XSUB) where denials are published (topic audit)",
    )
    event_sub_endpoint: NotBeforeSubEndpoint = DEFAULT_EVENT_SUB
    registry: Path | None = Field(
        None,
        description="machine registry (registry.json) giving CURVE keys their permissions; "
        f"default: {REGISTRY_FILE} in --curve-keys when it exists (re-read when it changes)",
    )
    audit_max_per_s: int = Field(
        100,
        ge=1,
        le=100_000,
        description="audit events per second; further denials are counted into one summary "
        "event per second",
    )
    auth_cache_entries: AuthCacheEntries = 10_000

    @field_validator("bus_endpoint", "event_bus_endpoint")
    @classmethod
    def _bus(cls, v: str) -> str:
        return check_broker_set(v)  # publishers reach every broker

    @field_validator("registry", mode="after")
    @classmethod
    def _expand_path(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    def registry_path(self) -> Path | None:
        """The registry file to read: --registry, else the keys directory's, if present."""
        if self.registry is not None:
            return self.registry
        default = self.curve_keys / REGISTRY_FILE
        return default if default.exists() else None

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @model_validator(mode="after")
    def _store_needs(self) -> StateSettings:
        check_redis_settings(self)
        if self.redis_wait_replicas and self.redis_wait_timeout_ms >= self.redis_timeout_ms:
            # WAIT holds the reply that long: past redis_timeout_ms the read gives up first
            # and every write would fail as STORE_UNAVAILABLE instead of NOT_REPLICATED.
            raise ValueError(
                f"redis_wait_timeout_ms ({self.redis_wait_timeout_ms}) must be below "
                f"redis_timeout_ms ({self.redis_timeout_ms})"
            )
        if self.max_batch_reply_bytes < self.max_reply_bytes:
            raise ValueError("max_batch_reply_bytes must be at least max_reply_bytes")
        if self.max_reply_bytes < self.max_value_bytes + 64 * 1024:
            raise ValueError(
                "max_reply_bytes must be at least max_value_bytes + 64 KiB, or a stored value "
                "could not be read back"
            )
        return self

    def limits(self) -> Limits:
        return Limits(
            max_value_bytes=self.max_value_bytes,
            max_batch_keys=self.max_batch_keys,
            max_reply_bytes=self.max_reply_bytes,
            max_batch_reply_bytes=self.max_batch_reply_bytes,
            history_len=self.history_len,
        )

    def public_dict(self) -> dict[str, Any]:
        out = super().public_dict()
        out["redis_url"] = redact_url(self.redis_url)  # a URL may embed the password
        return out
