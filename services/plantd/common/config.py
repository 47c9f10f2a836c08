"""Settings for plantd processes: defaults, YAML file, environment, command line.

Every setting has a default and can be given, highest precedence first, as

1. a command-line flag (``--http-port 9000``; only flags the user actually typed count),
2. an environment variable ``PLANTD_<COMPONENT>_<KEY>`` (``contract.env_key``), e.g.
   ``PLANTD_BROKER_HTTP_PORT=9000``,
3. a key in an optional YAML file (``--config FILE`` or ``PLANTD_<COMPONENT>_CONFIG``), either
   flat (``http_port: 9000``) or under a section named after the component
   (``broker: {http_port: 9000}``; the section wins over flat keys, and other components'
   sections are ignored, so one file can configure a whole local stack),
4. the default.

No file is ever required. Invalid values raise :class:`ConfigError`, whose message names the key,
where the value came from, and what is allowed.

Adding settings for a new component (e.g. the state service)::

    from typing import ClassVar
    from pydantic import Field
    from plantd.common import contract, endpoints
    from plantd.common.config import ServiceSettings

    class StateSettings(ServiceSettings):
        component: ClassVar[str] = contract.STATE          # env prefix PLANTD_STATE_
        http_port: int = Field(contract.HTTP_PORTS[contract.STATE], ge=0, le=65535,
                               description="HTTP port for /healthz, /readyz, /metrics (0 = off)")
        store: Literal["sqlite", "redis"] = Field("sqlite", description="...")

    settings = StateSettings.load(config_file=None, flags={"store": "redis"})

Give every field a ``description``: it is the ``--help`` text of the generated flag
(:mod:`plantd.common.options`). Field names are the contract's ``KEY_*`` values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Protocol, Self

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from plantd.common import contract, endpoints
from plantd.common.logging import LogFormat, LogLevel, hidden_field
from plantd.common.redis_url import SENTINEL_SCHEMES, parse_sentinel_url

# The labels of plantd.mdp.Dialect (this module must not import plantd.mdp).
MdpDialect = Literal["mdp02", "mdp01", "legacy"]

# The file the current load() reads; a context variable because pydantic-settings builds its
# sources inside a classmethod that cannot take per-call arguments.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("plantd_config_file", default=None)
# The environment the current load() reads (None: os.environ); lets tests pass a mapping.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("plantd_environ", default=None)

_URL_USERINFO = re.compile(r"(://)[^@/\s]+@")


class ConfigError(ValueError):
    """A setting is invalid or the config file is unusable; the message says which and why."""


def check_endpoint(value: str, *, bind: bool) -> str:
    """Validate a ZeroMQ endpoint setting (the grammar: :mod:`plantd.common.endpoints`)."""
    return endpoints.check_endpoint(value, bind=bind)


def check_broker_set(value: str) -> str:
    """Validate a setting that names brokers: one endpoint, several comma-separated, or
    ``dns:tcp://NAME:PORT`` for every address of NAME (docs/ha.md)."""
    return endpoints.check_endpoint_set(value)


BROKER_SET_HELP = (
    "; several brokers: comma-separated, or dns:tcp://NAME:PORT for every address of NAME "
    "(a headless Service), see docs/ha.md"
)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' env source, reading the mapping load() was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRON.get()
        return parse_env_vars(
            os.environ if env is None else env,
            self.case_sensitive,
            self.env_ignore_empty,
            self.env_parse_none_str,
        )


class _YamlFileSource(PydanticBaseSettingsSource):
    """Values from the YAML file named by ``_CONFIG_FILE`` (none: no values)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = _CONFIG_FILE.get()
        if path is None:
            return {}
        return read_config_file(path, self.settings_cls)  # type: ignore[arg-type]


def read_config_file(path: Path, settings_cls: type[ServiceSettings]) -> dict[str, Any]:
    """The settings a YAML file gives ``settings_cls``; unknown keys are an error (typos)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; fix --config or remove it") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of settings, not {type(data).__name__}"
        )
    component = settings_cls.component
    flat = {k: v for k, v in data.items() if k not in contract.COMPONENTS}
    section = data.get(component, {}) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: section {component!r} must be a mapping")
    merged = {_normalise_key(str(k)): v for k, v in {**flat, **section}.items()}
    known = set(settings_cls.model_fields)
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)} for {component}; "
            f"known: {', '.join(sorted(known))}"
        )
    return merged


def _normalise_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


class ServiceSettings(BaseSettings):
    """Keys every plantd process has. Subclass per component (see the module docstring)."""

    component: ClassVar[str] = "service"
    # Settings a component does not use: no flag is generated for them.
    cli_hidden: ClassVar[frozenset[str]] = frozenset()

    model_config = SettingsConfigDict(
        extra="forbid",
        validate_default=True,
        validate_assignment=True,
        env_ignore_empty=True,
        frozen=False,
    )

    broker_endpoint: str = Field(
        contract.DEFAULT_BROKER_CONNECT,
        description="MDP broker address this process connects to" + BROKER_SET_HELP,
    )
    http_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="port for /healthz, /readyz and /metrics (0 = no HTTP server)",
    )
    http_host: str = Field(
        contract.DEFAULT_HTTP_HOST,
        min_length=1,
        description="address the HTTP server binds (0.0.0.0 = all interfaces, as in a container)",
    )
    curve: bool = Field(True, description="CurveZMQ encryption and key allow-listing on the bus")
    curve_keys: Path = Field(
        Path(contract.DEFAULT_CURVE_KEYS_DIR),
        description="directory of CURVE key files (see docs/security.md)",
    )
    log_level: LogLevel = Field("info", description="least severe level logged")
    log_format: LogFormat = Field(
        "json", description="json (one object per line) or text (for humans)"
    )
    heartbeat_ms: int = Field(
        contract.HEARTBEAT_MS,
        ge=50,
        le=600_000,
        description="MDP heartbeat interval in milliseconds",
    )

    @field_validator("broker_endpoint")
    @classmethod
    def _connect_endpoint(cls, v: str) -> str:
        return check_broker_set(v)

    @field_validator("curve_keys", mode="after")
    @classmethod
    def _expand_keys(cls, v: Path) -> Path:
        return v.expanduser()

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence is the tuple order: flags (init kwargs) > env > YAML > field defaults.
        env = _EnvSource(settings_cls, env_prefix=cls.env_prefix(), case_sensitive=False)
        return (init_settings, env, _YamlFileSource(settings_cls))

    @classmethod
    def env_prefix(cls) -> str:
        """``PLANTD_<COMPONENT>_``: every key's env var is this plus the key in upper case."""
        return contract.env_key(cls.component, "")

    @classmethod
    def env_name(cls, key: str) -> str:
        return contract.env_key(cls.component, key)

    @classmethod
    def load(
        cls,
        *,
        config_file: Path | str | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Self:
        """Resolve settings from ``flags`` > environment > ``config_file`` > defaults.

        ``flags`` holds only values the user typed (keys are field names). ``config_file``
        defaults to ``$PLANTD_<COMPONENT>_CONFIG`` when set. ``environ`` replaces ``os.environ``
        (tests). Raises :class:`ConfigError`.
        """
        env = os.environ if environ is None else environ
        given = dict(flags or {})
        unknown = sorted(set(given) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {cls.component}")
        if config_file is None:
            config_file = env.get(cls.env_name("config")) or None
        path = Path(config_file).expanduser() if config_file is not None else None
        with _use(_ENVIRON, environ), _use(_CONFIG_FILE, path):
            try:
                return cls(**given)
            except ValidationError as exc:
                raise ConfigError(_explain(cls, exc, given, env, path)) from None

    @classmethod
    def unknown_env(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """``PLANTD_<COMPONENT>_*`` variables that match no setting (likely typos)."""
        env = os.environ if environ is None else environ
        prefix = cls.env_prefix()
        names = {cls.env_name(k) for k in cls.model_fields} | {cls.env_name("config")}
        return sorted(k for k in env if k.upper().startswith(prefix) and k.upper() not in names)

    def public_dict(self) -> dict[str, Any]:
        """Settings as JSON-able values for a log line: secret-named keys and URL passwords
        (``redis://:pw@host``) are replaced by ``[redacted]``."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump(mode="json").items():
            # The logs' rule: numbers, flags and paths are never credentials.
            if hidden_field(key, value):
                out[key] = "[redacted]" if value else value
            elif isinstance(value, str):
                out[key] = _URL_USERINFO.sub(r"\1[redacted]@", value)
            else:
                out[key] = value
        return out


def split_commas(v: object) -> object:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (flags and environment); lists pass through."""
    if isinstance(v, str):
        return [item.strip() for item in v.split(",") if item.strip()]
    return v


# A list setting given as comma-separated text on the command line or in the environment.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]


# ---- Redis connection settings (the state and identity stores: plantd.common.redis_conn) ----
# Each service declares the fields (their order is its --help order) with these types, so the
# descriptions, bounds and the URL check have one authority.


def _redis_scheme(v: str) -> str:
    if v.startswith(SENTINEL_SCHEMES):
        parse_sentinel_url(v)  # its ValueError says what is wrong
    elif v and not v.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "must start with redis://, rediss:// (TLS), unix://, or redis+sentinel:// "
            "(rediss+sentinel:// for TLS)"
        )
    return v


RedisUrl = Annotated[
    str,
    AfterValidator(_redis_scheme),
    Field(
        description="redis://[USER:PASSWORD@]HOST:PORT/DB (rediss:// for TLS), or "
        "redis+sentinel://[USER:PASSWORD@]HOST:PORT,HOST:PORT/MASTER[/DB] to follow a "
        "Sentinel-managed primary (rediss+sentinel:// for TLS)"
    ),
]
RedisPassword = Annotated[
    SecretStr | None,
    Field(description="Redis password (prefer --redis-password-file; never logged)"),
]
RedisPasswordFile = Annotated[
    Path | None, Field(description="file holding the Redis password (keep it mode 0600)")
]
RedisCaFile = Annotated[
    Path | None,
    Field(description="CA certificate that signed the Redis server's TLS certificate"),
]
RedisTimeoutMs = Annotated[
    int, Field(ge=50, le=60_000, description="give up on a Redis reply after this long")
]
# A password on a command line is visible in `ps`: environment or file only.
REDIS_CLI_HIDDEN: Final = frozenset({"redis_password"})


# ---- offline token verification (state's --auth identity and the gateway: one authority) ----
DEFAULT_EVENT_SUB: Final = f"tcp://127.0.0.1:{contract.BUS_PORTS['event'][1]}"


def _expand_user(v: Path | None) -> Path | None:
    return v.expanduser() if v is not None else None


AuthIssuer = Annotated[str, Field(min_length=1, description="iss every accepted token must carry")]
JwksFile = Annotated[
    Path | None,
    AfterValidator(_expand_user),
    Field(
        description="JWKS document to trust (re-read when it changes); without it the JWKS is "
        "fetched from org.plantd.Identity (auth/jwks) over the bus"
    ),
]
JwksRefreshS = Annotated[
    float,
    Field(
        ge=1.0,
        le=86_400.0,
        description="how often the JWKS is fetched again (sooner, at most every 5 s, after a "
        "token with an unknown kid)",
    ),
]
NotBeforeSubEndpoint = Annotated[
    str,
    AfterValidator(lambda v: check_endpoint(v, bind=False)),
    Field(
        description="event bus subscriber port (XPUB) followed for identity.not_before "
        "(logout, password change: older tokens are refused)"
    ),
]
AuthCacheEntries = Annotated[
    int, Field(ge=1, le=1_000_000, description="verified tokens kept in the claims cache")
]


class _RedisChoice(Protocol):
    @property
    def store(self) -> str: ...
    @property
    def redis_url(self) -> str: ...
    @property
    def redis_password(self) -> SecretStr | None: ...
    @property
    def redis_password_file(self) -> Path | None: ...
    @property
    def redis_ca_file(self) -> Path | None: ...
    def env_name(self, key: str) -> str: ...


def check_redis_settings(s: _RedisChoice) -> None:
    """The Redis fields' cross-checks, for a model validator: :class:`ValueError` naming the fix."""
    if s.store == "redis" and not s.redis_url:
        raise ValueError(f"store=redis needs redis_url (--redis-url or {s.env_name('redis_url')})")
    if s.redis_ca_file is not None and not s.redis_url.startswith(
        ("rediss://", "rediss+sentinel://")
    ):
        raise ValueError(
            "redis_ca_file is for TLS: use a rediss:// (or rediss+sentinel://) redis_url"
        )
    if s.redis_password is not None and s.redis_password_file is not None:
        raise ValueError("give redis_password or redis_password_file, not both")


class BrokerSettings(ServiceSettings):
    """``plantd broker``: the MDP broker, the three buses and the broker's own worker."""

    component: ClassVar[str] = contract.BROKER
    cli_hidden: ClassVar[frozenset[str]] = frozenset({contract.KEY_BROKER_ENDPOINT})

    endpoint: str = Field(contract.DEFAULT_BROKER_BIND, description="address the MDP broker binds")
    http_port: int = Field(
        contract.HTTP_PORTS[contract.BROKER],
        ge=0,
        le=65535,
        description="port for /healthz, /readyz and /metrics (0 = no HTTP server)",
    )
    bus_bind: str = Field(
        contract.DEFAULT_BIND_HOST,
        min_length=1,
        description="host the bus sockets bind ('*' = all interfaces, as in a container)",
    )
    buses: Annotated[dict[str, tuple[int, int]], NoDecode] = Field(
        default_factory=lambda: dict(contract.BUS_PORTS),
        description="buses as NAME=PUBPORT:SUBPORT,... (publishers connect to PUBPORT, "
        "subscribers to SUBPORT); replaces the default list",
    )
    # Bus limits (plantd.bus.proxy explains what happens past each; docs/protocol.md's table).
    bus_max_message_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="largest message published on a bus (all frames), in bytes; a bigger one "
        "is dropped and counted, a single bigger frame closes its publisher's connection",
    )
    bus_max_frames: int = Field(
        8, ge=1, le=1024, description="most frames in one bus message; more: dropped, counted"
    )
    bus_hwm: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="messages queued per bus subscriber (and publisher) before libzmq drops; "
        "a slow subscriber costs at most bus_hwm x bus_max_message_bytes",
    )
    heartbeat_liveness: int = Field(
        contract.HEARTBEAT_LIVENESS,
        ge=1,
        le=100,
        description="missed heartbeats before a worker is dead",
    )
    # 5 s, as in the docs, the library's Broker and the original's mdp.Config: `plant` gives up
    # after 2.5 s, and a command queued longer is stale; with 30 s it could still run long after
    # its caller saw a timeout (issue 7, item 7).
    request_timeout_ms: int = Field(
        5_000,
        ge=100,
        le=3_600_000,
        description="fail a request still queued after this many ms (no worker took it)",
    )
    orphan_wait_ms: int = Field(
        0,
        ge=0,
        le=3_600_000,
        description="a request for a service whose workers all left this broker waits at most "
        "this many ms for one to come back, then SERVICE_UNAVAILABLE (not run: plantd's clients "
        "send it again, reaching another broker that may have them); for several brokers, "
        "where a worker cut off from this one is still registered with the others. 0: as long "
        "as request_timeout_ms",
    )
    max_queue: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="requests queued per service before new ones are refused (QUEUE_FULL)",
    )
    max_frame_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="largest accepted frame in bytes; a peer sending a bigger one is disconnected",
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="largest accepted message (all frames) in bytes; bigger requests get "
        "MESSAGE_TOO_LARGE",
    )
    # Budgets of the MDP dispatcher (plantd.mdp.budgets.Limits; docs/protocol.md).
    max_frames: int = Field(
        4096, ge=8, description="most frames in one message; more get MESSAGE_TOO_LARGE"
    )
    max_queue_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="bytes of requests queued per service before new ones get QUEUE_FULL",
    )
    max_client_requests: int = Field(
        1_000,
        ge=1,
        description="requests one client (routing id or CURVE key) may have queued or at a "
        "worker; more get TOO_MANY_REQUESTS",
    )
    max_client_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="bytes of those requests, plus replies held for the client unread; more "
        "get TOO_MANY_REQUESTS",
    )
    max_queued_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="bytes of queued requests over all services; more get OVERLOADED",
    )
    max_services: int = Field(
        10_000, ge=1, description="names in the service table (QUEUE_FULL / DISCONNECT past it)"
    )
    max_workers: int = Field(50_000, ge=1, description="registered workers (DISCONNECT past it)")
    max_names_per_peer: int = Field(
        64,
        ge=1,
        description="distinct service names one worker peer (routing id or CURVE key) may hold "
        "in the table; a READY past it gets DISCONNECT",
    )
    service_ttl_ms: int = Field(
        10_000, ge=0, description="forget a service this long after its last worker and request"
    )
    metrics_top_services: int = Field(
        100, ge=1, description="services exported with their own /metrics label; the rest: other"
    )
    send_hwm: int = Field(
        256,
        ge=16,
        description="messages queued in libzmq per peer connection; past it the broker holds "
        "them (counted in the client's budget) and retries",
    )
    shutdown_grace_ms: int = Field(
        5_000, ge=0, le=600_000, description="on SIGTERM, wait this long for in-flight requests"
    )
    shutdown_quiet_ms: int = Field(
        1_000,
        ge=0,
        le=60_000,
        description="on SIGTERM, also keep refusing new requests until none came for this "
        "long (within shutdown_grace_ms), so connected clients move to another broker before "
        "this one closes; 0 = close as soon as nothing is in flight",
    )
    ready_services: CommaList = Field(
        default_factory=list,
        max_length=64,
        description="comma-separated services that must have a worker registered here before "
        "/readyz says ready (a rolling update then waits for them); [] = ready at once",
    )
    ready_services_wait_ms: int = Field(
        30_000,
        ge=0,
        le=600_000,
        description="ready anyway this long after start when a ready_services worker has not "
        "come (a missing service must not keep the whole bus out of its Service)",
    )
    # Machine identities (plantd.common.registry; docs/security.md "Registry").
    registry: str = Field(
        "",
        description="registry of machine identities (JSON: which key may serve which names and "
        "publish which topics); '' = registry.json in --curve-keys if it exists, else the "
        "'no registry' mode (org.plantd.* only for plantd's own keys). Reloaded on change and "
        "on SIGHUP",
    )
    registry_poll_ms: int = Field(
        500, ge=50, le=60_000, description="how often the registry file is checked for changes"
    )
    # Enrolments from org.plantd.Identity (plantd.broker.enrolled; docs/identity.md "Where the
    # broker's registry comes from"). The operator and `plantd up` set identity_registry.
    identity_registry: bool = Field(
        False,
        description="also grant the machine identities enrolled in org.plantd.Identity (plant "
        "module enroll, join tokens): the broker asks identity over its own bus every "
        "identity_registry_poll_s and merges the answer with the registry file, which wins "
        "every collision; identity unreachable keeps the last rights. Needs CURVE",
    )
    identity_registry_poll_s: float = Field(
        5.0,
        ge=0.2,
        le=3600.0,
        description="how often the broker asks identity for enrolments (a revoked module "
        "loses its services within this)",
    )
    identity_service: str = Field(
        contract.SERVICE_IDENTITY,
        min_length=1,
        max_length=255,
        description="the service the broker asks for enrolments (modules/registry)",
    )

    @field_validator("endpoint")
    @classmethod
    def _bind_endpoint(cls, v: str) -> str:
        return check_endpoint(v, bind=True)

    @field_validator("buses", mode="before")
    @classmethod
    def _parse_buses(cls, v: object) -> object:
        return parse_buses(v) if isinstance(v, str) else v

    @field_validator("buses", mode="after")
    @classmethod
    def _check_buses(cls, v: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        seen: dict[int, str] = {}
        for name, ports in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
                raise ValueError(f"bus name {name!r} must be lower-case letters, digits and '-'")
            for port in ports:
                if not 1 <= port <= 65535:
                    raise ValueError(f"bus {name}: port {port} is outside 1-65535")
                if port in seen:
                    raise ValueError(f"bus {name}: port {port} is already used by bus {seen[port]}")
                seen[port] = name
        return v

    @model_validator(mode="after")
    def _frame_within_message(self) -> BrokerSettings:
        if self.max_frame_bytes > self.max_message_bytes:
            raise ValueError(
                f"max_frame_bytes ({self.max_frame_bytes}) must not exceed "
                f"max_message_bytes ({self.max_message_bytes})"
            )
        return self


def parse_buses(text: str) -> dict[str, tuple[int, int]]:
    """``"state=11000:11001,event=12000:12001"`` or JSON -> ``{"state": (11000, 11001), ...}``."""
    text = text.strip()
    if text.startswith("{"):
        import json

        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"buses: invalid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise ValueError("buses: JSON must be an object of name: [pubport, subport]")
        return {str(k): (int(p[0]), int(p[1])) for k, p in raw.items()}
    out: dict[str, tuple[int, int]] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        m = re.fullmatch(r"([^=\s]+)\s*=\s*(\d+)\s*:\s*(\d+)", item)
        if m is None:
            raise ValueError(f"buses: {item!r} is not NAME=PUBPORT:SUBPORT")
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


class EchoSettings(ServiceSettings):
    """``plantd echo``: the example module that answers with the request frames."""

    component: ClassVar[str] = contract.ECHO

    http_port: int = Field(
        contract.HTTP_PORTS[contract.ECHO],
        ge=0,
        le=65535,
        description="port for /healthz, /readyz and /metrics (0 = no HTTP server)",
    )
    service: str = Field(
        contract.SERVICE_ECHO, min_length=1, max_length=255, description="service name to register"
    )
    dialect: MdpDialect = Field(
        "mdp02",
        description="MDP dialect to speak: mdp02 (RFC 18), mdp01 (RFC 7) or legacy (to an "
        "original Go plantd broker)",
    )

    @field_validator("dialect", mode="before")
    @classmethod
    def _lower_dialect(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v


@contextmanager
def _use(var: ContextVar[Any], value: Any) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def _explain(
    cls: type[ServiceSettings],
    exc: ValidationError,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    path: Path | None,
) -> str:
    """One line per bad key: key, value, where it came from, what is allowed."""
    lines = []
    upper_env = {k.upper(): v for k, v in env.items()}
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not err["loc"]:  # a rule across several keys
            lines.append(f"invalid settings for {cls.component}: {msg}")
            continue
        key = str(err["loc"][0])
        flag = "--" + key.replace("_", "-")
        env_name = cls.env_name(key)
        if key in flags:
            origin, value = f"flag {flag}", flags[key]
        elif env_name in upper_env:
            origin, value = f"env {env_name}", upper_env[env_name]
        elif path is not None:
            origin, value = f"config file {path}", err.get("input")
        else:
            origin, value = "default", err.get("input")
        field = cls.model_fields.get(key)
        meaning = f" ({field.description})" if field is not None and field.description else ""
        lines.append(f"invalid setting {key}={value!r} from {origin}: {msg}{meaning}")
    return "; ".join(lines)
