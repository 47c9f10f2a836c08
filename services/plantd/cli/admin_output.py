"""Shared pieces of ``plant user|role|org``: record references and how records are shown."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from plantd.cli import output
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import ClientSettings


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
