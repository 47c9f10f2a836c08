"""The credentials store (0600 files, refusals) and which token a request sends, refreshing
under a lock so two `plant` processes never present one refresh token twice."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from plantd.cli import credentials, identity_client
from plantd.cli.credentials import (
    Credentials,
    CredentialsError,
    CredentialStore,
    check_profile,
    needs_refresh,
    peek_claims,
    status,
    stored_token,
    token_for_request,
)
from plantd.cli.errors import ExitCode
from plantd.cli.identity_client import IdentityReplyError
from plantd.cli.settings import ClientSettings

pytestmark = pytest.mark.unit

ENDPOINT = "tcp://127.0.0.1:9797"


def _creds(**kw: Any) -> Credentials:
    base: dict[str, Any] = {
        "profile": "default",
        "endpoint": ENDPOINT,
        "access_token": "a.b.c",
        "refresh_token": "pld_rt_old",
        "expires_at": time.time() + 900,
        "user_id": 1,
        "username": "root-admin",
        "email": "root@plant.example",
    }
    base.update(kw)
    return Credentials(**base)


def _settings(tmp_path: Path, **kw: Any) -> ClientSettings:
    base: dict[str, Any] = {
        "endpoint": ENDPOINT,
        "timeout": 2.5,
        "profile": "default",
        "curve": False,
        "curve_keys": tmp_path / "keys",
        "json_output": False,
        "config_path": tmp_path / "config.yaml",
    }
    base.update(kw)
    return ClientSettings(**base)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CredentialStore:
    directory = tmp_path / "state" / "credentials"
    monkeypatch.setenv(credentials.ENV_DIR, str(directory))
    return CredentialStore(directory)


def test_round_trip_is_private(store: CredentialStore) -> None:
    c = _creds()
    path = store.save(c)
    assert path == store.directory / "default.json"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(store.directory).st_mode & 0o777 == 0o700
    loaded = store.load("default")
    assert loaded is not None
    assert (loaded.access_token, loaded.refresh_token) == (c.access_token, c.refresh_token)
    assert "pld_rt_old" not in repr(loaded) and "a.b.c" not in repr(loaded)
    assert store.delete("default") and not store.delete("default")
    assert store.load("default") is None


def test_a_file_others_can_read_is_refused(store: CredentialStore) -> None:
    path = store.save(_creds())
    path.chmod(0o644)
    with pytest.raises(CredentialsError) as info:
        store.load("default")
    assert info.value.code == ExitCode.CONFIG
    assert "other users may read it" in info.value.message and "logout" in str(info.value.hint)
    assert store.load("default", allow_readable=True) is not None  # logout may still revoke


def test_symlinks_and_writable_directories_are_refused(
    store: CredentialStore, tmp_path: Path
) -> None:
    store.directory.mkdir(parents=True, mode=0o700)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(_creds().to_json()))
    (store.directory / "default.json").symlink_to(target)
    with pytest.raises(CredentialsError, match="cannot open"):
        store.load("default")
    (store.directory / "default.json").unlink()
    store.directory.chmod(0o777)
    with pytest.raises(CredentialsError, match="writable by"):
        store.save(_creds())
    store.directory.chmod(0o700)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"x" * (credentials.MAX_FILE_BYTES + 1), "over"),
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({**_creds().to_json(), "access_token": 5}).encode(), "'access_token'"),
        (json.dumps({**_creds().to_json(), "expires_at": "soon"}).encode(), "'expires_at'"),
        (json.dumps({**_creds().to_json(), "profile": "other"}).encode(), "profile 'other'"),
    ],
)
def test_a_corrupt_file_names_itself_and_the_field(
    store: CredentialStore, content: bytes, why: str
) -> None:
    store.directory.mkdir(parents=True, mode=0o700)
    path = store.directory / "default.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(CredentialsError) as info:
        store.load("default")
    assert str(path) in info.value.message and why in info.value.message
    assert "plant auth login" in str(info.value.hint)


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "x" * 65])
def test_profile_names_that_are_not_file_names_are_refused(name: str) -> None:
    with pytest.raises(CredentialsError):
        check_profile(name)
    assert check_profile("line1-prod.eu_2") == "line1-prod.eu_2"


def test_status_and_refresh_rules() -> None:
    now = 1000.0
    assert status(now + 301, now) == "valid"
    assert status(now + 299, now) == "expires soon"
    assert status(now, now) == "expired"
    assert needs_refresh(_creds(expires_at=now + 30), now)
    assert not needs_refresh(_creds(expires_at=now + 300), now)
    assert not needs_refresh(_creds(expires_at=now - 1, refresh_token=""), now)


def test_peek_claims_never_raises() -> None:
    import base64

    payload = base64.urlsafe_b64encode(b'{"sub":"7","exp":5}').rstrip(b"=").decode()
    assert peek_claims(f"h.{payload}.s") == {"sub": "7", "exp": 5}
    for bad in ("", "a.b", "a.!!!.c", "a." + "A" * 9000 + ".c", "a.W10.c"):
        assert peek_claims(bad) == {}


def test_explicit_token_wins_and_endpoint_must_match(
    store: CredentialStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path)
    assert token_for_request(settings) is None  # nothing stored, nothing given
    store.save(_creds(access_token="stored.tok.en"))
    assert token_for_request(settings) == "stored.tok.en"
    assert token_for_request(_settings(tmp_path, token="flag.tok.en")) == "flag.tok.en"
    # A login for one broker is never sent to another.
    other = _settings(tmp_path, endpoint="tcp://10.0.0.9:9797")
    assert token_for_request(other) is None
    assert "is for tcp://127.0.0.1:9797, not tcp://10.0.0.9:9797" in capsys.readouterr().err


def test_near_expiry_is_refreshed_and_stored(
    store: CredentialStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_call(s: ClientSettings, cat: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        calls.append({"op": f"{cat}/{op}", **body})
        return {"access_token": "new.acc.ess", "refresh_token": "pld_rt_new", "expires_at": 2**31}

    monkeypatch.setattr(identity_client, "call", fake_call)
    store.save(_creds(expires_at=time.time() + 10))
    assert token_for_request(_settings(tmp_path)) == "new.acc.ess"
    assert calls == [{"op": "auth/refresh", "refresh_token": "pld_rt_old"}]
    saved = store.load("default")
    assert saved is not None and saved.refresh_token == "pld_rt_new"
    assert token_for_request(_settings(tmp_path)) == "new.acc.ess"  # fresh: no second call
    assert len(calls) == 1


def test_a_refused_refresh_drops_the_refresh_token(
    store: CredentialStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refused(*_: object) -> dict[str, Any]:
        raise IdentityReplyError("REFRESH_FAILED", "refresh token was already used")

    monkeypatch.setattr(identity_client, "call", refused)
    store.save(_creds(expires_at=time.time() + 10))
    # Still valid for 10 s: sent, with a warning; the dead refresh token is not retried.
    assert token_for_request(_settings(tmp_path)) == "a.b.c"
    assert "could not refresh" in capsys.readouterr().err
    saved = store.load("default")
    assert saved is not None and saved.refresh_token == ""
    store.save(_creds(expires_at=time.time() - 5))
    assert token_for_request(_settings(tmp_path)) is None
    assert "it has expired: run `plant auth login`" in capsys.readouterr().err


def test_concurrent_refreshes_present_the_refresh_token_once(
    store: CredentialStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two plants near expiry at once: the second waits for the lock and reads the new token."""
    presented: list[str] = []
    inside = threading.Event()

    def slow_call(s: ClientSettings, cat: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        presented.append(body["refresh_token"])
        inside.set()
        time.sleep(0.3)  # the other thread arrives while this refresh is in flight
        n = len(presented)
        return {"access_token": f"acc{n}.x.y", "refresh_token": f"pld_rt_{n}", "expires_at": 2**31}

    monkeypatch.setattr(identity_client, "call", slow_call)
    store.save(_creds(expires_at=time.time() + 10))
    results: list[str | None] = []

    def one() -> None:
        creds = stored_token(_settings(tmp_path))
        results.append(creds.access_token if creds else None)

    first = threading.Thread(target=one)
    first.start()
    assert inside.wait(5)
    second = threading.Thread(target=one)
    second.start()
    first.join(10)
    second.join(10)
    assert presented == ["pld_rt_old"]
    assert results == ["acc1.x.y", "acc1.x.y"]
