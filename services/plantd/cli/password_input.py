"""Reading passwords for ``plant``: a no-echo prompt on the terminal, or ``--password-stdin``.

Never from argv (other users read it in the process list) and never logged. Standard input is
read with a byte budget: a password is at most 1024 bytes (identity's limit), so more than
``MAX_STDIN_BYTES`` is a mistake (a file piped in by accident), refused before it is used.
"""

from __future__ import annotations

import sys
from typing import Final

import click

from plantd.cli.errors import CliError, ExitCode

MAX_STDIN_BYTES: Final = 4096


def refuse_argv_password(value: str | None) -> None:
    """The original ``plant auth login -p PASSWORD``: refused, with what to do instead."""
    if value is not None:
        raise CliError(
            "a password on the command line is visible to every user of this machine "
            "(process list, shell history): not accepted",
            hint="leave it out to be prompted without echo, or pipe it in with "
            "--password-stdin (e.g. from a secrets manager)",
            code=ExitCode.USAGE,
        )


def stdin_lines(count: int) -> list[str]:
    """``count`` lines from standard input (line ends stripped; nothing else is)."""
    data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
    if len(data) > MAX_STDIN_BYTES:
        raise CliError(
            f"over {MAX_STDIN_BYTES} bytes on standard input: expected {count} password line(s)",
            code=ExitCode.USAGE,
        )
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise CliError("standard input is not UTF-8 text", code=ExitCode.USAGE) from None
    if len(lines) < count or any(not line for line in lines[:count]):
        what = "one line: the password" if count == 1 else f"{count} non-empty lines"
        raise CliError(f"--password-stdin expects {what}", code=ExitCode.USAGE)
    return lines[:count]


def prompt_secret(label: str, *, confirm: bool = False) -> str:
    """Ask on the terminal without echo; refuse when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        raise CliError(
            f"no terminal to ask for the {label.lower()} on",
            hint="pipe it in with --password-stdin",
            code=ExitCode.USAGE,
        )
    value: str = click.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True)
    return value


def prompt_text(label: str, flag: str) -> str:
    """A non-secret value (a username) asked on the terminal, or a usage error naming ``flag``."""
    if not sys.stdin.isatty():
        raise CliError(f"{label} is required: pass {flag}", code=ExitCode.USAGE)
    value: str = click.prompt(label, err=True)
    return value.strip()
