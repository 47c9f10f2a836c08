"""``plantd up``: the whole bus on one machine, supervised and secured: CURVE keys wired in,
identity running with a first admin, state refusing callers without a token or key rights."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import click
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from plantd.cli import first_admin, keys, stack
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.supervisor import ChildSpec, Supervisor
from plantd.common import contract
from plantd.common.curve import CurveKeyError, load_keypair
from plantd.common.files import InsecureDirectoryError, check_private_dir, write_atomic
from plantd.common.keys import KeysError, load_client, load_server
from plantd.common.registry import FILE_NAME, Registry, RegistryError, enrol_own
from plantd.identity.keys import generate as generate_signing_key

_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red")


class ConsoleReporter:
    """Children's lines as ``name | line``; our own messages marked ``plantd up:``.

    Warnings go to stderr, so stdout carries only the banner and the children's lines."""

    def __init__(self, console: Console, names: list[str]) -> None:
        self._console = console
        self._errors = Console(stderr=True, highlight=False)
        self._width = max((len(n) for n in names), default=6)
        self._style = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}

    def child_line(self, name: str, line: str) -> None:
        text = Text(f"{name:<{self._width}} | ", style=self._style.get(name, ""))
        text.append(line)  # verbatim: a log line is never rich markup
        self._console.print(text, soft_wrap=True)

    def info(self, message: str) -> None:
        self._console.print(Text("plantd up: ", style="bold") + Text(message), soft_wrap=True)

    def warn(self, message: str) -> None:
        self._errors.print(
            Text("plantd up: ", style="bold yellow") + Text(message, style="yellow"),
            soft_wrap=True,
        )


def redact_url(url: str) -> str:
    """A URL safe to print: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def split_password(url: str) -> tuple[str, str | None]:
    """``(url without its password, password)``: the password goes to a file, not the env."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    user = parts.username or ""
    netloc = (f"{user}@" if user else "") + (parts.hostname or "")
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


def write_secret(path: Path, secret: str) -> Path:
    """Write ``secret`` to ``path`` with mode 0600 from the start (never briefly readable),
    atomically and never through a symlink planted at ``path``."""
    return write_atomic(path.parent, path.name, secret.encode(), 0o600)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(plan: stack.StackPlan) -> None:
    too_high = [p for p in plan.all_ports() if p > 65535]
    if too_high:
        raise CliError(
            f"--port-offset {plan.port_offset} puts port(s) {', '.join(map(str, too_high))} "
            "above 65535",
            hint=f"use a smaller offset (the gateway's gRPC port is {contract.GRPC_PORT} + "
            "offset), or --without gateway",
            code=ExitCode.USAGE,
        )
    host = "0.0.0.0" if plan.bind_host == "*" else plan.bind_host
    busy = [p for p in plan.all_ports() if _port_in_use(host, p)]
    if busy:
        raise CliError(
            f"port(s) {', '.join(map(str, busy))} on {host} already in use",
            hint="is another `plantd up` running? stop it, or run this one with --port-offset 100",
            code=ExitCode.CONFIG,
        )


def check_keys(keys_dir: Path, components: list[str]) -> None:
    """Load every key the children will load, so a bad file stops `plantd up` at once with a
    clear message instead of sending a child into a crash-restart loop."""
    try:
        for component in components:
            if component == contract.BROKER:
                load_server(keys_dir)
            else:
                load_client(keys_dir, component)
        load_client(keys_dir, keys.CLIENT_KEY)
    except KeysError as exc:
        raise CliError(
            f"unusable CURVE keys: {exc}",
            hint=f"fix the file, or replace the pair with `plantd keys generate --dir {keys_dir} "
            "--force --name NAME` (then restart anything using it)",
            code=ExitCode.CONFIG,
        ) from exc


def check_dirs(plan: stack.StackPlan) -> None:
    """Refuse a state or key directory group or others can write (whoever can write the state
    directory can swap the keys directory inside it); missing ones are created 0700 later."""
    try:
        check_private_dir(plan.state_dir, "state directory")
        if plan.curve:
            check_private_dir(plan.keys_dir, "CURVE key directory")
        if contract.IDENTITY in plan.components:
            check_private_dir(plan.identity_dir, "identity data directory")
            check_private_dir(plan.jwt_dir, "JWT signing key directory")
    except InsecureDirectoryError as exc:
        raise CliError(str(exc), hint="then run `plantd up` again", code=ExitCode.CONFIG) from exc


def enrol_stack(keys_dir: Path, names: list[str]) -> list[str]:
    """Add the stack's own keys to ``registry.json`` (created on first run, kind ``plantd``;
    the client as kind ``client``); returns the names added. Other identities are kept."""
    path = keys_dir / FILE_NAME
    try:
        existing = Registry.load(path) if path.exists() else None
        own = {load_keypair(keys_dir / f"{n}.key").public.decode(): n for n in names}
    except (RegistryError, CurveKeyError) as exc:
        raise CliError(
            f"cannot enrol the stack's keys: {exc}",
            hint=f"fix or remove {path}, then run `plantd up` again",
            code=ExitCode.CONFIG,
        ) from exc
    new = enrol_own(existing, own)
    if new is None:
        return []
    before = {i.name for i in existing.identities()} if existing is not None else set()
    write_atomic(keys_dir, FILE_NAME, new.to_json(), 0o600)
    return sorted(i.name for i in new.identities() if i.name not in before) or ["updated keys"]


def prepare_identity(plan: stack.StackPlan, reporter: ConsoleReporter) -> first_admin.Admin:
    """identity's data directory, a signing key (first run) and the first admin's files."""
    plan.identity_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not any(plan.jwt_dir.glob("*.pem")):
        try:
            path = generate_signing_key(plan.jwt_dir)
        except (FileExistsError, ValueError) as exc:  # OSError: the caller's message
            raise CliError(
                f"cannot create a JWT signing key in {plan.jwt_dir}: {exc}",
                hint="fix the directory, or remove it to start with a new key",
                code=ExitCode.CONFIG,
            ) from exc
        reporter.info(f"generated a JWT signing key {path}")
    admin = first_admin.ensure(plan)
    if admin is first_admin.Admin.CREATED:
        reporter.info(
            f"created the first admin '{stack.ADMIN_USERNAME}': its password is in "
            f"{plan.admin_credentials} (mode 0600)"
        )
    return admin


def prepare_state(
    plan: stack.StackPlan, components: list[str], reporter: ConsoleReporter
) -> tuple[stack.StackPlan, first_admin.Admin | None]:
    """Create the state directory, keys (checked) and secret files; returns the final plan and
    what became of the first admin (None without identity).

    Raises OSError when the filesystem refuses, CliError when a key is unusable or a directory
    is writable by group or others."""
    plan.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_dirs(plan)
    if plan.curve:
        created = [
            n
            for n, new in keys.generate(
                plan.keys_dir, [keys.BROKER_KEY, *components, keys.CLIENT_KEY]
            )
            if new
        ]
        if created:
            reporter.info(f"generated CURVE keys for {', '.join(created)} in {plan.keys_dir}")
        check_keys(plan.keys_dir, components)
        enrolled = enrol_stack(plan.keys_dir, [keys.BROKER_KEY, *components, keys.CLIENT_KEY])
        if enrolled:
            reporter.info(f"enrolled {', '.join(enrolled)} in {plan.keys_dir / FILE_NAME}")
    if contract.STATE in components and not plan.redis_url:
        plan.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if plan.redis_url:
        # Secrets live in 0600 files, not in the children's environment (readable in /proc).
        url, password = split_password(plan.redis_url)
        secret_file = None
        if password is not None:
            secret_file = write_secret(plan.state_dir / "redis-password", password)
        plan = replace(plan, redis_url=url, redis_password_file=secret_file)
    admin = prepare_identity(plan, reporter) if contract.IDENTITY in components else None
    return plan, admin


def available_components(wanted: list[str], warn: ConsoleReporter) -> list[str]:
    found = []
    for component in wanted:
        module = stack.COMPONENT_MODULES[component]
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            present = False
        if present:
            found.append(component)
        else:
            warn.warn(f"skipping {component}: {module} is not in this installation")
    return found


def drop_gateway_without_state(components: list[str], reporter: ConsoleReporter) -> list[str]:
    """The gateway serves the state service (its /readyz waits for a state worker): without
    state it would never be ready, so it is left out, and the user told why."""
    if contract.GATEWAY in components and contract.STATE not in components:
        reporter.warn(
            "skipping gateway: it serves org.plantd.State, which this stack does not start "
            "(add --without gateway to silence this)"
        )
        return [c for c in components if c != contract.GATEWAY]
    return components


def resolve_auth(requested: str | None, components: list[str]) -> stack.Auth:
    """state's --auth: identity whenever identity runs, unless --auth off says otherwise."""
    if requested == "off":
        return "off"
    if contract.IDENTITY in components:
        return "identity"
    if requested == "identity" and contract.STATE in components:
        raise CliError(
            "--auth identity needs the identity service, which this stack does not start",
            hint="drop --without identity (or use --auth off for an unsecured stack)",
            code=ExitCode.USAGE,
        )
    return "off"


def admin_row(plan: stack.StackPlan, admin: first_admin.Admin | None) -> tuple[str, str] | None:
    """The banner's line about the first admin (it names the file, never the password)."""
    if admin is None:
        return None
    if admin is first_admin.Admin.UNKNOWN:
        return (
            "admin",
            f"[yellow]no {plan.admin_credentials.name} file[/]: identity in "
            f"{escape(stack.display_path(plan.identity_dir))} already has users; log in with "
            "one of them",
        )
    where = escape(stack.display_path(plan.admin_credentials))
    return ("admin", f"user {stack.ADMIN_USERNAME}, password in {where} (line 1)")


def banner(
    plan: stack.StackPlan, components: list[str], admin: first_admin.Admin | None = None
) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in stack.endpoint_rows(plan, components):
        grid.add_row(label, value)
    grid.add_row(
        "CURVE", f"on, keys in {plan.keys_dir}" if plan.curve else "[red]off[/] (--no-curve)"
    )
    if contract.IDENTITY in components:
        grid.add_row(
            "identity",
            f"{contract.SERVICE_IDENTITY}, store in {escape(stack.display_path(plan.identity_dir))}"
            f", signing keys in {escape(stack.display_path(plan.jwt_dir))}",
        )
        row = admin_row(plan, admin)
        if row is not None:
            grid.add_row(*row)
        if admin is not first_admin.Admin.UNKNOWN:
            grid.add_row("log in", escape(stack.login_command(plan)))
    if contract.STATE in components:
        grid.add_row(
            "state auth",
            "identity: a token (`plant auth login`) or a key with rights is needed"
            if plan.auth == "identity"
            else "[red]off[/]: any caller on the bus may read and write every scope",
        )
        store = (
            f"redis {redact_url(plan.redis_url)}"
            if plan.redis_url
            else f"sqlite in {plan.data_dir}"
        )
        grid.add_row("state store", store)
    if contract.GATEWAY in components:
        # After `plant auth login`: the stored token, then one call through the gateway.
        grid.add_row("call it", "\n".join(escape(c) for c in stack.gateway_commands(plan)))
    return Panel(grid, title="plantd up", title_align="left", border_style="cyan")


def try_hint(
    plan: stack.StackPlan, components: list[str], admin: first_admin.Admin | None = None
) -> str:
    """The ready line's suggestion: the commands to run next, joined with ``then``."""
    commands = stack.try_commands(
        plan, components, admin_file=admin is not first_admin.Admin.UNKNOWN
    )
    return " then ".join(f"`{c}`" for c in commands) if commands else ""


@click.command("up")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=contract.LOCAL_STATE_DIR,
    show_default=True,
    help="CURVE keys (DIR/keys), JWT signing keys (DIR/jwt), identity's store (DIR/identity), "
    "the admin's password (DIR/admin-credentials) and the embedded state store (DIR/state)",
)
@click.option("--no-curve", is_flag=True, help="plain-text bus, no keys (development only)")
@click.option(
    "--auth",
    type=click.Choice(["off", "identity"]),
    default=None,
    help="state's authorization: identity (a token or a key with rights is needed; the "
    "default when identity runs) or off (the default with --without identity)",
)
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    help="state store in Redis at URL (redis://HOST:PORT/DB) instead of embedded SQLite",
)
@click.option(
    "--listen",
    default="127.0.0.1",
    show_default=True,
    help="address the broker and buses bind; 0.0.0.0 exposes them to the network",
)
@click.option(
    "--port-offset",
    type=click.IntRange(0, 50000),
    default=0,
    show_default=True,
    help="add N to every port, to run a second stack on the same host",
)
@click.option(
    "--without",
    multiple=True,
    type=click.Choice(list(stack.STACK_COMPONENTS)),
    help="do not start this component (repeatable)",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="children's log level (a PLANTD_<C>_LOG_LEVEL in the environment wins)",
)
@click.option(
    "--heartbeat-ms",
    type=click.IntRange(50, 600_000),
    default=None,
    help="MDP heartbeat for every component (lower: faster crash detection) "
    f"[default {contract.HEARTBEAT_MS}]",
)
@click.option(
    "--ready-timeout",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="seconds to wait for every /readyz before warning",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(0.5, 600),
    default=10.0,
    show_default=True,
    help="seconds a child gets after SIGTERM before SIGKILL",
)
def up(
    state_dir: Path,
    no_curve: bool,
    auth: str | None,
    redis_url: str | None,
    listen: str,
    port_offset: int,
    without: tuple[str, ...],
    log_level: str,
    heartbeat_ms: int | None,
    ready_timeout: float,
    stop_timeout: float,
) -> None:
    """Run the broker, identity, the echo module, the state service and the gRPC gateway
    (plantd.v1 on 127.0.0.1:50051) on this machine.

    On the first run it creates, under STATE_DIR (all 0600 files in 0700 directories): CURVE
    keys in keys/ (the broker's pair, one per service, and `client` for the `plant` CLI, which
    finds them there by default) with their registry.json; a JWT signing key in jwt/;
    identity's store in identity/; and the first admin, user `admin`, whose random password is
    in STATE_DIR/admin-credentials (never printed). State then refuses every request without a
    token (--auth identity). It prints the endpoints and the login command, waits for every
    /readyz, restarts a crashed component with exponential backoff, and stops everything on
    Ctrl-C or SIGTERM (SIGTERM, then SIGKILL after --stop-timeout). Then, in another terminal:
    `plant auth login -u admin --password-stdin < ~/.local/state/plantd/admin-credentials` and
    `plant state set --service demo key 1`; the banner shows a grpcurl line for the gateway,
    which takes the token `plant auth login` stored. --without gateway leaves it out.
    """
    console = Console(highlight=False)
    if redis_url is not None and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        raise CliError(
            f"--redis {redact_url(redis_url)!r} is not a Redis URL",
            hint="use redis://HOST:PORT/DB, rediss://… (TLS) or unix:///path/to/socket",
            code=ExitCode.USAGE,
        )
    plan = stack.StackPlan(
        state_dir=state_dir.expanduser().resolve(),
        listen=listen,
        port_offset=port_offset,
        curve=not no_curve,
        redis_url=redis_url,
        log_level=log_level,
        heartbeat_ms=heartbeat_ms,
        components=tuple(c for c in stack.STACK_COMPONENTS if c not in without),
    )
    reporter = ConsoleReporter(console, list(plan.components))
    components = available_components(list(plan.components), reporter)
    components = drop_gateway_without_state(components, reporter)
    if not components:
        raise CliError(
            "no component to start",
            hint="this installation has none of broker, identity, echo, state, gateway; check "
            "`plantd version`",
            code=ExitCode.UNAVAILABLE,
        )
    plan = replace(plan, components=tuple(components), auth=resolve_auth(auth, components))
    check_dirs(plan)  # before the ports: a configuration error is reported whatever is running
    check_ports(plan)
    try:
        plan, admin = prepare_state(plan, components, reporter)
    except OSError as exc:
        raise CliError(
            f"cannot prepare the state directory {plan.state_dir}: {exc}",
            hint="fix its permissions, or choose another with --state-dir DIR",
            code=ExitCode.CONFIG,
        ) from exc

    specs = [
        ChildSpec(
            name=c,
            argv=stack.child_argv(sys.executable, c),
            env=stack.child_env(plan, c, os.environ),
            ready_url=plan.ready_url(c),
            tier=stack.tier(c),
        )
        for c in components
    ]
    console.print(banner(plan, components, admin))
    if contract.STATE in components and plan.auth == "off":
        why = "--auth off" if contract.IDENTITY in components else "identity is not running"
        reporter.warn(
            f"state authorization is off ({why}): any caller on the bus may read and write "
            "every scope"
        )
    started = time.monotonic()

    def on_ready() -> None:
        hint = try_hint(plan, components, admin)
        reporter.info(
            f"ready in {time.monotonic() - started:.1f}s — "
            + (f"try {hint} in another terminal; " if hint else "")
            + "Ctrl-C stops everything"
        )

    supervisor = Supervisor(
        specs,
        reporter,
        stop_timeout=stop_timeout,
        ready_timeout=ready_timeout,
        on_ready=on_ready,
    )
    code = asyncio.run(supervisor.run())
    sys.exit(code)
