"""The I/O shell of --auth identity with real files: the JWKS file and the machine registry
are loaded at start (unusable: refused to start), re-read on change (unusable: the old kept),
and identity's replies are parsed strictly."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from tests.kit import await_for

from plantd.common.service import ServiceError
from plantd.identity.keys import KeyRing, generate
from plantd.state.authz_runtime import AuthRuntime, identity_data
from plantd.state.config import StateSettings

pytestmark = pytest.mark.unit

KEY = "C" * 40


def write(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def jwks(directory: Path) -> dict[str, Any]:
    generate(directory)
    doc: dict[str, Any] = KeyRing.from_dir(directory).jwks()
    return doc


def registry(permissions: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "identities": [
            {
                "name": "m",
                "kind": "module",
                "public_key": KEY,
                "services": [],
                "publish": {},
                "permissions": permissions,
            }
        ],
    }


def settings(tmp_path: Path, **extra: Any) -> StateSettings:
    return StateSettings(
        auth="identity",
        curve=False,
        curve_keys=tmp_path / "keys",
        data_dir=tmp_path / "data",
        event_bus_endpoint="tcp://127.0.0.1:1",
        event_sub_endpoint="tcp://127.0.0.1:1",
        **extra,
    )


async def test_jwks_file_and_registry_are_loaded_and_followed(tmp_path: Path) -> None:
    keyfile, regfile = tmp_path / "jwks.json", tmp_path / "registry.json"
    first = jwks(tmp_path / "k1")
    write(keyfile, first)
    write(regfile, registry(["state:data:read:line1"]))
    rt = AuthRuntime(settings(tmp_path, jwks_file=keyfile, registry=regfile), None)
    assert rt.has_keys() and rt.verifier.kids == {first["keys"][0]["kid"]}
    known = rt.keys.get(KEY)
    assert known is not None and known[1].allows("state:data:read", "line1")
    rt.start(asyncio.get_running_loop())
    try:
        second = jwks(tmp_path / "k2")
        write(keyfile, second)
        write(regfile, registry(["state:data:write:line2"]))
        want = {second["keys"][0]["kid"]}

        async def rotated() -> bool:
            return rt.verifier.kids == want

        async def moved() -> bool:
            k = rt.keys.get(KEY)
            return k is not None and k[1].allows("state:data:write", "line2")

        await await_for(rotated, 5, "the new JWKS file")
        await await_for(moved, 5, "the new registry")
        # an unusable change keeps what works
        keyfile.write_text("{not json")
        regfile.write_text('{"version": 1, "identities": [{"name": 3}]}')
        os.chmod(regfile, 0o600)
        stamp = time.monotonic()

        async def two_polls() -> bool:
            return time.monotonic() - stamp > 2.5

        await await_for(two_polls, 5, "two polls")
        assert await rotated() and await moved()
    finally:
        await rt.stop()


def test_unusable_files_at_start_refuse_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "jwks.json"
    bad.write_text('{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}')
    with pytest.raises(ServiceError, match="JWKS file"):
        AuthRuntime(settings(tmp_path, jwks_file=bad), None)
    reg = tmp_path / "registry.json"
    write(reg, registry([]))
    os.chmod(reg, 0o666)  # noqa: S103 - the insecure mode under test
    with pytest.raises(ServiceError, match="registry"):
        AuthRuntime(settings(tmp_path, registry=reg), None)
    with pytest.raises(ServiceError, match="registry"):
        AuthRuntime(settings(tmp_path, registry=tmp_path / "missing.json"), None)


def test_registry_in_the_keys_directory_is_the_default(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    assert settings(tmp_path).registry_path() is None
    write(keys / "registry.json", registry([]))
    assert settings(tmp_path).registry_path() == keys / "registry.json"


def test_identity_replies_are_parsed_strictly() -> None:
    ok = json.dumps({"success": True, "data": {"keys": []}}).encode()
    assert identity_data([ok], "auth/jwks") == {"keys": []}
    for frames, what in (
        ([], "one reply frame"),
        ([ok, ok], "one reply frame"),
        ([b"x" * (1024 * 1024 + 1)], "one reply frame"),
        ([json.dumps({"success": False, "error": "nope"}).encode()], "nope"),
        ([json.dumps({"success": True}).encode()], "no data"),
    ):
        with pytest.raises(ValueError, match=what):
            identity_data(frames, "auth/jwks")
    with pytest.raises(ValueError):
        identity_data([b"not json"], "auth/jwks")
