"""Pure parts of `plant module`: --publish and --ttl parsing, key files (only a public key ever
leaves), join tokens from stdin only, and what each command sends (identity replaced by a fake
``call``: the wire is covered by tests/integration/cli/test_cli_module.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from plantd.cli import identity_client, module_cmd
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.identity_client import IdentityReplyError
from plantd.cli.module_cmd import join_token_from, parse_publish, parse_ttl, read_key_file
from plantd.cli.plant import cli
from plantd.cli.settings import ClientSettings
from plantd.common import curve

pytestmark = pytest.mark.unit

TOKEN = "eyJ.test.token"  # only its shape matters: sent as --token


def _code(exc: pytest.ExceptionInfo[CliError]) -> ExitCode:
    return exc.value.code


def test_publish_is_parsed_per_bus() -> None:
    got = parse_publish(["event=acme.pump.", "metric=acme.", "event=acme.pump.", "event=x=y"])
    assert got == {"event": ["acme.pump.", "x=y"], "metric": ["acme."]}
    assert parse_publish([" event ="]) == {"event": [""]}  # every topic: identity decides
    assert parse_publish([]) == {}
    for bad, says in (
        ("event", "BUS=PREFIX"),
        ("=acme.", "BUS=PREFIX"),
        ("bogus=acme.", "no bus 'bogus'"),
    ):
        with pytest.raises(CliError) as info:
            parse_publish([bad])
        assert _code(info) == ExitCode.USAGE and says in info.value.message


def test_ttl_is_a_duration() -> None:
    assert [parse_ttl(v) for v in ("90s", "30m", "1h", "2d", "3600", " 5 m ")] == [
        90,
        1800,
        3600,
        172800,
        3600,
        300,
    ]
    for bad in ("", "0", "0h", "1w", "-5", "1.5h", "h", "99999999"):
        with pytest.raises(CliError) as info:
            parse_ttl(bad)
        assert _code(info) == ExitCode.USAGE


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, curve.KeyPair]:
    keys = tmp_path / "keys"
    made = curve.generate_keypair()
    curve.write_keypair(keys, "pump", made)
    return keys, made


def test_key_files_give_only_the_public_key(pair: tuple[Path, curve.KeyPair]) -> None:
    keys, made = pair
    public = made.public.decode()
    assert read_key_file(keys / "pump.key") == (public, False)
    assert read_key_file(keys / "pump.key_secret") == (public, True)
    bare = keys.parent / "bare.pub"
    bare.write_text(public + "\n")
    assert read_key_file(bare) == (public, False)


def test_unusable_key_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.key"
    big.write_bytes(b"#" * (module_cmd.MAX_KEY_FILE_BYTES + 1))
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    for path, says in (
        (tmp_path / "missing.key", "cannot read key file"),
        (tmp_path, "is not a CURVE key file"),
        (big, "is not a CURVE key file"),
        (junk, "no public-key entry"),
    ):
        with pytest.raises(CliError) as info:
            read_key_file(path)
        assert _code(info) == ExitCode.CONFIG and says in info.value.message
        assert "plantd keys generate --name NAME" in str(info.value.hint)


def test_join_token_from_stdin_is_bounded() -> None:
    assert join_token_from(b"pld_jt_abc\n") == "pld_jt_abc"
    assert join_token_from(b"  pld_jt_abc  \r\nignored\n") == "pld_jt_abc"
    for bad, says in (
        (b"", "expects one line"),
        (b"\n\n", "expects one line"),
        (b"pld jt", "does not hold a join token"),
        ("pld_jt_é".encode(), "does not hold a join token"),
        (b"x" * 300, "does not hold a join token"),
        (b"x" * 5000, "over 4096 bytes"),
    ):
        with pytest.raises(CliError) as info:
            join_token_from(bad)
        assert _code(info) == ExitCode.USAGE and says in info.value.message


class FakeIdentity:
    """Stands in for ``identity_client.call``: records each request, answers ``reply``."""

    def __init__(self, reply: dict[str, Any] | IdentityReplyError) -> None:
        self.reply = reply
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(
        self, settings: ClientSettings, category: str, operation: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.sent.append((category, operation, body))
        if isinstance(self.reply, IdentityReplyError):
            raise self.reply
        return self.reply


def _run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeIdentity,
    args: list[str],
    stdin: str | None = None,
) -> Any:
    monkeypatch.setattr(identity_client, "call", fake)
    monkeypatch.setattr(module_cmd, "call", fake)
    env = {
        "PLANTD_CONFIG": str(tmp_path / "none.yaml"),
        "PLANTD_CLIENT_CREDENTIALS_DIR": str(tmp_path / "creds"),
        "PLANTD_CLIENT_TOKEN": "",
    }
    return CliRunner().invoke(cli, args, env=env, input=stdin)


def _module(name: str, public: str) -> dict[str, Any]:
    return {
        "module": {
            "name": name,
            "kind": "module",
            "public_key": public,
            "services": ["acme.Pump"],
            "publish": {"event": ["acme.pump."]},
            "permissions": [],
        }
    }


def test_enroll_sends_the_grant_and_the_public_key_only(
    pair: tuple[Path, curve.KeyPair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, made = pair
    assert made.secret is not None
    public = made.public.decode()
    fake = FakeIdentity(_module("pump", public))
    r = _run(
        tmp_path,
        monkeypatch,
        fake,
        [
            "--token", TOKEN, "module", "enroll", "pump",
            "--key-file", str(keys / "pump.key_secret"),
            "-s", "acme.Pump", "-s", "acme.Pump", "--publish", "event=acme.pump.",
            "-p", "state:data:read", "--kind", "device",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "only its public key is sent" in r.stderr
    assert r.stdout.startswith("enrolled pump (module) key ")
    [(category, operation, body)] = fake.sent
    assert (category, operation) == ("modules", "enroll")
    assert body == {
        "name": "pump",
        "kind": "device",
        "services": ["acme.Pump"],
        "publish": {"event": ["acme.pump."]},
        "permissions": ["state:data:read"],
        "public_key": public,
        "token": TOKEN,
    }
    assert made.secret.decode() not in json.dumps(body) + r.output


def test_enroll_needs_exactly_one_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIdentity({})
    for extra in ([], ["--public-key", "k" * 40, "--key-file", str(tmp_path / "x.key")]):
        r = _run(tmp_path, monkeypatch, fake, ["--token", TOKEN, "module", "enroll", "m", *extra])
        assert r.exit_code == ExitCode.USAGE, r.output
        assert "--key-file FILE or --public-key" in r.output
        assert "plantd keys generate --name NAME" in r.output
    assert fake.sent == []


def test_join_token_goes_to_stdout_once_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "pld_jt_" + "s" * 43
    fake = FakeIdentity({"join_token": token, "expires_at": 1_900_000_000, "name": "pump"})
    r = _run(
        tmp_path,
        monkeypatch,
        fake,
        ["--token", TOKEN, "module", "join-token", "--name", "pump", "-s", "acme.Pump",
         "--ttl", "10m"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.stdout == token + "\n"
    assert "secret" in r.stderr and token not in r.stderr
    assert fake.sent[0][1] == "join-token" and fake.sent[0][2]["ttl_s"] == 600


def test_join_reads_the_token_from_stdin_and_sends_no_login(
    pair: tuple[Path, curve.KeyPair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, made = pair
    public = made.public.decode()
    token = "pld_jt_" + "j" * 43
    fake = FakeIdentity(_module("pump", public))
    key_file = str(keys / "pump.key_secret")
    r = _run(
        tmp_path,
        monkeypatch,
        fake,
        ["module", "join", "--key-file", key_file, "--join-token", token],
    )
    assert r.exit_code == ExitCode.USAGE and "visible to every user" in r.output
    r = _run(tmp_path, monkeypatch, fake, ["module", "join", "--key-file", key_file])
    assert r.exit_code == ExitCode.USAGE and "--join-token-stdin" in r.output  # no terminal
    assert fake.sent == []

    r = _run(
        tmp_path,
        monkeypatch,
        fake,
        ["--token", TOKEN, "module", "join", "--join-token-stdin", "--key-file", key_file],
        stdin=token + "\n",
    )
    assert r.exit_code == 0, r.output
    [(category, operation, body)] = fake.sent
    # Redeemed for the public key alone; a user token (even one given) is never sent along.
    assert (category, operation, body) == (
        "modules",
        "enroll",
        {"join_token": token, "public_key": public},
    )
    assert made.secret is not None and made.secret.decode() not in json.dumps(body)


def test_join_errors_say_to_ask_for_a_new_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = IdentityReplyError("UNAUTHENTICATED", "the join token is unknown, expired or used")
    fake = FakeIdentity(used)
    r = _run(
        tmp_path,
        monkeypatch,
        fake,
        ["module", "join", "--join-token-stdin", "--public-key", "k" * 40],
        stdin="pld_jt_x\n",
    )
    assert r.exit_code == ExitCode.ERROR_REPLY
    assert "module join failed" in r.output and "new join token" in r.output
    assert "plant auth login" not in r.output
