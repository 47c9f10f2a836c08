"""What ``plantd up`` runs: ports, endpoints and each component's environment. Pure.

Every wiring value reaches a child as a ``PLANTD_<COMPONENT>_<KEY>`` variable (the same settings
a container gets from the operator), so the local stack exercises the real configuration path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plantd.common import contract

# Started by default, in this order; the broker first so workers find it sooner.
STACK_COMPONENTS: tuple[str, ...] = (contract.BROKER, contract.ECHO, contract.STATE)

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
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "state"

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

    def all_ports(self) -> list[int]:
        ports = [self.mdp_port, *(p for pair in self.buses().values() for p in pair)]
        ports += [self.http_port(c) for c in self.components]
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
            values["registry"] = str(plan.keys_dir / "registry.json")
    else:
        values[contract.KEY_BROKER_ENDPOINT] = plan.mdp_endpoint
    if component == contract.STATE:
        values[contract.KEY_STATE_STORE] = (
            "redis" if plan.redis_url else contract.DEFAULT_STATE_STORE
        )
        values[contract.KEY_STATE_DATA_DIR] = str(plan.data_dir)
        if plan.redis_url:
            values[contract.KEY_STATE_REDIS_URL] = plan.redis_url
        if plan.redis_password_file is not None:
            values[contract.KEY_STATE_REDIS_PASSWORD_FILE] = str(plan.redis_password_file)
        state_pub = plan.buses()["state"][0]
        values[contract.KEY_STATE_BUS_ENDPOINT] = f"tcp://{plan.connect_host}:{state_pub}"
    return values


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


def endpoint_rows(plan: StackPlan, components: Sequence[str]) -> list[tuple[str, str]]:
    """(label, address) rows for the ``plantd up`` banner; short enough for 80 columns."""
    rows = [("MDP broker", plan.mdp_endpoint)]
    if contract.BROKER in components:
        buses = ", ".join(f"{n} {pub}/{sub}" for n, (pub, sub) in plan.buses().items())
        rows.append(("buses (pub/sub)", f"{buses} on {plan.connect_host}"))
    http = ", ".join(f"{c} :{plan.http_port(c)}" for c in components)
    rows.append(("HTTP on 127.0.0.1", http))
    paths = (contract.PATH_HEALTHZ, contract.PATH_READYZ, contract.PATH_METRICS)
    rows.append(("", " ".join(paths)))
    return rows
