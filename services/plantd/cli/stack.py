"""What ``plantd up`` runs: ports, endpoints and each component's environment. Pure.

Every wiring value reaches a child as a ``PLANTD_<COMPONENT>_<KEY>`` variable (the same settings
a container gets from the operator), so the local stack exercises the real configuration path.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from plantd.common import contract
from plantd.identity.settings import DEFAULT_ISSUER

# Started by default, in this order: the broker first (everything connects to it), identity
# before state (state verifies tokens against identity's JWKS), the gateway last (it is ready
# only once state has a worker and identity's JWKS is loaded).
STACK_COMPONENTS: tuple[str, ...] = (
    contract.BROKER,
    contract.IDENTITY,
    contract.ECHO,
    contract.STATE,
    contract.GATEWAY,
)
# Supervisor tiers: a tier starts once every lower one is ready, and stops before them.
_TIERS: Mapping[str, int] = {contract.BROKER: 0, contract.IDENTITY: 1, contract.GATEWAY: 3}
LATER_TIER: Final = 2

# The first administrator `plantd up` creates (identity's bootstrap file) and where the
# user finds its password; the file's first line is the password, so
# `plant auth login -u admin --password-stdin < FILE` works as it is.
ADMIN_USERNAME: Final = "admin"
ADMIN_EMAIL: Final = "admin@plantd.local"
ADMIN_CREDENTIALS_FILE: Final = "admin-credentials"
BOOTSTRAP_FILE: Final = "bootstrap.json"
IDENTITY_DB: Final = "identity.db"  # plantd.identity.sqlite_store's file in its data_dir
REGISTRY_FILE: Final = "registry.json"

Auth = Literal["off", "identity"]

# Module each component's command lives in (checked before starting; missing = skipped).
COMPONENT_MODULES: Mapping[str, str] = {
    contract.BROKER: "plantd.broker.main",
    contract.ECHO: "plantd.echo.main",
    contract.STATE: "plantd.state.main",
    contract.IDENTITY: "plantd.identity.main",
    contract.GATEWAY: "plantd.gateway.main",
}


@dataclass(frozen=True)
class StackPlan:
    """The resolved layout of a local stack."""

    state_dir: Path
    listen: str = "127.0.0.1"
    port_offset: int = 0
    curve: bool = True
    redis_url: str | None = None  # without its password, which travels in a 0600 file
    redis_password_file: Path | None = None
    log_level: str = contract.DEFAULT_LOG_LEVEL
    log_format: str = "text"
    heartbeat_ms: int | None = None  # None: each component's own default
    components: tuple[str, ...] = STACK_COMPONENTS
    auth: Auth = "identity"  # state's --auth; up.resolve_auth picks it from the components
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "state"

    @property
    def registry_file(self) -> Path:
        """The stack's own keys (written by ``plantd up`` before the broker starts)."""
        return self.keys_dir / REGISTRY_FILE

    @property
    def identity_dir(self) -> Path:
        return self.state_dir / "identity"

    @property
    def jwt_dir(self) -> Path:
        return self.state_dir / "jwt"

    @property
    def identity_db(self) -> Path:
        return self.identity_dir / IDENTITY_DB

    @property
    def bootstrap_file(self) -> Path:
        return self.identity_dir / BOOTSTRAP_FILE

    @property
    def admin_credentials(self) -> Path:
        return self.state_dir / ADMIN_CREDENTIALS_FILE

    @property
    def mdp_port(self) -> int:
        return contract.MDP_PORT + self.port_offset

    @property
    def connect_host(self) -> str:
        # Where local processes reach the stack: loopback unless bound to one specific address.
        return "127.0.0.1" if self.listen in ("*", "0.0.0.0", "127.0.0.1") else self.listen

    @property
    def bind_host(self) -> str:
        return "*" if self.listen in ("*", "0.0.0.0") else self.listen

    @property
    def mdp_endpoint(self) -> str:
        return f"tcp://{self.connect_host}:{self.mdp_port}"

    def buses(self) -> dict[str, tuple[int, int]]:
        off = self.port_offset
        return {name: (pub + off, sub + off) for name, (pub, sub) in contract.BUS_PORTS.items()}

    def http_port(self, component: str) -> int:
        return contract.HTTP_PORTS[component] + self.port_offset

    def ready_url(self, component: str) -> str:
        return f"http://127.0.0.1:{self.http_port(component)}{contract.PATH_READYZ}"

    def bus_endpoint(self, bus: str, side: Literal["pub", "sub"]) -> str:
        """Where a local process connects to publish on (pub) or follow (sub) ``bus``."""
        pub, sub = self.buses()[bus]
        return f"tcp://{self.connect_host}:{pub if side == 'pub' else sub}"

    @property
    def grpc_port(self) -> int:
        return contract.GRPC_PORT + self.port_offset

    @property
    def grpc_address(self) -> str:
        """Where a local gRPC client reaches the gateway (``host:port``, as grpcurl takes it)."""
        return f"{self.connect_host}:{self.grpc_port}"

    @property
    def rest_port(self) -> int:
        return contract.REST_PORT + self.port_offset

    @property
    def rest_url(self) -> str:
        """Where a local HTTP client reaches the gateway's REST edge."""
        return f"http://{self.connect_host}:{self.rest_port}"

    def all_ports(self) -> list[int]:
        ports = [self.mdp_port, *(p for pair in self.buses().values() for p in pair)]
        ports += [self.http_port(c) for c in self.components]
        if contract.GATEWAY in self.components:
            ports += [self.grpc_port, self.rest_port]
        return ports


def _buses_value(buses: Mapping[str, tuple[int, int]]) -> str:
    return ",".join(f"{name}={pub}:{sub}" for name, (pub, sub) in buses.items())


def component_settings(plan: StackPlan, component: str) -> dict[str, str]:
    """The settings (key -> value) ``plantd up`` fixes for ``component``."""
    values: dict[str, str] = {
        contract.KEY_HTTP_PORT: str(plan.http_port(component)),
        "http_host": "127.0.0.1",
        contract.KEY_CURVE: "true" if plan.curve else "false",
        contract.KEY_CURVE_KEYS: str(plan.keys_dir),
    }
    if plan.heartbeat_ms is not None:
        values[contract.KEY_HEARTBEAT_MS] = str(plan.heartbeat_ms)
    if component == contract.BROKER:
        values[contract.KEY_ENDPOINT] = f"tcp://{plan.bind_host}:{plan.mdp_port}"
        values[contract.KEY_BUS_BIND] = plan.bind_host
        values["buses"] = _buses_value(plan.buses())
        if plan.curve:  # written by `plantd up` (plantd.cli.up.enrol_stack) before the broker
            values["registry"] = str(plan.registry_file)
            if contract.IDENTITY in plan.components:
                # Modules enrolled in identity (`plant module enroll`) reach the broker too;
                # the file, the stack's own keys, wins every collision.
                values[contract.KEY_IDENTITY_REGISTRY] = "true"
    else:
        values[contract.KEY_BROKER_ENDPOINT] = plan.mdp_endpoint
    if component == contract.IDENTITY:
        values.update(_identity_settings(plan))
    if component == contract.GATEWAY:
        values.update(_gateway_settings(plan))
    if component == contract.STATE:
        values[contract.KEY_STATE_STORE] = (
            "redis" if plan.redis_url else contract.DEFAULT_STATE_STORE
        )
        values[contract.KEY_STATE_DATA_DIR] = str(plan.data_dir)
        if plan.redis_url:
            values[contract.KEY_STATE_REDIS_URL] = plan.redis_url
        if plan.redis_password_file is not None:
            values[contract.KEY_STATE_REDIS_PASSWORD_FILE] = str(plan.redis_password_file)
        values[contract.KEY_STATE_BUS_ENDPOINT] = plan.bus_endpoint("state", "pub")
        values.update(_state_auth_settings(plan))
    return values


def _identity_settings(plan: StackPlan) -> dict[str, str]:
    return {
        "data_dir": str(plan.identity_dir),
        "jwt_keys_dir": str(plan.jwt_dir),
        "bus_endpoint": plan.bus_endpoint("event", "pub"),
        "issuer": DEFAULT_ISSUER,
        # Read by identity only while its store has no user (plantd.identity.bootstrap).
        "bootstrap_file": str(plan.bootstrap_file),
    }


def _state_auth_settings(plan: StackPlan) -> dict[str, str]:
    if plan.auth == "off":
        return {"auth": "off"}
    values = {
        "auth": "identity",
        # The same issuer identity is given above; the audience is one identity issues by
        # default (IdentitySettings.audiences), so a plain `plant auth login` token fits.
        "auth_issuer": DEFAULT_ISSUER,
        "auth_audience": contract.SERVICE_STATE,
        "event_bus_endpoint": plan.bus_endpoint("event", "pub"),
        "event_sub_endpoint": plan.bus_endpoint("event", "sub"),
    }
    if plan.curve:  # without CURVE no caller has a key, so key permissions cannot apply
        values["registry"] = str(plan.registry_file)
    return values


def _gateway_settings(plan: StackPlan) -> dict[str, str]:
    """gRPC where the rest of the stack listens; tokens checked against identity's JWKS,
    fetched over the bus (no file to keep in step), revocations from the event bus."""
    values = {
        # The gRPC port follows --listen like the broker's: loopback unless asked otherwise.
        "grpc_host": "0.0.0.0" if plan.bind_host == "*" else plan.bind_host,
        contract.KEY_GRPC_PORT: str(plan.grpc_port),
        "rest_host": "0.0.0.0" if plan.bind_host == "*" else plan.bind_host,
        "rest_port": str(plan.rest_port),
        "state_sub_endpoint": plan.bus_endpoint("state", "sub"),
        "metric_sub_endpoint": plan.bus_endpoint("metric", "sub"),
        "event_pub_endpoint": plan.bus_endpoint("event", "pub"),
        "metric_pub_endpoint": plan.bus_endpoint("metric", "pub"),
        contract.KEY_AUTH: plan.auth,
    }
    if plan.auth == "identity":
        values[contract.KEY_AUTH_ISSUER] = DEFAULT_ISSUER
        values[contract.KEY_EVENT_SUB_ENDPOINT] = plan.bus_endpoint("event", "sub")
    return values


def tier(component: str) -> int:
    """The supervisor tier of ``component``: broker 0, identity 1, the gateway (which needs
    state ready) 3, everything else 2."""
    return _TIERS.get(component, LATER_TIER)


def child_env(plan: StackPlan, component: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of one child: ``base`` plus the wiring, which always wins.

    Log level and format only default: a user's ``PLANTD_<C>_LOG_LEVEL`` is kept.
    """
    env = dict(base)
    env.update(plan.extra_env)
    for key, value in component_settings(plan, component).items():
        env[contract.env_key(component, key)] = value
    env.setdefault(contract.env_key(component, contract.KEY_LOG_LEVEL), plan.log_level)
    env.setdefault(contract.env_key(component, contract.KEY_LOG_FORMAT), plan.log_format)
    env.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the terminal as they happen
    return env


def child_argv(python: str, component: str) -> list[str]:
    """Run a component exactly as a container does (``plantd <component>``), via this Python."""
    return [python, "-m", "plantd.cli.plantd", component]


def plant_args(plan: StackPlan) -> list[str]:
    """``plant`` plus the flags it needs to reach this stack (none for the defaults)."""
    args = ["plant"]
    if plan.mdp_endpoint != contract.DEFAULT_BROKER_CONNECT:
        args += ["--endpoint", plan.mdp_endpoint]
    if not plan.curve:
        args += ["--no-curve"]
    elif plan.keys_dir != Path(contract.DEFAULT_CURVE_KEYS_DIR).expanduser():
        args += ["--curve-keys", str(plan.keys_dir)]
    return args


def _shell(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _under_home(path: Path, home: Path | None) -> str | None:
    try:
        return str(path.relative_to(home if home is not None else Path.home()))
    except (ValueError, RuntimeError):  # RuntimeError: no home directory to be found
        return None


def display_path(path: Path, home: Path | None = None) -> str:
    """``path`` as a person reads it: ``~/...`` under the home directory (shorter)."""
    rest = _under_home(path, home)
    return f"~/{rest}" if rest is not None else str(path)


def shell_path(path: Path, home: Path | None = None) -> str:
    """``path`` on a shell command line: ``~/...`` (unquoted, so the shell expands it) under
    the home directory, quoted as needed."""
    rest = _under_home(path, home)
    return f"~/{shlex.quote(rest)}" if rest is not None else shlex.quote(str(path))


def login_command(plan: StackPlan, home: Path | None = None) -> str:
    """The exact shell command that logs the first admin in with the credentials file."""
    args = [*plant_args(plan), "auth", "login", "-u", ADMIN_USERNAME, "--password-stdin"]
    return f"{_shell(args)} < {shell_path(plan.admin_credentials, home)}"


def try_commands(
    plan: StackPlan, components: Sequence[str], *, admin_file: bool = True
) -> list[str]:
    """What to type next in another terminal, in order (shown once the stack is ready).

    ``admin_file`` False: there is no credentials file to log in with (identity already had
    users), so the login asks for a user and password."""
    plant = plant_args(plan)
    out: list[str] = []
    if contract.STATE in components:
        if plan.auth == "identity":
            out.append(login_command(plan) if admin_file else _shell([*plant, "auth", "login"]))
        out.append(_shell([*plant, "state", "set", "--service", "demo", "key", "1"]))
        out.append(_shell([*plant, "state", "get", "--service", "demo", "key"]))
    elif contract.ECHO in components:
        out.append(_shell([*plant, "echo", "hello"]))
    return out


def gateway_commands(plan: StackPlan) -> list[str]:
    """How to call the gateway once logged in: the token `plant auth token` prints, then a
    REST read and watch with curl, and the same read over gRPC with grpcurl."""
    body = shlex.quote(json.dumps({"scope": "demo", "key": "key"}, separators=(",", ":")))
    entry = f"{plan.rest_url}/v1/state/scopes/demo/entries/key"
    watch = f"{plan.rest_url}/v1/state/scopes/demo/entries:watch"
    grpc_call = f"{plan.grpc_address} plantd.v1.StateService/GetEntry"
    if plan.auth != "identity":
        return [f"curl {entry}", f"curl -N {watch}", f"grpcurl -plaintext -d {body} {grpc_call}"]
    # Double quotes keep $TOKEN expanding; shlex would single-quote it.
    header = '"authorization: Bearer $TOKEN"'
    return [
        f"TOKEN=$({_shell([*plant_args(plan), 'auth', 'token'])})",
        f"curl -H {header} {entry}",
        f"curl -N -H {header} {watch}",
        f"grpcurl -plaintext -H {header} -d {body} {grpc_call}",
    ]


def endpoint_rows(plan: StackPlan, components: Sequence[str]) -> list[tuple[str, str]]:
    """(label, address) rows for the ``plantd up`` banner; short enough for 80 columns."""
    rows = [("MDP broker", plan.mdp_endpoint)]
    if contract.GATEWAY in components:
        rows.append(("gRPC gateway", f"{plan.grpc_address} (plantd.v1, health, reflection)"))
        rows.append(("REST gateway", f"{plan.rest_url} (JSON, SSE, WebSocket; /openapi.json)"))
    if contract.BROKER in components:
        buses = ", ".join(f"{n} {pub}/{sub}" for n, (pub, sub) in plan.buses().items())
        rows.append(("buses (pub/sub)", f"{buses} on {plan.connect_host}"))
    http = ", ".join(f"{c} :{plan.http_port(c)}" for c in components)
    rows.append(("HTTP on 127.0.0.1", http))
    paths = (contract.PATH_HEALTHZ, contract.PATH_READYZ, contract.PATH_METRICS)
    rows.append(("", " ".join(paths)))
    return rows
