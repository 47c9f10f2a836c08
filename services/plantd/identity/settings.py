"""Settings of ``plantd identity`` (env ``PLANTD_IDENTITY_<KEY>``, flags ``--<key>``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from plantd.common import contract
from plantd.common.config import (
    REDIS_CLI_HIDDEN,
    CommaList,
    RedisCaFile,
    RedisPassword,
    RedisPasswordFile,
    RedisTimeoutMs,
    RedisUrl,
    ServiceSettings,
    check_broker_set,
    check_redis_settings,
)

DEFAULT_EVENT_BUS = f"tcp://127.0.0.1:{contract.BUS_PORTS['event'][0]}"
DEFAULT_DATA_DIR = f"{contract.LOCAL_STATE_DIR}/identity"
DEFAULT_KEYS_DIR = f"{contract.LOCAL_STATE_DIR}/jwt"
DEFAULT_ISSUER = "plantd-identity"
DEFAULT_REDIS_PREFIX = "plantd:{identity}:"  # the hash tag keeps every key in one cluster slot


class IdentitySettings(ServiceSettings):
    """``plantd identity``: the org.plantd.Identity worker, its store and its signing keys."""

    component: ClassVar[str] = contract.IDENTITY
    cli_hidden: ClassVar[frozenset[str]] = REDIS_CLI_HIDDEN

    http_port: int = Field(
        contract.HTTP_PORTS[contract.IDENTITY],
        ge=0,
        le=65535,
        description="port for /healthz, /readyz (JWKS, store, broker) and /metrics",
    )
    service: str = Field(
        contract.SERVICE_IDENTITY, min_length=1, max_length=255, description="MDP service name"
    )
    store: Literal["sqlite", "redis"] = Field(
        "sqlite",
        description="sqlite (embedded, WAL; replicas on one machine share the file) or redis "
        "(a cluster: stateless replicas; needs --redis-url)",
    )
    redis_url: RedisUrl = ""
    redis_password: RedisPassword = None
    redis_password_file: RedisPasswordFile = None
    redis_ca_file: RedisCaFile = None
    redis_prefix: str = Field(
        DEFAULT_REDIS_PREFIX,
        min_length=1,
        max_length=64,
        description="prefix of every Redis key (several clusters can share one Redis); keep a "
        "{hash tag} in it on Redis Cluster",
    )
    redis_timeout_ms: RedisTimeoutMs = 2000
    registry_file: Path | None = Field(
        None,
        description="write the registry of enrolled machine identities here (JSON, 0600, "
        "atomically, never through a symlink) at start and on every enrolment or revocation, "
        "for a broker on the same machine (its --registry)",
    )
    max_modules: int = Field(
        1024,
        ge=1,
        le=4096,
        description="most machine identities enrolled at once (each entry <= 4 KiB, so the "
        "registry reply stays under the broker's 16 MiB frame)",
    )
    join_token_ttl_s: int = Field(
        3600, ge=60, le=7 * 86400, description="longest lifetime of a one-time join token"
    )
    max_join_tokens: int = Field(
        1000, ge=1, le=100_000, description="most unredeemed join tokens outstanding at once"
    )
    break_glass_key_file: Path | None = Field(
        None,
        description="public key (PEM) of the offline break-glass key: tokens it signs "
        "(`python -m plantd.identity.breakglass mint`, at most 1 h) are accepted, audited at "
        "warning level; without it no break-glass token is accepted",
    )
    data_dir: Path = Field(
        Path(DEFAULT_DATA_DIR), description="directory of identity.db (created 0700, file 0600)"
    )
    jwt_keys_dir: Path = Field(
        Path(DEFAULT_KEYS_DIR),
        description="directory of signing keys STATE.KID.pem (STATE = next|active|retired); "
        "create one with `python -m plantd.identity.keygen DIR`",
    )
    jwt_key_file: Path | None = Field(
        None,
        description="one signing key (PEM, EC P-256 or Ed25519) used as the active key, kid = "
        "its RFC 7638 thumbprint (the operator mounts its Secret here); overrides jwt_keys_dir",
    )
    issuer: str = Field(DEFAULT_ISSUER, min_length=1, max_length=255, description="JWT iss")
    audiences: CommaList = Field(
        list(contract.TOKEN_AUDIENCES),
        min_length=1,
        max_length=16,
        description="comma-separated audiences a token may be issued for (one per target "
        "service); a login without `audience` gets all of them",
    )
    access_ttl_s: int = Field(900, ge=30, le=3600, description="access token lifetime (seconds)")
    refresh_ttl_s: int = Field(
        7 * 86400, ge=300, le=90 * 86400, description="refresh token lifetime (seconds)"
    )
    bus_endpoint: str = Field(
        DEFAULT_EVENT_BUS,
        description="event bus publisher port: not_before revocations and audit events",
    )
    republish_s: float = Field(
        5.0, ge=0.5, le=300, description="re-publish recent not_before bumps this often"
    )
    credit: int = Field(16, ge=1, le=1000, description="requests handled at once")
    password_min_length: int = Field(
        15, ge=8, le=64, description="NIST 800-63B-4: 15 for password-only accounts (8 with MFA)"
    )
    argon2_memory_kib: int = Field(19456, ge=8192, le=1048576, description="argon2id m (KiB)")
    argon2_time_cost: int = Field(2, ge=1, le=10, description="argon2id t (iterations)")
    argon2_parallelism: int = Field(1, ge=1, le=8, description="argon2id p (lanes)")
    hash_concurrency: int = Field(
        4, ge=1, le=64, description="password hashes computed at once (each holds argon2 m)"
    )
    login_source_rate: float = Field(
        1.0, gt=0, le=1000, description="per-source login bucket refill (attempts per second)"
    )
    login_source_burst: int = Field(10, ge=1, le=10000, description="per-source bucket size")
    login_global_rate: float = Field(
        50.0, gt=0, le=100000, description="all-sources login bucket refill (per second)"
    )
    login_global_burst: int = Field(200, ge=1, le=1000000, description="global bucket size")
    backoff_free_failures: int = Field(
        3, ge=0, le=100, description="failed logins per account before backoff starts"
    )
    backoff_max_s: float = Field(
        300.0, ge=1, le=86400, description="longest backoff after repeated failures (seconds)"
    )
    max_failures: int = Field(
        100,
        ge=5,
        le=100,
        description="failures that lock a normal account (NIST: <= 100); "
        "operator-critical accounts are never locked, only slowed",
    )
    bootstrap_file: Path | None = Field(
        None,
        description="first admin as JSON {username, email, password} (file mode 0600), used "
        "only while no user exists; else a one-time setup token is written to data_dir",
    )

    @field_validator("bus_endpoint")
    @classmethod
    def _bus(cls, v: str) -> str:
        return check_broker_set(v)  # publishers reach every broker

    @field_validator("data_dir", "jwt_keys_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @model_validator(mode="after")
    def _argon2_sane(self) -> IdentitySettings:
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_kib must be at least 8 x argon2_parallelism")
        check_redis_settings(self)
        return self
