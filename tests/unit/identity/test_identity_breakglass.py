"""Break-glass tokens: minted offline, accepted only with the configured key, at most 1 h."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from plantd.common.auth import KeySetError, Reason, TokenError, Verifier
from plantd.common.auth.breakglass import BreakGlassKeyError, load_public, public_jwk
from plantd.identity import breakglass
from plantd.identity.keys import KeyRing, generate
from plantd.identity.tokens import Issuer

pytestmark = pytest.mark.unit

ISS = "plantd-identity"
AUD = "org.plantd.State"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    priv, pub = breakglass.generate(tmp_path / "bg")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    return breakglass.load_private(priv), load_public(pub)


def _verifier(jwks: dict[str, Any] | None, tmp_path: Path) -> tuple[Verifier, KeyRing]:
    generate(tmp_path / "jwt")
    ring = KeyRing.from_dir(tmp_path / "jwt")
    return Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks(), break_glass_jwks=jwks), ring


def test_accepted_with_the_key_counted_and_logged(
    keys: tuple[Any, dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    priv, jwks = keys
    v, _ = _verifier(jwks, tmp_path)
    token = breakglass.mint(priv, subject="alice", reason="identity down, line 1 stuck")
    with caplog.at_level(logging.WARNING, logger="plantd.auth"):
        claims = v.verify(token)
        v.verify(token)  # a cache hit: counted, not logged again
    assert claims.break_glass and claims.subject == "breakglass:alice"
    assert claims.allows("state:data:write", "any")
    assert v.break_glass_accepted == 2
    logged = [r for r in caplog.records if r.getMessage() == "break-glass token accepted"]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert getattr(logged[0], "break_glass", None) is True


def test_refused_without_the_key(keys: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    priv, _ = keys
    v, _ = _verifier(None, tmp_path)
    with pytest.raises(TokenError) as err:
        v.verify(breakglass.mint(priv, subject="alice", reason="x"))
    assert err.value.reason == Reason.UNKNOWN_KID


def test_lifetime_over_one_hour_is_refused(
    keys: tuple[Any, dict[str, Any]], tmp_path: Path
) -> None:
    priv, jwks = keys
    with pytest.raises(ValueError, match="3600"):
        breakglass.mint(priv, subject="a", reason="x", ttl_s=3601)
    # hand-made: signed by the break-glass key but living two hours
    now = time.time()
    kid = public_jwk(priv.public_key())["kid"]
    claims = {
        "iss": ISS,
        "aud": [AUD],
        "sub": "breakglass:a",
        "jti": "j",
        "iat": now,
        "exp": now + 7200,
        "token_type": "access",
        "break_glass": True,
    }
    long = jwt.encode(claims, priv, algorithm="EdDSA", headers={"kid": kid})
    v, _ = _verifier(jwks, tmp_path)
    with pytest.raises(TokenError) as err:
        v.verify(long)
    assert err.value.reason == Reason.BREAK_GLASS_INVALID
    claims.update(exp=now + 60, break_glass=False)
    with pytest.raises(TokenError) as err:
        v.verify(jwt.encode(claims, priv, algorithm="EdDSA", headers={"kid": kid}))
    assert err.value.reason == Reason.BREAK_GLASS_INVALID, "the claim break_glass: true is needed"


def test_a_normal_key_cannot_mint_break_glass(
    keys: tuple[Any, dict[str, Any]], tmp_path: Path
) -> None:
    _, jwks = keys
    v, ring = _verifier(jwks, tmp_path)
    issuer = Issuer(ring, issuer=ISS, access_ttl_s=900)
    tok = issuer.access(subject="u", audience=[AUD], now=time.time(), claims={"break_glass": True})
    with pytest.raises(TokenError) as err:
        v.verify(tok.token)
    assert err.value.reason == Reason.BREAK_GLASS_INVALID
    plain = issuer.access(subject="u", audience=[AUD], now=time.time(), claims={})
    assert not v.verify(plain.token).break_glass


def test_servers_get_only_the_public_half(tmp_path: Path) -> None:
    priv, pub = breakglass.generate(tmp_path)
    with pytest.raises(BreakGlassKeyError, match="PRIVATE"):
        load_public(priv)
    with pytest.raises(FileExistsError):
        breakglass.generate(tmp_path)
    priv.chmod(0o644)
    with pytest.raises(BreakGlassKeyError, match="chmod 600"):
        breakglass.load_private(priv)
    jwks = load_public(pub)
    # a JWKS that reuses the break-glass kid for a normal key is refused
    v = Verifier(issuer=ISS, audience=AUD, break_glass_jwks=jwks)
    with pytest.raises(KeySetError, match="break-glass"):
        v.set_jwks(jwks)
