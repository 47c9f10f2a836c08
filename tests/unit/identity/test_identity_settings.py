"""Settings of plantd identity (PLANTD_IDENTITY_*) and the startup key check."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantd.common import contract
from plantd.identity.main import config_for, load_keys
from plantd.identity.settings import IdentitySettings

pytestmark = pytest.mark.unit


def test_defaults_follow_the_contract() -> None:
    s = IdentitySettings.load(environ={})
    assert s.http_port == contract.HTTP_PORTS[contract.IDENTITY] == 8083
    assert s.service == contract.SERVICE_IDENTITY
    assert s.audiences == list(contract.TOKEN_AUDIENCES)
    assert (s.access_ttl_s, s.argon2_memory_kib, s.argon2_time_cost) == (900, 19456, 2)
    cfg = config_for(s)
    assert cfg.backoff.max_failures == 100 and cfg.policy.min_length == 15


def test_environment_and_comma_lists(tmp_path: Path) -> None:
    env = {
        "PLANTD_IDENTITY_AUDIENCES": "org.plantd.State, org.plantd.Gateway",
        "PLANTD_IDENTITY_JWT_KEY_FILE": str(tmp_path / "signing-key.pem"),
        "PLANTD_IDENTITY_LOGIN_SOURCE_RATE": "0.5",
    }
    s = IdentitySettings.load(environ=env)
    assert s.audiences == ["org.plantd.State", "org.plantd.Gateway"]
    assert s.jwt_key_file == tmp_path / "signing-key.pem"
    assert config_for(s).source_bucket.rate == 0.5


def test_no_key_is_a_clear_startup_error(tmp_path: Path) -> None:
    from plantd.common.service import ServiceError

    s = IdentitySettings.load(environ={}, flags={"jwt_keys_dir": tmp_path / "none"})
    with pytest.raises(ServiceError, match=r"refuses to start without a signing key.*keygen"):
        load_keys(s)
