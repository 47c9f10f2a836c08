"""Shared pieces of ``plant user|role|org|module``: record references, how records are shown,
and the one way they call an identity admin operation (:func:`run_admin`, :func:`run_list`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from plantd.cli import output
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.identity_client import admin
from plantd.cli.settings import ClientSettings, get_settings

F = TypeVar("F", bound=Callable[..., Any])
Record = dict[str, Any]


def reference(ref: str, id_field: str, name_field: str) -> dict[str, Any]:
    """A record named on the command line: all digits is an id, anything else its name (pure)."""
    ref = ref.strip()
    if not ref:
        raise CliError("an empty name or id", code=ExitCode.USAGE)
    if ref.isascii() and ref.isdigit():
        if len(ref) > 19 or int(ref) < 1:
            raise CliError(f"id {ref} is out of range", code=ExitCode.USAGE)
        return {id_field: int(ref)}
    return {name_field: ref}


def user_reference(ref: str) -> dict[str, Any]:
    """``42`` -> user_id, ``a@b`` -> email, else username."""
    found = reference(ref, "user_id", "username")
    if "username" in found and "@" in ref:
        return {"email": ref.strip()}
    return found


def role_names(user: dict[str, Any]) -> str:
    roles = user.get("roles") or []
    names = [str(r.get("name")) for r in roles if isinstance(r, dict)]
    return ", ".join(names) or "-"


def role_permissions(role: dict[str, Any]) -> list[str]:
    perms = role.get("permission_list")
    return [str(p) for p in perms] if isinstance(perms, list) else []


def show(settings: ClientSettings, data: dict[str, Any], text: str) -> None:
    if settings.json_output:
        output.print_json(data)
    else:
        sys.stdout.write(output.frame_text(text.encode()) + "\n")
        sys.stdout.flush()


def show_table(
    settings: ClientSettings,
    data: dict[str, Any],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    footer: str | None = None,
) -> None:
    if settings.json_output:
        output.print_json(data)
        return
    from rich.markup import escape

    clean = [[escape(output.frame_text(str(v).encode())) for v in row] for row in rows]
    output.stdout_console().print(output.table(None, list(columns), clean))
    if footer:
        sys.stdout.write(footer + "\n")


def confirm(what: str, yes: bool) -> None:
    """Ask before a destructive change; without a terminal, --yes is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(
            f"refusing to {what} without confirmation", hint="pass --yes", code=ExitCode.USAGE
        )
    if not click.confirm(f"{what}?", err=True):
        raise click.exceptions.Abort()


yes_option = click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")


def page_options(func: F) -> F:
    """``--offset`` and ``--limit`` of a list command (identity pages at most 100 records)."""
    func = click.option("--limit", type=click.IntRange(1, 100), default=50, show_default=True)(func)
    return click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)(func)


def given(**fields: Any) -> dict[str, Any]:
    """The options that were given (not None), in order (pure)."""
    return {k: v for k, v in fields.items() if v is not None}


def described(key: str, line: Callable[[Record], str], prefix: str = "") -> Callable[[Record], str]:
    """The human line of a reply carrying one record under ``key``: ``prefix`` + its line."""
    return lambda data: prefix + line(data.get(key) or {})


def nothing_to_change(options: str) -> CliError:
    return CliError("nothing to change", hint=f"pass {options}", code=ExitCode.USAGE)


def run_admin(
    category: str,
    operation: str,
    body: dict[str, Any] | None,
    text: str | Callable[[Record], str],
    *,
    settings: ClientSettings | None = None,
    shown: Mapping[str, Any] | None = None,
    what: str | None = None,
    hints: Mapping[str, str] | None = None,
) -> Record:
    """Call one identity admin operation with the caller's token and show the result.

    ``text`` is the human line (or makes it from the reply's ``data``); ``--json`` prints
    ``shown`` merged with ``data``. Identity's refusal leaves as a ``CliError`` with a hint
    (``what`` and ``hints`` as in :func:`plantd.cli.identity_client.admin`)."""
    settings = settings or get_settings()
    data = admin(settings, category, operation, body, what=what, hints=hints)
    show(settings, {**(shown or {}), **data}, text if isinstance(text, str) else text(data))
    return data


def run_list(
    category: str,
    body: dict[str, Any],
    key: str,
    columns: Sequence[str],
    row: Callable[[Record], Sequence[Any]],
    *,
    footer: Callable[[Record, list[Record]], str | None] | None = None,
    what: str | None = None,
    hints: Mapping[str, str] | None = None,
) -> list[Record]:
    """``CATEGORY/list``: the records under ``key`` as a table (one ``row`` each), or JSON."""
    settings = get_settings()
    data = admin(settings, category, "list", body, what=what, hints=hints)
    records = [r for r in data.get(key) or [] if isinstance(r, dict)]
    rows = [row(r) for r in records]
    show_table(settings, data, columns, rows, footer(data, records) if footer else None)
    return records
