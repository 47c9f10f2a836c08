from __future__ import annotations

import base64
from pathlib import Path

import pytest
import zmq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plantd.common.curve import load_allowed_keys, load_keypair
from plantd_operator import secrets

pytestmark = pytest.mark.unit


def test_curve_entries_are_valid_zeromq_certificates() -> None:
    entries = secrets.curve_entries(["broker", "state"])
    assert set(entries) == {"broker.key", "broker.key_secret", "state.key", "state.key_secret"}
    sec = entries["broker.key_secret"]
    public = sec.split('public-key = "')[1].split('"')[0].encode()
    secret = sec.split('secret-key = "')[1].split('"')[0].encode()
    assert zmq.curve_public(secret) == public
    assert "secret-key" not in entries["broker.key"]


def test_existing_pairs_are_kept_and_only_missing_ones_generated() -> None:
    have = secrets.encode(secrets.curve_entries(["broker"]))
    added = secrets.missing_entries(["broker", "gateway"], have)
    assert set(added) == {"gateway.key", "gateway.key_secret"}
    have_jwt = secrets.encode(secrets.jwt_entries())
    assert secrets.missing_entries(["jwt"], have_jwt) == {}


def test_jwt_key_is_a_p256_private_key() -> None:
    entries = secrets.jwt_entries()
    pem = next(v for k, v in entries.items() if k.startswith("active.")).encode()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


def test_redis_password_is_in_the_acl_file_and_random() -> None:
    a, b = secrets.redis_entries(), secrets.redis_entries()
    assert a["password"] != b["password"] and len(a["password"]) >= 40
    assert f">{a['password']}" in a["users.acl"]


def test_digest_changes_with_the_data_only() -> None:
    data = {"k": base64.b64encode(b"v").decode()}
    assert secrets.digest(data) == secrets.digest(dict(data))
    assert secrets.digest(data) != secrets.digest({"k": "other"})
    assert secrets.digest(None) == "absent"


def test_operator_key_files_load_in_the_services(tmp_path: Path) -> None:
    # The Secret the operator writes is the directory a service reads: same file format.
    directory = tmp_path
    for name, text in secrets.curve_entries(["broker", "state"]).items():
        mode = 0o600 if name.endswith("_secret") else 0o644
        (directory / name).write_text(text)
        (directory / name).chmod(mode)
    pair = load_keypair(directory / "state.key_secret")
    assert pair.secret is not None and zmq.curve_public(pair.secret) == pair.public
    assert load_keypair(directory / "broker.key").secret is None
    assert pair.public in load_allowed_keys(directory)
