"""``plant config``: the client config file (profiles; never secrets, only key paths)."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from plantd.cli import config_file, output
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import ENV_PROFILE, get_flags, get_settings

_profile_option = click.option(
    "-p",
    "--profile",
    "profile",
    metavar="NAME",
    default=None,
    help="profile to act on (same as `plant --profile NAME config ...`)",
)


def _path(ctx: click.Context) -> Path:
    return get_flags(ctx).config_path or config_file.default_path()


def _json(ctx: click.Context) -> bool:
    return get_flags(ctx).json_output


def _load(path: Path) -> dict[str, Any]:
    try:
        return config_file.load(path)
    except config_file.ConfigFileError as exc:
        raise CliError(str(exc), hint=f"fix or remove {path}", code=ExitCode.CONFIG) from exc


def _update(path: Path, edit: Any) -> dict[str, Any]:
    try:
        return config_file.update(path, edit)
    except config_file.ConfigFileError as exc:
        raise CliError(str(exc), code=ExitCode.CONFIG) from exc
    except OSError as exc:
        raise CliError(
            f"cannot write {path}: {exc.strerror}",
            hint="check the directory's permissions, or point PLANTD_CONFIG elsewhere",
            code=ExitCode.CONFIG,
        ) from exc


def _target_profile(ctx: click.Context, local: str | None, doc: dict[str, Any]) -> str:
    explicit = local or get_flags(ctx).profile or os.environ.get(ENV_PROFILE) or None
    return config_file.selected_profile(doc, explicit)


@click.group("config")
def config() -> None:
    """Create, show, edit and check the client config file.

    The file ($PLANTD_CONFIG, default ~/.config/plantd/config.yaml, mode 0600) holds named
    profiles of endpoint, timeout, curve and curve_keys (a directory: no secrets in the file).
    Every edit changes one key and keeps the rest of the file; writes are atomic.
    """


@config.command("init")
@click.option("--force", is_flag=True, help="replace an existing file with the defaults")
@click.pass_context
def init(ctx: click.Context, force: bool) -> None:
    """Write a config file with a `default` profile (an existing file is left alone)."""
    path = _path(ctx)
    created = False

    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        nonlocal created
        if doc and not force:
            return doc
        created = True
        return config_file.default_document()

    _update(path, edit)
    if _json(ctx):
        output.print_json({"path": str(path), "created": created})
    elif created:
        click.echo(f"wrote {path}")
    else:
        click.echo(f"{path} already exists; left unchanged (--force replaces it)")


@config.command("show")
@_profile_option
@click.option("--file", "raw", is_flag=True, help="print the file as stored instead")
@click.pass_context
def show(ctx: click.Context, profile: str | None, raw: bool) -> None:
    """Print the settings `plant` would use now, and where each came from."""
    path = _path(ctx)
    if raw:
        doc = _load(path)
        if _json(ctx):
            output.print_json({"path": str(path), "document": doc})
        elif not doc:
            click.echo(f"# {path} does not exist or is empty; defaults apply")
        else:
            click.echo(path.read_text(encoding="utf-8"), nl=False)
        return
    if profile:
        ctx.find_root().meta["plantd.flags"] = replace(get_flags(ctx), profile=profile)
    s = get_settings(ctx)
    values: dict[str, Any] = {
        "endpoint": s.endpoint,
        "timeout": s.timeout,
        "curve": s.curve,
        "curve_keys": str(s.curve_keys),
    }
    if _json(ctx):
        output.print_json(
            {
                "config": str(s.config_path),
                "profile": s.profile,
                "settings": values,
                "sources": s.sources,
            }
        )
        return
    rows = [(k, str(v), s.sources.get(k, "")) for k, v in values.items()]
    title = f"profile {s.profile!r} (file {s.config_path})"
    output.stdout_console().print(
        output.table(
            escape(title), ["key", "value", "from"], [[escape(c) for c in r] for r in rows]
        )
    )


@config.command("set")
@click.argument("key", metavar="KEY")
@click.argument("value", metavar="VALUE")
@_profile_option
@click.pass_context
def set_(ctx: click.Context, key: str, value: str, profile: str | None) -> None:
    """Set one KEY of a profile (creating the file or profile if needed); keep everything else.

    Keys: endpoint, timeout, curve, curve_keys, identity_endpoint; or default_profile.
    """
    path = _path(ctx)
    target = ""

    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        nonlocal target
        target = _target_profile(ctx, profile, doc)
        return config_file.with_value(doc, target, key, value)

    _update(path, edit)
    where = key if key == config_file.TOP_DEFAULT_PROFILE else f"profiles.{target}.{key}"
    if _json(ctx):
        output.print_json({"path": str(path), "key": where, "value": value})
    else:
        click.echo(f"set {where} = {value} in {path}")


@config.command("unset")
@click.argument("key", metavar="KEY")
@_profile_option
@click.pass_context
def unset(ctx: click.Context, key: str, profile: str | None) -> None:
    """Remove one KEY from a profile (its default applies again)."""
    path = _path(ctx)

    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        target = _target_profile(ctx, profile, doc)
        profiles = config_file.profiles(doc)
        if key not in profiles.get(target, {}):
            raise config_file.ConfigFileError(f"profile {target!r} has no key {key!r}")
        profiles[target] = {k: v for k, v in profiles[target].items() if k != key}
        return {**doc, "profiles": profiles}

    _update(path, edit)
    click.echo(f"removed {key} from {path}", err=_json(ctx))


@config.command("validate")
@click.pass_context
def validate(ctx: click.Context) -> None:
    """Check the file: YAML, known keys, valid values, default profile defined, mode 0600."""
    path = _path(ctx)
    if not path.exists():
        if _json(ctx):
            output.print_json({"path": str(path), "exists": False, "problems": []})
        else:
            click.echo(f"{path} does not exist; defaults apply (`plant config init` writes one)")
        return
    doc = _load(path)
    found = config_file.problems(doc, mode=stat.S_IMODE(path.stat().st_mode))
    if _json(ctx):
        output.print_json({"path": str(path), "exists": True, "problems": found})
    if found:
        if not _json(ctx):
            for problem in found:
                click.echo(f"- {problem}", err=True)
        raise CliError(
            f"{path} has {len(found)} problem(s)",
            hint="fix them with `plant config set` or an editor",
            code=ExitCode.CONFIG,
        )
    if not _json(ctx):
        click.echo(f"{path} is valid")


@config.group("profiles")
def profiles_group() -> None:
    """List, create, delete and select profiles."""


@profiles_group.command("list")
@click.pass_context
def profiles_list(ctx: click.Context) -> None:
    """List the profiles in the file (* marks the default)."""
    doc = _load(_path(ctx))
    try:
        all_profiles = config_file.profiles(doc)
    except config_file.ConfigFileError as exc:
        raise CliError(str(exc), code=ExitCode.CONFIG) from exc
    default = config_file.selected_profile(doc, None)
    if _json(ctx):
        output.print_json({"default": default, "profiles": all_profiles})
        return
    if not all_profiles:
        click.echo("no profiles (`plant config init` creates `default`)")
        return
    rows = [
        ("*" if name == default else "", escape(name), escape(str(values.get("endpoint", "-"))))
        for name, values in all_profiles.items()
    ]
    output.stdout_console().print(output.table(None, ["", "profile", "endpoint"], rows))


@profiles_group.command("create")
@click.argument("name")
@click.argument("endpoint")
@click.option("--default", "make_default", is_flag=True, help="also make it the default profile")
@click.pass_context
def profiles_create(ctx: click.Context, name: str, endpoint: str, make_default: bool) -> None:
    """Add profile NAME connecting to ENDPOINT."""
    path = _path(ctx)

    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        if name in config_file.profiles(doc):
            raise config_file.ConfigFileError(
                f"profile {name!r} already exists; change it with `plant config set --profile "
                f"{name} endpoint URL`"
            )
        new = config_file.with_value(doc, name, "endpoint", endpoint)
        if make_default:
            new[config_file.TOP_DEFAULT_PROFILE] = name
        return new

    _update(path, edit)
    click.echo(f"created profile {name} in {path}", err=_json(ctx))


@profiles_group.command("delete")
@click.argument("name")
@click.pass_context
def profiles_delete(ctx: click.Context, name: str) -> None:
    """Remove profile NAME."""
    path = _path(ctx)
    _update(path, lambda doc: config_file.without_profile(doc, name))
    click.echo(f"deleted profile {name} from {path}", err=_json(ctx))


@profiles_group.command("use")
@click.argument("name")
@click.pass_context
def profiles_use(ctx: click.Context, name: str) -> None:
    """Make NAME the default profile."""
    path = _path(ctx)

    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        if name not in config_file.profiles(doc):
            raise config_file.ConfigFileError(f"profile {name!r} does not exist")
        return {**doc, config_file.TOP_DEFAULT_PROFILE: name}

    _update(path, edit)
    click.echo(f"default profile is now {name}", err=_json(ctx))
