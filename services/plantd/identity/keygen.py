"""``python -m plantd.identity.keygen DIR``: create a JWT signing key for ``plantd identity``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from plantd.identity.keys import generate
from plantd.identity.settings import DEFAULT_KEYS_DIR


@click.command("keygen")
@click.argument("directory", type=click.Path(path_type=Path), required=False)
@click.option("--alg", type=click.Choice(["ES256", "EdDSA"]), default="ES256", show_default=True)
@click.option(
    "--state",
    type=click.Choice(["active", "next"]),
    default="active",
    show_default=True,
    help="next: pre-publish a key for a later rotation",
)
@click.option("--kid", default="", help="key id (default: the key's thumbprint)")
def keygen(directory: Path | None, alg: str, state: str, kid: str) -> None:
    """Create a signing key STATE.KID.pem (mode 0600) in DIRECTORY (default: the local one)."""
    target = (directory or Path(DEFAULT_KEYS_DIR)).expanduser()
    try:
        path = generate(target, alg=alg, state=state, kid=kid)
    except (FileExistsError, ValueError, OSError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(4)
    click.echo(str(path))


if __name__ == "__main__":
    keygen(prog_name="python -m plantd.identity.keygen")
