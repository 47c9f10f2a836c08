"""LazyGroup: commands load on first use; a missing or broken one explains itself (exit 5)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from plantd.cli.errors import ExitCode
from plantd.cli.lazy import LazyCommand, LazyGroup

pytestmark = pytest.mark.unit


@pytest.fixture
def fake_modules() -> Iterator[None]:
    good = types.ModuleType("_lazy_good")

    @click.command()
    @click.argument("x")
    def hello(x: str) -> None:
        """Say hello."""
        click.echo(f"hello {x}")

    good.hello = hello  # type: ignore[attr-defined]
    good.not_a_command = 42  # type: ignore[attr-defined]
    sys.modules["_lazy_good"] = good
    yield
    sys.modules.pop("_lazy_good", None)
    sys.modules.pop("_lazy_broken", None)


def _group() -> click.Group:
    @click.group(
        cls=LazyGroup,
        lazy_commands={
            "good": LazyCommand("_lazy_good:hello", "A good one."),
            "missing": LazyCommand("_lazy_nowhere.main:cli", "Not installed."),
            "broken": LazyCommand("_lazy_broken:cli", "Raises on import."),
            "odd": LazyCommand("_lazy_good:not_a_command", "Not a command."),
        },
    )
    def root() -> None:
        """Root."""

    return root


def test_good_command_runs(fake_modules: None) -> None:
    r = CliRunner().invoke(_group(), ["good", "you"])
    assert r.exit_code == 0 and r.output == "hello you\n"


def test_missing_module(fake_modules: None) -> None:
    r = CliRunner().invoke(_group(), ["missing", "--any", "args"])
    assert r.exit_code == ExitCode.UNAVAILABLE
    assert "component 'missing' is not available" in r.output


def test_broken_module(fake_modules: None, monkeypatch: pytest.MonkeyPatch) -> None:
    class Finder:
        @staticmethod
        def find_spec(name: str, *_: object) -> object:
            if name != "_lazy_broken":
                return None
            raise RuntimeError("boom at import")

    monkeypatch.setattr(sys, "meta_path", [Finder, *sys.meta_path])
    r = CliRunner().invoke(_group(), ["broken"])
    assert r.exit_code == ExitCode.UNAVAILABLE
    assert "failed to load" in r.output and "boom at import" in r.output


def test_not_a_command(fake_modules: None) -> None:
    r = CliRunner().invoke(_group(), ["odd"])
    assert r.exit_code == ExitCode.UNAVAILABLE and "not a click command" in r.output


def test_help_lists_all_without_importing(fake_modules: None) -> None:
    del sys.modules["_lazy_good"]  # would fail to import now: listing must not try
    r = CliRunner().invoke(_group(), ["--help"])
    assert r.exit_code == 0
    for name, text in [("good", "A good one."), ("missing", "Not installed."), ("odd", "")]:
        assert name in r.output and text in r.output


def test_unavailable_help_says_why(fake_modules: None) -> None:
    r = CliRunner().invoke(_group(), ["missing", "--help"])
    assert r.exit_code == 0 and "Not available" in r.output
