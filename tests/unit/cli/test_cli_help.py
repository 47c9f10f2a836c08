"""Every `plant` and `plantd` command has non-empty --help that lists all its subcommands."""

from __future__ import annotations

import re
import sys

import click
import pytest
from click.testing import CliRunner

from plantd.cli.plant import cli as plant_cli
from plantd.cli.plantd import cli as plantd_cli

pytestmark = pytest.mark.unit


def _walk(group: click.Command, path: list[str]) -> list[list[str]]:
    """Every command path under ``group`` (loading lazy commands on the way)."""
    paths = [path]
    if isinstance(group, click.Group):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            assert sub is not None, f"{' '.join(path)} lists {name} but cannot load it"
            paths += _walk(sub, [*path, name])
    return paths


@pytest.mark.parametrize("root", [plant_cli, plantd_cli], ids=["plant", "plantd"])
def test_help_everywhere(root: click.Group) -> None:
    runner = CliRunner()
    for path in _walk(root, []):
        result = runner.invoke(root, [*path, "--help"], prog_name=root.name)
        where = " ".join([str(root.name), *path])
        assert result.exit_code == 0, f"{where} --help: {result.output}"
        assert f"Usage: {where}" in result.output
        # Beyond the usage line there is real text.
        assert len(result.output.strip().splitlines()) > 3, f"{where} --help is empty"
        cmd: click.Command = root
        for name in path:
            assert isinstance(cmd, click.Group)
            found = cmd.get_command(click.Context(cmd), name)
            assert found is not None
            cmd = found
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(click.Context(cmd)):
                assert sub in result.output, f"{where} --help does not list {sub}"


@pytest.mark.parametrize("root", [plant_cli, plantd_cli], ids=["plant", "plantd"])
def test_environment_variables_are_printed_whole(root: click.Group) -> None:
    # Piped help is 78 columns wide by default: a long variable name was broken in two.
    runner = CliRunner()
    for path in _walk(root, []):
        out = runner.invoke(root, [*path, "--help"], prog_name=root.name, terminal_width=78).output
        for match in re.finditer(r"\[env\s+(PLANTD_[A-Z0-9_]+)(.)", out):
            assert match.group(2) in ";],", f"{' '.join(path)}: {match.group(1)} is broken"


def test_expected_commands_present() -> None:
    ctx = click.Context(plant_cli)
    assert {"echo", "services", "request", "config", "version", "state", "module"} <= set(
        plant_cli.list_commands(ctx)
    )
    assert "module" in CliRunner().invoke(plant_cli, ["--help"]).output
    ctx = click.Context(plantd_cli)
    assert {"broker", "echo", "state", "operator", "up", "keys", "version"} <= set(
        plantd_cli.list_commands(ctx)
    )


def test_root_help_imports_no_component() -> None:
    # Listing commands must not import them: `plant --help` stays fast and robust.
    import subprocess

    code = (
        "import sys; from click.testing import CliRunner; from plantd.cli.plantd import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; "
        "bad = [m for m in ('plantd.broker.main', 'plantd_operator.main', 'plantd.cli.up', "
        "'zmq', 'kopf') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
