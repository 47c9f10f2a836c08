"""A click group whose subcommands live in other packages and are imported on first use.

Why: ``plant --help`` must stay fast (no kopf, no kubernetes client imported), and one component
that fails to import must not take the other commands down with it. A command that cannot be
loaded is replaced by a stand-in that explains what is missing and exits with
``ExitCode.UNAVAILABLE``.
"""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from plantd.cli.errors import CliError, ExitCode


@dataclass(frozen=True)
class LazyCommand:
    """Where a subcommand lives (``"package.module:attribute"``) and its one-line help."""

    import_path: str
    short_help: str

    @property
    def module(self) -> str:
        return self.import_path.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.import_path.partition(":")[2]


def load_command(name: str, spec: LazyCommand) -> click.Command:
    """Import ``spec``; on any failure return a stand-in command that reports why."""
    try:
        module = importlib.import_module(spec.module)
        obj = getattr(module, spec.attribute)
    except ModuleNotFoundError as exc:
        missing = exc.name or spec.module
        if spec.module == missing or spec.module.startswith(missing + "."):
            return unavailable_command(
                name,
                spec,
                f"component {name!r} is not available in this installation "
                f"(module {spec.module} is not installed)",
                "install a plantd build that includes it, or check `plantd version`",
            )
        return _broken(name, spec, exc)
    except Exception as exc:  # any import-time bug in the component
        return _broken(name, spec, exc)
    if not isinstance(obj, click.Command):
        return unavailable_command(
            name,
            spec,
            f"component {name!r} is not usable: {spec.import_path} is a "
            f"{type(obj).__name__}, not a click command",
            "this is a packaging bug; please report it",
        )
    return obj


def _broken(name: str, spec: LazyCommand, exc: BaseException) -> click.Command:
    if os.environ.get("PLANTD_DEBUG"):
        traceback.print_exception(exc)
    return unavailable_command(
        name,
        spec,
        f"component {name!r} failed to load from {spec.import_path}: {type(exc).__name__}: {exc}",
        "set PLANTD_DEBUG=1 to see the traceback",
    )


def unavailable_command(name: str, spec: LazyCommand, message: str, hint: str) -> click.Command:
    """A command that accepts any arguments and fails with ``message``."""

    def callback(**_: Any) -> None:
        raise CliError(message, hint=hint, code=ExitCode.UNAVAILABLE)

    return click.Command(
        name,
        callback=callback,
        help=f"{spec.short_help}\n\nNot available: {message}.",
        short_help=spec.short_help,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class LazyGroup(click.Group):
    """A group mixing ordinary subcommands with ``LazyCommand`` ones."""

    def __init__(
        self,
        *args: Any,
        lazy_commands: Mapping[str, LazyCommand] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, LazyCommand] = dict(lazy_commands or {})
        self._loaded: dict[str, click.Command] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = self.lazy_commands.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = load_command(cmd_name, spec)
        return self._loaded[cmd_name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import anything: take lazy help text from the table.
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            spec = self.lazy_commands.get(name)
            if spec is not None:
                rows.append((name, spec.short_help))
                continue
            cmd = super().get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            rows.append((name, cmd.get_short_help_str(limit=formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
