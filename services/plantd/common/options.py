"""Click commands generated from settings classes, so every setting has a flag.

``service_command(BrokerSettings, main, name="broker", help=...)`` builds a command with one option
per field (``http_port`` -> ``--http-port``, booleans as ``--curve/--no-curve``, ``Literal`` as a
choice) plus ``--config FILE``. Each option's help gives the field description, its environment
variable and its default. Only flags the user typed are passed on as overrides, so the
precedence flag > env > file > default holds (see :mod:`plantd.common.config`).
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click
from click.core import ParameterSource
from pydantic.fields import FieldInfo

from plantd.common.config import ConfigError, ServiceSettings
from plantd.common.service import LoopFactory, ServiceMain, run_service

EXIT_USAGE = 2


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if isinstance(value, dict):
        return ",".join(f"{k}={a}:{b}" for k, (a, b) in value.items())
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def settings_options(
    settings_cls: type[ServiceSettings],
) -> Callable[[click.Command], click.Command]:
    """Add an option per setting of ``settings_cls`` (and ``--config``) to a click command."""

    def decorate(cmd: click.Command) -> click.Command:
        params: list[click.Parameter] = []
        for name, info in settings_cls.model_fields.items():
            if name in settings_cls.cli_hidden:
                continue
            env = settings_cls.env_name(name)
            help_text = f"{info.description or name} [env {env}; default {_default_text(info)}]"
            opt = _option_name(name)
            annotation = info.annotation
            if annotation is bool:
                params.append(
                    click.Option([f"{opt}/--no-{opt[2:]}", name], default=None, help=help_text)
                )
                continue
            ptype: click.ParamType[Any, Any]
            if typing.get_origin(annotation) is Literal:
                ptype = click.Choice(
                    [str(a) for a in typing.get_args(annotation)], case_sensitive=False
                )
            elif annotation is int:
                ptype = click.INT
            elif annotation is Path:
                ptype = click.Path(path_type=Path)
            else:
                ptype = click.STRING
            params.append(click.Option([opt, name], type=ptype, default=None, help=help_text))
        params.append(
            click.Option(
                ["--config", "config_file"],
                type=click.Path(path_type=Path, dir_okay=False),
                default=None,
                help=f"optional YAML settings file [env {settings_cls.env_name('config')}]",
            )
        )
        cmd.params.extend(params)
        return cmd

    return decorate


def typed_flags(ctx: click.Context, settings_cls: type[ServiceSettings]) -> dict[str, Any]:
    """The settings the user gave on the command line (not click defaults)."""
    out: dict[str, Any] = {}
    for name in settings_cls.model_fields:
        if name in ctx.params and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            out[name] = ctx.params[name]
    return out


def load_from_click(ctx: click.Context, settings_cls: type[ServiceSettings]) -> ServiceSettings:
    """Resolve settings for a command built with :func:`settings_options`; exit 2 on bad input."""
    try:
        return settings_cls.load(
            config_file=ctx.params.get("config_file"), flags=typed_flags(ctx, settings_cls)
        )
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_USAGE)
        raise AssertionError("unreachable") from exc  # ctx.exit raises


def service_command(
    settings_cls: type[ServiceSettings],
    main: ServiceMain,
    *,
    name: str,
    help: str,
    grace_s: Callable[[ServiceSettings], float] | None = None,
    loop_factory: Callable[[ServiceSettings], LoopFactory | None] | None = None,
) -> click.Command:
    """A click command that loads ``settings_cls`` and runs ``main`` with the service runner.

    ``grace_s`` maps the settings to how long a stop may take before ``main`` is cancelled;
    ``loop_factory`` to the event loop to run on (None: asyncio's own).
    """
    epilog = (
        "Every option can also come from its environment variable or from a YAML file "
        "(--config); precedence: option > environment > file > default. "
        "Exit status: 0 after SIGTERM/SIGINT, 1 on failure, 2 on bad settings."
    )

    @click.pass_context
    def callback(ctx: click.Context, /, **_: Any) -> None:
        settings = load_from_click(ctx, settings_cls)
        grace = grace_s(settings) if grace_s is not None else 10.0
        factory = loop_factory(settings) if loop_factory is not None else None
        sys.exit(run_service(settings, main, grace_s=grace, loop_factory=factory))

    cmd = click.Command(
        name=name,
        callback=callback,
        help=help,
        epilog=epilog,
        # A fixed width, not the terminal's (80 when piped): the help names each setting's
        # environment variable, and a narrower column would break the longest ones in two
        # (PLANTD_GATEWAY_RATE_LIMIT_REDIS_PASSWORD_FILE), which nobody can then paste.
        context_settings={"terminal_width": 100, "max_content_width": 100, "show_default": False},
    )
    settings_options(settings_cls)(cmd)
    return cmd
