"""``plant``: the command-line client of a plantd bus.

Where it connects, highest precedence first: flags (``--endpoint``, ``--timeout``,
``--curve-keys``, ``--no-curve``, ``--dialect``), environment (``PLANTD_CLIENT_ENDPOINT``,
``PLANTD_CLIENT_TIMEOUT``, ``PLANTD_CLIENT_PROFILE``, ``PLANTD_CLIENT_CURVE``,
``PLANTD_CLIENT_CURVE_KEYS``, ``PLANTD_CLIENT_DIALECT``), the selected profile of the config
file (``$PLANTD_CONFIG`` or ``~/.config/plantd/config.yaml``), then defaults
(tcp://127.0.0.1:9797, 2.5 s, CURVE with the keys `plantd up` writes to
~/.local/state/plantd/keys, MDP/0.2). The access token a request carries: ``--token`` /
``PLANTD_CLIENT_TOKEN``, else the profile's ``plant auth login`` (``plantd.cli.credentials``).
"""

from __future__ import annotations

from pathlib import Path

import click

from plantd.cli import entry, version
from plantd.cli.errors import EXIT_CODES_HELP
from plantd.cli.lazy import LazyCommand, LazyGroup
from plantd.cli.settings import GlobalFlags
from plantd.common import contract

COMMANDS: dict[str, LazyCommand] = {
    "echo": LazyCommand(
        "plantd.cli.bus_cmd:echo", "Send MSG... to the echo module; print the reply."
    ),
    "services": LazyCommand(
        "plantd.cli.bus_cmd:services", "List the services registered with the broker."
    ),
    "request": LazyCommand(
        "plantd.cli.bus_cmd:request", "Send raw frames to a service; print the reply frames."
    ),
    "config": LazyCommand(
        "plantd.cli.config_cmd:config", "Create, show, edit and check the client config file."
    ),
    "state": LazyCommand(
        "plantd.state.cli:state", f"Read and write the state service ({contract.SERVICE_STATE})."
    ),
    "auth": LazyCommand(
        "plantd.cli.auth_cmd:auth", "Log in and out, show and check who you are (identity)."
    ),
    "user": LazyCommand("plantd.cli.user_cmd:user", "Manage user accounts (identity)."),
    "role": LazyCommand("plantd.cli.role_cmd:role", "Manage roles and their permissions."),
    "org": LazyCommand("plantd.cli.role_cmd:org", "Manage organizations."),
    "module": LazyCommand(
        "plantd.cli.module_cmd:module", "Enrol machine identities (module CURVE keys)."
    ),
    "audit": LazyCommand("plantd.cli.audit_cmd:audit", "Watch identity's audit events."),
}


@click.group(
    "plant",
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "-e",
    "--endpoint",
    metavar="URL",
    help="broker endpoint, or several comma-separated (docs/ha.md) "
    f"[env PLANTD_CLIENT_ENDPOINT; default {contract.DEFAULT_BROKER_CONNECT}]",
)
@click.option(
    "-t",
    "--timeout",
    type=click.FloatRange(min=0.001, max=3600),
    metavar="SECONDS",
    help="how long to wait for a reply [env PLANTD_CLIENT_TIMEOUT; default 2.5]",
)
@click.option(
    "-p",
    "--profile",
    metavar="NAME",
    help="config file profile to use "
    "[env PLANTD_CLIENT_PROFILE; default: the file's default_profile]",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="config file [env PLANTD_CONFIG; default ~/.config/plantd/config.yaml]",
)
@click.option(
    "--curve-keys",
    metavar="DIR",
    help="directory with client.key_secret and broker.key "
    f"[env PLANTD_CLIENT_CURVE_KEYS; default {contract.DEFAULT_CURVE_KEYS_DIR}]",
)
@click.option(
    "--curve/--no-curve",
    default=None,
    help="encrypt and authenticate with CURVE [env PLANTD_CLIENT_CURVE; default on]",
)
@click.option(
    "--dialect",
    type=click.Choice(["mdp02", "mdp01", "legacy"], case_sensitive=False),
    help="MDP dialect: mdp02 (RFC 18), mdp01 (RFC 7) or legacy (an original Go plantd broker) "
    "[env PLANTD_CLIENT_DIALECT; default mdp02]",
)
@click.option(
    "--token",
    metavar="JWT",
    help="access token to send instead of the one `plant auth login` stored [env "
    "PLANTD_CLIENT_TOKEN, preferred: other users can read a flag in the process list]",
)
@click.option("--json", "json_output", is_flag=True, help="machine-readable output (JSON)")
@click.option(
    "-v", "--verbose", is_flag=True, help="print where requests go and how long they take (stderr)"
)
@click.pass_context
def cli(
    ctx: click.Context,
    endpoint: str | None,
    timeout: float | None,
    profile: str | None,
    config_path: Path | None,
    curve_keys: str | None,
    curve: bool | None,
    dialect: str | None,
    token: str | None,
    json_output: bool,
    verbose: bool,
) -> None:
    """Talk to a plantd bus: echo, list services, send raw requests, use the state service.

    Settings come from flags, then PLANTD_CLIENT_* environment variables, then the selected
    profile of the config file, then defaults; `plant config show` prints the result.
    """
    ctx.meta["plantd.json"] = json_output
    ctx.meta["plantd.flags"] = GlobalFlags(
        endpoint=endpoint,
        timeout=timeout,
        profile=profile,
        curve=curve,
        curve_keys=curve_keys,
        json_output=json_output,
        config_path=config_path.expanduser() if config_path else None,
        verbose=verbose,
        dialect=dialect.lower() if dialect else None,
        token=token,
    )


@cli.command("version")
@click.pass_context
def version_cmd(ctx: click.Context) -> None:
    """Print the plantd, Python and ZeroMQ versions."""
    version.show(bool(ctx.find_root().meta.get("plantd.json")))


def main() -> None:
    entry.run(cli, "plant")


if __name__ == "__main__":
    main()
