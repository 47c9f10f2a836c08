"""Enrolment grants (pure): names, keys, reserved services, buses and topics, the registry shape."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import pytest
from tests.kit import require

from plantd.identity.enrolment import (
    covers_reserved,
    grant_from,
    module_from_grant,
    registry_document,
)
from plantd.identity.errors import IdentityError

pytestmark = pytest.mark.unit

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def _grant(**kw: Any) -> dict[str, Any]:
    return grant_from({"name": "line1-plc", **kw})


def test_a_module_grant_round_trips_to_the_registry_shape() -> None:
    g = _grant(
        services=["org.example.line1.*"],
        publish={"event": ["line1."]},
        permissions=["state:data:write:line1"],
    )
    m = module_from_grant(g, KEY, 1.0, "1")
    doc = registry_document([m])
    assert doc == {
        "version": 1,
        "identities": [
            {
                "name": "line1-plc",
                "kind": "module",
                "public_key": KEY,
                "services": ["org.example.line1.*"],
                "publish": {"event": ["line1."]},
                "permissions": ["state:data:write:line1"],
            }
        ],
    }


@pytest.mark.parametrize(
    "services", [["org.plantd.State"], ["org.plantd.*"], ["org.*"], ["org.plan*"], ["a*b"]]
)
def test_modules_cannot_serve_reserved_names(services: list[str]) -> None:
    with pytest.raises(IdentityError):
        _grant(services=services)


def test_plantd_kind_may_serve_reserved_names() -> None:
    assert _grant(kind="plantd", services=["org.plantd.State"])["services"] == ["org.plantd.State"]
    assert covers_reserved("org.*") and covers_reserved("org.plantd.x.*")
    assert not covers_reserved("org.example.*") and not covers_reserved("org.plantdx")


@pytest.mark.parametrize(
    "publish",
    [
        {"state": [""]},
        {"event": [""]},
        {"event": ["identity.not_before"]},
        {"event": ["aud"]},
        {"nosuchbus": ["x"]},
        {"event": "line1." * 100},
    ],
)
def test_modules_cannot_publish_platform_events(publish: dict[str, Any]) -> None:
    with pytest.raises(IdentityError):
        _grant(publish=publish)


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "Upper"},
        {"name": ""},
        {"name": "x" * 64},
        {"kind": "root"},
        {"permissions": ["has space"]},
        {"services": ["s"] * 65},
        {"services": [f"org.example.{i:0>200}" for i in range(30)]},
    ],
)
def test_bad_grants_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(IdentityError):
        grant_from({"name": "ok", **bad})


@pytest.mark.parametrize("key", ["", "short", "x" * 41, "\u00e9" * 40, "!" * 39 + "\x00"])
def test_keys_must_be_z85_curve_keys(key: str) -> None:
    with pytest.raises(IdentityError, match="public_key"):
        module_from_grant(_grant(), key, 1.0, "1")


def test_registry_document_loads_in_the_broker_registry_when_present() -> None:
    found = importlib.util.find_spec("plantd.common.registry") is not None
    require(found, "plantd.common.registry (interface 1 of issue 8) is not installed")
    registry = importlib.import_module("plantd.common.registry")
    g = _grant(services=["org.example.line1.*"], publish={"event": ["line1."]})
    doc = registry_document([module_from_grant(g, KEY, 1.0, "1")])
    reg = registry.Registry.from_dict(doc)
    assert reg.may_serve(KEY, "org.example.line1.press")
    assert not reg.may_serve(KEY, "org.plantd.State")
