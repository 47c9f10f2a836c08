"""``plant state ...``: the state service from the command line (a thin layer over StateClient).

The original ``plant state`` commands and flag (``--service``, default ``org.plantd.Client``)
are kept; batch, watch and history commands are new. With ``plant --json`` every command prints
the reply's ``data`` object (watch: one JSON object per line).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from plantd.cli import output
from plantd.cli.connect import curve_client, session
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import ClientSettings, get_settings
from plantd.common import contract
from plantd.state.client import StateClient, StateReplyError

DEFAULT_SCOPE = "org.plantd.Client"  # the original CLI's default
ENV_BUS = contract.env_key(contract.CLIENT, "state_bus_endpoint")

_service_opt = click.option(
    "-s",
    "--service",
    "scope",
    default=DEFAULT_SCOPE,
    show_default=True,
    metavar="SCOPE",
    help="the scope (conventionally the owning service's name)",
)


# A stored login is re-read at most this often (a long `watch` keeps a refreshed token).
TOKEN_REREAD_S = 30.0


def _token_source(settings: ClientSettings) -> Callable[[], str | None]:
    """The access token to send (``--token``, PLANTD_CLIENT_TOKEN or `plant auth login`'s),
    resolved on first use and again every TOKEN_REREAD_S."""
    from plantd.cli.credentials import token_for_request

    cached: list[tuple[float, str | None]] = []

    def current() -> str | None:
        now = time.monotonic()
        if not cached or now - cached[0][0] >= TOKEN_REREAD_S:
            cached[:] = [(now, token_for_request(settings))]
        return cached[0][1]

    return current


@contextmanager
def _state() -> Iterator[tuple[StateClient, ClientSettings]]:
    """A StateClient whose error replies leave as CliError (exit 1, code in --json)."""
    settings = get_settings()
    token = _token_source(settings)
    with session(settings) as mdp:
        try:
            yield StateClient(mdp, token=token), settings
        except StateReplyError as exc:
            hint = _HINTS.get(exc.code)
            if exc.code == "PERMISSION_DENIED" and token() is None:
                hint = _HINTS["UNAUTHENTICATED"]  # judged by the CLI's key alone: not logged in
            raise CliError(
                exc.message,
                hint=hint,
                code=ExitCode.ERROR_REPLY,
                details={"code": exc.code, **({"field": exc.field} if exc.field else {})},
            ) from exc


_HINTS = {
    "SCOPE_NOT_FOUND": "`plant state list-scopes` shows the scopes; `create-scope` makes one",
    "CONFLICT": "someone changed the key first: read it again and retry with its version",
    "STORE_UNAVAILABLE": "the state service cannot reach its store; retry shortly",
    "VALUE_TOO_LARGE": "split the data or the batch (limits: docs/state.md)",
    "REPLY_TOO_LARGE": "ask for fewer keys, or page with `plant state list` and batch-get",
    "UNAUTHENTICATED": "run `plant auth login` (or pass --token / PLANTD_CLIENT_TOKEN)",
    "PERMISSION_DENIED": "`plant auth whoami` shows your permissions; ask an administrator",
}


def _show(settings: ClientSettings, data: dict[str, Any], text: str) -> None:
    if settings.json_output:
        output.print_json(data)
    else:
        sys.stdout.write(text + "\n")


@click.group("state")
def state() -> None:
    """Read and write the state service (org.plantd.State): scoped keys and values.

    Every key lives in a scope (--service, default org.plantd.Client). Writes return the key's
    new version; pass it back with --if-version for compare-and-set.
    """


@state.command("get")
@click.argument("key")
@_service_opt
def get(key: str, scope: str) -> None:
    """Print the value of KEY; a missing key exits 1 (with --json: prints found=false)."""
    with _state() as (client, settings):
        data = client.get(scope, key)
    if not data.get("found", True) and not settings.json_output:
        raise CliError(
            f"key {key!r} is not set in scope {scope!r}",
            hint=f"`plant state list --service {scope}` lists its keys",
            code=ExitCode.ERROR_REPLY,
            details={"code": "KEY_NOT_FOUND"},
        )
    _show(settings, data, str(data.get("value", "")))


@state.command("set")
@click.argument("key")
@click.argument("value")
@_service_opt
@click.option("--ttl-ms", type=click.IntRange(min=1), help="delete the key after this long")
@click.option(
    "--if-version",
    type=click.IntRange(min=0),
    help="write only if the key is at this version (0: only if it does not exist)",
)
@click.option(
    "--create/--no-create", default=True, help="create the scope if missing [default: create]"
)
def set_(
    key: str, value: str, scope: str, ttl_ms: int | None, if_version: int | None, create: bool
) -> None:
    """Set KEY to VALUE."""
    with _state() as (client, settings):
        data = client.set(
            scope,
            key,
            value,
            ttl_ms=ttl_ms,
            if_version=if_version,
            create=None if create else False,
        )
    _show(settings, data, f"{scope} {key} = {value} (version {data.get('version')})")


@state.command("delete")
@click.argument("key")
@_service_opt
@click.option("--if-version", type=click.IntRange(min=0), help="delete only at this version")
def delete(key: str, scope: str, if_version: int | None) -> None:
    """Delete KEY (succeeds when it is already gone; --json says found=false)."""
    with _state() as (client, settings):
        data = client.delete(scope, key, if_version=if_version)
    found = "deleted" if data.get("found") else "was not set"
    _show(settings, data, f"{scope} {key} {found}")


@state.command("list")
@_service_opt
@click.option("--prefix", default=None, help="only keys starting with this")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most this many")
@click.option("--cursor", default=None, help="continue after this key (a previous next_cursor)")
def list_keys(scope: str, prefix: str | None, limit: int | None, cursor: str | None) -> None:
    """List the keys of a scope, sorted."""
    with _state() as (client, settings):
        data = client.list_keys(scope, prefix=prefix, limit=limit, cursor=cursor)
    lines = [str(k) for k in data.get("keys", [])]
    if data.get("next_cursor"):
        lines.append(f"(more: --cursor {data['next_cursor']})")
    _show(settings, data, "\n".join(lines) if lines else f"(scope {scope} has no keys)")


@state.command("create-scope")
@_service_opt
def create_scope(scope: str) -> None:
    """Create a scope."""
    with _state() as (client, settings):
        data = client.create_scope(scope)
    _show(settings, data, f"created scope {scope}")


@state.command("delete-scope")
@_service_opt
def delete_scope(scope: str) -> None:
    """Delete a scope and every key in it."""
    with _state() as (client, settings):
        data = client.delete_scope(scope)
    _show(settings, data, f"deleted scope {scope}")


@state.command("list-scopes")
def list_scopes() -> None:
    """List the scopes."""
    with _state() as (client, settings):
        data = client.call("list-scopes")
    scopes = [str(s) for s in data.get("scopes", [])]
    _show(settings, data, "\n".join(scopes) if scopes else "(no scopes)")


def _read_json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", code=ExitCode.USAGE) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        src = "stdin" if path == "-" else path
        raise CliError(f"{src} is not valid JSON: {exc}", code=ExitCode.USAGE) from exc


@state.command("batch-get")
@click.argument("keys", nargs=-1)
@_service_opt
@click.option(
    "--file",
    "path",
    default=None,
    metavar="FILE",
    help="JSON array of keys ('-' = stdin); instead of KEY arguments",
)
def batch_get(keys: tuple[str, ...], scope: str, path: str | None) -> None:
    """Read many keys in one request: KEY... or a JSON array from --file (or stdin with -)."""
    wanted: list[Any] = list(keys)
    if path is not None:
        doc = _read_json(path)
        if not isinstance(doc, list):
            raise CliError("the keys file must hold a JSON array of strings", code=ExitCode.USAGE)
        wanted += doc
    if not wanted:
        raise CliError("no keys given", hint="pass KEY... or --file FILE", code=ExitCode.USAGE)
    with _state() as (client, settings):
        data = client.batch_get(scope, wanted)
    lines = [
        f"{it['key']} = {it['value']}" if it.get("found") else f"{it['key']} (not set)"
        for it in data.get("items", [])
    ]
    _show(settings, data, "\n".join(lines))


@state.command("batch-set")
@_service_opt
@click.option(
    "--file",
    "path",
    default="-",
    show_default=True,
    metavar="FILE",
    help="JSON: {key: value, ...} or [{key, value, ttl_ms?, if_version?}, ...]; '-' = stdin",
)
def batch_set(scope: str, path: str) -> None:
    """Write many keys atomically (all or nothing) from a JSON file or stdin."""
    doc = _read_json(path)
    if isinstance(doc, dict):
        items: list[Any] = [{"key": k, "value": v} for k, v in doc.items()]
    elif isinstance(doc, list):
        items = doc
    else:
        raise CliError(
            "batch-set input must be a JSON object or an array of {key, value} objects",
            code=ExitCode.USAGE,
        )
    with _state() as (client, settings):
        data = client.batch_set(scope, items)
    _show(
        settings, data, f"set {data.get('count')} keys in {scope} (revision {data.get('revision')})"
    )


@state.command("history")
@_service_opt
@click.option("--since", type=click.IntRange(min=0), default=0, show_default=True)
def history(scope: str, since: int) -> None:
    """Print the scope's retained changes after revision --since."""
    with _state() as (client, settings):
        data = client.changes_since(scope, since)
    if settings.json_output:
        output.print_json(data)
        return
    if data.get("compacted"):
        raise CliError(
            f"history before revision {data.get('oldest')} was compacted",
            hint="use a later --since, or `plant state watch --snapshot`",
            details={"code": "REVISION_COMPACTED"},
        )
    for ch in data.get("changes", []):
        sys.stdout.write(_change_line(ch) + "\n")


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: object) -> str:
    """Control characters escaped: a value must not move the cursor or retitle the terminal."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _change_line(ch: dict[str, Any]) -> str:
    op = _printable(ch.get("op"))
    key = _printable(ch.get("key"))
    if op == "set":
        return f"{ch['revision']} set {key} = {_printable(ch.get('value'))}"
    if op in ("delete", "expire"):
        return f"{ch['revision']} {op} {key}"
    return f"{ch['revision']} {op}"


def bus_endpoint_for(settings: ClientSettings, given: str | None) -> str:
    """The state bus subscriber endpoint: flag, env, else derived from the broker endpoint.

    Derived: the broker's host, and port 11001 shifted as the broker's is from 9797 (`plantd up
    --port-offset N` moves every port by N).
    """
    if given:
        return given
    m = re.match(r"^tcp://(.+):(\d+)$", settings.endpoint)
    if m is None:
        return f"tcp://127.0.0.1:{contract.BUS_PORTS['state'][1]}"
    offset = int(m.group(2)) - contract.MDP_PORT
    port = contract.BUS_PORTS["state"][1] + offset
    if not 1 <= port <= 65535:
        port = contract.BUS_PORTS["state"][1]
    return f"tcp://{m.group(1)}:{port}"


@state.command("watch")
@_service_opt
@click.option(
    "--bus-endpoint",
    envvar=ENV_BUS,
    default=None,
    metavar="URL",
    help=f"state bus subscriber endpoint [env {ENV_BUS}; default: the broker's host, port "
    f"{contract.BUS_PORTS['state'][1]} plus the broker port's offset from {contract.MDP_PORT}]",
)
@click.option(
    "--from-revision",
    type=click.IntRange(min=0),
    default=None,
    help="resume after this revision (replays the retained history first)",
)
@click.option("--snapshot", is_flag=True, help="print the current keys first")
@click.option("--count", type=click.IntRange(min=1), default=None, help="stop after N changes")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.01),
    default=None,
    metavar="SECONDS",
    help="stop when nothing changed for this long",
)
def watch(
    scope: str,
    bus_endpoint: str | None,
    from_revision: int | None,
    snapshot: bool,
    count: int | None,
    idle_timeout: float | None,
) -> None:
    """Stream the scope's changes, in order, without gaps (Ctrl-C to stop).

    Lines: REVISION OP KEY = VALUE. --json: one object per line
    {kind, scope, op, key, value, version, revision, ts}; kind is change, snapshot (with
    --snapshot or after compaction) or compacted (history no longer reached back: the scope
    follows as snapshot lines).
    """
    from plantd.bus import Subscriber
    from plantd.state.watch import Watcher

    settings = get_settings()
    endpoint = bus_endpoint_for(settings, bus_endpoint)
    subscriber = Subscriber(endpoint, [scope], curve=curve_client(settings))
    seen = 0
    watcher: Watcher | None = None
    try:
        with _state() as (client, _):
            watcher = Watcher(
                client, subscriber, scope, from_revision=from_revision, snapshot=snapshot
            )
            for ev in watcher.events(idle_timeout=idle_timeout):
                if settings.json_output:
                    output.print_json(ev.to_json())
                else:
                    sys.stdout.write(_watch_line(ev.to_json()) + "\n")
                    sys.stdout.flush()
                if ev.kind == "change":
                    seen += 1
                    if count is not None and seen >= count:
                        return
    finally:
        subscriber.close()
        if watcher is not None and watcher.skipped:
            sys.stderr.write(
                f"skipped {watcher.skipped} bus message(s) that were not valid change events\n"
            )


def _watch_line(ev: dict[str, Any]) -> str:
    if ev["kind"] == "snapshot":
        return f"{ev['revision']} snapshot {_printable(ev['key'])} = {_printable(ev['value'])}"
    if ev["kind"] == "compacted":
        return f"{ev['revision']} compacted (changes were missed; the scope follows)"
    return _change_line(ev)


@state.command("health")
@_service_opt
def health(scope: str) -> None:
    """Ask the state service whether it and its store are healthy."""
    with _state() as (client, settings):
        data = client.health(scope)
    _show(
        settings,
        data,
        f"{data.get('status')} (store {data.get('store')}: "
        f"{'up' if data.get('store_available') else 'DOWN'})",
    )
    if data.get("status") != "healthy":
        raise SystemExit(int(ExitCode.ERROR_REPLY))
