"""Settings of ``plantd state`` (env ``PLANTD_STATE_<KEY>``, flags ``--<key>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plantd.common import contract
from plantd.common.config import ServiceSettings, check_endpoint
from plantd.state.limits import Limits
from plantd.state.redis_store import DEFAULT_PREFIX, redact_url

DEFAULT_BUS_ENDPOINT = f"tcp://127.0.0.1:{contract.BUS_PORTS['state'][0]}"


class StateSettings(ServiceSettings):
    """``plantd state``: the org.plantd.State worker and its store."""

    component: ClassVar[str] = contract.STATE
    # A password on a command line is visible in `ps`: environment or file only.
    cli_hidden: ClassVar[frozenset[str]] = frozenset({"redis_password"})

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
    redis_url: str = Field(
        "",
        description="redis://[USER:PASSWORD@]HOST:PORT/DB, or rediss://... for TLS",
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Redis password (prefer --redis-password-file; never logged)",
    )
    redis_password_file: Path | None = Field(
        None, description="file holding the Redis password (keep it mode 0600)"
    )
    redis_ca_file: Path | None = Field(
        None, description="CA certificate that signed the Redis server's TLS certificate"
    )
    redis_prefix: str = Field(
        DEFAULT_PREFIX,
        min_length=1,
        max_length=64,
        description="prefix of every Redis key, so several clusters can share one Redis",
    )
    redis_timeout_ms: int = Field(
        2000, ge=50, le=60_000, description="give up on a Redis reply after this long"
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

    @field_validator("bus_endpoint")
    @classmethod
    def _bus(cls, v: str) -> str:
        return check_endpoint(v, bind=False)

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @field_validator("redis_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return v

    @model_validator(mode="after")
    def _store_needs(self) -> StateSettings:
        if self.store == "redis" and not self.redis_url:
            raise ValueError("store=redis needs redis_url (--redis-url or PLANTD_STATE_REDIS_URL)")
        if self.redis_ca_file is not None and not self.redis_url.startswith("rediss://"):
            raise ValueError("redis_ca_file is for TLS: use a rediss:// redis_url")
        if self.redis_password is not None and self.redis_password_file is not None:
            raise ValueError("give redis_password or redis_password_file, not both")
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
