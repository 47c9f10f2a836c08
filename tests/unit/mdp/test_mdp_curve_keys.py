"""CURVE key files: modes, formats, allow-list loading, clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq.auth

from plantd.common.curve import (
    CurveClient,
    CurveKeyError,
    CurveServer,
    generate_keypair,
    load_allowed_keys,
    load_keypair,
    write_keypair,
    write_public_key,
)

pytestmark = pytest.mark.unit


def test_write_and_load_keypair(tmp_path: Path) -> None:
    pair = generate_keypair()
    pub, sec = write_keypair(tmp_path / "keys", "broker", pair)
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert load_keypair(sec) == pair
    loaded_pub = load_keypair(pub)
    assert loaded_pub.public == pair.public and loaded_pub.secret is None
    # Interoperable with pyzmq's own certificate reader.
    assert zmq.auth.load_certificate(str(sec)) == (pair.public, pair.secret)
    assert pair.secret is not None and pair.secret.decode() not in repr(pair)


def test_allow_list_directory(tmp_path: Path) -> None:
    a, b = generate_keypair(), generate_keypair()
    write_public_key(tmp_path, "a", a.public)
    write_public_key(tmp_path, "b", b.public)
    (tmp_path / "junk.key").write_text("not a key\n")
    assert load_allowed_keys(tmp_path) == {a.public, b.public}


def test_bad_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(CurveKeyError, match="does not exist"):
        load_allowed_keys(tmp_path / "missing")
    with pytest.raises(CurveKeyError, match="cannot read key file"):
        load_keypair(tmp_path / "nope.key")
    with pytest.raises(CurveKeyError, match="40 z85"):
        CurveClient(b"short", b"x" * 40, b"y" * 40)
    pair = generate_keypair()
    assert pair.secret is not None
    with pytest.raises(CurveKeyError, match="ZAP domain"):
        CurveServer(pair.secret, pair.public, domain=b"")
