"""Running a click group as a program, with plantd's exit codes (130 on Ctrl-C, not 1)."""

from __future__ import annotations

import sys

import click

from plantd.cli.errors import ExitCode


def run(group: click.Command, prog_name: str, args: list[str] | None = None) -> None:
    """Invoke ``group`` and exit with its code; never returns."""
    try:
        rv = group.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `plant services | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        sys.exit(ExitCode.OK)
    sys.exit(rv if isinstance(rv, int) else ExitCode.OK)
