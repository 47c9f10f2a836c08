"""``plantd``: run plantd components (one per container, or all of them with ``plantd up``).

Every subcommand is imported on first use, so a component that is missing or broken in this
installation only affects itself (it answers with exit code 5 and says why).
"""

from __future__ import annotations

import click

from plantd.cli import entry, version
from plantd.cli.errors import EXIT_CODES_HELP
from plantd.cli.lazy import LazyCommand, LazyGroup
from plantd.common import contract

COMMANDS: dict[str, LazyCommand] = {
    contract.BROKER: LazyCommand("plantd.broker.main:cli", "Run the MDP broker and the buses."),
    contract.ECHO: LazyCommand(
        "plantd.echo.main:cli", f"Run the echo module ({contract.SERVICE_ECHO})."
    ),
    contract.STATE: LazyCommand(
        "plantd.state.main:cli", f"Run the state service ({contract.SERVICE_STATE})."
    ),
    contract.IDENTITY: LazyCommand(
        "plantd.identity.main:cli",
        f"Run the identity service ({contract.SERVICE_IDENTITY}): users, roles, tokens, audit.",
    ),
    contract.GATEWAY: LazyCommand(
        "plantd.gateway.main:cli",
        "Run the gRPC gateway: plantd.v1.StateService, health and reflection (docs/api.md).",
    ),
    contract.OPERATOR: LazyCommand(
        "plantd_operator.main:cli", "Run the Kubernetes operator (PlantdCluster)."
    ),
    "up": LazyCommand(
        "plantd.cli.up:up",
        "Run broker, identity, echo and state locally, supervised and secured.",
    ),
    "keys": LazyCommand("plantd.cli.keys:keys_group", "Generate and list CURVE key pairs."),
}


@click.group(
    "plantd",
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    """Run plantd components: `plantd COMPONENT` in a container, `plantd up` on a workstation.

    Each component reads its settings from flags, PLANTD_<COMPONENT>_<KEY> environment
    variables or an optional YAML file (see `plantd COMPONENT --help`).
    """


@cli.command("version")
@click.option("--json", "json_output", is_flag=True, help="machine-readable output")
def version_cmd(json_output: bool) -> None:
    """Print the plantd, Python and ZeroMQ versions."""
    version.show(json_output)


def main() -> None:
    entry.run(cli, "plantd")


if __name__ == "__main__":
    main()
