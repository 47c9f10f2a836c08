"""Click commands generated from settings: a flag per setting, only typed flags override."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from plantd.common.config import BrokerSettings, EchoSettings, ServiceSettings
from plantd.common.options import load_from_click, settings_options, typed_flags

pytestmark = pytest.mark.unit


def _command(settings_cls: type[ServiceSettings], seen: list[ServiceSettings]) -> click.Command:
    @click.pass_context
    def callback(ctx: click.Context, /, **_: object) -> None:
        seen.append(load_from_click(ctx, settings_cls))
        click.echo(repr(typed_flags(ctx, settings_cls)))

    cmd = click.Command("x", callback=callback)
    return settings_options(settings_cls)(cmd)


def test_every_setting_has_an_option() -> None:
    cmd = _command(EchoSettings, [])
    names = {p.name for p in cmd.params}
    assert set(EchoSettings.model_fields) | {"config_file"} == names
    broker_names = {p.name for p in _command(BrokerSettings, []).params}
    assert "broker_endpoint" not in broker_names  # unused by the broker: hidden
    assert "buses" in broker_names


def test_only_typed_flags_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLANTD_ECHO_HTTP_PORT", "9100")
    monkeypatch.setenv("PLANTD_ECHO_LOG_LEVEL", "error")
    config = tmp_path / "e.yaml"
    config.write_text("service: from.file\nheartbeat_ms: 700\n")
    seen: list[ServiceSettings] = []
    result = CliRunner().invoke(
        _command(EchoSettings, seen),
        ["--log-level", "DEBUG", "--no-curve", "--config", str(config)],
    )
    assert result.exit_code == 0, result.output
    s = seen[0]
    assert isinstance(s, EchoSettings)
    assert s.log_level == "debug"  # flag beats env
    assert s.http_port == 9100  # env beats default
    assert s.service == "from.file"  # file beats default
    assert s.curve is False
    assert "'curve': False" in result.output
    assert "http_port" not in result.output  # not typed, so not an override


def test_bad_value_exits_2_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTD_BROKER_BUSES", "state=1")
    result = CliRunner().invoke(_command(BrokerSettings, []), [])
    assert result.exit_code == 2
    assert "PLANTD_BROKER_BUSES" in result.output
    assert "NAME=PUBPORT:SUBPORT" in result.output


def test_choice_and_int_types_are_checked_by_click() -> None:
    result = CliRunner().invoke(_command(EchoSettings, []), ["--log-format", "xml"])
    assert result.exit_code == 2
    assert "json" in result.output and "text" in result.output
    result = CliRunner().invoke(_command(EchoSettings, []), ["--http-port", "many"])
    assert result.exit_code == 2
