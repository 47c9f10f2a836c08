"""``plantd keys``: CURVE key pairs for the bus, in the layout every plantd process reads.

Layout (flat, the same as a pod's CURVE directory; see ``contract.CURVE_*_SUFFIX``)::

    KEYS_DIR/broker.key         broker public key (every client needs it)
    KEYS_DIR/broker.key_secret  broker key pair (mode 0600)
    KEYS_DIR/NAME.key           a client's public key: the broker admits every *.key here
    KEYS_DIR/NAME.key_secret    that client's key pair (mode 0600)

``client`` is the pair the ``plant`` CLI uses. Secret keys are never printed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from rich.markup import escape

from plantd.cli import output
from plantd.cli.errors import CliError, ExitCode
from plantd.common import contract, curve
from plantd.common.files import InsecureDirectoryError, check_private_dir, insecure_reason
from plantd.common.keys import public_key_path, secret_key_path

BROKER_KEY = contract.BROKER
CLIENT_KEY = contract.CLIENT
# Pairs `plantd up` and a bare `plantd keys generate` create.
DEFAULT_NAMES: tuple[str, ...] = (
    contract.BROKER,
    contract.ECHO,
    contract.STATE,
    contract.IDENTITY,
    contract.GATEWAY,
    CLIENT_KEY,
)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    public: str
    has_secret: bool
    secret_mode: int | None
    path: Path


def generate(
    directory: Path, names: Iterable[str], *, force: bool = False
) -> list[tuple[str, bool]]:
    """Create missing key pairs; return ``(name, created)`` per name (existing ones are kept).

    Refuses (exit 4) a directory group or others can write: a key written there could be
    replaced, and any ``*.key`` dropped there joins the broker's allow-list.
    """
    directory = directory.expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return _generate(directory, names, force)
    except InsecureDirectoryError as exc:
        raise CliError(str(exc), hint="then run the command again", code=ExitCode.CONFIG) from exc


def _generate(directory: Path, names: Iterable[str], force: bool) -> list[tuple[str, bool]]:
    check_private_dir(directory, "CURVE key directory")
    done: list[tuple[str, bool]] = []
    for name in dict.fromkeys(names):  # de-duplicated, order kept
        secret, public = secret_key_path(directory, name), public_key_path(directory, name)
        if not force and secret.exists():
            # Re-derive the public file if someone deleted it: the allow-list depends on it.
            if not public.exists():
                try:
                    pair = curve.load_keypair(secret)
                except curve.CurveKeyError as exc:
                    raise CliError(
                        f"cannot re-create {public.name} from {secret}: {exc}",
                        hint=f"replace the pair with `plantd keys generate --dir {directory} "
                        f"--force --name {name}`",
                        code=ExitCode.CONFIG,
                    ) from exc
                curve.write_public_key(directory, name, pair.public)
            done.append((name, False))
            continue
        try:
            curve.write_keypair(directory, name, curve.generate_keypair())
        except curve.CurveKeyError as exc:
            raise CliError(str(exc), hint="use a plain file name", code=ExitCode.USAGE) from exc
        done.append((name, True))
    return done


def list_keys(directory: Path) -> list[KeyInfo]:
    directory = directory.expanduser()
    if not directory.is_dir():
        return []
    infos: list[KeyInfo] = []
    for public in sorted(directory.glob(f"*{contract.CURVE_PUBLIC_SUFFIX}")):
        name = public.name.removesuffix(contract.CURVE_PUBLIC_SUFFIX)
        secret = secret_key_path(directory, name)
        try:
            key = curve.load_keypair(public).public.decode()
        except curve.CurveKeyError as exc:
            key = f"unreadable: {exc}"
        mode = stat.S_IMODE(secret.stat().st_mode) if secret.exists() else None
        infos.append(KeyInfo(name, key, secret.exists(), mode, public))
    return infos


def missing_client_files(directory: Path, name: str = CLIENT_KEY) -> list[Path]:
    """Files a client called ``name`` needs in ``directory`` that are not there."""
    needed = [secret_key_path(directory, name), public_key_path(directory, BROKER_KEY)]
    return [p for p in needed if not p.exists()]


def _default_dir() -> Path:
    return Path(
        os.environ.get(contract.env_key(contract.BROKER, contract.KEY_CURVE_KEYS))
        or contract.DEFAULT_CURVE_KEYS_DIR
    ).expanduser()


@click.group("keys")
def keys_group() -> None:
    """CURVE key pairs for the bus (secret files are mode 0600; never printed).

    Layout: DIR/NAME.key (public) and DIR/NAME.key_secret (pair). The broker uses
    broker.key_secret and admits every client whose NAME.key is in DIR; `plant` uses
    client.key_secret and broker.key.
    """


_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"key directory [default: {contract.DEFAULT_CURVE_KEYS_DIR}]",
)


@keys_group.command("generate")
@_dir_option
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help=f"key pair to create (repeatable) [default: {', '.join(DEFAULT_NAMES)}]",
)
@click.option("--force", is_flag=True, help="replace existing pairs (rotation: restart the stack)")
@click.option("--json", "json_output", is_flag=True, help="machine-readable output")
def generate_cmd(
    directory: Path | None, names: Sequence[str], force: bool, json_output: bool
) -> None:
    """Create the key pairs that do not exist yet (existing pairs are kept)."""
    directory = (directory or _default_dir()).expanduser()
    results = generate(directory, names or DEFAULT_NAMES, force=force)
    if json_output:
        output.print_json(
            {"dir": str(directory), "keys": [{"name": n, "created": c} for n, c in results]}
        )
        return
    console = output.stdout_console()
    for name, created in results:
        state = "[green]created[/]" if created else "[dim]kept[/]"
        console.print(
            f"{state} {name}{contract.CURVE_PUBLIC_SUFFIX} / {name}{contract.CURVE_SECRET_SUFFIX}"
        )
    console.print(f"in {directory}")


@keys_group.command("list")
@_dir_option
@click.option("--json", "json_output", is_flag=True, help="machine-readable output")
def list_cmd(directory: Path | None, json_output: bool) -> None:
    """Show the public keys in the directory and whether each has its secret (0600)."""
    directory = (directory or _default_dir()).expanduser()
    infos = list_keys(directory)
    reason = insecure_reason(directory)
    if reason is not None:  # listing is harmless, but every component will refuse this directory
        output.stderr_console().print(
            f"[yellow]warning:[/] {escape(reason)}; every plantd process refuses it: "
            f"run `chmod go-w {escape(str(directory))}`"
        )
    if json_output:
        output.print_json(
            [
                {
                    "name": i.name,
                    "public": i.public,
                    "secret": i.has_secret,
                    "secret_mode": oct(i.secret_mode) if i.secret_mode is not None else None,
                }
                for i in infos
            ]
        )
        return
    if not infos:
        raise CliError(
            f"no keys in {directory}",
            hint="create them with `plantd keys generate` (or `plantd up` does it)",
            code=ExitCode.CONFIG,
        )
    rows = []
    for i in infos:
        if i.secret_mode is None:
            mode = "-"
        elif i.secret_mode & 0o077:
            mode = f"[red]{oct(i.secret_mode)} (too open: chmod 600)[/]"
        else:
            mode = oct(i.secret_mode)
        rows.append((escape(i.name), escape(i.public), mode))
    output.stdout_console().print(
        output.table(str(directory), ["name", "public key", "secret"], rows)
    )
