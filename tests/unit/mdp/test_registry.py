"""The registry of machine identities (plantd.common.registry): parsing, budgets, questions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import zmq

from plantd.common.registry import (
    MAX_FILE_BYTES,
    MAX_PATTERNS,
    Identity,
    Registry,
    RegistryError,
    Rights,
    enrol_own,
    plantd_registry,
    valid_key,
)

pytestmark = pytest.mark.unit


def key() -> str:
    return zmq.curve_keypair()[0].decode()


STATE, PLC, CLIENT = key(), key(), key()


def doc() -> dict[str, object]:
    return {
        "version": 1,
        "identities": [
            {"name": "state", "kind": "plantd", "public_key": STATE,
             "services": ["org.plantd.State"], "publish": {"state": [""]}, "permissions": []},
            {"name": "line1-plc", "kind": "module", "public_key": PLC,
             "services": ["org.example.line1.*", "org.plantd.Sneaky", "exact.name"],
             "publish": {"event": ["line1."]},
             "permissions": ["state:data:write:line1"]},
            {"name": "op", "kind": "client", "public_key": CLIENT},
        ],
    }  # fmt: skip


def test_round_trip_and_lookup() -> None:
    reg = Registry.from_dict(doc())
    assert len(reg) == 3
    assert Registry.from_dict(reg.to_dict()).to_dict() == reg.to_dict()
    plc = reg.by_key(PLC)
    assert plc is not None and plc.name == "line1-plc" and plc.kind == "module"
    assert plc.permissions == ("state:data:write:line1",)
    assert reg.by_key(PLC.encode()) == plc
    assert reg.by_key(key()) is None
    assert reg.by_name("op") is not None


def test_may_serve_patterns_and_reserved_names() -> None:
    reg = Registry.from_dict(doc())
    assert reg.may_serve(STATE, "org.plantd.State")
    assert not reg.may_serve(STATE, "org.plantd.Identity")
    assert reg.may_serve(PLC, "org.example.line1.Press")
    assert reg.may_serve(PLC, b"org.example.line1.a.b")
    assert not reg.may_serve(PLC, "org.example.line1")  # the prefix keeps its dot
    assert not reg.may_serve(PLC, "org.example.line10.X")
    assert reg.may_serve(PLC, "exact.name") and not reg.may_serve(PLC, "exact.names")
    # Reserved: a module may never serve org.plantd.*, whatever its patterns say.
    assert not reg.may_serve(PLC, "org.plantd.Sneaky")
    assert not reg.may_serve(CLIENT, "anything")
    assert not reg.may_serve(key(), "exact.name")  # unknown key


def test_star_pattern_still_respects_reserved_names() -> None:
    d = doc()
    d["identities"][1]["services"] = ["*"]  # type: ignore[index]
    reg = Registry.from_dict(d)
    assert reg.may_serve(PLC, "any.thing")
    assert not reg.may_serve(PLC, "org.plantd.State")


def test_may_publish_by_bus_and_prefix() -> None:
    reg = Registry.from_dict(doc())
    assert reg.may_publish(STATE, "state", b"any-scope")
    assert not reg.may_publish(STATE, "event", b"x")
    assert reg.may_publish(PLC, "event", b"line1.alarm")
    assert reg.may_publish(PLC, "event", "line1.")
    assert not reg.may_publish(PLC, "event", b"line2.alarm")
    assert not reg.may_publish(PLC, "state", b"line1")
    assert not reg.may_publish(CLIENT, "event", b"")
    assert not reg.may_publish(key(), "state", b"x")


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d.update(version=2), "version must be 1"),
        (lambda d: d.update(identities={}), "'identities' must be a list"),
        (lambda d: d["identities"][0].update(kind="root"), "identities[0] ('state').kind"),
        (lambda d: d["identities"][1].update(public_key="short"), "('line1-plc').public_key"),
        (lambda d: d["identities"][1].update(services=["a*b"]), "neither an exact name"),
        (lambda d: d["identities"][1].update(services=[""]), "services[0]"),
        (lambda d: d["identities"][1].update(services="x"), "must be a list"),
        (lambda d: d["identities"][1].update(publish={"event": "x"}), "publish.event"),
        (lambda d: d["identities"][2].update(public_key=STATE), "share one public_key"),
        (lambda d: d["identities"][2].update(name="state"), "appears twice"),
        (lambda d: d["identities"][1].update(services=["a"] * (MAX_PATTERNS + 1)), "more than"),
        (lambda d: d["identities"].append(7), "identities[3] must be an object"),
    ],
)
def test_bad_documents_name_the_field(mutate: object, words: str) -> None:
    d = json.loads(json.dumps(doc()))
    mutate(d)  # type: ignore[operator]
    with pytest.raises(RegistryError) as info:
        Registry.from_dict(d, source="reg.json")
    assert "reg.json" in str(info.value)
    assert words in str(info.value)


def test_load_refuses_writable_and_huge_files(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    p = d / "registry.json"
    p.write_text(json.dumps(doc()))
    os.chmod(p, 0o600)
    assert len(Registry.load(p)) == 3
    os.chmod(p, 0o666)  # noqa: S103 - the case under test
    with pytest.raises(RegistryError, match="writable by group or others"):
        Registry.load(p)
    os.chmod(p, 0o600)
    os.chmod(d, 0o777)  # noqa: S103 - the case under test
    with pytest.raises(RegistryError, match="writable"):
        Registry.load(p)
    os.chmod(d, 0o700)
    p.write_bytes(b" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(RegistryError, match="more than the limit"):
        Registry.load(p)
    p.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        Registry.load(p)
    p.write_text("[" * 100_000 + "]" * 100_000)  # deep nesting: a clear error, no crash
    with pytest.raises(RegistryError):
        Registry.load(p)
    with pytest.raises(RegistryError, match="cannot read registry"):
        Registry.load(d / "missing.json")


def test_rights_without_registry_reserve_plantd_names_for_own_keys() -> None:
    r = Rights(None, {STATE: "state"})
    assert r.mode == "no registry"
    assert r.may_serve(STATE, "org.plantd.State")
    assert not r.may_serve(PLC, "org.plantd.State")  # the hijack
    assert r.may_serve(PLC, "org.example.anything")  # other names stay open
    assert r.may_serve(None, "org.plantd.Broker")  # in-process peer
    assert r.may_publish(PLC.encode(), "state", b"x")  # no registry: buses open
    who = r.identity(STATE)
    assert who is not None and who.kind == "plantd" and who.name == "state"
    assert r.identity(PLC) is None


def test_rights_with_registry() -> None:
    r = Rights(Registry.from_dict(doc()))
    assert r.mode == "registry"
    assert not r.may_serve(PLC, "org.plantd.State")
    assert not r.may_serve(key(), "org.example.x")  # unregistered keys serve nothing
    assert r.may_serve(PLC, "org.example.line1.x")
    assert not r.may_publish(PLC.encode(), "state", b"x")
    assert r.may_publish(None, "state", b"x")


def test_empty_registry_grants_nothing() -> None:
    r = Rights(Registry.empty())
    assert not r.may_serve(STATE, "org.plantd.State")
    assert not r.may_serve(PLC, "x")


def test_plantd_registry_and_enrol_own() -> None:
    own = {STATE: "state", PLC: "echo", CLIENT: "client"}
    reg = plantd_registry({STATE: "state", PLC: "echo"})
    assert reg.may_serve(STATE, "org.plantd.State") and reg.may_publish(STATE, "state", b"s")
    assert reg.may_serve(PLC, "org.plantd.module.Echo")
    first = enrol_own(None, own)
    assert first is not None
    assert {i.name for i in first.identities()} == {"state", "echo", "client"}
    c = first.by_name("client")
    assert c is not None and c.kind == "client" and c.services == ()
    assert enrol_own(first, own) is None  # nothing missing: nothing written
    # An operator's own identity is kept; a regenerated key replaces the old one.
    extra = first.with_identity(Identity("plc", "module", key(), ("x.*",)))
    new_state = key()
    again = enrol_own(extra, {**own, new_state: "state"})
    assert again is not None
    assert again.by_name("plc") is not None
    st = again.by_name("state")
    assert st is not None and st.public_key == new_state


def test_valid_key() -> None:
    assert valid_key(STATE)
    assert not valid_key("")
    assert not valid_key("~" * 40)
