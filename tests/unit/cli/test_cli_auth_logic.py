"""Pure parts of `plant auth|user|role|org|audit`: reply decoding and hints, the --token
setting, password input, record references, audit events (filters, hash chain, escaping)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from plantd.cli import password_input
from plantd.cli.admin_output import reference, user_reference
from plantd.cli.audit_cmd import ChainCheck, Filter, decode_event, event_bus_endpoint, event_line
from plantd.cli.auth_cmd import describe_expiry
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.identity_client import IdentityReplyError, cli_error, decode_reply
from plantd.cli.plant import cli
from plantd.cli.settings import MAX_TOKEN_CHARS, GlobalFlags, resolve
from plantd.identity.audit import AuditEvent, Auditor

pytestmark = pytest.mark.unit


def _frame(doc: Any) -> list[bytes]:
    return [json.dumps(doc).encode()]


def test_decode_reply() -> None:
    assert decode_reply(_frame({"success": True, "data": {"x": 1}})) == {"x": 1}
    with pytest.raises(IdentityReplyError) as info:
        decode_reply(
            _frame(
                {
                    "success": False,
                    "code": "LOGIN_FAILED",
                    "error": "no",
                    "detail": {"retry_after": 2},
                }
            )
        )
    assert (info.value.code, info.value.detail) == ("LOGIN_FAILED", {"retry_after": 2})
    for bad in ([], [b"a", b"b"], [b"{"], _frame([1]), _frame({"ok": 1}), [b" " * (2 << 20)]):
        with pytest.raises(IdentityReplyError) as info:
            decode_reply(bad)
        assert info.value.code == "BAD_REPLY"


def test_errors_say_what_to_do() -> None:
    err = cli_error(IdentityReplyError("UNAUTHENTICATED", "token expired"), "user list")
    assert err.code == ExitCode.ERROR_REPLY
    assert err.message == "user list failed: token expired (UNAUTHENTICATED)"
    assert "plant auth login" in str(err.hint) and err.details == {"code": "UNAUTHENTICATED"}
    slow = cli_error(IdentityReplyError("LOGIN_FAILED", "retry", {"retry_after": 3.4}), "login")
    assert "retry in 3 s" in str(slow.hint) and slow.details["retry_after"] == 3.4
    denied = cli_error(IdentityReplyError("PERMISSION_DENIED", "needs user:list"), "user list")
    assert "assign-role" in str(denied.hint)


def test_token_setting(tmp_path: Path) -> None:
    env = {"PLANTD_CONFIG": str(tmp_path / "none.yaml")}
    assert resolve(GlobalFlags(), env).token is None
    from_env = resolve(GlobalFlags(), {**env, "PLANTD_CLIENT_TOKEN": " e.n.v\n"})
    assert from_env.token == "e.n.v" and from_env.sources["token"] == "env PLANTD_CLIENT_TOKEN"
    flag = resolve(GlobalFlags(token="f.l.g"), {**env, "PLANTD_CLIENT_TOKEN": "e.n.v"})
    assert flag.token == "f.l.g" and flag.sources["token"] == "flag"
    assert "f.l.g" not in repr(flag)  # a secret never shows in a repr
    for bad, code in (("a b", ExitCode.USAGE), ("x" * (MAX_TOKEN_CHARS + 1), ExitCode.USAGE)):
        with pytest.raises(CliError) as info:
            resolve(GlobalFlags(token=bad), env)
        assert info.value.code == code
    with pytest.raises(CliError) as info:
        resolve(GlobalFlags(), {**env, "PLANTD_CLIENT_TOKEN": "tök"})
    assert info.value.code == ExitCode.CONFIG


def test_password_from_stdin_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    def feed(data: bytes) -> None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))

    feed(b"correct horse battery staple\n")
    assert password_input.stdin_lines(1) == ["correct horse battery staple"]
    feed(b"old one\r\nnew one\n")
    assert password_input.stdin_lines(2) == ["old one", "new one"]
    for data, count in ((b"", 1), (b"\n", 1), (b"only\n", 2), (b"x" * 5000, 1), (b"\xff\n", 1)):
        feed(data)
        with pytest.raises(CliError) as info:
            password_input.stdin_lines(count)
        assert info.value.code == ExitCode.USAGE
    with pytest.raises(CliError, match="visible to every user"):
        password_input.refuse_argv_password("hunter2")


def test_cli_refuses_a_password_in_argv_and_explains_missing_login(tmp_path: Path) -> None:
    env = {
        "PLANTD_CONFIG": str(tmp_path / "none.yaml"),
        "PLANTD_CLIENT_CREDENTIALS_DIR": str(tmp_path / "creds"),
        "PLANTD_CLIENT_TOKEN": "",
    }
    runner = CliRunner()
    r = runner.invoke(cli, ["auth", "login", "-u", "admin", "-p", "hunter2"], env=env)
    assert r.exit_code == ExitCode.USAGE
    assert "hunter2" not in r.output
    for args in (["auth", "status"], ["auth", "whoami"], ["user", "list"], ["auth", "refresh"]):
        r = runner.invoke(cli, args, env=env)
        assert r.exit_code == ExitCode.CONFIG, (args, r.output)
        assert "not logged in (profile 'default')" in r.output and "plant auth login" in r.output
    r = runner.invoke(cli, ["--json", "auth", "status"], env=env)
    assert json.loads(r.output)["code"] == "NOT_LOGGED_IN"
    r = runner.invoke(cli, ["auth", "logout"], env=env)  # nothing to do is not an error
    assert r.exit_code == 0 and "nothing to do" in r.output
    r = runner.invoke(cli, ["auth", "login", "--password-stdin"], env=env, input="pw\n")
    assert r.exit_code == ExitCode.USAGE and "--username" in r.output


def test_describe_expiry() -> None:
    assert describe_expiry(1000 + 900, 1000).endswith("(in 15 min)")
    assert describe_expiry(1000 + 30, 1000).endswith("(in 30 s)")
    assert describe_expiry(1000 - 5, 1000).endswith("(5 s ago)")
    assert describe_expiry(0, 0).startswith("1970-01-01 00:00:00 UTC")
    assert describe_expiry(1e300, 0) == "at unix time " + f"{1e300:.0f}"


def test_references() -> None:
    assert user_reference("42") == {"user_id": 42}
    assert user_reference("ann@plant.example") == {"email": "ann@plant.example"}
    assert user_reference("ann") == {"username": "ann"}
    assert reference("line1-reader", "role_id", "name") == {"name": "line1-reader"}
    for bad in ("", "0", "9" * 20):
        with pytest.raises(CliError):
            reference(bad, "role_id", "name")


def _events(n: int) -> list[dict[str, Any]]:
    auditor = Auditor(None, clock=lambda: 1_700_000_000.0)
    return [
        auditor.emit(AuditEvent("auth.login", "deny" if i % 2 else "allow", actor=str(i)))
        for i in range(n)
    ]


def test_audit_events_are_decoded_strictly() -> None:
    ev = _events(1)[0]
    assert decode_event(json.dumps(ev).encode()) == ev
    bad = [
        b"{",
        b"[]",
        json.dumps({**ev, "decision": "maybe"}).encode(),
        json.dumps({**ev, "actor": 5}).encode(),
        json.dumps({**ev, "time": "now"}).encode(),
        json.dumps({**ev, "seq": True}).encode(),
        json.dumps({**ev, "detail": "x" * 70_000}).encode(),
    ]
    assert [decode_event(b) for b in bad] == [None] * len(bad)


def test_audit_chain_flags_gaps_and_alterations() -> None:
    evs = _events(5)
    chain = ChainCheck()
    assert [chain.check(e) for e in evs[:2]] == [None, None]
    assert "gap after seq 2" in str(chain.check(evs[3]))  # evs[2] was dropped
    assert chain.check(evs[4]) is None  # the chain goes on from what was seen
    altered = {**_events(1)[0], "decision": "allow", "reason": "forged"}
    fresh = ChainCheck()
    altered["actor"] = "someone-else"
    assert "altered" in str(fresh.check(altered))
    assert fresh.problems == 1


def test_audit_filters_and_lines() -> None:
    ev = {
        **_events(2)[1],
        "target": "ghost\x1b]0;pwned\x07",
        "reason": "UNKNOWN_USER",
    }
    assert Filter(decision="deny", action="auth.").matches(ev)
    assert not Filter(decision="allow").matches(ev)
    assert Filter(actor="1").matches(ev) and not Filter(actor="2").matches(ev)
    assert not Filter(target="ghost").matches(ev)
    line = event_line(ev, "chain gap")
    assert "\x1b" not in line and "\\x1b]0;pwned\\x07" in line
    assert line.startswith("2023-11-14T22:13:20 DENY auth.login actor=1 target=")
    assert line.endswith("!! chain gap")


def test_event_bus_endpoint_follows_the_broker_port() -> None:
    assert event_bus_endpoint("tcp://10.1.2.3:9797") == "tcp://10.1.2.3:12001"
    assert event_bus_endpoint("tcp://h:9897") == "tcp://h:12101"
    assert event_bus_endpoint("ipc:///tmp/x") == "tcp://127.0.0.1:12001"
