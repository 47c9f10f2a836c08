"""How ``plant`` decides where to connect: flags > environment > config profile > defaults.

Environment variables follow the project scheme ``PLANTD_<COMPONENT>_<KEY>`` with component
``client``: ``PLANTD_CLIENT_ENDPOINT``, ``PLANTD_CLIENT_TIMEOUT``, ``PLANTD_CLIENT_PROFILE``,
``PLANTD_CLIENT_CURVE``, ``PLANTD_CLIENT_CURVE_KEYS``, ``PLANTD_CLIENT_DIALECT``; the file is
``$PLANTD_CONFIG``. An access token (``--token`` / ``PLANTD_CLIENT_TOKEN``) comes from the flag or
the environment only, never from the config file (which holds no secrets); without one,
``plantd.cli.credentials.token_for_request`` uses what ``plant auth login`` stored.

The config file can turn CURVE off or point ``plant`` at another broker and key directory, so
one that group or others can write gets a warning on stderr, and is refused (exit 4) when it is
writable by *other* users and its profile is what turns CURVE off: then a stranger decides that
requests go out in plaintext. A flag or env var that sets ``curve`` lifts the refusal (the file
no longer decides it); the warning stays.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from plantd.cli import config_file
from plantd.cli.errors import CliError, ExitCode
from plantd.common import contract

ENV_ENDPOINT = contract.env_key(contract.CLIENT, contract.KEY_ENDPOINT)
ENV_TIMEOUT = contract.env_key(contract.CLIENT, contract.KEY_TIMEOUT)
ENV_PROFILE = contract.env_key(contract.CLIENT, contract.KEY_PROFILE)
ENV_CURVE = contract.env_key(contract.CLIENT, contract.KEY_CURVE)
ENV_CURVE_KEYS = contract.env_key(contract.CLIENT, contract.KEY_CURVE_KEYS)
ENV_DIALECT = contract.env_key(contract.CLIENT, contract.KEY_DIALECT)
ENV_TOKEN = contract.env_key(contract.CLIENT, "token")
MAX_TOKEN_CHARS = 8192  # the verifier's limit (plantd.common.auth): longer is refused unread

_ENV_BY_KEY = {
    "endpoint": ENV_ENDPOINT,
    "timeout": ENV_TIMEOUT,
    "curve": ENV_CURVE,
    "curve_keys": ENV_CURVE_KEYS,
    "dialect": ENV_DIALECT,
}


@dataclass(frozen=True)
class GlobalFlags:
    """The root options as given on the command line (``None``: not given)."""

    endpoint: str | None = None
    timeout: float | None = None
    profile: str | None = None
    curve: bool | None = None
    curve_keys: str | None = None
    json_output: bool = False
    config_path: Path | None = None
    verbose: bool = False
    dialect: str | None = None
    token: str | None = field(default=None, repr=False)  # a secret: never in a repr or log


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to open a client, with where each value came from."""

    endpoint: str
    timeout: float
    profile: str
    curve: bool
    curve_keys: Path
    json_output: bool
    config_path: Path
    sources: dict[str, str] = field(default_factory=dict)
    verbose: bool = False
    dialect: str = "mdp02"  # config_file.DIALECTS; plantd.mdp.Dialect by label
    token: str | None = field(default=None, repr=False)  # --token / PLANTD_CLIENT_TOKEN


def resolve(
    flags: GlobalFlags,
    env: Mapping[str, str] | None = None,
    document: Mapping[str, Any] | None = None,
) -> ClientSettings:
    """Merge the four layers; raises ``CliError`` (exit 4) naming the bad value and its source."""
    env = os.environ if env is None else env
    path = flags.config_path or config_file.default_path(env)
    try:
        doc = config_file.load(path) if document is None else dict(document)
        all_profiles = config_file.profiles(doc)
    except config_file.ConfigFileError as exc:
        raise CliError(str(exc), hint=f"fix or remove {path}", code=ExitCode.CONFIG) from exc

    explicit = flags.profile or env.get(ENV_PROFILE) or None
    profile = config_file.selected_profile(doc, explicit)
    if explicit and explicit not in all_profiles:
        raise CliError(
            f"profile {explicit!r} is not defined in {path}",
            hint=f"create it with `plant config profiles create {explicit} ENDPOINT`, "
            "or list profiles with `plant config profiles list`",
            code=ExitCode.CONFIG,
        )
    from_profile = all_profiles.get(profile, {})

    flag_values: dict[str, Any] = {
        "endpoint": flags.endpoint,
        "timeout": flags.timeout,
        "curve": flags.curve,
        "curve_keys": flags.curve_keys,
        "dialect": flags.dialect,
    }
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, default in config_file.DEFAULTS.items():
        layers: list[tuple[str, Any]] = [
            ("flag", flag_values[key]),
            (f"env {_ENV_BY_KEY[key]}", env.get(_ENV_BY_KEY[key]) or None),
            (f"profile {profile!r} in {path}", from_profile.get(key)),
            ("default", default),
        ]
        source, raw = next((s, v) for s, v in layers if v is not None)
        try:
            values[key] = config_file.parse_value(key, raw)
        except config_file.ConfigFileError as exc:
            # A bad value typed on the command line is a usage error (exit 2, e.g. `plant
            # --endpoint tcp://[::1`); from the environment or the file it is configuration (4).
            code = ExitCode.USAGE if source == "flag" else ExitCode.CONFIG
            raise CliError(f"{exc} (from {source})", hint="correct or unset it", code=code) from exc
        sources[key] = source
    token = _token(flags, env, sources)
    if document is None:
        _check_file_mode(
            path, curve_from_file=values["curve"] is False and "profile" in sources["curve"]
        )
    return ClientSettings(
        endpoint=values["endpoint"],
        timeout=values["timeout"],
        profile=profile,
        curve=values["curve"],
        curve_keys=Path(values["curve_keys"]).expanduser(),
        json_output=flags.json_output,
        config_path=path,
        sources=sources,
        verbose=flags.verbose,
        dialect=values["dialect"],
        token=token,
    )


def _token(flags: GlobalFlags, env: Mapping[str, str], sources: dict[str, str]) -> str | None:
    """``--token`` or ``PLANTD_CLIENT_TOKEN`` (stripped), checked for size and charset."""
    source, raw = ("flag", flags.token) if flags.token else (f"env {ENV_TOKEN}", env.get(ENV_TOKEN))
    token = (raw or "").strip()
    if not token:
        return None
    # A JWT is base64url and dots: anything else (a pasted header, a newline inside) is a
    # mistake that would otherwise reach the service and come back as a vaguer refusal.
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or any(c.isspace() for c in token):
        raise CliError(
            f"the token (from {source}) is not an access token: over {MAX_TOKEN_CHARS} "
            "characters, or not ASCII without spaces",
            hint="pass the access_token alone, or drop it and use `plant auth login`",
            code=ExitCode.USAGE if source == "flag" else ExitCode.CONFIG,
        )
    sources["token"] = source
    return token


def _check_file_mode(path: Path, *, curve_from_file: bool) -> None:
    """Warn about a config file group/other can write; refuse it when a stranger's edit is
    what turns CURVE off (see the module docstring)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing (defaults) or unreadable (load() already said so)
    if not mode & (stat.S_IWGRP | stat.S_IWOTH):
        return
    shown = f"{stat.S_IMODE(mode):o}"
    if mode & stat.S_IWOTH and curve_from_file:
        raise CliError(
            f"refusing {path}: it is writable by other users (mode {shown}) and it turns "
            "CURVE off, so anyone on this machine could send your requests in plaintext",
            hint=f"run `chmod 600 {path}`; or pass --no-curve yourself if you mean it",
            code=ExitCode.CONFIG,
        )
    sys.stderr.write(
        f"plant: warning: {path} is writable by group or other users (mode {shown}); "
        f"whoever can edit it can turn CURVE off or redirect plant. Run `chmod 600 {path}`\n"
    )


def get_flags(ctx: click.Context) -> GlobalFlags:
    flags = ctx.find_root().meta.get("plantd.flags")
    return flags if isinstance(flags, GlobalFlags) else GlobalFlags()


def get_settings(ctx: click.Context | None = None) -> ClientSettings:
    """The resolved client settings for this invocation (cached on the root context).

    Public: command groups registered into ``plant`` from other packages (``plant state``) call
    this to connect the same way every other ``plant`` command does.
    """
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    cached = root.meta.get("plantd.settings")
    if isinstance(cached, ClientSettings):
        return cached
    settings = resolve(get_flags(ctx))
    root.meta["plantd.settings"] = settings
    return settings
