"""Settings of ``plantd gateway`` (env ``PLANTD_GATEWAY_<KEY>``, flags ``--<key>``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from plantd.common import contract
from plantd.common.breaker import BreakerPolicy
from plantd.common.config import (
    DEFAULT_EVENT_SUB,
    AuthCacheEntries,
    AuthIssuer,
    CommaList,
    JwksFile,
    JwksRefreshS,
    NotBeforeSubEndpoint,
    RedisCaFile,
    RedisPasswordFile,
    RedisUrl,
    ServiceSettings,
    check_broker_set,
    check_endpoint,
)
from plantd.common.redis_conn import RedisTarget

DEFAULT_STATE_SUB = f"tcp://127.0.0.1:{contract.BUS_PORTS['state'][1]}"
DEFAULT_METRIC_SUB = f"tcp://127.0.0.1:{contract.BUS_PORTS['metric'][1]}"
DEFAULT_EVENT_PUB = f"tcp://127.0.0.1:{contract.BUS_PORTS['event'][0]}"
DEFAULT_METRIC_PUB = f"tcp://127.0.0.1:{contract.BUS_PORTS['metric'][0]}"
MIB = 1024 * 1024


class GatewaySettings(ServiceSettings):
    """``plantd gateway``: plantd.v1 over gRPC, translated onto the MDP bus."""

    component: ClassVar[str] = contract.GATEWAY

    http_port: int = Field(
        contract.HTTP_PORTS[contract.GATEWAY],
        ge=0,
        le=65535,
        description="port for /healthz, /readyz and /metrics (0 = no HTTP server)",
    )
    grpc_host: str = Field(
        contract.DEFAULT_BIND_HOST,
        min_length=1,
        description="address the gRPC server binds (0.0.0.0 or [::] = all interfaces, as in a "
        "container)",
    )
    grpc_port: int = Field(
        contract.GRPC_PORT, ge=0, le=65535, description="gRPC port (0 = any free port)"
    )
    max_message_bytes: int = Field(
        4 * MIB,
        ge=64 * 1024,
        le=256 * MIB,
        description="largest gRPC message received or sent (keep it above the state service's "
        "value and batch limits, so those fail with their own clear error)",
    )
    max_concurrent_rpcs: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="RPCs served at once; further calls fail fast with RESOURCE_EXHAUSTED",
    )
    max_bus_requests: int = Field(
        256,
        ge=1,
        le=10_000,
        description="requests in flight on the bus at once (MDP sockets the gateway keeps)",
    )
    circuit_failures: int = Field(
        5,
        ge=0,
        le=10_000,
        description="failures in a row (no reply, no worker, broker lost) after which calls to "
        "that bus service fail at once with CIRCUIT_OPEN until a probe succeeds; 0 = never",
    )
    circuit_open_ms: int = Field(
        500,
        ge=10,
        le=600_000,
        description="the first pause of an open breaker before a probe; it doubles with each "
        "failed probe (with jitter) up to circuit_open_max_ms",
    )
    circuit_open_max_ms: int = Field(
        30_000, ge=10, le=3_600_000, description="the longest pause of an open breaker"
    )
    circuit_min_timeout_ms: int = Field(
        1000,
        ge=0,
        le=600_000,
        description="a call's timeout counts as a failure only if it waited at least this long "
        "(a caller's tiny deadline must not open the breaker for everyone)",
    )
    default_timeout_ms: int = Field(
        5000,
        ge=10,
        le=600_000,
        description="how long a call waits for the bus when the client set no deadline",
    )
    max_timeout_ms: int = Field(
        30_000,
        ge=10,
        le=600_000,
        description="the longest a call waits for the bus, whatever deadline the client set",
    )
    drain_s: float = Field(
        5.0,
        ge=0.0,
        le=300.0,
        description="on SIGTERM, how long in-flight RPCs may finish (after health says "
        "NOT_SERVING) before they are cancelled",
    )
    max_streams_per_connection: int = Field(
        256,
        ge=1,
        le=100_000,
        description="HTTP/2 streams (calls) one client connection may have open at once",
    )
    keepalive_s: float = Field(
        30.0,
        ge=1.0,
        le=7200.0,
        description="the server pings a connection quiet this long, and closes it when the ping "
        "is not answered within 10 s: a vanished client's watches end in under a minute",
    )
    max_connection_idle_s: float = Field(
        300.0,
        ge=0.0,
        le=86_400.0,
        description="a connection with no call this long is closed "
        "(clients reconnect by themselves); 0 = never",
    )
    max_connection_age_s: float = Field(
        0.0,
        ge=0.0,
        le=86_400.0,
        description="connections are closed after this long, with --drain-s to finish their calls, "
        "so clients rebalance across replicas behind a proxy; a watch then resumes from its "
        "revision; 0 = never",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="the event loop: uvloop (faster sockets and callbacks under grpc.aio and "
        "aiohttp) or asyncio's own",
    )
    health_interval_ms: int = Field(
        1000,
        ge=50,
        le=60_000,
        description="how often the state service's workers are checked (mmi.service) for the "
        "health and /readyz answers",
    )

    state_sub_endpoint: str = Field(
        DEFAULT_STATE_SUB,
        description="state bus subscriber port (the broker's XPUB) that WatchEntries follows",
    )
    watch_resync_ms: int = Field(
        1000,
        ge=50,
        le=600_000,
        description="a watch with no event for this long reads the history it may have missed "
        "(and re-checks its token)",
    )

    # ---- BusService: generic calls, the directory, publish and subscribe (docs/api.md) ----
    metric_sub_endpoint: str = Field(
        DEFAULT_METRIC_SUB, description="metric bus subscriber port (Subscribe to BUS_METRIC)"
    )
    event_pub_endpoint: str = Field(
        DEFAULT_EVENT_PUB, description="event bus publisher port (Publish to BUS_EVENT)"
    )
    metric_pub_endpoint: str = Field(
        DEFAULT_METRIC_PUB, description="metric bus publisher port (Publish to BUS_METRIC)"
    )
    max_batch_calls: int = Field(
        1000, ge=1, le=100_000, description="the most calls in one BatchCall"
    )
    batch_concurrency: int = Field(
        32,
        ge=1,
        le=1024,
        description="calls of one BatchCall in flight on the bus at once (the rest wait)",
    )
    watch_buffer_messages: int = Field(
        1000,
        ge=10,
        le=1_000_000,
        description="state-bus events one watch holds for a slow reader; beyond it (or "
        "watch_buffer_bytes) new events are dropped and the watch reads them from the history",
    )
    watch_buffer_bytes: int = Field(
        256 * 1024,
        ge=16 * 1024,
        le=1024 * MIB,
        description="bytes one watch holds for a slow reader (all watches share one state-bus "
        "subscription)",
    )
    subscribe_buffer_messages: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="bus messages one Subscribe stream holds for a slow reader; beyond it (or "
        "subscribe_buffer_bytes) new messages are dropped and counted in `dropped`",
    )
    subscribe_buffer_bytes: int = Field(
        4 * MIB,
        ge=64 * 1024,
        le=1024 * MIB,
        description="bytes (topic + frames) one Subscribe stream holds for a slow reader",
    )

    # ---- authentication (the state service authorizes; docs/api.md "Authentication") ----
    auth: Literal["off", "identity"] = Field(
        "identity",
        description="identity: every RPC (but Login and the other token-issuing identity calls) "
        "needs `authorization: Bearer <access token>`, verified here offline before it reaches "
        "the bus, with the audience of the service it is forwarded to (state, identity), which "
        "checks the permission; bus calls, publish and subscribe are authorized here "
        "(bus:call:<service>, bus:publish:<bus>, bus:subscribe:<bus>); off: no check here (the "
        "services still decide; bus calls are then open: never expose such a gateway)",
    )
    auth_issuer: AuthIssuer = contract.DEFAULT_ISSUER
    jwks_file: JwksFile = None
    jwks_refresh_s: JwksRefreshS = 60.0
    event_sub_endpoint: NotBeforeSubEndpoint = DEFAULT_EVENT_SUB
    auth_cache_entries: AuthCacheEntries = 10_000

    # ---- rate limits (plantd.gateway.ratelimit; docs/api.md "Limits") ----
    rate_limits: bool = Field(
        True,
        description="token buckets per token subject and per source address (docs/api.md "
        '"Limits"); an empty bucket answers RESOURCE_EXHAUSTED (HTTP 429) with RetryInfo',
    )
    rate_limit_read_per_s: float = Field(
        200.0, gt=0, le=1e6, description="reads (get, list, batch-get) per second per subject"
    )
    rate_limit_write_per_s: float = Field(
        100.0,
        gt=0,
        le=1e6,
        description="writes (set, delete, batches, scopes) per second per subject",
    )
    rate_limit_call_per_s: float = Field(
        100.0, gt=0, le=1e6, description="generic bus calls and publishes per second per subject"
    )
    rate_limit_stream_per_s: float = Field(
        10.0, gt=0, le=1e6, description="streams (watch, subscribe) opened per second per subject"
    )
    rate_limit_burst_s: float = Field(
        2.0,
        ge=0.1,
        le=3600.0,
        description="burst = this many seconds of each rate (at least 1 call), as Traefik's burst",
    )
    rate_limit_source_factor: float = Field(
        4.0,
        ge=1.0,
        le=1e6,
        description="a source address (IPv6 by /64) may do this many times a subject's rates: "
        "several users behind one NAT or proxy",
    )
    rate_limit_login_per_s: float = Field(
        1.0, gt=0, le=1e6, description="logins and token refreshes per second per source address"
    )
    rate_limit_login_burst: int = Field(
        10, ge=1, le=1_000_000, description="logins at once per source address"
    )
    max_streams_per_subject: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="server streams (watches) one token subject may hold open at once; more "
        "fail with RESOURCE_EXHAUSTED, reason TOO_MANY_STREAMS",
    )
    max_streams: int = Field(
        10_000, ge=1, le=1_000_000, description="server streams open at once in this gateway"
    )
    rate_limit_max_buckets: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="buckets kept (~0.3 KB each); the least recently used is dropped first and "
        "comes back full",
    )
    rate_limit_redis_url: RedisUrl = Field(
        "",
        description="share the buckets with every gateway replica through this Redis "
        "(atomic, on Redis's clock); empty: each process limits alone. While it does not "
        "answer, each replica limits alone (plantd_gateway_rate_limit_fallbacks_total)",
    )
    rate_limit_redis_password_file: RedisPasswordFile = None
    rate_limit_redis_ca_file: RedisCaFile = None
    rate_limit_redis_prefix: str = Field(
        "plantd:gateway:", min_length=1, max_length=64, description="key prefix in that Redis"
    )
    rate_limit_redis_timeout_ms: int = Field(
        250,
        ge=10,
        le=5000,
        description="how long a call waits for Redis's answer before this replica decides alone",
    )

    # ---- the REST/JSON, SSE and WebSocket edge (plantd.gateway.rest; docs/api.md "REST") ----
    rest: bool = Field(
        True, description='serve the REST/JSON, SSE and WebSocket edge (docs/api.md "REST")'
    )
    rest_host: str = Field(
        contract.DEFAULT_BIND_HOST,
        min_length=1,
        description="address the REST edge binds (0.0.0.0 or :: = all interfaces)",
    )
    rest_port: int = Field(
        contract.REST_PORT, ge=0, le=65535, description="REST edge port (0 = any free port)"
    )
    rest_cors_origins: CommaList = Field(
        default_factory=list,
        max_length=64,
        description="comma-separated origins browsers may call from (exact, e.g. "
        "https://hmi.example.com, or *); empty: CORS off. Credentials are never allowed",
    )
    rest_forwarded_hops: int = Field(
        0,
        ge=0,
        le=8,
        description="proxies in front that append to X-Forwarded-For; the client is that many "
        "entries from the right (0: the socket's address; any client can forge the header)",
    )
    rest_slow_write_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="a stream whose client does not take a message in this time is ended "
        "(counted as slow_consumer)",
    )
    rest_heartbeat_s: float = Field(
        15.0, gt=0, le=300, description="SSE keep-alive comment / WebSocket ping when idle"
    )
    rest_ws_auth_timeout_s: float = Field(
        10.0,
        gt=0,
        le=120,
        description="a WebSocket without an Authorization header must send its auth message "
        "within this time",
    )

    @field_validator("rest_cors_origins", mode="after")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and (
                "://" not in origin or origin.endswith("/") or origin.count("/") != 2
            ):
                raise ValueError(
                    f"CORS origin {origin[:80]!r} is not * or scheme://host[:port] (no path)"
                )
        return v

    @field_validator("state_sub_endpoint", "metric_sub_endpoint")
    @classmethod
    def _bus_sub(cls, v: str) -> str:
        return check_endpoint(v, bind=False)  # one broker: from two, every message twice

    @field_validator("event_pub_endpoint", "metric_pub_endpoint")
    @classmethod
    def _bus_pub(cls, v: str) -> str:
        return check_broker_set(v)  # publishers reach every broker

    @model_validator(mode="after")
    def _timeouts(self) -> GatewaySettings:
        if self.default_timeout_ms > self.max_timeout_ms:
            raise ValueError("default_timeout_ms must not be above max_timeout_ms")
        if self.circuit_open_ms > self.circuit_open_max_ms:
            raise ValueError("circuit_open_ms must not be above circuit_open_max_ms")
        url = self.rate_limit_redis_url
        if not url and (self.rate_limit_redis_password_file or self.rate_limit_redis_ca_file):
            raise ValueError("rate_limit_redis_password_file/ca_file need rate_limit_redis_url")
        if self.rate_limit_redis_ca_file is not None and not url.startswith("rediss://"):
            raise ValueError("rate_limit_redis_ca_file is for TLS: use a rediss:// URL")
        return self

    def rate_limit_redis(self) -> RedisTarget | None:
        """Where the shared buckets live, or None (each process limits alone)."""
        if not self.rate_limit_redis_url:
            return None
        timeout = self.rate_limit_redis_timeout_ms / 1000.0
        return RedisTarget(
            self.rate_limit_redis_url,
            password_file=self.rate_limit_redis_password_file,
            ca_file=self.rate_limit_redis_ca_file,
            socket_timeout=timeout,
            connect_timeout=timeout,
        )

    def breaker_policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            failures=self.circuit_failures,
            base_s=self.circuit_open_ms / 1000.0,
            cap_s=self.circuit_open_max_ms / 1000.0,
        )

    def rest_bind(self) -> str:
        """The REST edge's host for aiohttp (IPv6 literals without brackets)."""
        return self.rest_host.strip("[]")

    def grpc_address(self) -> str:
        """``host:port`` for ``server.add_insecure_port`` (IPv6 literals bracketed)."""
        host = self.grpc_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.grpc_port}"
