"""``plant version`` / ``plantd version``: what is installed (no network)."""

from __future__ import annotations

import platform

import click

from plantd import __version__
from plantd.cli import output


def versions() -> dict[str, str]:
    import zmq  # imported here: version is the only command of ours that needs it up front

    return {
        "plantd": __version__,
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "curve": "yes" if zmq.has("curve") else "no",
    }


def show(json_output: bool) -> None:
    info = versions()
    if json_output:
        output.print_json(info)
        return
    click.echo(f"plantd {info.pop('plantd')}")
    for key, value in info.items():
        click.echo(f"  {key}: {value}")
